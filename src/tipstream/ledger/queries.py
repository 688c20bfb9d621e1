"""SQL for the ledger: accounts, transfers, lots, tips, the outbox, KYC status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tipstream.db import Conn
from tipstream.errors import NotFound


class AccountNotFound(NotFound):
    slug, title = "account-not-found", "Ledger account not found"


class TransferNotFound(NotFound):
    slug, title = "transfer-not-found", "Transfer not found"


@dataclass
class AccountRow:
    id: int
    owner_id: int | None
    asset: str
    kind: str
    code: str
    shard: int
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    frozen_at: datetime | None
    frozen_reason: str | None
    created_at: datetime

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted


@dataclass
class TransferRow:
    id: str
    seq: int
    debit_account_id: int
    credit_account_id: int
    asset: str
    amount: int
    phase: str
    pending_id: str | None
    kind: str
    reference: str | None
    metadata: dict[str, Any]
    forced: bool
    created_at: datetime
    # Applied by the batch trigger (tips posted in batches, 0012_tip_batches.sql).
    batched: bool = False


@dataclass
class AccountTotal:
    """One logical account: its shard rows added up."""

    owner_id: int | None
    asset: str
    kind: str
    code: str
    shards: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    frozen: bool


@dataclass
class HistoryRow:
    id: str
    seq: int
    asset: str
    kind: str
    phase: str
    pending_id: str | None
    reference: str | None
    metadata: dict[str, Any]
    created_at: datetime
    account_kind: str
    # Positive when the user's account was credited, negative when debited.
    amount: int


@dataclass
class TipRow:
    id: int
    viewer_id: int
    performer_id: int
    stream_id: int
    idempotency_key: str
    request_hash: str
    tokens: int
    currency: str
    tokens_per_currency_unit: int
    units_per_token: int
    fee_bps: int
    gross_units: int
    performer_units: int
    platform_units: int
    message: str | None
    message_private: bool
    shard: int
    created_at: datetime
    # The batch that posted it (its credits rolled up per batch), None when posted alone.
    batch_id: int | None = None


@dataclass
class PostedTip:
    tip: TipRow
    replayed: bool
    outbox_id: int | None
    event: dict[str, Any] | None


@dataclass
class OutboxRow:
    id: int
    channel: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    published_at: datetime | None


# --------------------------------------------------------------------------- assets, accounts


async def asset_scale(conn: Conn, code: str) -> int | None:
    cur = await conn.execute(
        "SELECT scale FROM ledger_assets WHERE code = %(code)s", {"code": code}
    )
    row = await cur.fetchone()
    return None if row is None else int(row["scale"])


async def insert_asset(conn: Conn, code: str, scale: int) -> None:
    await conn.execute(
        """
        INSERT INTO ledger_assets (code, scale) VALUES (%(code)s, %(scale)s)
        ON CONFLICT (code) DO NOTHING
        """,
        {"code": code, "scale": scale},
    )


async def account_id(
    conn: Conn,
    *,
    owner_id: int | None,
    asset: str,
    kind: str,
    code: str = "",
    shard: int = 0,
    no_overdraft: bool = False,
) -> int:
    """The id of this account, created on first use."""
    cur = await conn.execute(
        """
        SELECT ledger_account_id(%(owner_id)s::bigint, %(asset)s, %(kind)s, %(code)s,
                                 %(shard)s::smallint, %(no_overdraft)s) AS id
        """,
        {
            "owner_id": owner_id,
            "asset": asset,
            "kind": kind,
            "code": code,
            "shard": shard,
            "no_overdraft": no_overdraft,
        },
    )
    row = await cur.fetchone()
    assert row is not None and row["id"] is not None
    return int(row["id"])


async def lock_account(conn: Conn, account_id: int) -> AccountRow:
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute(
            "SELECT * FROM ledger_accounts WHERE id = %(id)s FOR UPDATE", {"id": account_id}
        )
        row = await cur.fetchone()
    if row is None:
        raise AccountNotFound
    return row


async def account_by_id(conn: Conn, account_id: int) -> AccountRow:
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute("SELECT * FROM ledger_accounts WHERE id = %(id)s", {"id": account_id})
        row = await cur.fetchone()
    if row is None:
        raise AccountNotFound
    return row


async def find_account(
    conn: Conn, *, owner_id: int | None, asset: str, kind: str, code: str = "", shard: int = 0
) -> AccountRow | None:
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM ledger_accounts
            WHERE id = ledger_find_account(%(owner_id)s::bigint, %(asset)s, %(kind)s, %(code)s,
                                           %(shard)s::smallint)
            """,
            {"owner_id": owner_id, "asset": asset, "kind": kind, "code": code, "shard": shard},
        )
        return await cur.fetchone()


