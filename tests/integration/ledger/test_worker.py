"""`tipctl run worker`: the real worker process relays outbox events a crash left behind, on
its own schedule, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tipstream.config import Settings
from tipstream.db import Conn

TIPCTL = [sys.executable, "-c", "from tipctl.main import app; app()"]


async def test_the_worker_relays_orphaned_events_and_stops_on_sigterm(
    db: Conn, kv: Valkey, settings: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        f'secrets_dir = "{settings.secrets_dir}"\n[database]\nurl = "{settings.database.url}"\n'
        f'[valkey]\nurl = "{settings.valkey.url}"\nkey_prefix = "{settings.valkey.key_prefix}"\n'
        '[logging]\nlevel = "INFO"\n'
    )
    channel = f"{settings.valkey.key_prefix}room:worker-test-{uuid.uuid4().hex[:6]}"
    # An event committed a minute ago and never published (its process died).
    cur = await db.execute(
        """
        INSERT INTO outbox (channel, event_type, payload, created_at)
        VALUES (%s, 'note', '{"type": "note", "n": 1}', now() - interval '1 minute')
        RETURNING id
        """,
        (channel,),
    )
    row = await cur.fetchone()
    assert row is not None
    env = dict(os.environ, TIPSTREAM_CONFIG=str(config))
    listener = Valkey.from_url(settings.valkey.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(channel)
    worker = await asyncio.create_subprocess_exec(
        *TIPCTL,
        "run",
        "worker",
        "--threads",
        "2",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        message = None
        for _ in range(100):  # the relay runs every 5 s; allow 20 s
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None or worker.returncode is not None:
                break
        assert message is not None, "the worker did not relay the event"
        assert msgspec.json.decode(message["data"]) == {"type": "note", "n": 1}
        for _ in range(50):  # marked published once its batch commits
            marked = await scalar(
                db, "SELECT published_at IS NOT NULL FROM outbox WHERE id = %s", (row["id"],)
            )
            if marked:
                break
            await asyncio.sleep(0.1)
        assert marked
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=40)
        assert worker.returncode == 0, output.decode()[-2000:]
        assert b"outbox_relayed" in output
    finally:
        if worker.returncode is None:
            worker.kill()
            out, _ = await worker.communicate()
            print(out.decode()[-3000:])
        await pubsub.aclose()
        await listener.aclose()
