"""Account rules: registration with the age gate, login with throttling and 2FA, sessions,
API tokens, roles. Every security event is written to the audit log in the same transaction
as the change it records. The HTTP routes and tipctl both call these functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import psycopg
import structlog
from valkey.asyncio import Valkey

from tipstream import db
from tipstream.accounts import credentials, queries, sessions, throttle
from tipstream.accounts.credentials import TOTP_SEAL_KIND, SealedTotpSecret
from tipstream.accounts.queries import ApiTokenRow, TotpSecretRow, UserRow
from tipstream.accounts.schemas import (
    STAFF_ROLES,
    ApiToken,
    NewApiToken,
    RecoveryCodes,
    TotpEnrollment,
    User,
)
from tipstream.accounts.sessions import SessionState
from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn, Pool
from tipstream.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Problem,
    TooManyRequests,
    Unauthorized,
)
from tipstream.vault.keys import DecryptionFailed, Keyring, KeyringError
from tipstream.vault.service import INTEGRITY_FAILURES, RotationResult, rewrap_in_batches

log = structlog.get_logger("tipstream.accounts")

API_TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


class Underage(InvalidInput):
    slug, title = "underage", "Below the minimum age"


class EmailTaken(Conflict):
    slug, title = "email-taken", "Email already registered"


class InvalidCredentials(Unauthorized):
    slug, title = "invalid-credentials", "Wrong email or password"


class TotpRequired(Unauthorized):
    slug, title = "totp-required", "A 2FA code is required"


class InvalidTotp(Unauthorized):
    slug, title = "invalid-totp", "Wrong, expired or already used 2FA code"


class LoginLocked(TooManyRequests):
    slug, title = "login-locked", "Too many failed logins; try again later"


class AccountDisabled(Forbidden):
    slug, title = "account-disabled", "Account disabled"


class MfaRequired(Forbidden):
    slug, title = "mfa-required", "2FA is required for this action"


class TotpState(Conflict):
    slug, title = "totp-state", "2FA is not in a state that allows this"


class ApiTokenNotFound(NotFound):
    title = "API token not found"


class TotpUnavailable(Problem):
    # The server, not the request, is at fault: its keyring cannot open the stored secret.
    status, slug, title = 503, "2fa-unavailable", "2FA secrets cannot be read on this server"


@dataclass(frozen=True)
class Principal:
    """Who is making a request, and how they proved it."""

    user: UserRow
    via: Literal["session", "token"]
    session: SessionState | None = None

    @property
    def is_staff(self) -> bool:
        return self.user.role in STAFF_ROLES

    @property
    def mfa_verified(self) -> bool:
        if self.session is not None:
            return self.session.mfa_verified
        # A token can only be created from a 2FA-verified session (see create_api_token).
        return self.user.totp_enabled_at is not None


def public_user(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        role=row.role,  # type: ignore[arg-type]
        permissions=list(row.permissions),
        totp_enabled=row.totp_enabled_at is not None,
        disabled=row.disabled_at is not None,
        created_at=row.created_at,
    )


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def check_minimum_age(settings: Settings, born: date, *, country: str | None = None) -> None:
    minimum = settings.security.min_age
    if country is not None:
        minimum = settings.security.min_age_by_country.get(country.upper(), minimum)
    today = datetime.now(UTC).date()
    if born > today:
        raise InvalidInput("date_of_birth is in the future")
    if age_on(born, today) < minimum:
        raise Underage(f"you must be at least {minimum} years old to register")


async def create_user(
    conn: Conn,
    settings: Settings,
    *,
    email: str,
    password: str,
    date_of_birth: date,
    display_name: str,
    role: str = "viewer",
    actor_id: int | None = None,
    self_registered: bool = False,
    ip: str | None = None,
) -> User:
    """Create an account; actor_id None with self_registered False means the operator (tipctl)."""
    check_minimum_age(settings, date_of_birth)
    password_hash = credentials.hash_password(password)
    async with conn.transaction():
        try:
            row = await queries.insert_user(
                conn,
                email=email.strip(),
                display_name=display_name.strip(),
                password_hash=password_hash,
                date_of_birth=date_of_birth,
                role=role,
            )
        except queries.EmailTaken:
            raise EmailTaken("an account with this email exists already") from None
        await audit.record(
            conn,
            "user.created",
            actor_id=row.id if self_registered else actor_id,
            target_type="user",
            target_id=row.id,
            ip=ip,
            details={"role": role, "self_registered": self_registered},
        )
    return public_user(row)


async def get_user(conn: Conn, user_id: int) -> User:
    return public_user(await queries.user_by_id(conn, user_id))


async def find_user(conn: Conn, id_or_email: str) -> User:
    """A user named by numeric id or email (for tipctl)."""
    if id_or_email.isdigit():
        return await get_user(conn, int(id_or_email))
    row = await queries.user_by_email(conn, id_or_email)
    if row is None:
        raise queries.UserNotFound(f"no user with email {id_or_email}")
    return public_user(row)


async def list_users(
    conn: Conn,
    *,
    role: str | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[User]:
    rows = await queries.list_users(conn, role=role, search=search, limit=limit, offset=offset)
    return [public_user(r) for r in rows]


# --------------------------------------------------------------------------- TOTP secrets at rest
# Sealed with the vault's keyring (credentials.seal_totp_secret). A box without a keyring keeps
# them in clear, and start-up and `tipctl keys rotate` seal them once it has one (docs/security.md).


def _keyring(settings: Settings) -> Keyring | None:
    if not settings.secrets.vault_keys:
        return None
    try:
        return Keyring.parse(settings.secrets.vault_keys)
    except KeyringError as exc:
        raise TotpUnavailable(str(exc)) from None


def _stored_secret(row: UserRow | TotpSecretRow) -> SealedTotpSecret | None:
    if row.totp_kek_id is None or row.totp_wrapped_key is None or row.totp_secret_sealed is None:
        return None
    return SealedTotpSecret(row.totp_kek_id, row.totp_wrapped_key, row.totp_secret_sealed)


def _has_totp_secret(user: UserRow) -> bool:
    return user.totp_secret is not None or user.totp_secret_sealed is not None


def _totp_secret(settings: Settings, user: UserRow) -> str:
    """The user's TOTP secret in clear. A sealed secret that does not open for this user (moved
    from another row, altered) is a wrong code to the caller and an integrity alarm here."""
    stored = _stored_secret(user)
    if stored is None:
        if user.totp_secret is None:
            raise TotpState("this account has no 2FA secret")
        return user.totp_secret
    keyring = _keyring(settings)
    if keyring is None:
        raise TotpUnavailable("this server has no vault keyring (vault_keys) to open 2FA secrets")
    try:
        return credentials.open_totp_secret(keyring, user.id, stored)
    except KeyringError as exc:
        _alarm("accounts.totp_key_missing", user.id, exc)
        raise TotpUnavailable(
            f"this server does not hold key {stored.kek_id} that wraps the 2FA secret; "
            "after `tipctl keys rotate` restart the services"
        ) from None
    except DecryptionFailed as exc:
        INTEGRITY_FAILURES.labels(kind=TOTP_SEAL_KIND).inc()
        _alarm("accounts.totp_integrity_failure", user.id, exc)
        raise InvalidTotp from None


def _alarm(event: str, user_id: int | None, exc: Exception) -> None:
    """Logged at error level without a traceback: the cause is the stored data or the keyring,
    not the code. Messages name ids and key ids, never a secret."""
    log.error(event, user_id=user_id, error=str(exc))


async def _store_new_totp_secret(conn: Conn, settings: Settings, user_id: int, secret: str) -> None:
    keyring = _keyring(settings)
    if keyring is None:
        await queries.set_pending_totp_secret(conn, user_id, clear=secret, sealed=None)
    else:
        sealed = credentials.seal_totp_secret(keyring, user_id, secret)
        await queries.set_pending_totp_secret(conn, user_id, clear=None, sealed=sealed)


async def seal_clear_totp_secrets(conn: Conn, keyring: Keyring, *, batch: int = 100) -> int:
    """Seal every TOTP secret still held in clear (an upgraded system), one committed and
    audited batch at a time; idempotent, and safe beside another sealer (rows are locked in id
    order). Returns how many."""
    sealed = 0
    while True:
        async with conn.transaction():
            rows = await queries.clear_totp_secrets(conn, limit=batch)
            for row in rows:
                assert row.totp_secret is not None
                secret = credentials.seal_totp_secret(keyring, row.id, row.totp_secret)
                await queries.set_sealed_totp_secret(conn, row.id, secret)
                await audit.record(
                    conn,
                    "2fa.secret_sealed",
                    target_type="user",
                    target_id=row.id,
                    details={"kek_id": keyring.active_id},
                )
        if not rows:
            return sealed
        sealed += len(rows)


async def seal_clear_totp_secrets_at_start(pool: Pool, settings: Settings) -> None:
    """Start-up step of the app: seal clear TOTP secrets (a no-op once done). Failures are
    logged, never fatal: logins keep reading clear secrets until a later start seals them."""
    try:
        keyring = _keyring(settings)
        async with pool.connection() as conn:
            if keyring is None:
                clear = await queries.count_clear_totp_secrets(conn)
                if clear:
                    log.warning(
                        "accounts.totp_secrets_in_clear",
                        users=clear,
                        fix="create the vault keyring (tipctl keys init) and restart",
                    )
                return
            sealed = await seal_clear_totp_secrets(conn, keyring)
    except (TotpUnavailable, psycopg.Error, OSError) as exc:
        _alarm("accounts.totp_sealing_failed", None, exc)
        return
    if sealed:
        log.info("accounts.totp_secrets_sealed", users=sealed, kek_id=keyring.active_id)


async def rewrap_totp_secrets(
    conn: Conn,
    keyring: Keyring,
    *,
    batch: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> RotationResult:
    """Re-wrap every sealed TOTP secret's data key under the keyring's active key (part of
    `tipctl keys rotate`), one committed batch at a time, so an interruption resumes."""
    target = keyring.active_id

    async def next_batch(limit: int) -> list[tuple[int, TotpSecretRow]]:
        rows = await queries.totp_secrets_not_wrapped_by(conn, target, limit=limit)
        return [(row.id, row) for row in rows]

    async def rewrap(row: TotpSecretRow) -> None:
        stored = _stored_secret(row)
        assert stored is not None
        try:
            rewrapped = credentials.rewrap_totp_secret(keyring, row.id, stored)
        except (KeyringError, DecryptionFailed) as exc:
            _alarm("accounts.totp_rewrap_failed", row.id, exc)
            raise
        await queries.set_sealed_totp_secret(conn, row.id, rewrapped)

    total = await _totp_secrets_behind(conn, target)
    done, failed = await rewrap_in_batches(
        conn, next_batch, rewrap, batch=batch, total=total, progress=progress
    )
    return RotationResult(done, failed, await _totp_secrets_behind(conn, target))


async def _totp_secrets_behind(conn: Conn, kek_id: str) -> int:
    return sum(n for k, n in (await queries.totp_secrets_by_key(conn)).items() if k != kek_id)


async def totp_secrets_by_key(conn: Conn) -> dict[str, int]:
    """How many sealed TOTP secrets each key-encryption key wraps (tipctl keys status/prune)."""
    return await queries.totp_secrets_by_key(conn)


async def count_clear_totp_secrets(conn: Conn) -> int:
    return await queries.count_clear_totp_secrets(conn)


async def doctor_check(settings: Settings) -> str:
    """tipctl doctor: every sealed TOTP secret's key is in the keyring; secrets in clear only
    where they will be sealed (a keyring exists: the next app start or key rotation does it)."""
    keyring = _keyring(settings)
    async with db.connect(settings) as conn:
        by_key = await queries.totp_secrets_by_key(conn)
        clear = await queries.count_clear_totp_secrets(conn)
    sealed = sum(by_key.values())
    if keyring is None:
        if sealed:
            raise RuntimeError(f"{sealed} sealed 2FA secrets but no vault keyring (vault_keys)")
        if clear:
            raise RuntimeError(
                f"{clear} 2FA secrets stored in clear: create the vault keyring "
                "(tipctl keys init) and restart the app, which seals them"
            )
        return "no 2FA secrets"
    missing = sorted(set(by_key) - set(keyring.keys))
    if missing:
        raise RuntimeError(f"2FA secrets wrapped by keys missing from the keyring: {missing}")
    behind = sum(n for k, n in by_key.items() if k != keyring.active_id)
    notes = [f"{behind} under older keys (tipctl keys rotate)"] if behind else []
    if clear:
        notes.append(f"{clear} still in clear until the next app start or key rotation")
    return f"{sealed} sealed" + "".join(f", {note}" for note in notes)


async def _verify_second_factor(
    conn: Conn,
    settings: Settings,
    user: UserRow,
    *,
    totp_code: str | None,
    recovery_code: str | None,
) -> str:
    """Check a TOTP or recovery code; return which was used. Codes are single-use."""
    if totp_code is not None:
        step = credentials.totp_match_step(_totp_secret(settings, user), totp_code)
        if step is not None and await queries.claim_totp_step(conn, user.id, step):
            return "totp"
        raise InvalidTotp
    if recovery_code is not None:
        code_hash = credentials.sha256_hex(credentials.normalize_recovery_code(recovery_code))
        if await queries.use_recovery_code(conn, user.id, code_hash):
            return "recovery_code"
        raise InvalidTotp
    raise TotpRequired("this account has 2FA: send totp_code or recovery_code")


async def login(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    *,
    email: str,
    password: str,
    totp_code: str | None = None,
    recovery_code: str | None = None,
    ip: str,
    user_agent: str | None = None,
) -> tuple[str, SessionState, User]:
    """Check credentials; return the new session's cookie value, its state and the user."""
    wait = await throttle.locked_for(kv, settings, email=email, ip=ip)
    if wait:
        raise LoginLocked(
            f"too many failed logins; try again in {wait} seconds",
            headers={"Retry-After": str(wait)},
        )
    user = await queries.user_by_email(conn, email)
    password_ok = credentials.verify_password(user.password_hash if user else None, password)
    if user is None or not password_ok:
        await _login_failed(conn, kv, settings, email=email, ip=ip, user=user, why="password")
        raise InvalidCredentials
    if user.disabled_at is not None:
        raise AccountDisabled("this account is disabled; contact the operator")
    mfa_verified = False
    if user.totp_enabled_at is not None:
        try:
            async with conn.transaction():
                method = await _verify_second_factor(
                    conn, settings, user, totp_code=totp_code, recovery_code=recovery_code
                )
        except InvalidTotp:
            await _login_failed(conn, kv, settings, email=email, ip=ip, user=user, why="2fa")
            raise
        mfa_verified = True
    else:
        method = "password"
    await throttle.clear_account(kv, settings, email=email)
    if credentials.password_needs_rehash(user.password_hash):
        await queries.set_password_hash(conn, user.id, credentials.hash_password(password))
    session_id, state = await sessions.create(
        kv, settings, user_id=user.id, mfa_verified=mfa_verified
    )
    async with conn.transaction():
        await queries.insert_session(
            conn,
            id_hash=state.id_hash,
            user_id=user.id,
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.security.session_ttl_seconds),
            ip=ip,
            user_agent=(user_agent or "")[:300] or None,
        )
        await audit.record(
            conn,
            "login.success",
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
            ip=ip,
            details={"method": method},
        )
    return session_id, state, public_user(user)


