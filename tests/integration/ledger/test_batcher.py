"""Tips in batches (ledger/batcher.py, ledger_post_tips): many viewers tip one performer at once
through the batcher, with duplicate retries, double spends, overspends, a frozen wallet, an
ended stream and a self-tip mixed in. Each caller gets its own outcome, balances are exact, and
a batch whose connection dies leaves nothing behind; through the API path each new tip is
published once and a retry not at all."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass

import msgspec
import psycopg
import pytest
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.ledger.conftest import Fund, NewStream, NewUser
from tests.integration.ledger.test_tips import collect
from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import service, tips
from tipstream.ledger.batcher import TipBatcher
from tipstream.ledger.queries import PostedTip
from tipstream.ledger.schemas import Tip

VIEWERS = 40
FUNDS = 50


@dataclass
class Sent:
    viewer: int
    key: str
    tokens: int
    result: PostedTip | Problem


async def send(
    batcher: TipBatcher, viewer: int, stream: int, tokens: int, key: str | None = None
) -> Sent:
    key = key or uuid.uuid4().hex
    try:
        posted = await tips.post_tip_batched(
            batcher,
            viewer_id=viewer,
            stream_id=stream,
            tokens=tokens,
            message=f"from {viewer}",
            private=False,
            idempotency_key=key,
        )
    except Problem as problem:
        return Sent(viewer, key, tokens, problem)
    return Sent(viewer, key, tokens, posted)


def tip_id(sent: Sent) -> int:
    assert isinstance(sent.result, PostedTip), sent.result
    return sent.result.tip.id


def refusal(sent: Sent) -> str:
    assert isinstance(sent.result, Problem), sent.result
    return type(sent.result).__name__


async def test_many_viewers_tip_one_performer_in_batches(
    db: Conn, settings: Settings, new_user: NewUser, new_stream: NewStream, fund: Fund
) -> None:
    performer = await new_user("performer", "Hot Performer")
    stream = await new_stream(performer)
    ended = await new_stream(performer, "ended")
    viewers = [await new_user() for _ in range(VIEWERS)]
    for viewer in viewers:
        await fund(viewer, FUNDS)
    frozen = viewers[0]
    await service.set_wallet_frozen(db, frozen, frozen=True, reason="test", actor_id=None)
    broke = await new_user()  # never funded: no wallet at all

    async with TipBatcher(settings, workers=2, max_batch=16, linger=0.005) as batcher:
        # Per viewer, all at once: two tips that fit together (20 + 30 = FUNDS), the first
        # one's retry with the same key and body, and one tip larger than the whole wallet.
        keys = {v: (uuid.uuid4().hex, uuid.uuid4().hex) for v in viewers}
        first = [
            send(batcher, v, stream, tokens, key)
            for v in viewers[1:]
            for key, tokens in ((keys[v][0], 20), (keys[v][1], 30), (keys[v][0], 20))
        ]
        over = [send(batcher, v, stream, FUNDS + 1) for v in viewers[1:]]
        odd = [
            send(batcher, frozen, stream, 5),
            send(batcher, broke, stream, 5),
            send(batcher, viewers[1], ended, 5),
            send(batcher, viewers[2], stream + 10_000_000, 5),
            send(batcher, performer, stream, 5),
        ]
        results = await asyncio.gather(*first, *over, *odd)
        sent_first = results[: len(first)]
        sent_over = results[len(first) : len(first) + len(over)]
        sent_odd = results[len(first) + len(over) :]

        for i in range(0, len(sent_first), 3):
            a, b, retry = sent_first[i : i + 3]
            assert tip_id(a) == tip_id(retry) != tip_id(b)
            # Exactly one of the twin requests made the tip; the other is its replay.
            assert sorted([a.result.replayed, retry.result.replayed]) == [False, True]  # type: ignore[union-attr]
            assert not b.result.replayed  # type: ignore[union-attr]
        assert {refusal(s) for s in sent_over} == {"InsufficientFunds"}
        assert [refusal(s) for s in sent_odd] == [
            "AccountFrozen",
            "InsufficientFunds",
            "StreamNotLive",
            "StreamNotFound",
            "SelfTip",
        ]

        # Now every wallet is empty: a racing double spend of a fresh grant lets one through.
        for v in viewers[1:11]:
            await fund(v, 7)
        pairs = await asyncio.gather(
            *[send(batcher, v, stream, 7) for v in viewers[1:11] for _ in range(2)]
        )
        for i in range(0, len(pairs), 2):
            outcomes = Counter(
                "tip" if isinstance(s.result, PostedTip) else refusal(s) for s in pairs[i : i + 2]
            )
            assert outcomes == {"tip": 1, "InsufficientFunds": 1}

        # A key used again with another body is refused; with the same body it replays.
        v = viewers[3]
        reused = await send(batcher, v, stream, 21, keys[v][0])
        assert refusal(reused) == "IdempotencyKeyReused"
        again = await send(batcher, v, stream, 20, keys[v][0])
        assert isinstance(again.result, PostedTip) and again.result.replayed
        assert batcher.batches < batcher.tips  # tips really went in together

    for v in viewers[1:]:
        assert (await service.wallet(db, v)).balance == 0
    assert (await service.wallet(db, frozen)).balance == FUNDS
    made = (VIEWERS - 1) * 2 + 10
    assert await scalar(db, "SELECT count(*) FROM tips WHERE stream_id = %s", (stream,)) == made
    tokens = (VIEWERS - 1) * FUNDS + 10 * 7
    assert (
        await scalar(db, "SELECT sum(tokens) FROM tips WHERE performer_id = %s", (performer,))
        == tokens
    )
    earned = await scalar(
        db,
        "SELECT sum(credits_posted - debits_posted) FROM ledger_accounts"
        " WHERE owner_id = %s AND kind = 'earnings'",
        (performer,),
    )
    assert earned == tokens * 70  # 100 units a token, 70% to the performer
    # One outbox event per tip, none for a replay or a refusal.
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM outbox o JOIN tips t ON t.id = (o.payload->>'tip_id')::bigint"
            " WHERE t.stream_id = %s",
            (stream,),
        )
        == made
    )


async def test_a_batch_whose_connection_dies_leaves_nothing(
    db: Conn, settings: Settings, new_user: NewUser, new_stream: NewStream, fund: Fund
) -> None:
    performer = await new_user("performer")
    stream = await new_stream(performer)
    viewers = [await new_user() for _ in range(5)]
    for viewer in viewers:
        await fund(viewer, 100)
    before = await scalar(db, "SELECT count(*) FROM ledger_transfers")
    pids: list[int] = []

    async def connect() -> Conn:
        conn = await psycopg.AsyncConnection.connect(
            tsdb.conninfo(settings), autocommit=True, row_factory=psycopg.rows.dict_row
        )
        pids.append(conn.info.backend_pid)
        return conn

    keys = [uuid.uuid4().hex for _ in viewers]
    async with tsdb.connect(settings) as blocker, blocker.transaction():
        # Hold the last viewer's wallet: the batch stalls after writing nothing yet... and
        # is killed while it waits.
        wallet = await service.wallet_account_id(blocker, viewers[-1])
        await blocker.execute("SELECT 1 FROM ledger_accounts WHERE id = %s FOR UPDATE", (wallet,))
        async with TipBatcher(settings, workers=1, linger=0.05, connect=connect) as batcher:
            sends = asyncio.gather(
                *[send(batcher, v, stream, 60, k) for v, k in zip(viewers, keys, strict=True)]
            )
            for _ in range(250):
                await asyncio.sleep(0.02)
                if pids and await scalar(
                    db,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE pid = %s AND wait_event_type = 'Lock'",
                    (pids[0],),
                ):
                    break
            else:
                pytest.fail("the batch never waited for the wallet lock")
            await db.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            results = await sends
    # Every caller of the batch heard that it failed (a 503 that says to retry with the same
    # key); nothing of it was written.
    assert all(refusal(r) == "TipBatchLost" for r in results), results
    assert {r.result.status for r in results if isinstance(r.result, Problem)} == {503}
    assert await scalar(db, "SELECT count(*) FROM ledger_transfers") == before
    for viewer in viewers:
        assert (await service.wallet(db, viewer)).balance == 100
    # The callers retry with their keys: each tip happens once.
    async with TipBatcher(settings) as batcher:
        retried = await asyncio.gather(
            *[send(batcher, v, stream, 60, k) for v, k in zip(viewers, keys, strict=True)]
        )
        assert all(isinstance(s.result, PostedTip) and not s.result.replayed for s in retried)
        replays = await asyncio.gather(
            *[send(batcher, v, stream, 60, k) for v, k in zip(viewers, keys, strict=True)]
        )
        assert [tip_id(s) for s in replays] == [tip_id(s) for s in retried]
    for viewer in viewers:
        assert (await service.wallet(db, viewer)).balance == 40


async def test_batched_tips_through_the_api_path_are_published_once_each(
    db: Conn,
    kv: Valkey,
    settings: Settings,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
) -> None:
    performer = await new_user("performer")
    stream = await new_stream(performer)
    viewers = [await new_user() for _ in range(12)]
    for viewer in viewers:
        await fund(viewer, 30)
    channel = tips.room_channel(settings, stream)
    answers: list[tuple[Tip, bool]] = []

    async def tip_all() -> None:
        # What the API does (rate limit, batch, publish), with the app's kind of batcher.
        async with TipBatcher(settings, kv=kv, linger=0.01) as batcher:

            async def one(viewer: int, key: str, private: bool) -> None:
                answers.append(
                    await tips.tip(
                        db,
                        kv,
                        settings,
                        viewer_id=viewer,
                        stream_id=stream,
                        tokens=10,
                        message=f"hi from {viewer}",
                        private=private,
                        idempotency_key=key,
                        batcher=batcher,
                    )
                )

            keys = {v: uuid.uuid4().hex for v in viewers}
            await asyncio.gather(*[one(v, keys[v], v % 2 == 0) for v in viewers])
            # Retries are answered from the ledger and published no second time.
            await asyncio.gather(*[one(v, keys[v], v % 2 == 0) for v in viewers[:4]])
            assert batcher.batches < batcher.tips

    messages = [msgspec.json.decode(m) for m in await collect(settings, channel, tip_all, 0.3)]
    new = [t for t, replayed in answers if not replayed]
    assert len(new) == len(viewers) and sum(replayed for _, replayed in answers) == 4
    assert sorted(m["tip_id"] for m in messages) == sorted(t.id for t in new)
    for m in messages:
        private = m["viewer_id"] % 2 == 0
        assert m["message"] == (None if private else f"hi from {m['viewer_id']}")
        assert m["private_message"] is private
    assert {t.performer_share for t in new} == {"0.07"}  # 10 tokens = 0.10 USD, 70%
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM outbox WHERE channel = %s AND published_at IS NULL",
            (channel,),
        )
        == 0
    )
    for viewer in viewers:
        assert (await service.wallet(db, viewer)).balance == 20


async def test_a_full_queue_refuses_at_once_and_writes_nothing(
    db: Conn, settings: Settings, new_user: NewUser, new_stream: NewStream, fund: Fund
) -> None:
    performer = await new_user("performer")
    stream = await new_stream(performer)
    first, second = await new_user(), await new_user()
    for viewer in (first, second):
        await fund(viewer, 10)
    async with TipBatcher(settings, workers=1, linger=0.3, max_queue=1) as batcher:
        waiting = asyncio.create_task(send(batcher, first, stream, 4))
        await asyncio.sleep(0.05)  # the first tip waits in the queue (the linger)
        refused = await send(batcher, second, stream, 4)
        assert refusal(refused) == "TipsBusy"
        assert isinstance(refused.result, Problem) and refused.result.status == 503
        posted = await waiting
        assert isinstance(posted.result, PostedTip)
    assert (await service.wallet(db, first)).balance == 6
    assert (await service.wallet(db, second)).balance == 10


async def test_tips_alone_and_in_batches_at_once_add_up(
    db: Conn, settings: Settings, new_user: NewUser, new_stream: NewStream, fund: Fund
) -> None:
    performer = await new_user("performer")
    stream = await new_stream(performer)
    viewers = [await new_user() for _ in range(16)]
    for viewer in viewers:
        await fund(viewer, 100)
    alone, batched = viewers[:8], viewers[8:]

    async def tip_alone(viewer: int) -> None:
        async with tsdb.connect(settings) as conn:
            for _ in range(5):
                await tips.post_tip(
                    conn,
                    settings,
                    viewer_id=viewer,
                    stream_id=stream,
                    tokens=3,
                    message=None,
                    private=False,
                    idempotency_key=uuid.uuid4().hex,
                    shard=0,
                )

    async def tip_batched(batcher: TipBatcher, viewer: int) -> None:
        for _ in range(5):
            sent = await send(batcher, viewer, stream, 3)
            assert isinstance(sent.result, PostedTip), sent.result

    async with TipBatcher(settings, workers=2, linger=0.001) as batcher:
        await asyncio.gather(
            *[tip_alone(v) for v in alone], *[tip_batched(batcher, v) for v in batched]
        )
    for viewer in viewers:
        assert (await service.wallet(db, viewer)).balance == 85
    earned = await scalar(
        db,
        "SELECT sum(credits_posted - debits_posted) FROM ledger_accounts"
        " WHERE owner_id = %s AND kind = 'earnings'",
        (performer,),
    )
    assert earned == 16 * 5 * 3 * 70
