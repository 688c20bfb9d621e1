"""Many viewers tip one performer at once, with duplicate retries and racing double-spends; a
connection dies mid-transaction; a process dies between commit and publish. Afterwards no
wallet is below zero, no tip is counted twice, every total is exact, and every committed tip is
published exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.ledger.conftest import Fund, NewStream, NewUser
from tests.integration.ledger.test_tips import collect
from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import outbox, service, tips

VIEWERS = 24
TIPS_EACH = 12
FUNDS = 200


async def test_many_viewers_tip_one_performer_at_once(
    db: Conn,
    settings: Settings,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
) -> None:
    performer = await new_user("performer", "Hot Performer")
    stream = await new_stream(performer)
    viewers = [await new_user() for _ in range(VIEWERS)]
    for viewer in viewers:
        await fund(viewer, FUNDS)
    rng = random.Random(7)
    # Each viewer's plan: tips with fresh keys, some sent twice at once (a retry racing its
    # original), and a final pair of tips that together overspend (only one can win).
    plans: dict[int, list[tuple[str, int]]] = {}
    for viewer in viewers:
        plan = []
        for _ in range(TIPS_EACH):
            key = uuid.uuid4().hex
            amount = rng.randint(1, 12)
            plan.append((key, amount))
            if rng.random() < 0.4:
                plan.append((key, amount))  # duplicate retry
        rng.shuffle(plan)
        plans[viewer] = plan
    pool = AsyncConnectionPool(
        tsdb.conninfo(settings),
        min_size=4,
        max_size=12,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
    )
    await pool.open()
    outcomes: list[tuple[int, str, int, int | None, str]] = []

    async def send(viewer: int, key: str, amount: int) -> None:
        async with pool.connection() as conn:
            try:
                posted = await tips.post_tip(
                    conn,
                    settings,
                    viewer_id=viewer,
                    stream_id=stream,
                    tokens=amount,
                    message=None,
                    private=False,
                    idempotency_key=key,
                )
                outcomes.append(
                    (viewer, key, amount, posted.tip.id, "replay" if posted.replayed else "new")
                )
            except Problem as problem:
                outcomes.append((viewer, key, amount, None, type(problem).__name__))

    async def viewer_run(viewer: int) -> None:
        await asyncio.gather(*[send(viewer, key, amount) for key, amount in plans[viewer]])
        # Double spend: whatever is left, twice at once.
        left = (await service.wallet(db, viewer)).balance
        if left > 0:
            await asyncio.gather(
                send(viewer, uuid.uuid4().hex, left), send(viewer, uuid.uuid4().hex, left)
            )

    try:
        await asyncio.gather(*[viewer_run(v) for v in viewers])
    finally:
        await pool.close()

    new = [o for o in outcomes if o[4] == "new"]
    # No key made two tips, and every replay answered the tip its original made.
    assert len({o[1] for o in new}) == len(new)
    by_key = {o[1]: o[3] for o in new}
    assert all(by_key[o[1]] == o[3] for o in outcomes if o[4] == "replay")
    refused = Counter(o[4] for o in outcomes if o[3] is None)
    assert set(refused) <= {"InsufficientFunds"}, refused
    # Each double-spend pair: at most one won (if both were funded only one could be).
    for viewer in viewers:
        spent = sum(o[2] for o in new if o[0] == viewer)
        assert spent <= FUNDS
        wallet = await service.wallet(db, viewer)
        assert wallet.balance == FUNDS - spent >= 0
        assert (
            await scalar(
                db, "SELECT coalesce(sum(tokens), 0) FROM tips WHERE viewer_id = %s", (viewer,)
            )
            == spent
        )
    tokens = sum(o[2] for o in new)
    assert await scalar(db, "SELECT count(*) FROM tips WHERE stream_id = %s", (stream,)) == len(new)
    earned = await scalar(
        db,
        "SELECT sum(credits_posted - debits_posted) FROM ledger_accounts"
        " WHERE owner_id = %s AND kind = 'earnings'",
        (performer,),
    )
    assert earned == tokens * 70  # 100 units a token, 70% to the performer


async def test_a_connection_killed_mid_transaction_leaves_nothing(
    db: Conn, settings: Settings, new_user: NewUser, new_stream: NewStream, fund: Fund
) -> None:
    viewer, performer = await new_user(), await new_user("performer")
    stream = await new_stream(performer)
    await fund(viewer, 100)
    before = await scalar(db, "SELECT count(*) FROM ledger_transfers")
    key = uuid.uuid4().hex
    async with tsdb.connect(settings) as victim:
        cur = await victim.execute("SELECT pg_backend_pid() AS pid")
        row = await cur.fetchone()
        assert row is not None
        pid = row["pid"]

        async def tip_then_stall() -> None:
            async with victim.transaction():
                await tips.post_tip(
                    victim,
                    settings,
                    viewer_id=viewer,
                    stream_id=stream,
                    tokens=60,
                    message=None,
                    private=False,
                    idempotency_key=key,
                )
                await victim.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(tip_then_stall())
        for _ in range(200):  # wait until the tip is written and the transaction stalls
            await asyncio.sleep(0.02)
            if await scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query LIKE %s",
                (pid, "%pg_sleep%"),
            ):
                break
        await db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):  # the client sees its connection die
            await task
    assert (await service.wallet(db, viewer)).balance == 100
    assert await scalar(db, "SELECT count(*) FROM ledger_transfers") == before
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM tips WHERE viewer_id = %s AND idempotency_key = %s",
            (viewer, key),
        )
        == 0
    )
    # The client retries with the same key: the tip happens once.
    posted = await tips.post_tip(
        db,
        settings,
        viewer_id=viewer,
        stream_id=stream,
        tokens=60,
        message=None,
        private=False,
        idempotency_key=key,
    )
    assert not posted.replayed and (await service.wallet(db, viewer)).balance == 40


CRASH_SCRIPT = """
import asyncio, os, signal, sys
from pathlib import Path
from tipstream import db
from tipstream.config import load_settings
from tipstream.ledger import tips