async def _login_failed(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    *,
    email: str,
    ip: str,
    user: UserRow | None,
    why: str,
) -> None:
    locked = await throttle.record_failure(kv, settings, email=email, ip=ip)
    await audit.record(
        conn,
        "login.locked" if locked else "login.failure",
        actor_id=user.id if user else None,
        target_type="user" if user else None,
        target_id=user.id if user else None,
        ip=ip,
        details={"reason": why, "known_email": user is not None},
    )


async def authenticate_session(
    conn: Conn, kv: Valkey, settings: Settings, session_id: str
) -> Principal | None:
    state = await sessions.load(kv, settings, session_id)
    if state is None:
        return None
    try:
        user = await queries.user_by_id(conn, state.user_id)
    except queries.UserNotFound:
        return None
    if user.disabled_at is not None:
        return None
    return Principal(user=user, via="session", session=state)


async def authenticate_token(conn: Conn, token: str) -> Principal | None:
    if not token.startswith("tsk_") or len(token) > 100:
        return None
    row = await queries.api_token_by_hash(conn, credentials.sha256_hex(token))
    if row is None:
        return None
    # "Last used" is for humans reviewing their tokens: minute precision spares a durable
    # write on nearly every scripted request.
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at > API_TOKEN_TOUCH_INTERVAL:
        await queries.touch_api_token(conn, row.id)
    user = await queries.user_by_id(conn, row.user_id)
    if user.disabled_at is not None:
        return None
    return Principal(user=user, via="token")


