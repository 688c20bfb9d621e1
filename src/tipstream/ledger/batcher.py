"""Group commit for tips: tips that arrive while the database is busy go in together, in ONE
transaction (ledger_post_tips), instead of one commit each.

Each worker task owns one connection. It waits for a tip, lingers a moment (``linger`` seconds)
so more can join, takes up to ``max_batch`` of them (at most one per viewer: a viewer's next tip
waits for the next batch, so each tip is checked against the balance its predecessor left),
posts them, and hands every caller its own outcome: the tip, the replay of an earlier one, or
the problem a single tip would have raised (insufficient tokens, frozen wallet, key reused...).
One tip failing never fails the others. With several workers, one batch fills while the
previous one commits. At most ``max_queue`` tips wait; beyond that a tip is refused at once
(503 tips-busy) rather than letting every tip's latency grow.

Crash semantics are those of one tip, per batch: a batch commits whole or not at all. A caller
whose batch died (connection lost, process killed) gets an error, or nothing; its retry with
the same Idempotency-Key answers the original tip when the batch had committed, and posts it
when it had not. Events are written to the outbox in the batch's transaction and published
after commit (by the batcher when it has Valkey, else by the relay).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import psycopg
import structlog
from valkey.asyncio import Valkey

from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import outbox, queries, service
from tipstream.ledger.errors import SQLSTATE_PROBLEMS, translated
from tipstream.ledger.money import Rates
from tipstream.ledger.queries import BatchOutcome, PostedTip, TipOrder

log = structlog.get_logger("tipstream.ledger.batcher")

# What the single-tip function says for each refusal (ledger_post_tip in 0003_ledger.sql).
REFUSALS = {
    "TS001": "the wallet is frozen",
    "TS010": "idempotency key reused with a different request",
    "TS011": "stream not found",
    "TS012": "stream is not live",
    "TS013": "performers cannot tip themselves",
    "TS014": "insufficient tokens",
    "TS015": "the fee split of this tip is not exact",
}


class TipBatchLost(Problem):
    """The database connection of a tip's batch failed; the tip may or may not be posted."""

    status = 503
    slug = "tip-batch-lost"
    title = "The tip could not be confirmed; send it again with the same Idempotency-Key"


class TipsBusy(Problem):
    """More tips are waiting for a batch than the process takes: shed load instead of letting
    every tip's latency grow without end."""

    status = 503
    slug = "tips-busy"
    title = "Too many tips are waiting; send it again in a moment with the same Idempotency-Key"


@dataclass
class _Waiting:
    order: TipOrder
    future: asyncio.Future[PostedTip] = field(repr=False)


