"""Valkey (any RESP-compatible server): the shared state of every worker and host.

Sessions, rate limits and pub/sub live here; nothing shared is kept in process memory.
"""

from __future__ import annotations

from valkey.asyncio import Valkey

from tipstream.config import Settings


def create_client(settings: Settings) -> Valkey:
    url = settings.valkey.url.replace("valkey://", "redis://", 1)
    # The password comes from the secret file (the appliance sets requirepass); a password
    # written in the URL itself takes precedence.
    password = settings.secrets.valkey_password
    extra = {"password": password} if password else {}
    return Valkey.from_url(url, decode_responses=False, health_check_interval=30, **extra)


def key(settings: Settings, *parts: str | int) -> str:
    """A namespaced key, so several installs can share one server."""
    return settings.valkey.key_prefix + ":".join(str(p) for p in parts)
