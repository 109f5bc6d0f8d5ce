"""Who may do what: roles, the permission each use case needs, and the two-person rule."""

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
    "faces.read_any": frozenset({"admin"}),  # any face's crop; others see their cases' only
    "stats": frozenset({"admin", "supervisor", "auditor", "dpo"}),
    "metrics": frozenset({"admin"}),
    "policy.read": frozenset({"admin"}),
    "users.manage": frozenset({"admin"}),
    "users.read": frozenset({"admin", "supervisor"}),
    "users.approve": frozenset({"supervisor"}),
    "cases.read": frozenset({"supervisor", "investigator"}),
    "cases.manage": frozenset({"investigator"}),
    "search": frozenset({"investigator"}),
    "candidates.mark": frozenset({"investigator"}),
    "audit.read": frozenset({"auditor"}),
    # The data-protection officer answers access requests and keeps the record of processing.
    "requests.manage": frozenset({"dpo"}),
    "records.read": frozenset({"admin", "dpo", "auditor"}),
    "retention.run": frozenset({"admin"}),
    "crawl": frozenset({"admin"}),
    "organisations.manage": frozenset({"admin"}),
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
    """Two-person rule: "confirmed" needs an earlier "possible" mark by a different person.

    earlier: (user id, mark) of the candidate's previous marks, oldest first."""
    if mark not in MARKS:
        raise InvalidRequest(f"mark must be one of {', '.join(MARKS)}")
    if mark == "confirmed" and not any(m == "possible" and uid != marker_id for uid, m in earlier):
        raise Forbidden("confirming needs a second investigator: another investigator of the "
                        "organisation must have marked this candidate a possible match first")
