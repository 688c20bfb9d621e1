"""Tips through the ledger service: one transaction burns the viewer's tokens and credits the
performer's share and the platform's fee in currency at the rate and fee in force; every refusal
changes nothing; the event reaches the room channel once, by the request or by the relay."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest
from valkey.asyncio import Valkey

from tests.helpers import scalar
from tests.integration.ledger.conftest import Fund, NewStream, NewUser
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.ledger import errors, outbox, service, tips


async def earnings(db: Conn, performer: int) -> int:
    return int(
        await scalar(
            db,
            "SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
            " WHERE owner_id = %s AND kind = 'earnings'",
            (performer,),
        )
    )


async def ledger_counts(db: Conn) -> tuple[int, int, int]:
    cur = await db.execute(
        "SELECT (SELECT count(*) FROM tips) AS t, (SELECT count(*) FROM ledger_transfers) AS x,"
        " (SELECT count(*) FROM outbox) AS o"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["t"]), int(row["x"]), int(row["o"])


async def tip(db: Conn, settings: Settings, viewer: int, stream: int, tokens: int, **kw: Any):
    kw.setdefault("message", None)
    kw.setdefault("private", False)
    kw.setdefault("idempotency_key", uuid.uuid4().hex)
    return await tips.post_tip(
        db, settings, viewer_id=viewer, stream_id=stream, tokens=tokens, **kw
    )


@pytest.fixture
async def scene(new_user: NewUser, new_stream: NewStream, fund: Fund) -> tuple[int, int, int]:
    viewer, performer = await new_user(), await new_user("performer", "Perry Former")
    stream = await new_stream(performer)
    await fund(viewer, 1_000)
    return viewer, performer, stream


async def test_a_tip_burns_tokens_and_credits_the_exact_split(
    db: Conn, settings: Settings, scene: tuple[int, int, int]
) -> None:
    viewer, performer, stream = scene
    revenue_before = await scalar(
        db,
        "SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
        " WHERE owner_id IS NULL AND kind = 'revenue' AND code = 'tips'",
    )
    posted = await tip(db, settings, viewer, stream, 250, message="hi!")
    assert not posted.replayed
    row = posted.tip
    assert (row.tokens, row.performer_id, row.stream_id) == (250, performer, stream)
    # 100 tokens = 1 USD at 1/10,000 USD units: 250 tokens = 25,000 units, 30% = 7,500.
    assert (row.currency, row.tokens_per_currency_unit, row.fee_bps) == ("USD", 100, 3000)
    assert (row.gross_units, row.performer_units, row.platform_units) == (25_000, 17_500, 7_500)
    assert (await service.wallet(db, viewer)).balance == 750
    assert await earnings(db, performer) == 17_500
    revenue_after = await scalar(
        db,
        "SELECT sum(credits_posted - debits_posted) FROM ledger_accounts"
        " WHERE owner_id IS NULL AND kind = 'revenue' AND code = 'tips'",
    )
    assert revenue_after - revenue_before == 7_500
    # The tip knows which lot (here: the grant) paid for it.
    funded = await scalar(
        db,
        "SELECT sum(s.tokens) FROM lot_spends s JOIN token_lots l ON l.id = s.lot_id"
        " WHERE s.transfer_id = %s AND l.source_kind = 'grant'",
        (f"tip:{row.id}:tokens",),
    )
    assert funded == 250


async def test_same_key_same_body_answers_the_original_and_another_body_is_refused(
    db: Conn, settings: Settings, scene: tuple[int, int, int]
) -> None:
    viewer, performer, stream = scene
    first = await tip(db, settings, viewer, stream, 100, idempotency_key="k-1", message="yo")
    counts = await ledger_counts(db)
    again = await tip(db, settings, viewer, stream, 100, idempotency_key="k-1", message="yo")
    assert again.replayed and again.tip.id == first.tip.id
    with pytest.raises(errors.IdempotencyKeyReused):
        await tip(db, settings, viewer, stream, 101, idempotency_key="k-1", message="yo")
    with pytest.raises(errors.IdempotencyKeyReused):
        await tip(db, settings, viewer, stream, 100, idempotency_key="k-1", message="other")
    assert await ledger_counts(db) == counts
    assert (await service.wallet(db, viewer)).balance == 900
    assert await earnings(db, performer) == 7_000


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("insufficient", errors.InsufficientFunds),
        ("self", errors.SelfTip),
        ("scheduled", errors.StreamNotLive),
        ("ended", errors.StreamNotLive),
        ("missing", errors.StreamNotFound),
        ("frozen", errors.AccountFrozen),
        ("no-wallet", errors.InsufficientFunds),
        ("zero", errors.AmountOutOfBounds),
        ("too-many", errors.AmountOutOfBounds),
        ("long-message", InvalidInput),
        ("empty-key", InvalidInput),
    ],
)
async def test_refused_tips_change_nothing(
    db: Conn,
    settings: Settings,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
    scene: tuple[int, int, int],
    case: str,
    problem: type[Exception],
) -> None:
    viewer, performer, stream = scene
    tokens, key, message = 10, uuid.uuid4().hex, None
    if case == "insufficient":
        tokens = 1_001
    elif case == "self":
        await fund(performer, 100)
        viewer = performer
    elif case in ("scheduled", "ended"):
        stream = await new_stream(performer, case)
    elif case == "missing":
        stream = 2**62
    elif case == "frozen":
        await service.set_wallet_frozen(db, viewer, frozen=True, reason="test", actor_id=None)
    elif case == "no-wallet":
        viewer = await new_user()
    elif case == "zero":
        tokens = 0
    elif case == "too-many":
        tokens = settings.ledger.tip_max_tokens + 1
    elif case == "long-message":
        message = "x" * (settings.ledger.tip_message_max_length + 1)
    elif case == "empty-key":
        key = ""
    before = (await ledger_counts(db), (await service.wallet(db, viewer)).balance)
    with pytest.raises(problem):
        await tip(db, settings, viewer, stream, tokens, idempotency_key=key, message=message)
    after = (await ledger_counts(db), (await service.wallet(db, viewer)).balance)
    assert after == before
    if case == "frozen":
        await service.set_wallet_frozen(db, viewer, frozen=False, reason=None, actor_id=None)


async def test_the_rate_and_fee_in_force_are_stored_with_each_tip(
    db: Conn, settings: Settings, settings_factory: Any, scene: tuple[int, int, int]
) -> None:
    viewer, performer, stream = scene
    old = await tip(db, settings, viewer, stream, 10)
    cheaper = settings_factory(ledger={"platform_fee_bps": 2000, "tokens_per_currency_unit": 50})
    new = await tip(db, cheaper, viewer, stream, 10)
    assert (new.tip.fee_bps, new.tip.tokens_per_currency_unit) == (2000, 50)
    assert (new.tip.gross_units, new.tip.platform_units) == (2_000, 400)
    fetched = await db.execute("SELECT fee_bps, gross_units FROM tips WHERE id = %s", (old.tip.id,))
    assert await fetched.fetchone() == {"fee_bps": 3000, "gross_units": 1_000}
    assert await earnings(db, performer) == 700 + 1_600


async def _listen(
    kv_url: str, channel: str, ready: asyncio.Event, got: list[bytes], n: int
) -> None:
    client = Valkey.from_url(kv_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel)
    ready.set()
    try:
        while len(got) < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                got.append(message["data"])
    finally:
        await pubsub.aclose()
        await client.aclose()


async def collect(settings: Settings, channel: str, action: Any, wait: float = 1.0) -> list[bytes]:
    """Everything published on channel while action runs, and for `wait` seconds after."""
    got: list[bytes] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(settings.valkey.url, channel, ready, got, 10_000))
    await ready.wait()
    await action()
    await asyncio.sleep(wait)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    return got


async def test_the_tip_event_reaches_the_room_channel_once_and_private_messages_stay_private(
    db: Conn, kv: Valkey, settings: Settings, scene: tuple[int, int, int]
) -> None:
    viewer, _performer, stream = scene
    channel = tips.room_channel(settings, stream)
    assert channel == f"{settings.valkey.key_prefix}room:{stream}"
    key = uuid.uuid4().hex

    async def tip_twice() -> None:
        for _ in range(2):  # the retry is answered, not published again
            await tips.tip(
                db,
                kv,
                settings,
                viewer_id=viewer,
                stream_id=stream,
                tokens=5,
                message="for you only",
                private=True,
                idempotency_key=key,
            )
        await tips.tip(
            db,
            kv,
            settings,
            viewer_id=viewer,
            stream_id=stream,
            tokens=7,
            message="hello room",
            private=False,
            idempotency_key=uuid.uuid4().hex,
        )

    messages = [msgspec.json.decode(m) for m in await collect(settings, channel, tip_twice, 0.3)]
    assert [m["tokens"] for m in messages] == [5, 7]
    assert all(m["type"] == "tip" and m["viewer_name"] == "Ledger Tester" for m in messages)
    assert messages[0]["message"] is None and messages[0]["private_message"] is True
    assert messages[1]["message"] == "hello room"
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM outbox WHERE channel = %s AND published_at IS NULL",
            (channel,),
        )
        == 0
    )


async def test_the_relay_publishes_what_a_crash_left_unpublished_exactly_once(
    db: Conn, kv: Valkey, settings: Settings, scene: tuple[int, int, int]
) -> None:
    viewer, _performer, stream = scene
    channel = tips.room_channel(settings, stream)
    # Committed, then the process "dies" before publishing: post_tip alone does not publish.
    posted = await tip(db, settings, viewer, stream, 3)

    async def relay_twice() -> None:
        # Too young for the relay with the default grace period: left to its request.
        assert await outbox.relay(db, kv, settings, max_batches=1) == 0
        assert await outbox.relay(db, kv, settings, grace_seconds=0) >= 1
        assert await outbox.relay(db, kv, settings, grace_seconds=0) == 0

    got = await collect(settings, channel, relay_twice, 0.3)
    assert [msgspec.json.decode(m)["tip_id"] for m in got] == [posted.tip.id]


async def test_viewers_are_rate_limited(
    db: Conn, kv: Valkey, settings_factory: Any, scene: tuple[int, int, int]
) -> None:
    viewer, _performer, stream = scene
    strict = settings_factory(ledger={"tips_per_minute": 3})
    for _ in range(3):
        await tips.tip(
            db,
            kv,
            strict,
            viewer_id=viewer,
            stream_id=stream,
            tokens=1,
            message=None,
            private=False,
            idempotency_key=uuid.uuid4().hex,
        )
    with pytest.raises(tips.TipRateLimited):
        await tips.tip(
            db,
            kv,
            strict,
            viewer_id=viewer,
            stream_id=stream,
            tokens=1,
            message=None,
            private=False,
            idempotency_key=uuid.uuid4().hex,
        )
    assert (await service.wallet(db, viewer)).balance == 997
