"""A performer's lossy uplink, for real: the media leaving the test's namespace for Janus's is
squeezed (tc: HTB + u32 on the veth; this kernel has no netem, so the loss is a bandwidth cap's
tail drop) while an aiortc publisher streams; Janus misses packets and sends slowlink events,
and the stream shows ``degraded`` in the API's listing and in ``tipctl streams`` until the link
is fine again. A viewer's lossy downlink, the same way on Janus's side, leaves it ``good``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rooms.conftest import AppServerFactory, MediaNet
from tests.integration.rooms.people import Person, RoomConn, live_stream, sign_up
from tests.integration.rooms.test_media import start_publisher, start_viewer
from tests.integration.rooms.test_tipctl import tipctl, write_config
from tipstream.config import Settings

# Long enough for every check below (tipctl twice on a loaded box) after the slow links stop:
# Janus also lowers the performer's bitrate (REMB), after which they may stop while throttled.
WINDOW_SECONDS = 20


@contextlib.contextmanager
def throttled(device: str, rate: str, *, netns: str | None = None) -> Iterator[None]:
    """Squeeze the UDP (the media) leaving `device` through `rate` with a 5-packet queue, so
    what doesn't fit is dropped, as on a congested link. TCP (the app's Janus WebSocket) keeps
    the full speed: HTB's default class, u32 steering only UDP into the slow one."""
    tc = ["ip", "netns", "exec", netns, "tc"] if netns else ["tc"]
    steps = [
        ["qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "10"],
        ["class", "add", "dev", device, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"],
        ["class", "add", "dev", device, "parent", "1:", "classid", "1:20", "htb", "rate", rate],
        ["qdisc", "add", "dev", device, "parent", "1:20", "pfifo", "limit", "5"],
        ["filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "u32",
         "match", "ip", "protocol", "17", "0xff", "flowid", "1:20"],
    ]  # fmt: skip
    try:
        for step in steps:
            done = subprocess.run([*tc, *step], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.fail(f"tc {' '.join(step)} failed: {done.stderr.strip()}")
        yield
    finally:
        subprocess.run(
            [*tc, "qdisc", "del", "dev", device, "root"], capture_output=True, check=False
        )


async def note_slowlinks(room: RoomConn, times: list[float]) -> None:
    """When each slowlink of the performer's media (uplink false) reached their socket (looked
    at every 0.1 s, until cancelled)."""
    counted = 0
    while True:
        arrived = sum(1 for m in room.seen if m.get("type") == "slowlink" and not m["uplink"])
        times.extend([time.monotonic()] * (arrived - counted))
        counted = arrived
        await asyncio.sleep(0.1)


async def shown(person: Person, stream_id: int) -> dict[str, Any]:
    response = await person.http.get(f"/api/streams/{stream_id}")
    assert response.status_code == 200, response.text
    stream: dict[str, Any] = response.json()
    return stream


async def eventually(
    check: Callable[[], Awaitable[dict[str, Any]]], accept: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s; last seen: {value}")
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_lossy_publisher_uplink_shows_stream_degraded_then_good_again(
    app_server_factory: AppServerFactory,
    rooms_settings_factory: Callable[..., Settings],
    media_net: MediaNet,
    tmp_path: Path,
) -> None:
    settings = rooms_settings_factory(rooms={"slowlink_window_seconds": WINDOW_SECONDS})
    server = await app_server_factory(settings)
    config = write_config(settings, tmp_path)
    performer = await sign_up(server, "performer", "performer")
    stream_id = await live_stream(performer, "Shaky uplink")
    publisher = await start_publisher(performer, stream_id)
    viewer = await start_viewer(await sign_up(server), stream_id)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 20)
        healthy = await shown(performer, stream_id)
        assert (healthy["health"], healthy["slow_links"]) == ("good", 0), healthy

        # The performer's packets to Janus squeezed through 16 kbit/s.
        slowlinks_at: list[float] = []
        watcher = asyncio.create_task(note_slowlinks(publisher.room, slowlinks_at))
        with throttled(media_net.host_if, "16kbit"):
            slow = await publisher.room.expect("slowlink", timeout=30)
            # uplink false: Janus is not getting all of the performer's packets.
            assert slow["uplink"] is False and slow["lost"] > 0, slow
            degraded = await eventually(
                lambda: shown(performer, stream_id), lambda s: s["health"] == "degraded", 15
            )
            assert degraded["slow_links"] >= 1 and degraded["lost_packets"] > 0, degraded
            assert degraded["status"] == "live"
            joining = await (await sign_up(server)).room(stream_id)
            assert joining.welcome["stream"]["health"] == "degraded", joining.welcome["stream"]
            await joining.close()
            listing = (await performer.http.get("/api/streams")).json()
            listed = next(s for s in listing if s["id"] == stream_id)
            assert listed["health"] == "degraded", listed
            # In a thread: the event loop keeps reading the sockets (and timing the slow links).
            cli = await asyncio.to_thread(tipctl, config, "streams", "list", "--json")
            assert cli.returncode == 0, cli.stderr
            row = next(s for s in json.loads(cli.stdout) if s["id"] == stream_id)
            assert row["health"] == "degraded" and row["slow_links"] >= 1, row
            table = await asyncio.to_thread(tipctl, config, "streams", "show", str(stream_id))
            assert table.returncode == 0 and "degraded" in table.stdout, table.stdout

        # The link is fine again (Janus also lowered the performer's bitrate with REMB, so the
        # slow links may have stopped earlier): a window after the last one, the stream is good.
        good = await eventually(
            lambda: shown(performer, stream_id),
            lambda s: s["health"] == "good",
            WINDOW_SECONDS + 30,
        )
        watcher.cancel()
        assert good["slow_links"] == 0 and good["lost_packets"] == 0, good
        quiet_for = time.monotonic() - slowlinks_at[-1]
        assert quiet_for >= WINDOW_SECONDS - 1.5, (
            f"good {quiet_for:.1f} s after a slow link",
            [m for m in publisher.room.seen if m.get("type") == "slowlink"],
        )
        # And the viewer gets the performer's frames again (once a keyframe got through).
        before = len(viewer.arrivals.frames)
        deadline = time.monotonic() + 20
        while len(viewer.arrivals.frames) < before + 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(viewer.arrivals.frames) >= before + 30, "video did not resume"
    finally:
        await publisher.pc.close()
        await viewer.pc.close()
        await performer.post(f"/api/streams/{stream_id}/end")


@pytest.mark.slow
async def test_a_viewers_lossy_downlink_leaves_the_stream_good(
    app_server_factory: AppServerFactory,
    rooms_settings_factory: Callable[..., Settings],
    media_net: MediaNet,
) -> None:
    """Only the performer's link says how the stream is: a viewer on a bad connection gets its
    own slowlink messages, and the stream stays good for everyone else."""
    settings = rooms_settings_factory(rooms={"slowlink_window_seconds": WINDOW_SECONDS})
    server = await app_server_factory(settings)
    performer = await sign_up(server, "performer", "performer")
    stream_id = await live_stream(performer, "Steady uplink")
    publisher = await start_publisher(performer, stream_id)
    viewer = await start_viewer(await sign_up(server), stream_id)
    try:
        await asyncio.wait_for(viewer.arrivals.first.wait(), 20)
        # Janus's packets to the viewer squeezed (its end of the veth, in its namespace).
        with throttled(media_net.sfu_if, "16kbit", netns=media_net.name):
            slow = await viewer.room.expect("slowlink", timeout=30)
            assert slow["uplink"] is True and slow["lost"] > 0, slow
            await asyncio.sleep(1)
            during = await shown(performer, stream_id)
            assert (during["health"], during["slow_links"]) == ("good", 0), during
    finally:
        await publisher.pc.close()
        await viewer.pc.close()
        await performer.post(f"/api/streams/{stream_id}/end")