async def accounts_of(conn: Conn, owner_id: int | None) -> list[AccountRow]:
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM ledger_accounts
            WHERE (owner_id = %(owner_id)s OR (owner_id IS NULL AND %(owner_id)s::bigint IS NULL))
            ORDER BY asset, kind, code, shard
            """,
            {"owner_id": owner_id},
        )
        return await cur.fetchall()


async def account_totals(conn: Conn, owner_id: int | None) -> list[AccountTotal]:
    """Every logical account of an owner (None: the platform), shards added up."""
    async with conn.cursor(row_factory=class_row(AccountTotal)) as cur:
        await cur.execute(
            """
            SELECT owner_id, asset, kind, code, count(*)::int AS shards,
                   sum(debits_pending)::bigint AS debits_pending,
                   sum(debits_posted)::bigint AS debits_posted,
                   sum(credits_pending)::bigint AS credits_pending,
                   sum(credits_posted)::bigint AS credits_posted,
                   bool_or(frozen_at IS NOT NULL) AS frozen
            FROM ledger_accounts
            WHERE (owner_id = %(owner_id)s OR (owner_id IS NULL AND %(owner_id)s::bigint IS NULL))
            GROUP BY owner_id, asset, kind, code
            ORDER BY asset, kind, code
            """,
            {"owner_id": owner_id},
        )
        return await cur.fetchall()


async def lock_owner_accounts(conn: Conn, owner_id: int, asset: str, kind: str) -> list[AccountRow]:
    """Every shard of one of a user's accounts, locked in id order (the lock order)."""
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM ledger_accounts
            WHERE owner_id = %(owner)s AND asset = %(asset)s AND kind = %(kind)s
            ORDER BY id
            FOR UPDATE
            """,
            {"owner": owner_id, "asset": asset, "kind": kind},
        )
        return await cur.fetchall()


async def set_frozen(
    conn: Conn, account_ids: list[int], *, frozen: bool, reason: str | None
) -> list[AccountRow]:
    async with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        await cur.execute(
            """
            UPDATE ledger_accounts
               SET frozen_at = CASE WHEN %(frozen)s THEN coalesce(frozen_at, now()) END,
                   frozen_reason = CASE WHEN %(frozen)s THEN %(reason)s END
             WHERE id = ANY(%(ids)s)
            RETURNING *
            """,
            {"ids": account_ids, "frozen": frozen, "reason": reason},
        )
        return await cur.fetchall()


# --------------------------------------------------------------------------- transfers


async def insert_transfer(
    conn: Conn,
    *,
    id: str,
    debit_account_id: int,
    credit_account_id: int,
    asset: str,
    amount: int,
    kind: str,
    phase: str = "posted",
    pending_id: str | None = None,
    reference: str | None = None,
    metadata: dict[str, Any] | None = None,
    forced: bool = False,
) -> TransferRow:
    """Insert one transfer; the apply trigger moves both balances in this transaction."""
    async with conn.cursor(row_factory=class_row(TransferRow)) as cur:
        await cur.execute(
            """
            INSERT INTO ledger_transfers
                (id, debit_account_id, credit_account_id, asset, amount, phase, pending_id,
                 kind, reference, metadata, forced)
            VALUES
                (%(id)s, %(debit)s, %(credit)s, %(asset)s, %(amount)s, %(phase)s,
                 %(pending_id)s, %(kind)s, %(reference)s, %(metadata)s, %(forced)s)
            RETURNING *
            """,
            {
                "id": id,
                "debit": debit_account_id,
                "credit": credit_account_id,
                "asset": asset,
                "amount": amount,
                "phase": phase,
                "pending_id": pending_id,
                "kind": kind,
                "reference": reference,
                "metadata": Jsonb(metadata or {}),
                "forced": forced,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def transfers_by_id(conn: Conn, ids: list[str]) -> list[TransferRow]:
    async with conn.cursor(row_factory=class_row(TransferRow)) as cur:
        await cur.execute(
            "SELECT * FROM ledger_transfers WHERE id = ANY(%(ids)s) ORDER BY seq", {"ids": ids}
        )
        return await cur.fetchall()


async def transfers_by_reference(conn: Conn, reference: str) -> list[TransferRow]:
    async with conn.cursor(row_factory=class_row(TransferRow)) as cur:
        await cur.execute(
            "SELECT * FROM ledger_transfers WHERE reference = %(ref)s ORDER BY seq",
            {"ref": reference},
        )
        return await cur.fetchall()


async def transfers_by_kind_phase(conn: Conn, *, kind: str, phase: str) -> list[TransferRow]:
    async with conn.cursor(row_factory=class_row(TransferRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM ledger_transfers WHERE kind = %(kind)s AND phase = %(phase)s
            ORDER BY seq
            """,
            {"kind": kind, "phase": phase},
        )
        return await cur.fetchall()