class TipBatcher:
    """Posts tips in batches; use as ``async with TipBatcher(settings) as batcher`` and call
    ``await batcher.submit(order)`` from any number of tasks of the same event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        kv: Valkey | None = None,
        workers: int = 2,
        max_batch: int = 200,
        linger: float = 0.002,
        max_queue: int = 20_000,
        connect: Callable[[], Awaitable[Conn]] | None = None,
    ) -> None:
        self.settings = settings
        self.kv = kv
        self.workers = workers
        self.max_batch = max_batch
        self.linger = linger
        self.max_queue = max_queue
        self._connect = connect or self._open_connection
        self._queue: deque[_Waiting] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.batches = 0
        self.tips = 0

    async def _open_connection(self) -> Conn:
        return await psycopg.AsyncConnection.connect(
            tsdb.conninfo(self.settings), autocommit=True, row_factory=psycopg.rows.dict_row
        )

    async def __aenter__(self) -> TipBatcher:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if not self._tasks:
            self._closing = False
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def close(self) -> None:
        """Post what is queued, then stop the workers and close their connections."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the tip batcher is closed"))

    async def submit(self, order: TipOrder) -> PostedTip:
        """Post one tip in the next batch: its PostedTip, or its problem raised."""
        if self._closing or not self._tasks or all(t.done() for t in self._tasks):
            raise RuntimeError("the tip batcher is not running")
        if len(self._queue) >= self.max_queue:
            raise TipsBusy(headers={"retry-after": "1"})
        future: asyncio.Future[PostedTip] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(order, future))
        self._wakeup.set()
        return await future

    # ----------------------------------------------------------------------- workers

    def _take(self) -> list[_Waiting]:
        """Up to max_batch waiting tips in arrival order, one per viewer; the rest stay queued
        in their order."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        viewers: set[int] = set()
        while self._queue and len(batch) < self.max_batch:
            waiting = self._queue.popleft()
            if waiting.future.done():  # the caller gave up before it was sent
                continue
            if waiting.order.viewer_id in viewers:
                later.append(waiting)
            else:
                viewers.add(waiting.order.viewer_id)
                batch.append(waiting)
        self._queue.extendleft(reversed(later))
        return batch

    async def _work(self) -> None:
        conn: Conn | None = None
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self.linger and len(self._queue) < self.max_batch and not self._closing:
                    await asyncio.sleep(self.linger)
                batch = self._take()
                if not batch:
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                        await service.ensure_currency(conn, self.settings)
                    await self._post(conn, batch)
                except Exception as exc:
                    log.warning("tip_batch_failed", tips=len(batch), error=type(exc).__name__)
                    failure: Exception = exc
                    if isinstance(exc, psycopg.OperationalError):
                        # The connection went: whether the batch committed is unknown, and the
                        # same Idempotency-Key tells.
                        failure = TipBatchLost(headers={"retry-after": "1"})
                        failure.__cause__ = exc
                    for waiting in batch:
                        if not waiting.future.done():
                            waiting.future.set_exception(failure)
                    if conn is not None and conn.broken:
                        await conn.close()
                        conn = None
        finally:
            if conn is not None:
                with suppress(Exception):
                    await conn.close()

    async def _post(self, conn: Conn, batch: list[_Waiting]) -> None:
        rates = Rates.from_settings(self.settings)
        orders = [w.order for w in batch]

        async def attempt() -> list[BatchOutcome]:
            async with conn.transaction():
                return await queries.post_tips(
                    conn,
                    orders,
                    currency=rates.currency,
                    tokens_per_unit=rates.tokens_per_currency_unit,
                    units_per_token=rates.units_per_token,
                    fee_bps=rates.fee_bps,
                    shard=random.randrange(self.settings.ledger.hot_account_shards),  # noqa: S311
                )

        try:
            outcomes = await service.retrying(attempt)
        except psycopg.OperationalError:
            raise  # the connection: every caller hears of it
        except psycopg.Error as exc:
            # Something the batch checks do not isolate: post each tip on its own, so only
            # the tip at fault fails.
            log.warning("tip_batch_singly", tips=len(batch), sqlstate=exc.sqlstate)
            await self._post_singly(conn, batch)
            return
        self.batches += 1
        self.tips += len(batch)
        await self._publish(
            conn,
            [(w.order.channel, o.posted) for w, o in zip(batch, outcomes, strict=True) if o.posted],
        )
        for waiting, result in zip(batch, outcomes, strict=True):
            if waiting.future.done():
                continue
            if result.posted is not None:
                waiting.future.set_result(result.posted)
            else:
                problem = SQLSTATE_PROBLEMS[result.outcome]
                waiting.future.set_exception(problem(REFUSALS[result.outcome]))

    async def _post_singly(self, conn: Conn, batch: list[_Waiting]) -> None:
        for waiting in batch:
            try:
                posted = await post_alone(conn, self.settings, waiting.order)
            except Exception as exc:  # handed to its caller
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
                continue
            await self._publish(conn, [(waiting.order.channel, posted)])
            if not waiting.future.done():
                waiting.future.set_result(posted)

    async def _publish(self, conn: Conn, posted: list[tuple[str, PostedTip]]) -> None:
        """Publish the new tips' events after commit; a failure leaves them to the relay."""
        events = [
            (channel, p.outbox_id, p.event)
            for channel, p in posted
            if not p.replayed and p.outbox_id is not None and p.event is not None
        ]
        if self.kv is None or not events:
            return
        try:
            async with self.kv.pipeline(transaction=False) as pipe:
                for channel, _, event in events:
                    pipe.publish(channel, outbox.encode_event("tip", event))
                await pipe.execute()
        except Exception as exc:
            log.warning("tip_batch_publish_failed", tips=len(events), error=type(exc).__name__)
            return
        await queries.mark_published(conn, [outbox_id for _, outbox_id, _ in events])


async def post_alone(
    conn: Conn, settings: Settings, order: TipOrder, *, shard: int | None = None
) -> PostedTip:
    """One tip in its own transaction (ledger_post_tip), retried after a deadlock."""
    await service.ensure_currency(conn, settings)
    rates = Rates.from_settings(settings)

    async def attempt() -> PostedTip:
        with translated():
            return await queries.post_tip(
                conn,
                viewer_id=order.viewer_id,
                stream_id=order.stream_id,
                tokens=order.tokens,
                message=order.message,
                private=order.private,
                idempotency_key=order.idempotency_key,
                request_hash=order.request_hash,
                currency=rates.currency,
                tokens_per_unit=rates.tokens_per_currency_unit,
                units_per_token=rates.units_per_token,
                fee_bps=rates.fee_bps,
                shard=service.random_shard(settings) if shard is None else shard,
                channel=order.channel,
            )

    return await service.retrying(attempt)
