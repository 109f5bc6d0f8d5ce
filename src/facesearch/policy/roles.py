"""Who may do what: roles, the permission each use case needs, and the two-person rule.

Scope: every web user belongs to one organisation and reaches only that organisation's users,
cases, searches and candidate lists (the service checks the organisation; a role alone is not
enough). The gallery (sources, images, faces) is one for the deployment: its managers are the
admins. Deployment-wide power over organisations (creating one, managing another's users or
restrictions) belongs to the operator alone: the CLI, run by whoever holds the data directory.
There is no web account with that power, the first admin included."""

from __future__ import annotations

from facesearch.errors import Forbidden, InvalidRequest

ROLES = ("admin", "supervisor", "investigator", "auditor", "dpo")
# The local CLI user: whoever can run commands on the data directory can read its files
# anyway, so the CLI acts with every permission; its searches still need a case.
OPERATOR = "operator"

# permission -> roles that hold it (the operator holds all)
PERMISSIONS: dict[str, frozenset[str]] = {
    "sources.read": frozenset({"admin", "supervisor", "investigator", "auditor", "dpo"}),
    "sources.manage": frozenset({"admin"}),
    "ingest": frozenset({"admin"}),
    "ingest.server_path": frozenset({"admin"}),
    "delete": frozenset({"admin"}),
    "suppress": frozenset({"admin"}),
    "reindex": frozenset({"admin"}),
    # Any face's crop, to manage the gallery; a face id tells nothing of any case. Others
    # see the crops of their organisation's candidate lists only.
    "faces.read_any": frozenset({"admin"}),
    "stats": frozenset({"admin", "supervisor", "auditor", "dpo"}),
    "metrics": frozenset({"admin"}),
    "policy.read": frozenset({"admin"}),
    "users.manage": frozenset({"admin"}),  # of their own organisation
    "users.read": frozenset({"admin", "supervisor"}),  # their own organisation's
    "users.approve": frozenset({"supervisor"}),
    "cases.read": frozenset({"supervisor", "investigator"}),
    "cases.manage": frozenset({"investigator"}),
    "search": frozenset({"investigator"}),
    "candidates.mark": frozenset({"investigator"}),
    # Case watches: an investigator asks, a supervisor of the organisation (not the same
    # person) approves; either the requester or a supervisor stops one.
    "watches.request": frozenset({"investigator"}),
    "watches.approve": frozenset({"supervisor"}),
    "watches.stop": frozenset({"investigator", "supervisor"}),
    "audit.read": frozenset({"auditor"}),
    # The data-protection officer answers access requests and keeps the record of processing.
    "requests.manage": frozenset({"dpo"}),
    "records.read": frozenset({"admin", "dpo", "auditor"}),
    "retention.run": frozenset({"admin"}),
    "crawl": frozenset({"admin"}),
    "organisations.manage": frozenset({"admin"}),  # their own organisation's restriction
    # Checking and repairing the data directory: the deployment's operator only (the CLI).
    "integrity": frozenset(),
}

MARKS = ("possible", "confirmed", "rejected")
USER_STATES = ("pending", "active", "disabled")


def allowed(role: str, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")  # a typo must not grant access
    return role == OPERATOR or role in PERMISSIONS[permission]


def initial_status(role: str) -> str:
    """Investigators wait for a supervisor of their organisation; other roles are created by an
    admin, who is accountable for them, and start active."""
    return "pending" if role == "investigator" else "active"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
    return role


def check_mark(mark: str, marker_id: int | None, earlier: list[tuple[int | None, str]]) -> None:
    """Two-person rule: "confirmed" needs a "possible" mark by a different person that they still
    hold: a later mark of theirs ("rejected") withdraws it.

    earlier: (user id, mark) of the candidate's previous marks, oldest first."""
    if mark not in MARKS:
        raise InvalidRequest(f"mark must be one of {', '.join(MARKS)}")
    latest = dict(earlier)  # each person's last word on the candidate
    if mark == "confirmed" and not any(m in ("possible", "confirmed") and uid != marker_id
                                       for uid, m in latest.items()):
        raise Forbidden("confirming needs a second investigator: another investigator of the "
                        "organisation must have marked this candidate a possible match first")
