"""TURN REST API credentials (coturn ``use-auth-secret``): the username is ``expiry:user`` and
the password base64(HMAC-SHA1(shared secret, username)); coturn recomputes it, so nothing is
stored and a credential dies on its own at ``expiry``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from tipstream.config import Settings
from tipstream.rooms.schemas import IceServer


def credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers(settings: Settings, user_id: int, *, now: float | None = None) -> list[IceServer]:
    """The iceServers a room join hands out: STUN as is, TURN with a fresh credential."""
    stun = [u for u in settings.turn.urls if u.startswith("stun:")]
    turn = [u for u in settings.turn.urls if u.startswith(("turn:", "turns:"))]
    servers = [IceServer(urls=stun)] if stun else []
    secret = settings.secrets.turn_secret
    if turn and secret:
        expiry = int(now if now is not None else time.time()) + settings.turn.credential_ttl_seconds
        username = f"{expiry}:{user_id}"
        servers.append(
            IceServer(urls=turn, username=username, credential=credential(secret, username))
        )
    return servers
