"""The second factor (TOTP, RFC 6238, with single-use recovery codes) and sign-in through an
agency's identity provider (OpenID Connect, authorization code flow with PKCE).

A password alone leaves a session in stage "code" (or "enrol" for a user with no second factor
yet): that session's actor may do nothing but complete its log-in here (authorise and
authenticate refuse it). A user who signs in through their agency's provider gets a full
session: the agency's own multi-factor policy applies there.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pyotp
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from facesearch.config import OidcProvider
from facesearch.errors import InvalidRequest, NotAuthenticated, NotFound, RateLimited
from facesearch.policy.roles import initial_status
from facesearch.service.accounts import Accounts, _actor_of, _hasher, token_hash
from facesearch.service.base import client_hash
from facesearch.store.accounts import NEVER_FORGOTTEN, User
from facesearch.types import Actor

RECOVERY_CODES = 10
TOTP_ISSUER = "facesearch"
# A code of the previous or next 30-second step is accepted too (a phone's clock drifts, a
# person types slowly), but each step once per user (RFC 6238 section 5.2): a code seen over a
# shoulder or by a phishing proxy is spent once it has been used.
TOTP_WINDOW = 1
OIDC_LOGIN_MINUTES = 10  # how long a browser may take at the provider's sign-in page
OIDC_TIMEOUT_SECONDS = 10
OIDC_CACHE_SECONDS = 3600  # a provider's discovery document and keys are fetched at most hourly
# Sign-ins one client address may start an hour: each stores a row until it expires, and anyone
# can start one.
OIDC_STARTS_PER_HOUR = 60


@dataclass(frozen=True)
class Enrolment:
    """A second factor being set up: the secret (base32) and its otpauth:// URI for an app."""

    secret: str
    uri: str


@dataclass(frozen=True)
class SecondFactorStatus:
    enrolled_at: str | None
    recovery_codes_left: int


def recovery_hash(code: str) -> str:
    """Recovery codes are 40-bit random values, spent once and throttled like passwords, so
    sha256 stores them safely; case, spaces and dashes as typed do not matter."""
    return hashlib.sha256("".join(c for c in code.lower() if c.isalnum()).encode()).hexdigest()


