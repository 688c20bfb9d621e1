"""Room fan-out: delivered messages per second and delivery latency with 100, 1,000 and 5,000
WebSocket viewers in one room, served by the real app (granian, 2 workers) on this box.

Events are published to the room's Valkey channel the way the ledger publishes tips (one
PUBLISH per event); each app worker holds one subscription for the room and relays each event
to its sockets. Viewers are websockets clients in 2 separate processes (so the clients don't
starve on one core); latency = arrival at the viewer - the send time inside the event.

Needs Postgres and Valkey on loopback (the same ones the tests use). Makes its own database.

    .venv/bin/python bench/fanout/bench_fanout.py --viewers 100 1000 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from valkey.asyncio import Valkey

from tipstream import db as tsdb
from tipstream.config import load_settings

PG_ADMIN = os.environ.get("TIPSTREAM_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
VALKEY = os.environ.get("TIPSTREAM_VALKEY_URL", "redis://127.0.0.1:6379/0")
# Event rate per room for each audience size: deliveries/s = rate x viewers (5,000/s here, which
# this 2-core box sustains next to the clients; --rate raises it to find the ceiling).
DEFAULT_RATES = {100: 50, 1000: 5, 5000: 1}
CLIENT_PROCESSES = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def viewers_process(
    url: str, cookie: str, count: int, expected: int, seconds: float, ready: Any, go: Any, out: Any
) -> None:
    """Open `count` sockets, wait for every event, and report latencies and closes."""

    async def run() -> None:
        from websockets.asyncio.client import connect

        latencies: list[float] = []
        received = 0
        closed = 0
        close_codes: dict[str, int] = {}
        last_arrival = 0.0
        all_in = asyncio.Event()
        sockets = []
        for _ in range(count):
            # No client pings (browsers send none): a busy client must not time itself out.
            ws = await connect(
                url, additional_headers={"Cookie": cookie}, open_timeout=60, ping_interval=None
            )
            await ws.recv()  # welcome
            sockets.append(ws)
        ready.set()
        go.wait()

        async def read(ws: Any) -> None:
            nonlocal received, closed, last_arrival
            try:
                while True:
                    frame = await ws.recv()
                    if '"tip"' not in frame:
                        continue
                    last_arrival = time.time()
                    event = msgspec.json.decode(frame)
                    latencies.append(last_arrival - event["sent"])
                    received += 1
                    if received >= expected * count:
                        all_in.set()
            except Exception as exc:
                closed += 1
                code = str(getattr(getattr(exc, "rcvd", None), "code", type(exc).__name__))
                close_codes[code] = close_codes.get(code, 0) + 1

        tasks = [asyncio.create_task(read(ws)) for ws in sockets]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), seconds + 60)
        for task in tasks:
            task.cancel()
        out.put({"latencies": latencies, "closed": closed, "last": last_arrival,
                 "codes": close_codes})  # fmt: skip
        # Sockets close when the process exits: 2,500 closing handshakes are not measured.

    asyncio.run(run())


async def bench(
    base_url: str, settings_path: Path, viewers: int, seconds: float, rate: int
) -> dict[str, Any]:
    settings = load_settings(settings_path, environ={})
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        email = f"bench-{uuid.uuid4().hex[:10]}@example.test"
        body = {"email": email, "password": "bench password 123", "date_of_birth": "1990-01-01",
                "display_name": "Bench", "role": "performer"}  # fmt: skip
        assert (await http.post("/api/auth/register", json=body)).status_code == 201
        login = await http.post(
            "/api/auth/login", json={"email": email, "password": body["password"]}
        )
        csrf = login.json()["csrf_token"]
        # Publishing needs approved KYC: record it as a reviewer's approval leaves it.
        async with tsdb.connect(settings) as conn:
            await conn.execute(
                "INSERT INTO kyc (user_id, status, reviewed_at) VALUES (%s, 'approved', now())",
                (login.json()["user"]["id"],),
            )
        created = await http.post(
            "/api/streams", json={"title": "bench"}, headers={"x-csrf-token": csrf}
        )
        assert created.status_code == 201, created.text
        stream_id = created.json()["id"]
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies.jar)
    # The fan-out needs no media: mark the stream live directly (no Janus room).
    async with tsdb.connect(settings) as conn:
        await conn.execute(
            "UPDATE streams SET status = 'live', started_at = now(), janus_room_id = %s,"
            " janus_room_secret = 'bench', janus_room_pin = 'bench' WHERE id = %s",
            (secrets.randbelow(2**50) + 1, stream_id),
        )
    ws_url = base_url.replace("http://", "ws://") + f"/ws/rooms/{stream_id}"
    events = int(rate * seconds)
    per_process = [viewers // CLIENT_PROCESSES + (1 if i < viewers % CLIENT_PROCESSES else 0)
                   for i in range(CLIENT_PROCESSES)]  # fmt: skip
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    readies, procs = [], []
    for count in per_process:
        ready = ctx.Event()
        args = (ws_url, cookie, count, events, seconds, ready, go, out)
        proc = ctx.Process(target=viewers_process, args=args)
        proc.start()
        readies.append(ready)
        procs.append(proc)
    for ready in readies:
        while not ready.wait(1):
            if not all(p.is_alive() for p in procs):
                raise RuntimeError("a viewer process died while connecting")
    kv = Valkey.from_url(VALKEY)
    channel = settings.valkey.key_prefix + f"room:{stream_id}"
    go.set()
    start = time.time()
    for i in range(events):
        target = start + i / rate
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        event = {"type": "tip", "tip_id": i + 1, "stream_id": stream_id, "tokens": 10,
                 "message": "bench", "private_message": False, "sent": time.time()}  # fmt: skip
        await kv.publish(channel, msgspec.json.encode(event))
    await kv.aclose()
    results = [out.get(timeout=seconds + 300) for _ in procs]
    for proc in procs:
        proc.join(30)
    latencies = sorted(x for r in results for x in r["latencies"])
    last = max(r["last"] for r in results)
    delivered = len(latencies)
    return {
        "viewers": viewers,
        "events": events,
        "delivered": delivered,
        "expected": events * viewers,
        "msgs_per_s": delivered / max(last - start, 1e-9),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "dropped_sockets": sum(r["closed"] for r in results),
        "close_codes": [r["codes"] for r in results if r["codes"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=None, help="events/s (default per size)")
    args = parser.parse_args()
    # SIGTERM ends the run like Ctrl-C does: the app and the database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        print(f"note: open files limited to {soft}", file=sys.stderr)

    dbname = f"tipstream_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    (tmp / "secrets").mkdir(mode=0o700)
    (tmp / "secrets" / "session_key").write_text(secrets.token_urlsafe(48))
    port = free_port()
    config = tmp / "tipstream.toml"
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    config.write_text(
        f'secrets_dir = "{tmp / "secrets"}"\n[server]\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[database]\nurl = "{db_url}"\npool_min = 1\npool_max = 8\n'
        f'[valkey]\nurl = "{VALKEY}"\nkey_prefix = "{prefix}"\n'
        "[security]\ncookie_secure = false\nlogin_failures_per_ip = 1000000\n"
        '[logging]\nlevel = "WARNING"\n[rooms]\nclient_queue_size = 4096\n'
    )
    settings = load_settings(config, environ={})

    async def migrate() -> None:
        async with tsdb.connect(settings) as conn:
            await tsdb.migrate(conn)

    asyncio.run(migrate())
    granian = str(Path(sys.executable).parent / "granian")
    env = {**os.environ, "TIPSTREAM_CONFIG": str(config)}
    log = (tmp / "app.log").open("wb")
    app = subprocess.Popen(
        [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2", "--ws", "--backlog", "8192", "tipstream.app:create_app"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        print(f"{'viewers':>7} {'events':>6} {'rate/s':>6} {'delivered':>10} {'of':>10} "
              f"{'msgs/s':>9} {'p50 ms':>7} {'p99 ms':>8} {'dropped':>7}")  # fmt: skip
        for viewers in args.viewers:
            rate = args.rate or DEFAULT_RATES.get(viewers, 20)
            r = asyncio.run(bench(base_url, config, viewers, args.seconds, rate))
            print(
                f"{viewers:>7} {r['events']:>6} {rate:>6} {r['delivered']:>10} {r['expected']:>10} "
                f"{r['msgs_per_s']:>9.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>8.1f} "
                f"{r['dropped_sockets']:>7}",
                flush=True,
            )
            if r["close_codes"]:
                print(f"        closed sockets by code: {r['close_codes']}", flush=True)
    finally:
        app.terminate()
        try:
            app.wait(20)
        except subprocess.TimeoutExpired:
            app.kill()  # thousands of sockets may hold a graceful shutdown up
            app.wait(10)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        asyncio.run(_drop_keys(prefix))


async def _drop_keys(prefix: str) -> None:
    kv = Valkey.from_url(VALKEY)
    try:
        async for name in kv.scan_iter(match=f"{prefix}*", count=1000):
            await kv.delete(name)
    finally:
        await kv.aclose()


if __name__ == "__main__":
    main()