async def logout(conn: Conn, kv: Valkey, settings: Settings, principal: Principal) -> None:
    if principal.session is None:
        return
    await sessions.drop(kv, settings, principal.user.id, [principal.session.id_hash])
    async with conn.transaction():
        await queries.revoke_session(conn, principal.session.id_hash)
        await audit.record(
            conn,
            "logout",
            actor_id=principal.user.id,
            target_type="user",
            target_id=principal.user.id,
        )


async def change_password(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    ip: str | None = None,
) -> None:
    """Change the password and end every other session of the user."""
    if not credentials.verify_password(principal.user.password_hash, current_password):
        raise InvalidCredentials("the current password is wrong")
    if current_password == new_password:
        raise InvalidInput("the new password must differ from the current one")
    keep = principal.session.id_hash if principal.session else None
    async with conn.transaction():
        await queries.set_password_hash(
            conn, principal.user.id, credentials.hash_password(new_password)
        )
        revoked = await queries.revoke_sessions(conn, principal.user.id, except_hash=keep)
        await audit.record(
            conn,
            "password.changed",
            actor_id=principal.user.id,
            target_type="user",
            target_id=principal.user.id,
            ip=ip,
            details={"sessions_ended": len(revoked)},
        )
    await sessions.drop(kv, settings, principal.user.id, revoked)


