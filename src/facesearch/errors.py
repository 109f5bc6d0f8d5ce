"""Domain errors. Front ends map them to a message and an exit code or status once."""

from __future__ import annotations


class FacesearchError(Exception):
    """An error a user can act on: a short code and a one-line message."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadImage(FacesearchError):
    """The bytes are not an image we accept (corrupt, truncated, too large, not an image)."""

    code = "bad_image"


class NotFound(FacesearchError):
    code = "not_found"


class PolicyRefused(FacesearchError):
    """A policy rule (lawful basis, jurisdiction, suppression) forbids the action."""

    code = "policy_refused"


class InvalidRequest(FacesearchError):
    code = "invalid_request"


class NoFace(FacesearchError):
    code = "no_face"


class NotAuthenticated(FacesearchError):
    """No valid session or API key: the caller must log in."""

    code = "not_authenticated"


class SecondFactorOwed(NotAuthenticated):
    """A session that has given a password but still owes its second factor (stage "code") or
    has yet to set one up (stage "enrol")."""

    code = "second_factor_owed"

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class Forbidden(FacesearchError):
    """The caller is known but may not do this."""

    code = "forbidden"


class RateLimited(FacesearchError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(RateLimited):
    """The service is at capacity for this kind of work (503): try again after retry_after."""

    code = "busy"
