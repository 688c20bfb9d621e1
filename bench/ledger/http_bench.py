"""The HTTP half of bench_ledger: tips through the real app (granian, `tipctl run api`), each a
POST /api/streams/{id}/tips with a bearer API token and a fresh Idempotency-Key."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tipstream import db as tsdb
from tipstream.accounts import credentials
from tipstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def make_tokens(settings: Settings, viewers: list[int]) -> dict[int, str]:
    tokens = {}
    async with tsdb.connect(settings) as conn:
        for viewer in viewers:
            token = credentials.new_api_token()
            await conn.execute(
                "INSERT INTO api_tokens (user_id, name, token_hash) VALUES (%s, 'bench', %s)",
                (viewer, credentials.sha256_hex(token)),
            )
            tokens[viewer] = token
    return tokens


async def hammer(
    base: str, tokens: list[str], streams: list[int], seconds: float, clients: int
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

        async def worker(k: int) -> int:
            nonlocal errors
            done, i = 0, k
            while time.perf_counter() < deadline:
                token = tokens[i % len(tokens)]
                stream = streams[i % len(streams)]
                i += clients
                start = time.perf_counter()
                response = await http.post(
                    f"/api/streams/{stream}/tips",
                    json={"tokens": 1},
                    headers={
                        "authorization": f"Bearer {token}",
                        "idempotency-key": uuid.uuid4().hex,
                    },
                )
                if response.status_code == 201:
                    latencies.append(time.perf_counter() - start)
                    done += 1
                else:
                    if not errors:
                        print(
                            f"# first non-201: {response.status_code} {response.text[:300]}",
                            file=sys.stderr,
                        )
                    errors += 1
            return done

        counts = await asyncio.gather(*[worker(k) for k in range(clients)])
    return sum(counts), latencies, errors


def run(
    settings: Settings, viewers: list[int], streams: list[int], args: Any
) -> list[tuple[str, int, float, list[float]]]:
    """(name, tips, seconds, latencies) for one hot performer and for many."""
    tokens = asyncio.run(make_tokens(settings, viewers[:400]))
    port = free_port()
    env = dict(os.environ, TIPSTREAM_CONFIG=os.environ["TIPSTREAM_CONFIG"])
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tipctl.main import app; app()",
            "run",
            "api",
            "--port",
            str(port),
            "--workers",
            str(args.processes),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        results = []
        for name, targets in (
            ("HTTP API, one hot performer", streams[:1]),
            (f"HTTP API, {len(streams)} performers", streams),
        ):
            count, latencies, errors = asyncio.run(
                hammer(base, list(tokens.values()), targets, args.seconds, args.clients)
            )
            if errors:
                print(f"# {name}: {errors} non-201 answers", file=sys.stderr)
            results.append((name, count, args.seconds, latencies))
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)