async def main():
    settings = load_settings(Path(sys.argv[1]), environ={})
    async with db.connect(settings) as conn:
        posted = await tips.post_tip(
            conn, settings, viewer_id=int(sys.argv[2]), stream_id=int(sys.argv[3]), tokens=9,
            message="crash", private=False, idempotency_key=sys.argv[4])
    print(posted.tip.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # committed, never published

asyncio.run(main())
"""


async def test_a_process_killed_between_commit_and_publish_is_published_once_by_the_relay(
    db: Conn,
    kv: Valkey,
    settings: Settings,
    tmp_path: Any,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
) -> None:
    viewer, performer = await new_user(), await new_user("performer")
    stream = await new_stream(performer)
    await fund(viewer, 50)
    config = tmp_path / "crash.toml"
    config.write_text(
        f'secrets_dir = "{settings.secrets_dir}"\n[database]\nurl = "{settings.database.url}"\n'
        f'[valkey]\nurl = "{settings.valkey.url}"\nkey_prefix = "{settings.valkey.key_prefix}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_SCRIPT,
        str(config),
        str(viewer),
        str(stream),
        uuid.uuid4().hex,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    tip_id = int(stdout.decode().split()[0])
    assert (await service.wallet(db, viewer)).balance == 41  # committed
    channel = tips.room_channel(settings, stream)

    async def relays() -> None:
        # Two relays at once, then once more: the event goes out once.
        counts = await asyncio.gather(
            outbox.relay(db, kv, settings, grace_seconds=0),
            _relay_on_own_connection(settings, kv),
        )
        assert sum(counts) >= 1
        assert await outbox.relay(db, kv, settings, grace_seconds=0) == 0

    got = [msgspec.json.decode(m) for m in await collect(settings, channel, relays, 0.3)]
    assert [m["tip_id"] for m in got] == [tip_id]
    assert got[0]["message"] == "crash"


async def _relay_on_own_connection(settings: Settings, kv: Valkey) -> int:
    async with tsdb.connect(settings) as conn:
        return await outbox.relay(conn, kv, settings, grace_seconds=0)
