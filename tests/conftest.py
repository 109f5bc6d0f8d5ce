"""Shared fixtures: the LFW data set, generated images, and fresh data directories."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyotp
import pytest
from PIL import Image

from facesearch.config import Settings
from facesearch.service import FaceSearchService
from facesearch.service.base import system_clock
from facesearch.types import Actor

ROOT = Path(__file__).resolve().parent.parent
LFW = Path(os.environ.get("FACESEARCH_LFW_DIR", ROOT.parent / "shared" / "datasets" / "lfw"))
OPERATOR = Actor(name="test-operator")
TOTP_STEP = 30  # seconds


def next_totp(secret: str, last_step: int | None, now: float, earliest: int = -1) -> str:
    """A code of the user's authenticator app that the service has not accepted yet: the
    earliest step from `earliest` steps around now (-1: the previous one, the service's window)
    that is after the last step used, so that several log-ins of one user within 30 s each get
    a fresh code. Past the window (the next step used too) the caller must wait for time to
    move on (see window_spent) or advance its clock."""
    current = int(now // TOTP_STEP)
    step = max(current + earliest, (last_step if last_step is not None else -1) + 1)
    if step > current + 1:
        raise AssertionError("every code of this minute is spent: wait or advance the clock")
    return pyotp.TOTP(secret).at(step * TOTP_STEP)


def window_spent(last_step: int | None, now: float) -> bool:
    """Whether the codes of now's window are all used: three log-ins of one user within 30 s.
    On a real clock the next is at most 30 s away."""
    return last_step is not None and last_step + 1 > int(now // TOTP_STEP) + 1


def log_in(service: FaceSearchService, username: str, password: str, client: str = "10.0.0.1",
           browser: str | None = None) -> tuple[Actor, str, str]:
    """Log in through the service as a person does, second factor included: a user with none
    sets one up at first (the secret stands for their app; tests read it from the store),
    others give their app's next code. The full actor, session token and CSRF token."""
    actor, token, csrf = service.login(username, password, client, browser)
    if actor.stage == "full":
        return actor, token, csrf
    if actor.stage == "enrol":
        service.begin_enrolment(token)
    user = service.accounts.user(username=username)
    real_time = service.clock is system_clock  # else a test's clock, which the test moves
    while real_time and window_spent(user.totp_last_step, time.time()):
        time.sleep(1)
    # On a real clock not the previous step's code: it might leave the window meanwhile.
    code = next_totp(user.totp_secret, user.totp_last_step, service.clock().timestamp(),
                     earliest=0 if real_time else -1)
    if actor.stage == "enrol":
        actor, token, _ = service.confirm_enrolment(token, code, client)
    else:
        actor, token = service.verify_second_factor(token, code, client)
    return actor, token, csrf


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A temporary folder of this run's own: pytest keeps only the last three runs' folders
    and deletes older ones, also those of a run still going on beside this one (whose
    servers' data directories then vanish)."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="facesearch-tests-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def lfw_photos(name: str) -> list[Path]:
    return sorted((LFW / "images" / name).glob("*.jpg"))


@pytest.fixture(scope="session")
def lfw() -> Path:
    assert (LFW / "pairs.txt").exists(), f"LFW not found at {LFW}"
    return LFW


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # In-process analysis keeps tests fast; the worker pool has tests of its own.
    return Settings(home=tmp_path / "data", workers=1)


@pytest.fixture
def service(settings: Settings):
    svc = FaceSearchService(settings)
    yield svc
    svc.close()


def jpeg_bytes(image: Image.Image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **save_args)
    return out.getvalue()


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of a real Milvus 2.3.5 standalone server, started once per test session in a
    network namespace of its own and reachable only through the host's 127.0.0.1
    (tests/milvus_server.py). Each test uses collections of its own."""
    from tests.milvus_server import LoopbackMilvus, namespaces_available

    unavailable = namespaces_available()
    if unavailable:
        pytest.skip(f"Milvus runs only in a private network namespace here: {unavailable}")
    server = LoopbackMilvus(tmp_path_factory.mktemp("milvus"))
    try:
        server.start()
        yield server.uri
    finally:
        server.stop()
