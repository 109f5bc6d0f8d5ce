"""Organisations, users, API keys and web sessions."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from facesearch.store.schema import (
    api_keys,
    login_devices,
    login_throttle,
    oidc_logins,
    organisations,
    recovery_codes,
    sessions,
    users,
)


@dataclass(frozen=True)
class Organisation:
    id: int
    name: str
    created_at: str
    jurisdictions: str  # comma-separated ISO codes its searches are limited to; "" = all
    reveal_case_numbers: bool = False  # whether access reports may name its case numbers

    @property
    def jurisdiction_set(self) -> frozenset[str]:
        return frozenset(code for code in self.jurisdictions.split(",") if code)


@dataclass(frozen=True)
class User:
    id: int
    organisation_id: int
    organisation: str
    username: str
    role: str
    status: str
    password_hash: str
    created_at: str
    approved_by: int | None
    approved_at: str | None
    totp_secret: str | None = None
    totp_enrolled_at: str | None = None
    totp_last_step: int | None = None
    identity_provider: str | None = None  # set for users who sign in through an agency's OIDC
    external_subject: str | None = None


@dataclass(frozen=True)
class ApiKey:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class Session:
    user_id: int
    csrf_token: str
    stage: str  # "full", or "code"/"enrol" while its second factor is owed


@dataclass(frozen=True)
class OidcLogin:
    """An OpenID Connect log-in in flight (store.schema.oidc_logins)."""

    provider: str
    nonce_hash: str
    code_verifier: str


@dataclass(frozen=True)
class Throttle:
    """A log-in throttle key's state (store.schema.login_throttle)."""

    key: str
    failures: int
    locked_until: str | None
    last_at: str