async def begin_totp(conn: Conn, settings: Settings, principal: Principal) -> TotpEnrollment:
    if principal.user.totp_enabled_at is not None:
        raise TotpState("2FA is already enabled on this account")
    secret = credentials.new_totp_secret()
    await _store_new_totp_secret(conn, settings, principal.user.id, secret)
    uri = credentials.totp_uri(
        secret, account=principal.user.email, issuer=settings.security.totp_issuer
    )
    return TotpEnrollment(secret=secret, otpauth_uri=uri, qr_svg=credentials.qr_svg(uri))


async def confirm_totp(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    principal: Principal,
    *,
    code: str,
    ip: str | None = None,
) -> RecoveryCodes:
    """Turn 2FA on with a first valid code; return the recovery codes (shown only now)."""
    async with conn.transaction():
        user = await queries.user_by_id(conn, principal.user.id, for_update=True)
        if user.totp_enabled_at is not None:
            raise TotpState("2FA is already enabled on this account")
        if not _has_totp_secret(user):
            raise TotpState("start enrolment first (POST /api/auth/2fa/enroll)")
        step = credentials.totp_match_step(_totp_secret(settings, user), code)
        if step is None:
            raise InvalidTotp
        codes = credentials.new_recovery_codes()
        await queries.enable_totp(conn, user.id, step)
        await queries.replace_recovery_codes(
            conn, user.id, [credentials.sha256_hex(c) for c in codes]
        )
        await audit.record(
            conn, "2fa.enabled", actor_id=user.id, target_type="user", target_id=user.id, ip=ip
        )
    if principal.session is not None:
        await sessions.mark_mfa_verified(kv, settings, principal.session.id_hash)
    return RecoveryCodes(recovery_codes=codes)


