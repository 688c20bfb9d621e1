"""Login throttling per account and per client address, in Valkey so every worker agrees.

Failures are counted in a sliding-ish fixed window; reaching the limit locks the account (or
address) for ``lockout_seconds``. A successful login clears the account's count.
"""

from __future__ import annotations

from valkey.asyncio import Valkey

from tipstream.accounts.credentials import sha256_hex
from tipstream.config import Settings
from tipstream.kv import key


def _keys(settings: Settings, scope: str, subject: str) -> tuple[str, str]:
    # Hash the subject: emails and addresses need not sit in Valkey in clear.
    digest = sha256_hex(subject.lower())[:32]
    return key(settings, "login-fail", scope, digest), key(settings, "login-lock", scope, digest)


async def locked_for(kv: Valkey, settings: Settings, *, email: str, ip: str) -> int:
    """Seconds until login is allowed again for this account or address; 0 if not locked."""
    _, account_lock = _keys(settings, "account", email)
    _, ip_lock = _keys(settings, "ip", ip)
    async with kv.pipeline(transaction=False) as pipe:
        pipe.ttl(account_lock)
        pipe.ttl(ip_lock)
        ttls = await pipe.execute()
    return max(0, *[int(t) for t in ttls])


async def record_failure(kv: Valkey, settings: Settings, *, email: str, ip: str) -> bool:
    """Count one failure; return True if this failure locked the account or the address."""
    sec = settings.security
    locked = False
    for scope, subject, limit in (
        ("account", email, sec.login_failures_per_account),
        ("ip", ip, sec.login_failures_per_ip),
    ):
        counter, lock = _keys(settings, scope, subject)
        async with kv.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, sec.login_failure_window_seconds, nx=True)
            count, _ = await pipe.execute()
        if int(count) >= limit:
            await kv.set(lock, 1, ex=sec.lockout_seconds)
            await kv.delete(counter)
            locked = True
    return locked


async def clear_account(kv: Valkey, settings: Settings, *, email: str) -> None:
    counter, _ = _keys(settings, "account", email)
    await kv.delete(counter)


async def unlock(kv: Valkey, settings: Settings, *, email: str) -> None:
    counter, lock = _keys(settings, "account", email)
    await kv.delete(counter, lock)
