"""SQL for users, sessions, API tokens and 2FA recovery codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from psycopg.rows import class_row

from tipstream.accounts.credentials import SealedTotpSecret
from tipstream.db import Conn
from tipstream.errors import NotFound


class UserNotFound(NotFound):
    title = "User not found"


@dataclass
class UserRow:
    id: int
    email: str
    display_name: str
    password_hash: str
    date_of_birth: date
    role: str
    permissions: list[str]
    totp_secret: str | None
    totp_enabled_at: datetime | None
    totp_last_step: int
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    password_changed_at: datetime
    # The TOTP secret sealed (migration 0017); totp_secret is only set on rows not sealed yet.
    totp_kek_id: str | None
    totp_wrapped_key: bytes | None
    totp_secret_sealed: bytes | None


@dataclass
class ApiTokenRow:
    id: int
    user_id: int
    name: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


async def insert_user(
    conn: Conn,
    *,
    email: str,
    display_name: str,
    password_hash: str,
    date_of_birth: date,
    role: str,
) -> UserRow:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            """
            INSERT INTO users (email, display_name, password_hash, date_of_birth, role)
            VALUES (%(email)s, %(display_name)s, %(password_hash)s, %(date_of_birth)s, %(role)s)
            ON CONFLICT (email) DO NOTHING
            RETURNING *
            """,
            {
                "email": email,
                "display_name": display_name,
                "password_hash": password_hash,
                "date_of_birth": date_of_birth,
                "role": role,
            },
        )
        row = await cur.fetchone()
    if row is None:
        raise EmailTaken
    return row


class EmailTaken(Exception):
    pass


async def user_by_id(conn: Conn, user_id: int, *, for_update: bool = False) -> UserRow:
    lock = "FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(f"SELECT * FROM users WHERE id = %(id)s {lock}", {"id": user_id})
        row = await cur.fetchone()
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return row


async def display_names(conn: Conn, user_ids: list[int]) -> dict[int, str]:
    cur = await conn.execute(
        "SELECT id, display_name FROM users WHERE id = ANY(%(ids)s)", {"ids": user_ids}
    )
    return {int(str(row["id"])): str(row["display_name"]) for row in await cur.fetchall()}


async def user_by_email(conn: Conn, email: str) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute("SELECT * FROM users WHERE email = %(email)s", {"email": email})
        return await cur.fetchone()


async def list_users(
    conn: Conn, *, role: str | None, search: str | None, limit: int, offset: int
) -> list[UserRow]:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM users
            WHERE (%(role)s::user_role IS NULL OR role = %(role)s::user_role)
              AND (%(search)s::text IS NULL
                   OR email ILIKE '%%' || %(search)s || '%%'
                   OR display_name ILIKE '%%' || %(search)s || '%%')
            ORDER BY id
            LIMIT %(limit)s OFFSET %(offset)s
            """,
            {"role": role, "search": search, "limit": limit, "offset": offset},
        )
        return await cur.fetchall()