def matching_step(secret: str, code: str, at: float) -> int | None:
    """The time step within TOTP_WINDOW of `at` (Unix seconds) whose code this is, if any."""
    totp = pyotp.TOTP(secret)
    now = int(at // totp.interval)
    found = None
    for step in range(now - TOTP_WINDOW, now + TOTP_WINDOW + 1):
        # Every step is compared, so the time taken says nothing of which one matched.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


class SignIn(Accounts):
    """Second factor and agency sign-in; log-in by password is Accounts.login."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # provider name -> (monotonic time fetched, discovery document, signing keys)
        self._oidc_cache: dict[str, tuple[float, dict, KeySet]] = {}
        self._oidc_lock = threading.Lock()

    # The second factor ------------------------------------------------------------------------

    def pending_login(self, session_token: str | None, client: str) -> tuple[Actor, str] | None:
        """The actor (stage "code" or "enrol") and CSRF token of a session whose second factor
        is owed; None for no session, an expired one or a full one."""
        found = self.accounts.session(token_hash(session_token), self.now()) if session_token else None
        if found is None or found.stage == "full":
            return None
        user = self.accounts.user(user_id=found.user_id)
        if user is None or user.status != "active":
            return None
        return _actor_of(user, client, found.stage), found.csrf_token

    def _pending(self, session_token: str, stage: str) -> User:
        found = self.accounts.session(token_hash(session_token), self.now()) if session_token else None
        user = self.accounts.user(user_id=found.user_id) if found and found.stage == stage else None
        if user is None or user.status != "active":
            raise NotAuthenticated("your log-in has ended; log in again")
        return user

    def begin_enrolment(self, session_token: str) -> Enrolment:
        """The secret a user in stage "enrol" is to add to an authenticator app: the pending one
        if the page is shown again (an app may have scanned it already), else a new one."""
        user = self._pending(session_token, "enrol")
        if user.totp_secret is None:
            with self.store.transaction() as conn:
                # 160 bits, as RFC 4226 recommends; kept if another page set one meanwhile.
                self.accounts.set_totp_secret(conn, user.id, pyotp.random_base32(32))
            user = self._pending(session_token, "enrol")
        secret = user.totp_secret
        assert secret is not None
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
        return Enrolment(secret, uri)

    def confirm_enrolment(self, session_token: str, code: str,
                          client: str) -> tuple[Actor, str, list[str]]:
        """Confirm a new second factor with its first code: the session becomes full, under a
        new token (returned), and the user gets RECOVERY_CODES single-use recovery codes,
        returned this once."""
        user = self._pending(session_token, "enrol")
        actor = _actor_of(user, client, "enrol")
        self._claim_code_attempt(actor, user)
        step = matching_step(user.totp_secret or "", _digits(code), self.clock().timestamp()) \
            if user.totp_secret else None
        if step is None:
            self._audit_alone(actor, "second_factor.verify.refused", {"reason": "wrong code",
                                                                      "stage": "enrol"})
            raise NotAuthenticated("that code is not right; check your app's clock and try again")
        codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
        token = secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            if not (user.totp_secret and self.accounts.confirm_totp(
                    conn, user.id, user.totp_secret, step, self.now())
                    and self.accounts.promote_session(conn, token_hash(session_token),
                                                      token_hash(token), "enrol", self.now(),
                                                      self._session_expiry())):
                raise NotAuthenticated("your log-in has ended; log in again")
            self.accounts.replace_recovery_codes(conn, user.id, [recovery_hash(c) for c in codes],
                                                 self.now())
            self.accounts.settle_login(conn, reset=[f"code:{user.id}", _wrong_codes(user)], undo=[])
            # Keys made before the user had a second factor (before it was required) stood for
            # a password alone: from now on a key stands for both.
            revoked = self.accounts.revoke_api_keys_of(conn, user.id, self.now())
            self._audit(conn, actor, "second_factor.enrol", {"recovery_codes": len(codes),
                                                             "api_keys_revoked": revoked})
            self._audit(conn, actor, "login", {"second_factor": "enrolled"})
        return _actor_of(user, client), token, codes

    def verify_second_factor(self, session_token: str, code: str, client: str) -> tuple[Actor, str]:
        """Complete a password log-in (stage "code") with a code from the user's app (each time
        step once) or an unused recovery code (each once): the actor and the session's new
        token (a session changes its token as it gains its rights, so that a token seen
        before, or planted, is worth nothing). Wrong codes are throttled per user like
        passwords (Accounts.lock_seconds), under a key a password log-in does not clear; and
        after FACESEARCH_SECOND_FACTOR_FAILURES_ALLOWED wrong codes in a row, however slowly
        given, the app's codes are refused until a recovery code or an admin's reset: a
        throttle that forgets idle time still lets a patient guesser through in the end."""
        user = self._pending(session_token, "code")
        actor = _actor_of(user, client, "code")
        self._claim_code_attempt(actor, user)
        digits = _digits(code)
        step = matching_step(user.totp_secret or "", digits, self.clock().timestamp()) \
            if user.totp_secret and len(digits) == 6 else None
        how = "totp" if step is not None else "recovery_code"
        token = secrets.token_urlsafe(32)
        locked = False
        try:
            with self.store.transaction() as conn:  # a refusal rolls every step back
                # Read under its row lock, so a code racing the one that locks sees the lock.
                wrong = self.accounts.lock_throttles(conn, [_wrong_codes(user)], self.now())[0]
                locked = wrong.failures >= self.settings.second_factor_failures_allowed
                if step is not None and locked:
                    raise _Refused("second factor locked")
                if step is not None and not self.accounts.claim_totp_step(conn, user.id, step):
                    raise _Refused("code already used")
                if step is None and not self.accounts.use_recovery_code(
                        conn, user.id, recovery_hash(code), self.now()):
                    raise _Refused("wrong code")
                if not self.accounts.promote_session(conn, token_hash(session_token), token_hash(token),
                                                     "code", self.now(), self._session_expiry()):
                    raise _Refused("log-in ended")
                self.accounts.settle_login(conn, reset=[f"code:{user.id}", _wrong_codes(user)],
                                           undo=[])
                self._audit(conn, actor, "login", {"second_factor": how})
        except _Refused as refusal:
            self._audit_alone(actor, "second_factor.verify.refused", {"reason": str(refusal),
                                                                      "stage": "code"})
            if str(refusal) != "log-in ended":
                locked = self._count_wrong_code(actor, user) or locked
            if locked:
                raise NotAuthenticated("your second factor is locked after too many wrong codes: "
                                       "use a recovery code, or ask your admin to reset it") from None
            raise NotAuthenticated("that code is not right or was used already; wait for the "
                                   "next code, or use a recovery code") from None
        if how == "recovery_code":
            self._audit_alone(actor, "second_factor.recovery_used", {
                "recovery_codes_left": self.accounts.recovery_codes_left(user.id)})
        return _actor_of(user, client), token

    def _count_wrong_code(self, actor: Actor, user: User) -> bool:
        """Count a wrong code in a row; whether the user's second factor is locked now (the
        lock is audited once, as the count reaches the limit)."""
        allowed = self.settings.second_factor_failures_allowed
        with self.store.transaction() as conn:
            wrong = self.accounts.count_failure(conn, _wrong_codes(user), self.now())
            if wrong == allowed:
                self._audit(conn, actor, "second_factor.locked", {"wrong_codes": wrong})
        return wrong >= allowed

    def _claim_code_attempt(self, actor: Actor, user: User) -> None:
        wait = self._claim_attempt([f"code:{user.id}"])
        if wait:
            self._audit_alone(actor, "second_factor.verify.refused", {"reason": "throttled"})
            raise RateLimited(f"too many wrong codes; try again in {wait} s", wait)

    def second_factor_status(self, actor: Actor) -> SecondFactorStatus | None:
        """The actor's own second factor; None for those who have none (the operator, users of
        an identity provider)."""
        user = self.accounts.user(user_id=actor.user_id) if actor.user_id is not None else None
        if user is None or user.identity_provider:
            return None
        return SecondFactorStatus(user.totp_enrolled_at, self.accounts.recovery_codes_left(user.id))

    def reset_second_factor(self, actor: Actor, user: int | str) -> User:
        """Forget a user's second factor and recovery codes (a lost phone) and end their
        sessions: they set up a new one at their next log-in. An admin of their organisation or
        the operator; `user` is an id or a username."""
        self.authorise(actor, "users.manage", "second_factor.reset")
        user_id = user if isinstance(user, int) else getattr(
            self.accounts.user(username=user), "id", -1)
        target = self._user_in_scope(actor, user_id, "second_factor.reset")
        with self.store.transaction() as conn:
            self.accounts.set_totp_secret(conn, target.id, None)
            self.accounts.end_sessions_of(conn, target.id)
            self.accounts.settle_login(conn, reset=[_wrong_codes(target)], undo=[])
            # Whoever holds the lost phone may hold the keys too; the user makes new ones once
            # their new second factor is set up.
            revoked = self.accounts.revoke_api_keys_of(conn, target.id, self.now())
            self._audit(conn, actor, "second_factor.reset", {"user_id": target.id,
                                                             "username": target.username,
                                                             "api_keys_revoked": revoked})
        reset = self.accounts.user(user_id=target.id)
        assert reset is not None
        return reset

    # Agency identity providers (OpenID Connect) --------------------------------------------------

    def identity_providers(self) -> list[OidcProvider]:
        return list(self.settings.oidc_providers)

    def _provider(self, name: str) -> OidcProvider:
        found = next((p for p in self.settings.oidc_providers if p.name == name), None)
        if found is None:
            raise NotFound("no such identity provider")
        return found

    def _oidc_configuration(self, provider: OidcProvider, fresh: bool = False) -> tuple[dict, KeySet]:
        """The provider's discovery document and signing keys, cached an hour (fresh: fetched
        again, for a key the provider has rotated in since)."""
        with self._oidc_lock:
            cached = self._oidc_cache.get(provider.name)
            if cached and not fresh and time.monotonic() - cached[0] < OIDC_CACHE_SECONDS:
                return cached[1], cached[2]
        try:
            with httpx.Client(timeout=OIDC_TIMEOUT_SECONDS) as http:
                document = http.get(provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
                document.raise_for_status()
                meta = document.json()
                if meta.get("issuer") != provider.issuer:
                    raise ValueError("its discovery document names another issuer")
                keys = http.get(meta["jwks_uri"])
                keys.raise_for_status()
                key_set = KeySet.import_key_set(keys.json())
        except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
            raise NotAuthenticated(f"the identity provider {provider.name} cannot be reached "
                                   "now; try again later") from exc
        with self._oidc_lock:
            self._oidc_cache[provider.name] = (time.monotonic(), meta, key_set)
        return meta, key_set

    def oidc_begin(self, name: str, redirect_uri: str, client: str) -> tuple[str, str]:
        """Start a sign-in at provider `name`: the URL to send the browser to, and the state,
        which the browser must bring back (a cookie) with the provider's answer. At most
        OIDC_STARTS_PER_HOUR per client address."""
        provider = self._provider(name)
        meta, _ = self._oidc_configuration(provider)
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        now = self.clock()
        with self.store.transaction() as conn:
            allowed = self.requests.take(conn, client_hash(client), "oidc",
                                         (now - timedelta(hours=1)).isoformat(timespec="seconds"),
                                         now.isoformat(timespec="seconds"), OIDC_STARTS_PER_HOUR)
        if not allowed:
            self._audit_anonymous_refusal(Actor(name="anonymous", role="anonymous", client=client),
                                          client, "login.refused", "too many sign-ins started",
                                          provider=provider.name)
            raise RateLimited("too many sign-ins from this address; try again later", 3600)
        with self.store.transaction() as conn:
            self.accounts.add_oidc_login(
                conn, token_hash(state), provider.name, token_hash(nonce), verifier,
                now.isoformat(timespec="seconds"),
                (now + timedelta(minutes=OIDC_LOGIN_MINUTES)).isoformat(timespec="seconds"))
        query = urlencode({"response_type": "code", "client_id": provider.client_id,
                           "redirect_uri": redirect_uri, "scope": "openid profile email",
                           "state": state, "nonce": nonce, "code_challenge_method": "S256",
                           "code_challenge": create_s256_code_challenge(verifier)})
        return f"{meta['authorization_endpoint']}?{query}", state

    def oidc_complete(self, name: str, code: str, state: str, redirect_uri: str,
                      client: str) -> tuple[Actor, str, str]:
        """Finish a sign-in the provider sent back: exchange the code (with the client secret and
        the PKCE verifier), verify the ID token (signature by the provider's keys, issuer,
        audience, expiry, nonce), and log its user in with a full session. Refusals are audited
        and read the same to the browser."""
        provider = self._provider(name)
        attempt = Actor(name=f"{provider.name}:?", role="anonymous", client=client)
        with self.store.transaction() as conn:
            login = self.accounts.take_oidc_login(conn, token_hash(state), self.now())
        if login is None or login.provider != provider.name:
            self._audit_anonymous_refusal(attempt, client, "login.refused",
                                          "unknown or expired sign-in state", provider=provider.name)
            raise NotAuthenticated("that sign-in has expired; start again")
        try:
            claims = self._id_token_claims(provider, code, login.code_verifier, redirect_uri)
            if not hmac.compare_digest(token_hash(str(claims.get("nonce", ""))), login.nonce_hash):
                raise ValueError("nonce")
        except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
            self._audit_alone(attempt, "login.refused", {
                "provider": provider.name, "reason": f"ID token refused: {type(exc).__name__}: {exc}"[:300]})
            raise NotAuthenticated(f"{provider.title or provider.name} did not vouch for this "
                                   "sign-in; start again") from exc
        user = self._external_user(provider, claims, attempt)
        actor = _actor_of(user, client)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            self.accounts.add_session(conn, token_hash(token), user.id, csrf, self.now(),
                                      self._session_expiry())
            self._audit(conn, actor, "login", {"provider": provider.name})
        return actor, token, csrf

    def _id_token_claims(self, provider: OidcProvider, code: str, verifier: str,
                         redirect_uri: str) -> dict:
        meta, keys = self._oidc_configuration(provider)
        with httpx.Client(timeout=OIDC_TIMEOUT_SECONDS) as http:
            answer = http.post(meta["token_endpoint"], data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier},
                auth=(provider.client_id, provider.client_secret.get_secret_value()))
        answer.raise_for_status()
        id_token = answer.json()["id_token"]
        kid = jws.extract_compact(id_token.encode()).headers().get("kid")
        if kid and not any(k.kid == kid for k in keys.keys):
            _, keys = self._oidc_configuration(provider, fresh=True)
        # Asymmetric algorithms only: "none" and HS256 (keyed with something public) are refused.
        token = jwt.decode(id_token, keys, algorithms=["RS256", "PS256", "ES256"])
        jwt.JWTClaimsRegistry(
            leeway=60, iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id}, exp={"essential": True},
            sub={"essential": True}, nonce={"essential": True}).validate(token.claims)
        audiences = token.claims["aud"] if isinstance(token.claims["aud"], list) else [token.claims["aud"]]
        if len(audiences) > 1 and token.claims.get("azp") != provider.client_id:
            raise ValueError("the token was issued to another client")
        return token.claims

    def _external_user(self, provider: OidcProvider, claims: dict, attempt: Actor) -> User:
        """The provider's user of these claims: linked already, or created where the provider
        may create users; its role follows the claims where they map to one."""
        subject = str(claims["sub"])
        values = claims.get(provider.role_claim) if provider.role_claim else None
        values = values if isinstance(values, list) else [values]
        mapped = next((provider.roles[str(v)] for v in values if str(v) in provider.roles), None)
        user_id = self.accounts.external_user_id(provider.name, subject)
        refusal = None
        if user_id is None and not (provider.create_users and mapped):
            refusal = "no linked user" if not provider.create_users else "no role mapped from the claims"
        elif user_id is None:
            user_id = self._create_external_user(provider, claims, subject, mapped or "", attempt)
        user = self.accounts.user(user_id=user_id) if user_id is not None else None
        if user is not None and refusal is None:
            if user.organisation != provider.organisation:
                refusal = "the user is of another organisation"
            elif user.status != "active":
                refusal = f"the user is {user.status}"
        if refusal or user is None:
            self._audit_alone(attempt, "login.refused", {"provider": provider.name,
                                                         "subject": subject[:200], "reason": refusal})
            raise NotAuthenticated("your agency account has no active facesearch account linked "
                                   "to it; ask your facesearch admin")
        if mapped and mapped != user.role:
            with self.store.transaction() as conn:
                self.accounts.set_role(conn, user.id, mapped)
                self._audit(conn, _actor_of(user, attempt.client), "user.role", {
                    "user_id": user.id, "from": user.role, "to": mapped, "provider": provider.name})
            user = self.accounts.user(user_id=user.id)
            assert user is not None
        return user

    def _create_external_user(self, provider: OidcProvider, claims: dict, subject: str,
                              role: str, attempt: Actor) -> int:
        username = str(claims.get(provider.username_claim) or subject)[:100]
        if self.accounts.user(username=username) is not None:
            username = f"{username}@{provider.name}"[:100]
        organisation = self.accounts.organisation(provider.organisation)
        with self.store.transaction() as conn:
            org_id = organisation.id if organisation else self.accounts.add_organisation(
                conn, provider.organisation, self.now())
            # No password can log in as this user: it signs in through its provider only.
            user_id = self.accounts.add_user(conn, org_id, username, role, initial_status(role),
                                             _hasher.hash(secrets.token_urlsafe(32)), self.now())
            self.accounts.link_external(conn, user_id, provider.name, subject)
            self._audit(conn, attempt, "user.create", {
                "user_id": user_id, "username": username, "role": role,
                "organisation": provider.organisation, "provider": provider.name})
        return user_id

    def link_identity(self, actor: Actor, user_id: int, provider_name: str, subject: str) -> User:
        """Link a user of the actor's organisation to their account at the organisation's
        identity provider (its "sub"), or with subject "" unlink them. A linked user signs in
        there only, never with a password."""
        self.authorise(actor, "users.manage", "user.link")
        provider = self._provider(provider_name)
        user = self._user_in_scope(actor, user_id, "user.link")
        subject = subject.strip()
        if user.organisation != provider.organisation:
            raise InvalidRequest(f"{provider.name} signs in users of {provider.organisation} only")
        if len(subject) > 255 or (subject and self.accounts.external_user_id(provider.name, subject)
                                  not in (None, user.id)):
            raise InvalidRequest("that subject is too long or linked to another user")
        with self.store.transaction() as conn:
            self.accounts.link_external(conn, user.id, provider.name if subject else None,
                                        subject or None)
            self.accounts.end_sessions_of(conn, user.id)
            self._audit(conn, actor, "user.link", {"user_id": user.id, "username": user.username,
                                                   "provider": provider.name, "subject": subject})
        linked = self.accounts.user(user_id=user.id)
        assert linked is not None
        return linked


def _wrong_codes(user: User) -> str:
    """The throttle key counting a user's wrong codes in a row, kept however long idle."""
    return f"{NEVER_FORGOTTEN}code:{user.id}"


class _Refused(Exception):
    """A code refused inside the transaction that would have spent it."""


def _digits(code: str) -> str:
    return "".join(c for c in code if c.isdigit())


def _recovery_code() -> str:
    raw = secrets.token_hex(5)  # 40 bits, ten hex digits, shown as two groups of five
    return f"{raw[:5]}-{raw[5:]}"

