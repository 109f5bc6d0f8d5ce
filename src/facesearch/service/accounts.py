"""Organisations, users, approval, log-in, sessions and API keys."""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import threading
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from facesearch.config import DEPLOYMENT_ROLES
from facesearch.errors import (
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    PolicyRefused,
    RateLimited,
    SecondFactorOwed,
)
from facesearch.policy.roles import OPERATOR, ROLES, allowed, check_role, initial_status
from facesearch.service.base import ServiceBase, client_key
from facesearch.store.accounts import ApiKey, Throttle, User
from facesearch.types import Actor

LOCAL_ORGANISATION = "local"  # the CLI operator's organisation
MIN_PASSWORD = 12
API_KEY_PREFIX = "fsk_"
# argon2id with argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes).
_hasher = PasswordHasher()
# Verified against when the username does not exist, so that both take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")
# Password checks at once in this process: each holds 64 MiB and a core, so more than the cores
# would only cost memory. Attempts from many addresses at once wait their turn here.
_ARGON2_AT_ONCE = threading.BoundedSemaphore(os.cpu_count() or 1)
# Log-in throttle: failures older than the window are forgotten; past the allowed number, each
# attempt waits FIRST_WAIT seconds, doubling with each failure, up to login_lock_max_seconds.
THROTTLE_WINDOW = timedelta(minutes=15)
FIRST_WAIT_SECONDS = 15
# Only the operator and the admins of the operator's own organisation
# (FACESEARCH_DEPLOYMENT_ORGANISATION) give the DEPLOYMENT_ROLES.
# Roles whose local accounts must give a second factor after their password (service/signin.py):
# every staff role, since each reads personal data (auditors and officers every organisation's).
SECOND_FACTOR_ROLES = frozenset(ROLES)
# A session that has given its password but owes its code (or the code's set-up) lasts this
# long: time to type a code, not a working day with a password alone.
PENDING_LOGIN_MINUTES = 10


def stage_after_password(user: User) -> str:
    """Where a correct password leaves a user: "full", or owing a code ("code") or, with no
    second factor yet, its set-up ("enrol")."""
    if user.role not in SECOND_FACTOR_ROLES:
        return "full"
    return "code" if user.totp_enrolled_at else "enrol"


def lock_seconds(failures: int, allowed: int, longest: int) -> int:
    """The wait before the next attempt after `failures` attempts (the latest included): none
    below `allowed`, then 15 s doubling with each further failure, never more than `longest`.
    Failing during a wait counts nothing and extends nothing, so no wait outlasts `longest`
    seconds after the last attempt let through; and a browser the user has logged in from
    before has a count of its own, which a stranger cannot touch (see Accounts.login)."""
    if failures < allowed:
        return 0
    return min(longest, FIRST_WAIT_SECONDS * 2 ** min(failures - allowed, 30))