async def set_role(conn: Conn, user_id: int, role: str) -> UserRow:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET role = %(role)s WHERE id = %(id)s RETURNING *",
            {"role": role, "id": user_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return row


async def set_permissions(conn: Conn, user_id: int, permissions: list[str]) -> UserRow:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET permissions = %(permissions)s WHERE id = %(id)s RETURNING *",
            {"permissions": permissions, "id": user_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return row


async def set_disabled(conn: Conn, user_id: int, reason: str | None) -> UserRow:
    """Disable with a reason, or enable again with None."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            """
            UPDATE users
            SET disabled_at = CASE WHEN %(reason)s::text IS NULL THEN NULL ELSE now() END,
                disabled_reason = %(reason)s
            WHERE id = %(id)s
            RETURNING *
            """,
            {"reason": reason, "id": user_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return row


async def set_password_hash(conn: Conn, user_id: int, password_hash: str) -> None:
    await conn.execute(
        """
        UPDATE users SET password_hash = %(hash)s, password_changed_at = now()
        WHERE id = %(id)s
        """,
        {"hash": password_hash, "id": user_id},
    )


async def set_pending_totp_secret(
    conn: Conn, user_id: int, *, clear: str | None, sealed: SealedTotpSecret | None
) -> None:
    """Store a new TOTP secret (before 2FA is enabled): sealed, or clear on a box without a
    keyring."""
    await conn.execute(
        """
        UPDATE users
        SET totp_secret = %(clear)s, totp_kek_id = %(kek)s, totp_wrapped_key = %(wrapped)s,
            totp_secret_sealed = %(sealed)s
        WHERE id = %(id)s AND totp_enabled_at IS NULL
        """,
        {"id": user_id, "clear": clear, **_sealed_params(sealed)},
    )


def _sealed_params(sealed: SealedTotpSecret | None) -> dict[str, object]:
    return {
        "kek": sealed.kek_id if sealed else None,
        "wrapped": sealed.wrapped_key if sealed else None,
        "sealed": sealed.sealed if sealed else None,
    }


@dataclass
class TotpSecretRow:
    id: int
    totp_secret: str | None
    totp_kek_id: str | None
    totp_wrapped_key: bytes | None
    totp_secret_sealed: bytes | None


async def clear_totp_secrets(conn: Conn, *, limit: int) -> list[TotpSecretRow]:
    """A batch of users whose TOTP secret is still in clear, locked. Rows locked by a sign-in
    or another sealer are waited for, not skipped: a skipped row would stay in clear until the
    next start. Once the other sealer commits, its rows no longer match and drop out."""
    async with conn.cursor(row_factory=class_row(TotpSecretRow)) as cur:
        await cur.execute(
            """
            SELECT id, totp_secret, totp_kek_id, totp_wrapped_key, totp_secret_sealed
            FROM users WHERE totp_secret IS NOT NULL
            ORDER BY id LIMIT %(limit)s
            FOR UPDATE
            """,
            {"limit": limit},
        )
        return await cur.fetchall()


async def totp_secrets_not_wrapped_by(
    conn: Conn, kek_id: str, *, limit: int
) -> list[TotpSecretRow]:
    """A batch of sealed TOTP secrets wrapped by another key, locked; a row a sign-in holds is
    waited for (it would otherwise stay behind), and drops out once another rotation re-wrapped
    it."""
    async with conn.cursor(row_factory=class_row(TotpSecretRow)) as cur:
        await cur.execute(
            """
            SELECT id, totp_secret, totp_kek_id, totp_wrapped_key, totp_secret_sealed
            FROM users WHERE totp_kek_id IS NOT NULL AND totp_kek_id <> %(kek)s
            ORDER BY id LIMIT %(limit)s
            FOR UPDATE
            """,
            {"kek": kek_id, "limit": limit},
        )
        return await cur.fetchall()


async def set_sealed_totp_secret(conn: Conn, user_id: int, sealed: SealedTotpSecret) -> None:
    """Replace a user's stored TOTP secret (clear or sealed) by this sealed one."""
    await conn.execute(
        """
        UPDATE users
        SET totp_secret = NULL, totp_kek_id = %(kek)s, totp_wrapped_key = %(wrapped)s,
            totp_secret_sealed = %(sealed)s
        WHERE id = %(id)s
        """,
        {"id": user_id, **_sealed_params(sealed)},
    )


async def totp_secrets_by_key(conn: Conn) -> dict[str, int]:
    """How many sealed TOTP secrets each key-encryption key wraps."""
    cur = await conn.execute(
        """
        SELECT totp_kek_id, count(*) AS n FROM users
        WHERE totp_kek_id IS NOT NULL GROUP BY totp_kek_id
        """
    )
    return {str(row["totp_kek_id"]): int(str(row["n"])) for row in await cur.fetchall()}


async def count_clear_totp_secrets(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM users WHERE totp_secret IS NOT NULL")
    row = await cur.fetchone()
    return int(str(row["n"])) if row else 0


async def enable_totp(conn: Conn, user_id: int, step: int) -> None:
    await conn.execute(
        """
        UPDATE users SET totp_enabled_at = now(), totp_last_step = %(step)s
        WHERE id = %(id)s
        """,
        {"step": step, "id": user_id},
    )


async def disable_totp(conn: Conn, user_id: int) -> None:
    await conn.execute(
        """
        UPDATE users
        SET totp_secret = NULL, totp_kek_id = NULL, totp_wrapped_key = NULL,
            totp_secret_sealed = NULL, totp_enabled_at = NULL, totp_last_step = 0
        WHERE id = %(id)s
        """,
        {"id": user_id},
    )
    await conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = %(id)s", {"id": user_id})


async def claim_totp_step(conn: Conn, user_id: int, step: int) -> bool:
    """Record a TOTP step as used; False if it (or a later one) was used already: a replay."""
    cur = await conn.execute(
        """
        UPDATE users SET totp_last_step = %(step)s
        WHERE id = %(id)s AND totp_last_step < %(step)s
        RETURNING id
        """,
        {"step": step, "id": user_id},
    )
    return await cur.fetchone() is not None


async def replace_recovery_codes(conn: Conn, user_id: int, code_hashes: list[str]) -> None:
    await conn.execute("DELETE FROM totp_recovery_codes WHERE user_id = %(id)s", {"id": user_id})
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES (%(id)s, %(hash)s)",
            [{"id": user_id, "hash": h} for h in code_hashes],
        )


async def use_recovery_code(conn: Conn, user_id: int, code_hash: str) -> bool:
    cur = await conn.execute(
        """
        UPDATE totp_recovery_codes SET used_at = now()
        WHERE user_id = %(id)s AND code_hash = %(hash)s AND used_at IS NULL
        RETURNING user_id
        """,
        {"id": user_id, "hash": code_hash},
    )
    return await cur.fetchone() is not None


async def insert_session(
    conn: Conn,
    *,
    id_hash: str,
    user_id: int,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO sessions (id_hash, user_id, expires_at, ip, user_agent)
        VALUES (%(id_hash)s, %(user_id)s, %(expires_at)s, %(ip)s, %(user_agent)s)
        """,
        {
            "id_hash": id_hash,
            "user_id": user_id,
            "expires_at": expires_at,
            "ip": ip,
            "user_agent": user_agent,
        },
    )


async def revoke_sessions(conn: Conn, user_id: int, *, except_hash: str | None = None) -> list[str]:
    """Mark a user's open sessions revoked; return their id hashes for Valkey to drop."""
    cur = await conn.execute(
        """
        UPDATE sessions SET revoked_at = now()
        WHERE user_id = %(user_id)s AND revoked_at IS NULL
          AND (%(except)s::text IS NULL OR id_hash <> %(except)s)
        RETURNING id_hash
        """,
        {"user_id": user_id, "except": except_hash},
    )
    return [str(row["id_hash"]) for row in await cur.fetchall()]


async def revoke_session(conn: Conn, id_hash: str) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = now() WHERE id_hash = %(h)s AND revoked_at IS NULL",
        {"h": id_hash},
    )


async def insert_api_token(
    conn: Conn, *, user_id: int, name: str, token_hash: str, expires_at: datetime | None
) -> ApiTokenRow:
    async with conn.cursor(row_factory=class_row(ApiTokenRow)) as cur:
        await cur.execute(
            """
            INSERT INTO api_tokens (user_id, name, token_hash, expires_at)
            VALUES (%(user_id)s, %(name)s, %(token_hash)s, %(expires_at)s)
            RETURNING *
            """,
            {"user_id": user_id, "name": name, "token_hash": token_hash, "expires_at": expires_at},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def api_token_by_hash(conn: Conn, token_hash: str) -> ApiTokenRow | None:
    """The active (not revoked, not expired) token with this hash."""
    async with conn.cursor(row_factory=class_row(ApiTokenRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM api_tokens
            WHERE token_hash = %(h)s AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())
            """,
            {"h": token_hash},
        )
        return await cur.fetchone()


async def touch_api_token(conn: Conn, token_id: int) -> None:
    await conn.execute(
        "UPDATE api_tokens SET last_used_at = now() WHERE id = %(id)s", {"id": token_id}
    )


async def api_tokens_of(conn: Conn, user_id: int) -> list[ApiTokenRow]:
    async with conn.cursor(row_factory=class_row(ApiTokenRow)) as cur:
        await cur.execute(
            "SELECT * FROM api_tokens WHERE user_id = %(id)s ORDER BY id", {"id": user_id}
        )
        return await cur.fetchall()


async def revoke_api_token(conn: Conn, user_id: int, token_id: int) -> bool:
    cur = await conn.execute(
        """
        UPDATE api_tokens SET revoked_at = now()
        WHERE id = %(tid)s AND user_id = %(uid)s AND revoked_at IS NULL
        RETURNING id
        """,
        {"tid": token_id, "uid": user_id},
    )
    return await cur.fetchone() is not None


async def revoke_all_api_tokens(conn: Conn, user_id: int) -> None:
    await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = %(id)s AND revoked_at IS NULL",
        {"id": user_id},
    )
