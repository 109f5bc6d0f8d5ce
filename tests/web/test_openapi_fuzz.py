"""Schema-driven fuzzing of the live API: schemathesis generates requests for every operation
in /openapi.json, valid ones and invalid ones, and no answer may be a server error (5xx).

It runs against a deployment of its own, never the shared one: the fuzzer deletes faces,
images and sources, purges jurisdictions, disables users and revokes keys, which would take
the shared gallery away from the other web tests.

Nothing is excluded: every operation of the schema is called, as an admin and as an
investigator, in both generation modes. When the fuzzer disables the calling user or revokes
its key (both are operations under test), the next operation runs with a fresh user of the
same role, so that the remaining operations are still exercised past authentication.
"""

from __future__ import annotations

import io
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from tests.conftest import log_in
from tests.web.conftest import (
    PURPOSE,
    build_deployment,
    password_of,
    probe,
    start_server,
    stop_server,
)

# Examples per operation, generation mode and role: at most 36 operations x 2 modes x 2 roles
# x 6, and hypothesis stops early where it runs out of distinct requests, so about 600 requests
# in half a minute on two cores (plus the deployment's set-up). FACESEARCH_FUZZ_EXAMPLES=60
# (2.5 minutes) found nothing more.
EXAMPLES = int(os.environ.get("FACESEARCH_FUZZ_EXAMPLES", "6"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same requests on every run
    database=None,  # no example database: nothing carried between runs
    phases=[Phase.explicit, Phase.generate],  # no shrinking: 5xx are collected, not raised
    deadline=None,  # calls time real I/O, not generation
    suppress_health_check=list(HealthCheck),
)
# Operations whose only input is a free-form string in the path: every string is valid, so
# the negative mode has nothing to generate (hypothesis says Unsatisfiable). They are still
# called in the positive mode; any other operation that cannot be negated fails the test.
NOT_NEGATABLE = {"DELETE /api/v1/sources/{name}", "DELETE /api/v1/images/{sha256}",
                 "POST /api/v1/public/access-reports/{token}",
                 "GET /api/v1/public/requests/{number}"}
_fresh_users = itertools.count(1)


@dataclass
class Fuzzed:
    url: str
    home: Path
    keys: dict[str, str]  # role -> API key currently in use
    schema: schemathesis.BaseSchema
    calls: int = 0
    called: dict[str, set[str]] = field(default_factory=dict)  # role -> operations called
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    not_negatable: set[str] = field(default_factory=set)  # operations with no invalid request


def fresh_key(home: Path, role: str) -> str:
    """A new active user of role in Agency A and an API key of theirs, made straight through
    the service (as an operator would) on the same data directory the server uses."""
    service = FaceSearchService(Settings(home=home, workers=1))
    try:
        operator = service.local_operator("fuzz-operator")
        username = f"fuzz-{role}-{next(_fresh_users)}"
        user = service.create_user(operator, username, password_of(username), role, "Agency A")
        if user.status == "pending":
            service.approve_user(operator, user.id)
        actor, _, _ = log_in(service, username, password_of(username), "127.0.0.1")
        return service.create_api_key(actor, "fuzz")[1]
    finally:
        service.close()


def seed_case(url: str, key: str) -> None:
    """An open case with a real search in it, so that generated small ids (cases, searches,
    candidates, faces) reach real rows: marks, reports, PDFs and crops, not just 404s."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        case = c.post("/api/v1/cases", json={"number": "FUZZ-1", "purpose": PURPOSE, "offence_type": "robbery"})
        assert case.status_code == 201, case.text
        found = c.post(f"/api/v1/cases/{case.json()['id']}/searches",
                       files={"probe": ("probe.jpg", io.BytesIO(probe(0)), "image/jpeg")})
        assert found.status_code == 201, found.text
        assert found.json()["faces"][0]["candidates"], "the seeded search found no candidates"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, lfw) -> Fuzzed:
    home = tmp_path_factory.mktemp("fuzz") / "data"
    made = build_deployment(home)
    process, url = start_server(home)
    try:
        keys = {"admin": made["keys"]["ada"], "investigator": made["keys"]["ivy"]}
        seed_case(url, keys["investigator"])
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        yield Fuzzed(url, home, keys, schema)
    finally:
        stop_server(process)


def still_valid(target: Fuzzed, key: str) -> bool:
    return httpx.get(target.url + "/api/v1/me", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).status_code == 200


def fuzz_operation(target: Fuzzed, role: str, operation: schemathesis.APIOperation,
                   mode: GenerationMode) -> None:
    """Up to EXAMPLES generated requests to one operation, each answer checked for a 5xx."""
    headers = {"Authorization": f"Bearer {target.keys[role]}"}

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        target.calls += 1
        target.called.setdefault(role, set()).add(operation.label)
        try:
            response = case.call(base_url=target.url, headers=headers, timeout=120)
        except requests.RequestException as exc:  # no answer is a server failure too
            target.server_errors.append(f"{role} {mode}: {case.as_curl_command(headers)}: "
                                        f"no answer ({type(exc).__name__}: {exc})")
            return
        target.statuses[response.status_code] = target.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except FailureGroup as group:
            target.server_errors.append(f"{role} {mode}: {response.status_code} "
                                        f"{case.as_curl_command(headers)}\n{group}")

    call()


def fuzz_as(target: Fuzzed, role: str) -> tuple[list[str], list[str]]:
    """Every operation of the schema, in both modes, as a user of role. Returns (the schema's
    operations, the 5xx found); every call is counted in target."""
    operations = [result.ok() for result in target.schema.get_all_operations()]
    errors_before = len(target.server_errors)
    for operation in operations:
        if not still_valid(target, target.keys[role]):
            target.keys[role] = fresh_key(target.home, role)
        # An operation with no parameters and no body (GET /me, /stats, ...) has no invalid
        # request to generate: schemathesis calls it in the positive mode only.
        has_input = bool(list(operation.iter_parameters())) or bool(operation.body)
        for mode in MODES if has_input else [GenerationMode.POSITIVE]:
            try:
                fuzz_operation(target, role, operation, mode)
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise
                target.not_negatable.add(operation.label)
    print(f"fuzzed as {role}: {target.calls} calls so far, statuses {sorted(target.statuses.items())}")
    return [op.label for op in operations], target.server_errors[errors_before:]


def test_no_operation_answers_an_investigator_with_a_server_error(fuzzed: Fuzzed) -> None:
    calls_before = fuzzed.calls
    operations, errors = fuzz_as(fuzzed, "investigator")
    assert len(operations) >= 30  # the whole API is in the schema
    assert fuzzed.called["investigator"] == set(operations)  # every one of them was called
    assert fuzzed.calls - calls_before >= len(operations) * EXAMPLES
    assert errors == []
    assert fuzzed.not_negatable <= NOT_NEGATABLE


def test_no_operation_answers_an_admin_with_a_server_error(fuzzed: Fuzzed) -> None:
    calls_before = fuzzed.calls
    operations, errors = fuzz_as(fuzzed, "admin")
    assert len(operations) >= 30
    assert fuzzed.called["admin"] == set(operations)
    assert fuzzed.calls - calls_before >= len(operations) * EXAMPLES
    assert errors == []
    assert fuzzed.not_negatable <= NOT_NEGATABLE
    # Not everything was turned away: the fuzz reached the handlers behind authentication.
    assert sum(n for status, n in fuzzed.statuses.items() if 200 <= status < 300) >= 20