_USER_COLUMNS = (users, organisations.c.name.label("organisation"))
# Throttle keys under this prefix keep their count however long they stay untouched (a second
# factor's wrong codes in a row): forget_stale_logins leaves them.
NEVER_FORGOTTEN = "kept:"


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Organisations -------------------------------------------------------------------------

    def organisation(self, name: str) -> Organisation | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(organisations).where(organisations.c.name == name)).mappings().first()
        return Organisation(**row) if row else None

    def organisations(self) -> list[Organisation]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(organisations).order_by(organisations.c.name)).mappings()
            return [Organisation(**r) for r in rows]

    def organisation_by_id(self, organisation_id: int) -> Organisation | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(organisations).where(
                organisations.c.id == organisation_id)).mappings().first()
        return Organisation(**row) if row else None

    def add_organisation(self, conn: Connection, name: str, now: str) -> int:
        return conn.execute(insert(organisations).values(
            name=name, created_at=now, jurisdictions="")).inserted_primary_key[0]

    def set_jurisdictions(self, conn: Connection, organisation_id: int, codes: list[str]) -> None:
        conn.execute(update(organisations).where(organisations.c.id == organisation_id)
                     .values(jurisdictions=",".join(codes)))

    def set_reveal_case_numbers(self, conn: Connection, organisation_id: int, reveal: bool) -> None:
        conn.execute(update(organisations).where(organisations.c.id == organisation_id)
                     .values(reveal_case_numbers=reveal))

    # Users ------------------------------------------------------------------------------------

    def _users(self):  # noqa: ANN202 - a Select
        return select(*_USER_COLUMNS).join(organisations, users.c.organisation_id == organisations.c.id)

    def user(self, *, user_id: int | None = None, username: str | None = None) -> User | None:
        query = self._users()
        query = query.where(users.c.id == user_id) if user_id is not None else query.where(
            users.c.username == username)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return User(**row) if row else None

    def users(self, organisation_id: int | None = None) -> list[User]:
        query = self._users().order_by(organisations.c.name, users.c.username)
        if organisation_id is not None:
            query = query.where(users.c.organisation_id == organisation_id)
        with self.engine.connect() as conn:
            return [User(**r) for r in conn.execute(query).mappings()]

    def admins(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(users).where(
                users.c.role == "admin")).scalar_one()

    def add_user(self, conn: Connection, organisation_id: int, username: str, role: str,
                 status: str, password_hash: str, now: str) -> int:
        return conn.execute(insert(users).values(
            organisation_id=organisation_id, username=username, role=role, status=status,
            password_hash=password_hash, created_at=now)).inserted_primary_key[0]

    def set_status(self, conn: Connection, user_id: int, status: str, by: int | None, now: str,
                   was: str | None = None) -> bool:
        """Set a user's status, only from status `was` if given; whether it was set."""
        values: dict = {"status": status}
        if status == "active":
            values.update(approved_by=by, approved_at=now)
        query = update(users).where(users.c.id == user_id)
        if was is not None:
            query = query.where(users.c.status == was)
        return conn.execute(query.values(**values)).rowcount == 1

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))

    # Second factor and identity providers ------------------------------------------------------

    def set_totp_secret(self, conn: Connection, user_id: int, secret: str | None) -> None:
        """Give a user with none a TOTP secret, not enrolled until confirmed; or with None,
        clear it, its last step and the user's recovery codes."""
        query = update(users).where(users.c.id == user_id)
        if secret is not None:
            query = query.where(users.c.totp_secret.is_(None))
        conn.execute(query.values(totp_secret=secret, totp_enrolled_at=None, totp_last_step=None))
        if secret is None:
            conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))

    def confirm_totp(self, conn: Connection, user_id: int, secret: str, step: int, now: str) -> bool:
        """Mark the secret enrolled, if it is still the user's pending one; whether it was."""
        return conn.execute(update(users).where(
            users.c.id == user_id, users.c.totp_secret == secret,
            users.c.totp_enrolled_at.is_(None)).values(
            totp_enrolled_at=now, totp_last_step=step)).rowcount == 1

    def claim_totp_step(self, conn: Connection, user_id: int, step: int) -> bool:
        """Record that a code of time step `step` was accepted, only if no code of that step or a
        later one was: one update, so two log-ins racing with one code cannot both win."""
        return conn.execute(update(users).where(
            users.c.id == user_id, users.c.totp_enrolled_at.is_not(None),
            (users.c.totp_last_step.is_(None)) | (users.c.totp_last_step < step)).values(
            totp_last_step=step)).rowcount == 1

    def replace_recovery_codes(self, conn: Connection, user_id: int, code_hashes: list[str],
                               now: str) -> None:
        conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))
        conn.execute(insert(recovery_codes), [
            {"user_id": user_id, "code_hash": h, "created_at": now} for h in code_hashes])

    def use_recovery_code(self, conn: Connection, user_id: int, code_hash: str, now: str) -> bool:
        """Spend an unused recovery code; whether there was one."""
        return conn.execute(update(recovery_codes).where(
            recovery_codes.c.user_id == user_id, recovery_codes.c.code_hash == code_hash,
            recovery_codes.c.used_at.is_(None)).values(used_at=now)).rowcount == 1

    def recovery_codes_left(self, user_id: int) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(recovery_codes).where(
                recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))).scalar_one()

    def external_user_id(self, provider: str, subject: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.id).where(
                users.c.identity_provider == provider, users.c.external_subject == subject)).scalar()

    def link_external(self, conn: Connection, user_id: int, provider: str | None,
                      subject: str | None) -> None:
        conn.execute(update(users).where(users.c.id == user_id).values(
            identity_provider=provider, external_subject=subject))

    def set_role(self, conn: Connection, user_id: int, role: str) -> None:
        conn.execute(update(users).where(users.c.id == user_id).values(role=role))

    def add_oidc_login(self, conn: Connection, state_hash: str, provider: str, nonce_hash: str,
                       code_verifier: str, now: str, expires_at: str) -> None:
        conn.execute(oidc_logins.delete().where(oidc_logins.c.expires_at <= now))
        conn.execute(insert(oidc_logins).values(
            state_hash=state_hash, provider=provider, nonce=nonce_hash, code_verifier=code_verifier,
            created_at=now, expires_at=expires_at))

    def take_oidc_login(self, conn: Connection, state_hash: str, now: str) -> OidcLogin | None:
        """The log-in of this state if it has not expired, deleted: a state is good once. One
        DELETE ... RETURNING, so of two callbacks racing with one state only the one whose
        delete removed the row gets it (PostgreSQL's read committed lets both read it)."""
        row = conn.execute(oidc_logins.delete().where(oidc_logins.c.state_hash == state_hash)
                           .returning(oidc_logins)).mappings().first()
        if row is None or row["expires_at"] <= now:
            return None
        return OidcLogin(row["provider"], row["nonce"], row["code_verifier"])

    # API keys ----------------------------------------------------------------------------------

    def add_api_key(self, conn: Connection, user_id: int, name: str, prefix: str, key_hash: str,
                    now: str) -> int:
        return conn.execute(insert(api_keys).values(
            user_id=user_id, name=name, prefix=prefix, key_hash=key_hash,
            created_at=now)).inserted_primary_key[0]

    def api_keys(self, user_id: int) -> list[ApiKey]:
        query = select(api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.prefix,
                       api_keys.c.created_at, api_keys.c.revoked_at).where(
            api_keys.c.user_id == user_id).order_by(api_keys.c.id)
        with self.engine.connect() as conn:
            return [ApiKey(**r) for r in conn.execute(query).mappings()]

    def user_id_for_key(self, key_hash: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(api_keys.c.user_id).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))).scalar()

    def revoke_api_keys_of(self, conn: Connection, user_id: int, now: str) -> int:
        """Revoke every active key of the user; how many."""
        return conn.execute(update(api_keys).where(
            api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None)).values(
            revoked_at=now)).rowcount

    def revoke_api_key(self, conn: Connection, key_id: int, user_id: int, now: str) -> bool:
        done = conn.execute(update(api_keys).where(
            api_keys.c.id == key_id, api_keys.c.user_id == user_id,
            api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
        return done.rowcount == 1

    # Sessions -------------------------------------------------------------------------------

    def add_session(self, conn: Connection, token_hash: str, user_id: int, csrf: str, now: str,
                    expires_at: str, stage: str = "full") -> None:
        conn.execute(insert(sessions).values(token_hash=token_hash, user_id=user_id, csrf_token=csrf,
                                             created_at=now, expires_at=expires_at, stage=stage))

    def session(self, token_hash: str, now: str) -> Session | None:
        """A session that has not expired."""
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions.c.user_id, sessions.c.csrf_token, sessions.c.stage).where(
                sessions.c.token_hash == token_hash, sessions.c.expires_at > now)).first()
        return Session(*row) if row else None

    def promote_session(self, conn: Connection, token_hash: str, new_token_hash: str, was: str,
                        now: str, expires_at: str) -> bool:
        """Make an unexpired session of stage `was` full, under a new token, lasting until
        expires_at; whether it was in that stage (once only, under races)."""
        return conn.execute(update(sessions).where(
            sessions.c.token_hash == token_hash, sessions.c.stage == was,
            sessions.c.expires_at > now).values(
            stage="full", token_hash=new_token_hash, expires_at=expires_at)).rowcount == 1

    def end_session(self, conn: Connection, token_hash: str) -> None:
        conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))

    def end_expired_sessions(self, conn: Connection, now: str) -> int:
        return conn.execute(sessions.delete().where(sessions.c.expires_at <= now)).rowcount

    def end_sessions_of(self, conn: Connection, user_id: int) -> None:
        conn.execute(sessions.delete().where(sessions.c.user_id == user_id))

    # Log-in throttle and remembered browsers ------------------------------------------------

    def lock_throttles(self, conn: Connection, keys: list[str], now: str) -> list[Throttle]:
        """The keys' rows, created if new and locked until conn's transaction ends: the insert
        takes SQLite's write lock (it must be the transaction's first statement, before any
        read), FOR UPDATE the rows' locks on PostgreSQL. Keys are taken in one order, so two
        log-ins never wait for each other's second key."""
        keys = sorted(set(keys))
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(login_throttle).values(
            [{"key": k, "failures": 0, "last_at": now} for k in keys]).on_conflict_do_nothing())
        rows = conn.execute(select(login_throttle).where(login_throttle.c.key.in_(keys))
                            .order_by(login_throttle.c.key).with_for_update()).mappings()
        return [Throttle(**r) for r in rows]

    def count_failure(self, conn: Connection, key: str, now: str) -> int:
        """Count one more failure under `key` (created if new); the count now."""
        throttle = self.lock_throttles(conn, [key], now)[0]
        self.set_throttle(conn, Throttle(key, throttle.failures + 1, None, now))
        return throttle.failures + 1

    def failures(self, key: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(login_throttle.c.failures).where(
                login_throttle.c.key == key)).scalar() or 0

    def set_throttle(self, conn: Connection, throttle: Throttle) -> None:
        conn.execute(update(login_throttle).where(login_throttle.c.key == throttle.key).values(
            failures=throttle.failures, locked_until=throttle.locked_until, last_at=throttle.last_at))

    def settle_login(self, conn: Connection, reset: list[str], undo: list[str]) -> None:
        """After a successful log-in: clear the reset keys (the user's name, their browser),
        and take the attempt back from the undo keys (the address, which other users share):
        its count and the wait it set, since it was let through only because the address was
        not waiting. Otherwise a success that was the address's last allowed attempt would
        keep everyone behind it waiting. (A failure counted in between loses its wait too;
        the address's next attempt, counted on top of its failures, sets it again.)"""
        conn.execute(update(login_throttle).where(login_throttle.c.key.in_(reset))
                     .values(failures=0, locked_until=None))
        conn.execute(update(login_throttle).where(login_throttle.c.key.in_(undo),
                                                  login_throttle.c.failures > 0)
                     .values(failures=login_throttle.c.failures - 1, locked_until=None))

    def add_device(self, conn: Connection, token_hash: str, user_id: int, now: str,
                   expires_at: str) -> None:
        conn.execute(insert(login_devices).values(token_hash=token_hash, user_id=user_id,
                                                  created_at=now, expires_at=expires_at))

    def device_user(self, token_hash: str, now: str) -> int | None:
        """The user a browser has logged in as, while its token lasts."""
        with self.engine.connect() as conn:
            return conn.execute(select(login_devices.c.user_id).where(
                login_devices.c.token_hash == token_hash,
                login_devices.c.expires_at > now)).scalar()

    def forget_stale_logins(self, throttled_before: str, now: str) -> None:
        """Drop throttle keys untouched since throttled_before (but those of
        NEVER_FORGOTTEN, counts that idle time does not undo) and expired browser tokens."""
        # SKIP LOCKED (PostgreSQL): a key a log-in holds now is not stale; waiting for it while
        # holding others could deadlock with that log-in.
        stale = select(login_throttle.c.key).where(
            login_throttle.c.last_at < throttled_before,
            ~login_throttle.c.key.startswith(NEVER_FORGOTTEN, autoescape=True),
        ).with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            conn.execute(login_throttle.delete().where(login_throttle.c.key.in_(stale)))
            conn.execute(login_devices.delete().where(login_devices.c.expires_at <= now))
