"""Tips: a viewer's tokens burned, the performer's earnings and the platform's fee credited in
currency at the rate and fee in force, all in one transaction with the tip's outbox event; the
event is published to the stream's room channel after commit.

The checks a client can fail, each a clear 4xx with nothing changed: amount out of bounds,
message too long, too many tips this minute, stream missing or not live, tip to oneself,
insufficient tokens, frozen wallet, the same Idempotency-Key with a different body.
"""

from __future__ import annotations

import hashlib
import time

import msgspec
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput, TooManyRequests
from tipstream.ledger import outbox
from tipstream.ledger.batcher import TipBatcher, post_alone
from tipstream.ledger.errors import AmountOutOfBounds
from tipstream.ledger.money import Rates
from tipstream.ledger.queries import PostedTip, TipOrder, TipRow
from tipstream.ledger.schemas import Tip

MAX_KEY_LENGTH = 200


class TipRateLimited(TooManyRequests):
    slug, title = "tip-rate-limited", "Too many tips; wait a moment"


def room_channel(settings: Settings, stream_id: int) -> str:
    """The stream's realtime channel (the Live rooms domain subscribes to it)."""
    return kvmod.key(settings, "room", stream_id)


def request_hash(stream_id: int, tokens: int, message: str | None, private: bool) -> str:
    canonical = msgspec.json.encode(
        {"stream_id": stream_id, "tokens": tokens, "message": message, "private": private}
    )
    return hashlib.sha256(canonical).hexdigest()


def check_request(
    settings: Settings, *, tokens: int, message: str | None, idempotency_key: str
) -> None:
    ledger = settings.ledger
    if not ledger.tip_min_tokens <= tokens <= ledger.tip_max_tokens:
        raise AmountOutOfBounds(
            f"a tip is between {ledger.tip_min_tokens} and {ledger.tip_max_tokens} tokens",
            extra={"min": ledger.tip_min_tokens, "max": ledger.tip_max_tokens},
        )
    if message is not None and len(message) > ledger.tip_message_max_length:
        raise InvalidInput(f"the message is longer than {ledger.tip_message_max_length} characters")
    if message is not None and "\x00" in message:
        raise InvalidInput("the message may not contain NUL characters")
    if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH or not idempotency_key.isprintable():
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")


async def check_rate(kv: Valkey, settings: Settings, viewer_id: int) -> None:
    """Fixed one-minute windows per viewer, counted in Valkey so every worker agrees."""
    window = int(time.time() // 60)
    counter = kvmod.key(settings, "tip-rate", viewer_id, window)
    async with kv.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count, _ = await pipe.execute()
    if int(count) > settings.ledger.tips_per_minute:
        raise TipRateLimited(
            f"at most {settings.ledger.tips_per_minute} tips a minute",
            headers={"retry-after": str(60 - int(time.time()) % 60)},
        )


def make_order(
    settings: Settings,
    *,
    viewer_id: int,
    stream_id: int,
    tokens: int,
    message: str | None,
    private: bool,
    idempotency_key: str,
) -> TipOrder:
    """A checked tip request, with its body hash and channel, ready to post."""
    check_request(settings, tokens=tokens, message=message, idempotency_key=idempotency_key)
    if message is not None and not message.strip():
        message = None
    return TipOrder(
        viewer_id=viewer_id,
        stream_id=stream_id,
        tokens=tokens,
        message=message,
        private=private,
        idempotency_key=idempotency_key,
        request_hash=request_hash(stream_id, tokens, message, private),
        channel=room_channel(settings, stream_id),
    )


async def post_tip(
    conn: Conn,
    settings: Settings,
    *,
    viewer_id: int,
    stream_id: int,
    tokens: int,
    message: str | None,
    private: bool,
    idempotency_key: str,
    shard: int | None = None,
) -> PostedTip:
    """The ledger side of a tip: one transaction, nothing published yet. A replay (same key,
    same body) answers the original tip with replayed=True and writes nothing."""
    order = make_order(
        settings,
        viewer_id=viewer_id,
        stream_id=stream_id,
        tokens=tokens,
        message=message,
        private=private,
        idempotency_key=idempotency_key,
    )
    return await post_alone(conn, settings, order, shard=shard)


async def post_tip_batched(
    batcher: TipBatcher,
    *,
    viewer_id: int,
    stream_id: int,
    tokens: int,
    message: str | None,
    private: bool,
    idempotency_key: str,
) -> PostedTip:
    """post_tip through the batcher: the same checks and outcomes, committed with the other
    tips of its batch (published by the batcher when it has Valkey)."""
    order = make_order(
        batcher.settings,
        viewer_id=viewer_id,
        stream_id=stream_id,
        tokens=tokens,
        message=message,
        private=private,
        idempotency_key=idempotency_key,
    )
    return await batcher.submit(order)


async def tip(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    *,
    viewer_id: int,
    stream_id: int,
    tokens: int,
    message: str | None,
    private: bool,
    idempotency_key: str,
    batcher: TipBatcher | None = None,
) -> tuple[Tip, bool]:
    """What the API does: rate limit, post the tip (in a batch when there is a batcher),
    publish its event after commit. Returns the tip and whether it is a replay of an earlier
    request."""
    check_request(settings, tokens=tokens, message=message, idempotency_key=idempotency_key)
    await check_rate(kv, settings, viewer_id)
    order = make_order(
        settings,
        viewer_id=viewer_id,
        stream_id=stream_id,
        tokens=tokens,
        message=message,
        private=private,
        idempotency_key=idempotency_key,
    )
    if batcher is not None:
        posted = await batcher.submit(order)
    else:
        posted = await post_alone(conn, settings, order)
    published = batcher is not None and batcher.kv is not None
    if (
        not published
        and not posted.replayed
        and posted.outbox_id is not None
        and posted.event is not None
    ):
        await outbox.publish_now(
            conn,
            kv,
            outbox_id=posted.outbox_id,
            channel=room_channel(settings, stream_id),
            event_type="tip",
            payload=posted.event,
        )
    return to_schema(posted.tip, Rates.from_settings(settings)), posted.replayed


def to_schema(row: TipRow, rates: Rates) -> Tip:
    # Units are formatted at the scale the tip was booked at (the asset's, which never changes).
    return Tip(
        id=row.id,
        stream_id=row.stream_id,
        performer_id=row.performer_id,
        viewer_id=row.viewer_id,
        tokens=row.tokens,
        message=row.message,
        private=row.message_private,
        currency=row.currency,
        tokens_per_currency_unit=row.tokens_per_currency_unit,
        fee_bps=row.fee_bps,
        gross=rates.format_units(row.gross_units),
        performer_share=rates.format_units(row.performer_units),
        platform_fee=rates.format_units(row.platform_units),
        created_at=row.created_at,
    )
