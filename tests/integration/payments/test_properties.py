"""Property: any sequence of purchases, tips, refunds, chargebacks and payouts leaves the books
provable: `ledger verify` passes after every single step, and no refusal moves money."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.ledger.conftest import insert_stream, insert_user
from tests.integration.payments.conftest import payments_settings
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import payouts, tips, verify
from tipstream.ledger.batcher import TipBatcher
from tipstream.ledger.queries import PostedTip
from tipstream.ledger.service import wallet
from tipstream.payments import service
from tipstream.payments.processors.base import ProcessorEvent

PACKAGES = ["tkn-100", "tkn-550", "tkn-1200"]
OPERATIONS = st.one_of(
    st.tuples(st.just("buy"), st.integers(0, 1), st.sampled_from(PACKAGES)),
    st.tuples(st.just("tip"), st.integers(0, 1), st.integers(0, 1), st.integers(1, 700)),
    # Both viewers tip at once through the batcher: one transaction, one outcome each.
    st.tuples(st.just("tips"), st.integers(0, 1), st.integers(1, 700), st.integers(1, 700)),
    st.tuples(st.just("refund"), st.integers(0, 5)),
    st.tuples(st.just("chargeback"), st.integers(0, 5)),
    st.tuples(st.just("payout"), st.integers(0, 1), st.sampled_from(["0.50", "1.00", "3.00"])),
    st.tuples(st.just("batch")),
    st.tuples(st.just("approve"), st.integers(0, 3)),
    st.tuples(st.just("paid"), st.integers(0, 3)),
    st.tuples(st.just("failed"), st.integers(0, 3)),
)
_settings: dict[str, Settings] = {}


def scenario_settings(pay_settings: Settings) -> Settings:
    if "s" not in _settings:
        _settings["s"] = payments_settings(
            pay_settings,
            Path(tempfile.mkdtemp()),
            earnings_hold_days=0,
            payout_minimum="0.01",
            chargeback_policy="performer",
        )
    return _settings["s"]


async def apply(db: Conn, cfg: Settings, world: dict[str, Any], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "buy":
        started = await service.start_checkout(
            db, cfg, user_id=world["viewers"][op[1]], package_id=op[2], processor_name="dev"
        )
        await service.apply_event(
            db,
            cfg,
            "dev",
            ProcessorEvent(
                event_id=uuid.uuid4().hex,
                kind="sale",
                event_type="sale",
                payload={},
                purchase_id=started.purchase_id,
            ),
        )
        world["purchases"].append(started.purchase_id)
    elif kind == "tip":
        await tips.post_tip(
            db,
            cfg,
            viewer_id=world["viewers"][op[1]],
            stream_id=world["streams"][op[2]],
            tokens=op[3],
            message=None,
            private=False,
            idempotency_key=uuid.uuid4().hex,
        )
    elif kind == "tips":
        await tip_in_one_batch(db, cfg, world, stream=world["streams"][op[1]], amounts=op[2:])
    elif kind in ("refund", "chargeback") and world["purchases"]:
        pid = world["purchases"][op[1] % len(world["purchases"])]
        await service.apply_event(
            db,
            cfg,
            "dev",
            ProcessorEvent(
                event_id=uuid.uuid4().hex, kind=kind, event_type=kind, payload={}, purchase_id=pid
            ),
        )
    elif kind == "payout":
        row, _ = await payouts.request_payout(
            db,
            cfg,
            performer_id=world["performers"][op[1]],
            amount=op[2],
            account_holder="P",
            iban="DE44500105175407324931",
            bic=None,
            idempotency_key=uuid.uuid4().hex,
        )
        world["payouts"].append(row.id)
    elif kind == "batch":
        await payouts.create_batch(db, actor_id=None)
    elif kind in ("approve", "paid", "failed") and world["payouts"]:
        pid = world["payouts"][op[1] % len(world["payouts"])]
        if kind == "approve":
            await payouts.approve(db, cfg, payout_id=pid, admin_id=world["admin"])
        elif kind == "paid":
            await payouts.mark_paid(db, cfg, payout_id=pid, actor_id=None)
        else:
            await payouts.mark_failed(db, cfg, payout_id=pid, reason="test", actor_id=None)


async def tip_in_one_batch(
    db: Conn, cfg: Settings, world: dict[str, Any], *, stream: int, amounts: tuple[int, ...]
) -> None:
    """Each viewer's tip in the same batch; a refused one leaves its wallet as it was, a
    posted one takes exactly its tokens."""
    before = [(await wallet(db, v)).balance for v in world["viewers"]]
    async with TipBatcher(cfg, linger=0.05) as batcher:
        results = await asyncio.gather(
            *[
                tips.post_tip_batched(
                    batcher,
                    viewer_id=viewer,
                    stream_id=stream,
                    tokens=amount,
                    message=None,
                    private=False,
                    idempotency_key=uuid.uuid4().hex,
                )
                for viewer, amount in zip(world["viewers"], amounts, strict=True)
            ],
            return_exceptions=True,
        )
    for viewer, amount, was, result in zip(world["viewers"], amounts, before, results, strict=True):
        assert isinstance(result, PostedTip | Problem), result
        spent = amount if isinstance(result, PostedTip) else 0
        assert (await wallet(db, viewer)).balance == was - spent


async def money_snapshot(db: Conn) -> tuple[Any, ...]:
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM ledger_transfers) AS t,"
        " (SELECT coalesce(sum(credits_posted + debits_posted + credits_pending"
        "  + debits_pending), 0) FROM ledger_accounts) AS m"
    )
    row = await cur.fetchone()
    assert row is not None
    return (row["t"], row["m"])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(OPERATIONS, min_size=1, max_size=14))
async def test_any_sequence_keeps_the_books_provable(
    db: Conn, pay_settings: Settings, steps: list[tuple[Any, ...]]
) -> None:
    cfg = scenario_settings(pay_settings)
    performers = [await insert_user(db, "performer") for _ in range(2)]
    for performer in performers:
        await db.execute("INSERT INTO kyc (user_id, status) VALUES (%s, 'approved')", (performer,))
    world: dict[str, Any] = {
        "viewers": [await insert_user(db) for _ in range(2)],
        "performers": performers,
        "streams": [await insert_stream(db, p) for p in performers],
        "admin": await insert_user(db, "admin"),
        "purchases": [],
        "payouts": [],
    }
    for step in steps:
        before = await money_snapshot(db)
        try:
            await apply(db, cfg, world, step)
        except Problem:
            # A refusal (insufficient, frozen, wrong state...) moves nothing.
            assert await money_snapshot(db) == before, step
        report = await verify.verify(db)
        assert report.ok, (step, [c for c in report.checks if not c.ok])