def token_hash(token: str) -> str:
    """Session tokens and API keys are 256-bit random values, so a plain sha256 stores them
    safely (a slow hash protects guessable secrets like passwords, not random ones)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts(ServiceBase):
    browser_days = 90  # a browser that has logged in is remembered this long (its cookie too)

    def local_operator(self, name: str) -> Actor:
        """The CLI's actor: the local OS user, in the organisation "local"."""
        organisation = self.accounts.organisation(LOCAL_ORGANISATION)
        if organisation is None:
            with self.store.transaction() as conn:
                org_id = self.accounts.add_organisation(conn, LOCAL_ORGANISATION, self.now())
        else:
            org_id = organisation.id
        return Actor(name=name, role=OPERATOR, organisation_id=org_id,
                     organisation=LOCAL_ORGANISATION, client="cli")

    # Organisations and users ---------------------------------------------------------------

    def bootstrap_admin(self, actor: Actor, username: str, password: str, organisation: str) -> User:
        """Create the first admin; refused once any admin exists."""
        if self.accounts.admins() > 0:
            self._refuse(actor, "user.bootstrap", "an admin already exists; admins create users")
        return self._create_user(actor, username, password, "admin", organisation, "user.bootstrap")

    def roles_creatable_by(self, actor: Actor) -> tuple[str, ...]:
        """The roles actor may give a new user: every role for the operator and for an admin
        of the deployment's own organisation; an agency's admin, its own organisation's roles,
        not those that act for the whole deployment."""
        if actor.role == OPERATOR or (allowed(actor.role, "users.manage")
                                      and self.of_deployment_organisation(actor)):
            return ROLES
        return tuple(r for r in ROLES if r not in DEPLOYMENT_ROLES) if allowed(
            actor.role, "users.manage") else ()

    def of_deployment_organisation(self, actor: Actor) -> bool:
        """Whether actor belongs to the operator's own organisation (an empty setting: none)."""
        own = self.settings.deployment_organisation.strip()
        return bool(own) and actor.organisation == own

    def create_user(self, actor: Actor, username: str, password: str, role: str,
                    organisation: str) -> User:
        """Create a user; an investigator stays pending until a supervisor of the same
        organisation approves them. An admin creates users in their own organisation only,
        and no auditor or data-protection officer (they read every organisation's records)
        unless that organisation is the operator's own (FACESEARCH_DEPLOYMENT_ORGANISATION);
        the operator creates any, in any organisation, and the organisation if it is new."""
        self.authorise(actor, "users.manage", "user.create")
        role = check_role(role)
        refusal = None
        if actor.role != OPERATOR and organisation.strip() != actor.organisation:
            # The same answer whether that organisation exists or not.
            refusal = ("another organisation", "admins create users in their own organisation only")
        elif role not in self.roles_creatable_by(actor):
            refusal = (f"role {role} is the operator's to give",
                       "auditors and data-protection officers read every organisation's "
                       "records: only the operator and the admins of the operator's own "
                       "organisation create them")
        if refusal:
            self._audit_alone(actor, "user.create.refused", {
                "reason": refusal[0], "username": username[:100], "role": role})
            raise Forbidden(refusal[1])
        return self._create_user(actor, username, password, role, organisation, "user.create")

    def _create_user(self, actor: Actor, username: str, password: str, role: str,
                     organisation: str, action: str) -> User:
        username, organisation = username.strip(), organisation.strip()
        if not username or len(username) > 100 or not username.isprintable():
            raise InvalidRequest("a username is 1 to 100 printable characters")
        if not organisation or len(organisation) > 200:
            raise InvalidRequest("a user needs an organisation (at most 200 characters)")
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"a password needs at least {MIN_PASSWORD} characters")
        if self.accounts.user(username=username) is not None:
            raise InvalidRequest("that username is taken")
        existing = self.accounts.organisation(organisation)
        with self.store.transaction() as conn:
            org_id = existing.id if existing else self.accounts.add_organisation(conn, organisation, self.now())
            user_id = self.accounts.add_user(conn, org_id, username, role, initial_status(role),
                                             _hasher.hash(password), self.now())
            self._audit(conn, actor, action, {"user_id": user_id, "username": username,
                                              "role": role, "organisation": organisation})
        user = self.accounts.user(user_id=user_id)
        assert user is not None
        return user

    def users(self, actor: Actor) -> list[User]:
        """The users of the actor's organisation; every user for the operator."""
        self.authorise(actor, "users.read", "user.list")
        scope = None if actor.role == OPERATOR else actor.organisation_id
        found = self.accounts.users(scope)
        # Staff names and roles are personal data too: reading them is recorded.
        self._audit_alone(actor, "user.list", {"users": len(found)})
        return found

    def approve_user(self, actor: Actor, user_id: int) -> User:
        """A supervisor approves a pending investigator of their own organisation."""
        self.authorise(actor, "users.approve", "user.approve")
        user = self._user_in_scope(actor, user_id, "user.approve")
        with self.store.transaction() as conn:
            # From pending only, in the update itself: a user disabled since they were read
            # stays disabled.
            done = self.accounts.set_status(conn, user.id, "active", actor.user_id, self.now(),
                                            was="pending")
            if done:
                self._audit(conn, actor, "user.approve", {"user_id": user.id, "username": user.username})
        if not done:
            self._audit_alone(actor, "user.approve.refused", {
                "reason": "the user is not pending", "user_id": user_id})
            raise InvalidRequest("only a pending user can be approved")
        approved = self.accounts.user(user_id=user.id)
        assert approved is not None
        return approved

    def disable_user(self, actor: Actor, user_id: int) -> User:
        """Disable an account and end its sessions; its API keys stop working with it."""
        self.authorise(actor, "users.manage", "user.disable")
        user = self._user_in_scope(actor, user_id, "user.disable")
        if user.id == actor.user_id:
            raise InvalidRequest("you cannot disable your own account")
        with self.store.transaction() as conn:
            self.accounts.set_status(conn, user.id, "disabled", actor.user_id, self.now())
            self.accounts.end_sessions_of(conn, user.id)
            self._audit(conn, actor, "user.disable", {"user_id": user.id, "username": user.username})
        disabled = self.accounts.user(user_id=user.id)
        assert disabled is not None
        return disabled

    def _user_in_scope(self, actor: Actor, user_id: int, action: str) -> User:
        """The user if the actor may act on them: one of the actor's organisation, any for the
        operator. A user of another organisation is refused exactly like a missing one (404),
        so that neither their existence nor their organisation is revealed."""
        user = self.accounts.user(user_id=user_id)
        if user is None or (actor.role != OPERATOR and user.organisation_id != actor.organisation_id):
            self._audit_alone(actor, f"{action}.refused", {
                "reason": "no such user in the organisation", "user_id": user_id})
            raise NotFound("your organisation has no such user")
        return user

    # Log-in and sessions --------------------------------------------------------------------

    def login(self, username: str, password: str, client: str,
              browser: str | None = None) -> tuple[Actor, str, str]:
        """Check a password; returns the actor, a session token (for a cookie) and its CSRF
        token. Every failure reads the same, whatever the reason. The actor's stage says
        whether the session still owes its second factor (SignIn.verify_second_factor, or
        SignIn.confirm_enrolment for a user with none yet): until then it may do nothing else.
        A user linked to an identity provider signs in there, never with a password.

        Throttled per username and per client address (see lock_seconds); a browser that has
        logged in as this user before (browser: its remember_browser token) is throttled on its
        own instead, so a stranger's failures never lock the user out of it. A throttled
        attempt is refused before its password is hashed: a flood costs no argon2 memory."""
        attempt = Actor(name=username[:100] or "-", role="anonymous", client=client)
        user = self.accounts.user(username=username)
        known = (user is not None and browser is not None
                 and self.accounts.device_user(token_hash(browser), self.now()) == user.id)
        keys = ([f"device:{token_hash(browser)}"] if known and browser
                else [f"user:{username[:100]}", f"addr:{client_key(client)[:100]}"])
        wait = self._claim_attempt(keys)
        if wait:
            # Refused unchecked, so it says nothing of the account: aggregated like any
            # anonymous refusal. A wrong password (below) is recorded each time.
            self._audit_anonymous_refusal(attempt, client, "login.refused", "throttled after failures")
            raise RateLimited(f"too many failed log-ins; try again in {wait} s", wait)
        try:
            with _ARGON2_AT_ONCE:
                _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
            ok = user is not None and user.status == "active"
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None:
            self._audit_alone(attempt, "login.refused", {"reason": "bad credentials or inactive"})
            raise NotAuthenticated("wrong username or password, or the account is not active")
        if user.identity_provider:
            self._audit_alone(attempt, "login.refused", {"reason": "signs in through a provider",
                                                         "provider": user.identity_provider})
            raise NotAuthenticated("this account signs in through your agency "
                                   f"({user.identity_provider}), not with a password")
        if _hasher.check_needs_rehash(user.password_hash):
            self.accounts.set_password_hash(user.id, _hasher.hash(password))
        stage = stage_after_password(user)
        actor = _actor_of(user, client, stage)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = self._session_expiry() if stage == "full" else (
            self.clock() + timedelta(minutes=PENDING_LOGIN_MINUTES)).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            # The user's name and browser start afresh; the address (which other users may
            # share) only takes this attempt back.
            self.accounts.settle_login(conn, reset=[k for k in keys if not k.startswith("addr:")],
                                       undo=[k for k in keys if k.startswith("addr:")])
            self.accounts.add_session(conn, token_hash(token), user.id, csrf, self.now(), expires,
                                      stage)
            if stage == "full":
                self._audit(conn, actor, "login", {"remembered_browser": known})
            else:  # "login" is recorded once the second factor is given (SignIn)
                self._audit(conn, actor, "login.password", {"remembered_browser": known,
                                                            "second_factor": stage})
        self.accounts.forget_stale_logins(
            (self.clock() - timedelta(days=1)).isoformat(timespec="seconds"), self.now())
        return actor, token, csrf

    def _session_expiry(self) -> str:
        """When a full session started now ends."""
        return (self.clock() + timedelta(hours=self.settings.session_hours)).isoformat(timespec="seconds")

    def _claim_attempt(self, keys: list[str]) -> int:
        """Count an attempt against every key before its password is checked, and return 0;
        or, where a key is waiting, count nothing (a failure during a wait does not extend
        it) and return the seconds left. The keys' rows are locked while this decides, so N
        parallel attempts are counted one after another and at most the allowed number get
        through: the check and the count are one step."""
        now = self.clock()
        stamp = now.isoformat(timespec="seconds")
        forgotten = (now - THROTTLE_WINDOW).isoformat(timespec="seconds")
        allowed, longest = self.settings.login_failures_allowed, self.settings.login_lock_max_seconds
        with self.store.transaction() as conn:
            rows = self.accounts.lock_throttles(conn, keys, stamp)
            waits = [math.ceil((datetime.fromisoformat(r.locked_until) - now).total_seconds())
                     for r in rows if r.locked_until]
            if max(waits, default=0) > 0:
                return max(waits)
            for row in rows:
                failures = (row.failures if row.last_at >= forgotten else 0) + 1
                wait = lock_seconds(failures, allowed, longest)
                until = (now + timedelta(seconds=wait)).isoformat(timespec="seconds") if wait else None
                self.accounts.set_throttle(conn, Throttle(row.key, failures, until, stamp))
        return 0

    def remember_browser(self, actor: Actor, browser: str | None) -> str:
        """A token for the browser actor has just logged in with, to send with its next log-ins
        (see login): the browser's own while it lasts, else a new one."""
        assert actor.user_id is not None
        if browser and self.accounts.device_user(token_hash(browser), self.now()) == actor.user_id:
            return browser
        token = secrets.token_urlsafe(32)
        expires = (self.clock() + timedelta(days=self.browser_days)).isoformat(timespec="seconds")
        with self.store.transaction() as conn:
            self.accounts.add_device(conn, token_hash(token), actor.user_id, self.now(), expires)
        return token

    def logout(self, actor: Actor, session_token: str) -> None:
        """End the session, a full one or one still owing its second factor (SignIn.pending_login
        gives the latter's actor)."""
        with self.store.transaction() as conn:
            self.accounts.end_session(conn, token_hash(session_token))
            self._audit(conn, actor, "logout", {})

    def authenticate(self, client: str, *, session_token: str | None = None,
                     api_key: str | None = None, target: str = "") -> tuple[Actor, str | None]:
        """The actor behind a session cookie or an API key, and the session's CSRF token
        (None for API keys, which a browser never sends by itself). Refusals are audited,
        aggregated per client and hour (anyone can send them)."""
        user, csrf, stage = None, None, "full"
        if api_key:
            user_id = self.accounts.user_id_for_key(token_hash(api_key))
            user = self.accounts.user(user_id=user_id) if user_id else None
        elif session_token:
            found = self.accounts.session(token_hash(session_token), self.now())
            if found:
                user, csrf, stage = self.accounts.user(user_id=found.user_id), found.csrf_token, found.stage
        if user is None or user.status != "active" or stage != "full":
            reason = ("no credentials" if not (api_key or session_token) else
                      "second factor owed" if user is not None and user.status == "active"
                      else "invalid credentials")
            self._audit_anonymous_refusal(Actor(name="anonymous", role="anonymous", client=client),
                                          client, "auth.refused", reason, target=target[:200])
            if reason == "second factor owed":
                raise SecondFactorOwed("complete your log-in with your second factor first", stage)
            raise NotAuthenticated("log in, or send a valid API key")
        return _actor_of(user, client), csrf

    # API keys -----------------------------------------------------------------------------

    def create_api_key(self, actor: Actor, name: str) -> tuple[ApiKey, str]:
        """A new API key for the actor: the key itself is returned once and stored hashed."""
        # Made only from a full session, so a key stands for a log-in that gave every factor
        # the user owes: requests with it ask for no second factor.
        if actor.user_id is None:
            raise PolicyRefused("only user accounts have API keys")
        if actor.stage != "full":
            raise NotAuthenticated("complete your log-in with your second factor first")
        name = name.strip()[:100] or "api key"
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            key_id = self.accounts.add_api_key(conn, actor.user_id, name, secret[:10],
                                               token_hash(secret), self.now())
            self._audit(conn, actor, "api_key.create", {"key_id": key_id, "name": name})
        key = next(k for k in self.accounts.api_keys(actor.user_id) if k.id == key_id)
        return key, secret

    def api_keys(self, actor: Actor) -> list[ApiKey]:
        return self.accounts.api_keys(actor.user_id) if actor.user_id is not None else []

    def revoke_api_key(self, actor: Actor, key_id: int) -> None:
        with self.store.transaction() as conn:
            if actor.user_id is None or not self.accounts.revoke_api_key(conn, key_id, actor.user_id, self.now()):
                raise InvalidRequest("you have no such active key")
            self._audit(conn, actor, "api_key.revoke", {"key_id": key_id})


def _actor_of(user: User, client: str, stage: str = "full") -> Actor:
    return Actor(name=user.username, role=user.role, user_id=user.id,
                 organisation_id=user.organisation_id, organisation=user.organisation, client=client,
                 stage=stage)