async def pending_resolution(conn: Conn, pending_id: str) -> TransferRow | None:
    """The post or void of a pending transfer, if it has one."""
    async with conn.cursor(row_factory=class_row(TransferRow)) as cur:
        await cur.execute(
            "SELECT * FROM ledger_transfers WHERE pending_id = %(id)s", {"id": pending_id}
        )
        return await cur.fetchone()


async def history(
    conn: Conn, account_ids: list[int], *, before_seq: int | None, limit: int
) -> list[HistoryRow]:
    """Transfers touching these accounts, newest first, seq below before_seq."""
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            """
            SELECT t.id, t.seq, t.asset, t.kind, t.phase, t.pending_id, t.reference, t.metadata,
                   t.created_at, a.kind AS account_kind,
                   CASE WHEN t.credit_account_id = a.id THEN t.amount ELSE -t.amount END
                       AS amount
            FROM (
                (SELECT * FROM ledger_transfers
                  WHERE debit_account_id = ANY(%(ids)s) AND seq < %(before)s
                  ORDER BY seq DESC LIMIT %(limit)s)
                UNION ALL
                (SELECT * FROM ledger_transfers
                  WHERE credit_account_id = ANY(%(ids)s) AND seq < %(before)s
                    AND NOT debit_account_id = ANY(%(ids)s)
                  ORDER BY seq DESC LIMIT %(limit)s)
            ) t
            JOIN ledger_accounts a
              ON a.id = CASE WHEN t.credit_account_id = ANY(%(ids)s)
                             THEN t.credit_account_id ELSE t.debit_account_id END
            ORDER BY t.seq DESC
            LIMIT %(limit)s
            """,
            {"ids": account_ids, "before": before_seq or 2**63 - 1, "limit": limit},
        )
        return await cur.fetchall()


# --------------------------------------------------------------------------- tips


