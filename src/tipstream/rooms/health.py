"""Health checks of the media plane for ``tipctl doctor``: Janus and coturn, checked the way the
app uses them (API secret, admin key, TURN REST credentials)."""

from __future__ import annotations

import secrets
import sys

import structlog

from tipstream.config import Settings
from tipstream.rooms.janus import JanusClient, JanusError
from tipstream.rooms.turn import ice_servers
from tipstream.rooms.turncheck import check_turn, parse_turn_url

NOT_CONFIGURED = "not configured on this node (no {} secret): streams cannot go live"


def _logs_off_stdout() -> None:
    # In the CLI nothing configured logging: keep the Janus client's log lines off stdout,
    # which carries the checks' results (--json).
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


async def check_janus(settings: Settings) -> str:
    _logs_off_stdout()
    # A node installed without the media plane has no Janus secrets: say so, don't fail.
    if not settings.secrets.janus_api_secret and not settings.secrets.janus_admin_key:
        return NOT_CONFIGURED.format("janus_api_secret")
    if not settings.secrets.janus_api_secret or not settings.secrets.janus_admin_key:
        raise RuntimeError("secrets janus_api_secret and janus_admin_key must both be set")
    client = JanusClient(
        settings.janus.ws_url, settings.secrets.janus_api_secret, timeout_seconds=5
    )
    try:
        await client.start()
        info = await client.info()
        if "janus.plugin.videoroom" not in info.get("plugins", {}):
            raise RuntimeError("Janus answers but the videoroom plugin is not loaded")
        session = await client.create_session()  # proves the API secret is accepted
        handle = await session.attach()
        try:
            await handle.request({"request": "create", "room": secrets.randbelow(2**52) + 1})
        except JanusError:
            locked = True
        else:
            locked = False
        await session.destroy()
    finally:
        await client.close()
    if not locked:
        raise RuntimeError("Janus lets anyone create rooms: set admin_key in the videoroom config")
    return (
        f"Janus {info.get('version_string', '?')} at {settings.janus.ws_url}, videoroom loaded, "
        "rooms locked by admin_key"
    )


async def check_coturn(settings: Settings) -> str:
    if not settings.secrets.turn_secret:
        return NOT_CONFIGURED.format("turn_secret").replace("streams cannot go live", "no TURN")
    servers = [s for s in ice_servers(settings, 0) if s.username and s.credential]
    udp = [u for s in servers for u in s.urls if "transport=tcp" not in u and u.startswith("turn:")]
    if not udp:
        raise RuntimeError("no turn: URL in turn.urls")
    host, port = parse_turn_url(udp[0])
    username, password = servers[0].username or "", servers[0].credential or ""
    relayed = await check_turn(host, port, username, password)
    return f"coturn at {host}:{port} accepts the app's TURN credentials (relay {relayed})"