async def disable_totp(
    conn: Conn, settings: Settings, principal: Principal, *, code: str, ip: str | None = None
) -> None:
    if principal.is_staff:
        raise Forbidden("2FA is mandatory for moderators and admins")
    async with conn.transaction():
        user = await queries.user_by_id(conn, principal.user.id, for_update=True)
        if user.totp_enabled_at is None:
            raise TotpState("2FA is not enabled on this account")
        await _verify_second_factor(conn, settings, user, totp_code=code, recovery_code=None)
        await queries.disable_totp(conn, user.id)
        await audit.record(
            conn, "2fa.disabled", actor_id=user.id, target_type="user", target_id=user.id, ip=ip
        )


async def reset_totp(
    conn: Conn, kv: Valkey, settings: Settings, user_id: int, *, actor_id: int | None
) -> None:
    """Admin recovery: remove a user's 2FA (they must enrol again) and end their sessions."""
    async with conn.transaction():
        await queries.user_by_id(conn, user_id, for_update=True)
        await queries.disable_totp(conn, user_id)
        await queries.revoke_sessions(conn, user_id)
        await audit.record(
            conn, "2fa.reset", actor_id=actor_id, target_type="user", target_id=user_id
        )
    await sessions.drop_all(kv, settings, user_id)


def _token_out(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


async def create_api_token(
    conn: Conn,
    principal: Principal,
    *,
    name: str,
    expires_in_days: int | None,
    ip: str | None = None,
) -> NewApiToken:
    if principal.via != "session":
        raise Forbidden("API tokens are created from a browser session, not with another token")
    if principal.is_staff and not principal.mfa_verified:
        raise MfaRequired("enrol and verify 2FA before creating an API token")
    token = credentials.new_api_token()
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    async with conn.transaction():
        row = await queries.insert_api_token(
            conn,
            user_id=principal.user.id,
            name=name,
            token_hash=credentials.sha256_hex(token),
            expires_at=expires_at,
        )
        await audit.record(
            conn,
            "api_token.created",
            actor_id=principal.user.id,
            target_type="api_token",
            target_id=row.id,
            ip=ip,
            details={"name": name},
        )
    return NewApiToken(id=row.id, name=row.name, expires_at=row.expires_at, token=token)


async def list_api_tokens(conn: Conn, principal: Principal) -> list[ApiToken]:
    return [_token_out(r) for r in await queries.api_tokens_of(conn, principal.user.id)]


async def revoke_api_token(
    conn: Conn, principal: Principal, token_id: int, *, ip: str | None = None
) -> None:
    async with conn.transaction():
        # Scoped to the caller: another user's token id is simply "not found".
        if not await queries.revoke_api_token(conn, principal.user.id, token_id):
            raise ApiTokenNotFound(f"no active API token {token_id} on your account")
        await audit.record(
            conn,
            "api_token.revoked",
            actor_id=principal.user.id,
            target_type="api_token",
            target_id=token_id,
            ip=ip,
        )


async def set_role(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    user_id: int,
    role: str,
    *,
    actor_id: int | None,
    ip: str | None = None,
) -> User:
    async with conn.transaction():
        before = await queries.user_by_id(conn, user_id, for_update=True)
        if before.role == role:
            return public_user(before)
        if actor_id == user_id:
            raise Forbidden("you cannot change your own role")
        row = await queries.set_role(conn, user_id, role)
        await audit.record(
            conn,
            "user.role_changed",
            actor_id=actor_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            details={"from": before.role, "to": role},
        )
    return public_user(row)


async def set_permissions(
    conn: Conn,
    user_id: int,
    permissions: list[str],
    *,
    actor_id: int | None,
    ip: str | None = None,
) -> User:
    async with conn.transaction():
        before = await queries.user_by_id(conn, user_id, for_update=True)
        row = await queries.set_permissions(conn, user_id, sorted(set(permissions)))
        await audit.record(
            conn,
            "user.permissions_changed",
            actor_id=actor_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            details={"from": list(before.permissions), "to": list(row.permissions)},
        )
    return public_user(row)


async def set_disabled(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    user_id: int,
    *,
    reason: str | None,
    actor_id: int | None,
    ip: str | None = None,
) -> User:
    """Disable (reason given) or re-enable (None). Disabling ends all sessions and tokens."""
    if reason is not None and actor_id == user_id:
        raise Forbidden("you cannot disable your own account")
    async with conn.transaction():
        await queries.user_by_id(conn, user_id, for_update=True)
        row = await queries.set_disabled(conn, user_id, reason)
        if reason is not None:
            await queries.revoke_sessions(conn, user_id)
            await queries.revoke_all_api_tokens(conn, user_id)
        await audit.record(
            conn,
            "user.disabled" if reason else "user.enabled",
            actor_id=actor_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            details={"reason": reason} if reason else {},
        )
    if reason is not None:
        await sessions.drop_all(kv, settings, user_id)
    return public_user(row)


async def unlock_login(kv: Valkey, settings: Settings, email: str) -> None:
    await throttle.unlock(kv, settings, email=email)


async def provision_totp(
    conn: Conn, settings: Settings, user_id: int, *, actor_id: int | None
) -> tuple[TotpEnrollment, RecoveryCodes]:
    """Operator-side 2FA setup (tipctl user create --enable-2fa): enable TOTP at once and hand
    back the secret and recovery codes for the operator to pass on."""
    secret = credentials.new_totp_secret()
    codes = credentials.new_recovery_codes()
    async with conn.transaction():
        user = await queries.user_by_id(conn, user_id, for_update=True)
        if user.totp_enabled_at is not None:
            raise TotpState("2FA is already enabled on this account")
        await _store_new_totp_secret(conn, settings, user_id, secret)
        await queries.enable_totp(conn, user_id, 0)
        await queries.replace_recovery_codes(
            conn, user_id, [credentials.sha256_hex(c) for c in codes]
        )
        await audit.record(
            conn,
            "2fa.enabled",
            actor_id=actor_id,
            target_type="user",
            target_id=user_id,
            details={"provisioned_by_operator": True},
        )
    uri = credentials.totp_uri(secret, account=user.email, issuer=settings.security.totp_issuer)
    enrollment = TotpEnrollment(secret=secret, otpauth_uri=uri, qr_svg=credentials.qr_svg(uri))
    return enrollment, RecoveryCodes(recovery_codes=codes)


async def check_second_factor(conn: Conn, settings: Settings, user_id: int, code: str) -> None:
    """Verify and use up a TOTP code for an action outside a browser session (tipctl
    approvals): the same code cannot approve twice, as at login."""
    async with conn.transaction():
        user = await queries.user_by_id(conn, user_id, for_update=True)
        if user.totp_enabled_at is None:
            raise MfaRequired("this account has no 2FA enrolled")
        await _verify_second_factor(conn, settings, user, totp_code=code, recovery_code=None)


async def display_names(conn: Conn, user_ids: list[int]) -> dict[int, str]:
    """Display names by user id, for staff pages that would otherwise show bare ids."""
    return await queries.display_names(conn, sorted(set(user_ids))) if user_ids else {}