async def post_tip(
    conn: Conn,
    *,
    viewer_id: int,
    stream_id: int,
    tokens: int,
    message: str | None,
    private: bool,
    idempotency_key: str,
    request_hash: str,
    currency: str,
    tokens_per_unit: int,
    units_per_token: int,
    fee_bps: int,
    shard: int,
    channel: str,
) -> PostedTip:
    """The whole tip in one statement (ledger_post_tip in 0003_ledger.sql)."""
    cur = await conn.execute(
        """
        SELECT (r.tip).*, r.replayed, r.outbox_id, r.event
        FROM ledger_post_tip(
            %(viewer_id)s::bigint, %(stream_id)s::bigint, %(tokens)s::bigint, %(message)s::text,
            %(private)s::boolean, %(key)s::text, %(hash)s::text, %(currency)s::text,
            %(tpu)s::integer, %(upt)s::bigint, %(fee_bps)s::integer, %(shard)s::smallint,
            %(channel)s::text
        ) r
        """,
        {
            "viewer_id": viewer_id,
            "stream_id": stream_id,
            "tokens": tokens,
            "message": message,
            "private": private,
            "key": idempotency_key,
            "hash": request_hash,
            "currency": currency,
            "tpu": tokens_per_unit,
            "upt": units_per_token,
            "fee_bps": fee_bps,
            "shard": shard,
            "channel": channel,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    replayed = bool(row.pop("replayed"))
    outbox_id = row.pop("outbox_id")
    event = row.pop("event")
    return PostedTip(tip=TipRow(**row), replayed=replayed, outbox_id=outbox_id, event=event)


@dataclass
class TipOrder:
    """One tip of a batch, checked and hashed by tips.py."""

    viewer_id: int
    stream_id: int
    tokens: int
    message: str | None
    private: bool
    idempotency_key: str
    request_hash: str
    channel: str


@dataclass
class BatchOutcome:
    """A batch tip's fate: 'ok', 'replayed', or the SQLSTATE (TS0xx) ledger_post_tip would have
    raised; posted is set for 'ok' and 'replayed'."""

    outcome: str
    posted: PostedTip | None


async def post_tips(
    conn: Conn,
    orders: list[TipOrder],
    *,
    currency: str,
    tokens_per_unit: int,
    units_per_token: int,
    fee_bps: int,
    shard: int,
) -> list[BatchOutcome]:
    """Many tips in one statement (ledger_post_tips in 0012_tip_batches.sql), one outcome per
    order in order. Run it inside a transaction: the batch commits as one."""
    cur = await conn.execute(
        """
        SELECT r.outcome, r.outbox_id, r.event, (r.tip).*
        FROM ledger_post_tips(
            %(viewers)s::bigint[], %(streams)s::bigint[], %(tokens)s::bigint[],
            %(messages)s::text[], %(private)s::boolean[], %(keys)s::text[], %(hashes)s::text[],
            %(channels)s::text[], %(currency)s::text, %(tpu)s::integer, %(upt)s::bigint,
            %(fee_bps)s::integer, %(shard)s::smallint
        ) r
        ORDER BY r.ord
        """,
        {
            "viewers": [o.viewer_id for o in orders],
            "streams": [o.stream_id for o in orders],
            "tokens": [o.tokens for o in orders],
            "messages": [o.message for o in orders],
            "private": [o.private for o in orders],
            "keys": [o.idempotency_key for o in orders],
            "hashes": [o.request_hash for o in orders],
            "channels": [o.channel for o in orders],
            "currency": currency,
            "tpu": tokens_per_unit,
            "upt": units_per_token,
            "fee_bps": fee_bps,
            "shard": shard,
        },
    )
    outcomes = []
    for row in await cur.fetchall():
        outcome = row.pop("outcome")
        outbox_id = row.pop("outbox_id")
        event = row.pop("event")
        posted = None
        if outcome in ("ok", "replayed"):
            posted = PostedTip(
                tip=TipRow(**row),
                replayed=outcome == "replayed",
                outbox_id=outbox_id,
                event=event,
            )
        outcomes.append(BatchOutcome(outcome=outcome, posted=posted))
    return outcomes


async def tip_by_id(conn: Conn, tip_id: int) -> TipRow | None:
    async with conn.cursor(row_factory=class_row(TipRow)) as cur:
        await cur.execute("SELECT * FROM tips WHERE id = %(id)s", {"id": tip_id})
        return await cur.fetchone()


# --------------------------------------------------------------------------- outbox


async def mark_published(conn: Conn, outbox_ids: list[int]) -> None:
    """Mark events published, without waiting for the WAL flush: a mark lost in a crash only
    makes the relay publish the event again, which delivery allows (at least once), and the
    request answering a tip saves a durable commit."""
    await conn.execute(
        """
        WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
        UPDATE outbox SET published_at = now()
        FROM async_commit
        WHERE id = ANY(%(ids)s) AND published_at IS NULL
        """,
        {"ids": outbox_ids},
    )


async def claim_unpublished(
    conn: Conn, *, older_than_seconds: float, limit: int
) -> list[OutboxRow]:
    """Unpublished rows old enough that their own request is not still publishing them,
    locked so two relays never take the same row."""
    async with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM outbox
            WHERE published_at IS NULL
              AND created_at < now() - make_interval(secs => %(age)s)
            ORDER BY id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
            """,
            {"age": older_than_seconds, "limit": limit},
        )
        return await cur.fetchall()


async def count_unpublished(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
    row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


# --------------------------------------------------------------------------- kyc


async def kyc_status(conn: Conn, user_id: int) -> str:
    cur = await conn.execute("SELECT status FROM kyc WHERE user_id = %(id)s", {"id": user_id})
    row = await cur.fetchone()
    return "not_started" if row is None else str(row["status"])


# --------------------------------------------------------------------------- a stream's tips


@dataclass
class StreamTip:
    """A tip as everyone in the room sees it: a private message is left out."""

    id: int
    tokens: int
    viewer_name: str
    message: str | None


@dataclass
class StreamTipper:
    viewer_name: str
    tokens: int


async def recent_stream_tips(conn: Conn, stream_id: int, limit: int) -> list[StreamTip]:
    async with conn.cursor(row_factory=class_row(StreamTip)) as cur:
        await cur.execute(
            """
            SELECT t.id, t.tokens, u.display_name AS viewer_name,
                   CASE WHEN t.message_private THEN NULL ELSE t.message END AS message
            FROM tips t JOIN users u ON u.id = t.viewer_id
            WHERE t.stream_id = %(stream_id)s
            ORDER BY t.id DESC
            LIMIT %(limit)s
            """,
            {"stream_id": stream_id, "limit": limit},
        )
        return await cur.fetchall()


async def top_stream_tippers(conn: Conn, stream_id: int, limit: int) -> list[StreamTipper]:
    async with conn.cursor(row_factory=class_row(StreamTipper)) as cur:
        await cur.execute(
            """
            SELECT u.display_name AS viewer_name, sum(t.tokens)::bigint AS tokens
            FROM tips t JOIN users u ON u.id = t.viewer_id
            WHERE t.stream_id = %(stream_id)s
            GROUP BY u.id, u.display_name
            ORDER BY tokens DESC, min(t.id)
            LIMIT %(limit)s
            """,
            {"stream_id": stream_id, "limit": limit},
        )
        return await cur.fetchall()
