"""Browser sessions: the live state in Valkey (shared by every worker), keyed by a hash of the
cookie value so a dump of Valkey holds no usable session ids."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from valkey.asyncio import Valkey

from tipstream.accounts.credentials import new_session_id, sha256_hex
from tipstream.config import Settings
from tipstream.kv import key


@dataclass(frozen=True)
class SessionState:
    id_hash: str
    user_id: int
    csrf_token: str
    mfa_verified: bool


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix pins the cookie to this host and path and requires Secure.
    return "__Host-tipstream" if settings.security.cookie_secure else "tipstream_session"


def _session_key(settings: Settings, id_hash: str) -> str:
    return key(settings, "session", id_hash)


def _user_index_key(settings: Settings, user_id: int) -> str:
    return key(settings, "user-sessions", user_id)


async def create(
    kv: Valkey, settings: Settings, *, user_id: int, mfa_verified: bool
) -> tuple[str, SessionState]:
    session_id = new_session_id()
    state = SessionState(
        id_hash=sha256_hex(session_id),
        user_id=user_id,
        csrf_token=secrets.token_urlsafe(32),
        mfa_verified=mfa_verified,
    )
    ttl = settings.security.session_ttl_seconds
    async with kv.pipeline(transaction=True) as pipe:
        pipe.hset(
            _session_key(settings, state.id_hash),
            mapping={
                "user_id": user_id,
                "csrf": state.csrf_token,
                "mfa": int(mfa_verified),
            },
        )
        pipe.expire(_session_key(settings, state.id_hash), ttl)
        pipe.sadd(_user_index_key(settings, user_id), state.id_hash)
        pipe.expire(_user_index_key(settings, user_id), ttl)
        await pipe.execute()
    return session_id, state


async def load(kv: Valkey, settings: Settings, session_id: str) -> SessionState | None:
    id_hash = sha256_hex(session_id)
    data = await kv.hgetall(_session_key(settings, id_hash))
    if not data:
        return None
    return SessionState(
        id_hash=id_hash,
        user_id=int(data[b"user_id"]),
        csrf_token=data[b"csrf"].decode(),
        mfa_verified=data[b"mfa"] == b"1",
    )


async def mark_mfa_verified(kv: Valkey, settings: Settings, id_hash: str) -> None:
    await kv.hset(_session_key(settings, id_hash), "mfa", 1)


async def drop(kv: Valkey, settings: Settings, user_id: int, id_hashes: list[str]) -> None:
    if not id_hashes:
        return
    async with kv.pipeline(transaction=True) as pipe:
        pipe.delete(*[_session_key(settings, h) for h in id_hashes])
        pipe.srem(_user_index_key(settings, user_id), *id_hashes)
        await pipe.execute()


async def drop_all(kv: Valkey, settings: Settings, user_id: int) -> None:
    """Every session of a user, including ones the Postgres index may have missed."""
    members = await kv.smembers(_user_index_key(settings, user_id))
    hashes = [m.decode() for m in members]
    async with kv.pipeline(transaction=True) as pipe:
        if hashes:
            pipe.delete(*[_session_key(settings, h) for h in hashes])
        pipe.delete(_user_index_key(settings, user_id))
        await pipe.execute()
