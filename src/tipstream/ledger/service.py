"""The ledger core: accounts, linked transfers, two-phase reservations, token issuance, balances
and history. Every money movement is one transaction; the database applies each transfer to
both balances (trigger) and refuses overdrafts (CHECK), so no caller can get that wrong.

Chart of accounts (owner None is the platform):

=================  =========  ============================================================
kind               asset      what it holds
=================  =========  ============================================================
wallet             TKN        a user's tokens (no overdraft; frozen when a chargeback drives
                              it negative)
issuance           TKN        platform, sharded: debited when tokens are issued, credited
                              when they are burned by a tip; minus its balance = tokens out
token_liability    currency   platform, sharded: the value of tokens sold and not yet spent
earnings           currency   a performer's share of tips (no overdraft), sharded
revenue            currency   platform fee on tips (code 'tips'), purchase margin
                              (code 'purchases'), sharded
promotions         currency   platform expense for tokens granted rather than sold
processor          currency   platform, code = processor: money the processor owes us
reserve            currency   platform chargeback reserve
payout_clearing    currency   platform: approved payouts on their way to the bank
bank               currency   platform: money paid out
=================  =========  ============================================================
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.ledger import queries
from tipstream.ledger.errors import RETRYABLE, TransferExists, translated
from tipstream.ledger.money import Rates
from tipstream.ledger.queries import AccountTotal, HistoryRow, TransferRow

T = TypeVar("T")
TKN = "TKN"

WALLET = "wallet"
ISSUANCE = "issuance"
TOKEN_LIABILITY = "token_liability"  # noqa: S105 (an account kind)
EARNINGS = "earnings"
REVENUE = "revenue"
PROMOTIONS = "promotions"
PROCESSOR = "processor"
RESERVE = "reserve"
PAYOUT_CLEARING = "payout_clearing"
BANK = "bank"

MAX_ATTEMPTS = 6


class CurrencyScaleChanged(InvalidInput):
    slug, title = "currency-scale-changed", "The currency scale may not change"


@dataclass(frozen=True)
class NewTransfer:
    id: str
    debit_account_id: int
    credit_account_id: int
    asset: str
    amount: int
    kind: str
    reference: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    phase: str = "posted"
    pending_id: str | None = None
    forced: bool = False

    def matches(self, row: TransferRow) -> bool:
        return (
            row.debit_account_id == self.debit_account_id
            and row.credit_account_id == self.credit_account_id
            and row.asset == self.asset
            and row.amount == self.amount
            and row.kind == self.kind
            and row.phase == self.phase
            and row.pending_id == self.pending_id
            and row.reference == self.reference
        )


@dataclass(frozen=True)
class Wallet:
    user_id: int
    balance: int
    available: int
    reserved: int
    frozen: bool


async def retrying(operation: Callable[[], Awaitable[T]]) -> T:
    """Run a whole transaction again after a deadlock or serialization failure."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return await operation()
        except psycopg.Error as exc:
            if exc.sqlstate not in RETRYABLE or attempt == MAX_ATTEMPTS - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 (jitter)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- accounts

_ensured_currencies: set[tuple[str, str]] = set()


async def ensure_currency(conn: Conn, settings: Settings) -> None:
    """Register the site currency with its scale; refuse a config whose scale differs from the
    one money was booked at. Cached per database after the first check."""
    rates = Rates.from_settings(settings)
    cache_key = (conn.info.dsn, rates.currency)
    if cache_key in _ensured_currencies:
        return
    scale = await queries.asset_scale(conn, rates.currency)
    if scale is None:
        await queries.insert_asset(conn, rates.currency, rates.scale)
        scale = await queries.asset_scale(conn, rates.currency)
    if scale != rates.scale:
        raise CurrencyScaleChanged(
            f"{rates.currency} is booked at scale {scale}; ledger.currency_scale is {rates.scale}"
        )
    _ensured_currencies.add(cache_key)


async def wallet_account_id(conn: Conn, user_id: int) -> int:
    return await queries.account_id(
        conn, owner_id=user_id, asset=TKN, kind=WALLET, no_overdraft=True
    )


async def platform_account_id(
    conn: Conn, settings: Settings, kind: str, *, code: str = "", shard: int = 0
) -> int:
    if kind == ISSUANCE:
        asset = TKN
    else:
        await ensure_currency(conn, settings)
        asset = settings.ledger.currency
    return await queries.account_id(
        conn, owner_id=None, asset=asset, kind=kind, code=code, shard=shard
    )


def random_shard(settings: Settings) -> int:
    return random.randrange(settings.ledger.hot_account_shards)  # noqa: S311 (load spreading)


# --------------------------------------------------------------------------- transfers


async def post_transfers(conn: Conn, transfers: Sequence[NewTransfer]) -> list[TransferRow]:
    """Post linked transfers: all commit together or none does. Idempotent by transfer id: the
    same batch again answers the transfers already posted; a different transfer under one of
    the ids is refused (TransferExists)."""
    if not transfers:
        return []
    ids = [t.id for t in transfers]
    if len(set(ids)) != len(ids):
        raise InvalidInput("transfer ids in one batch must differ")

    async def attempt() -> list[TransferRow]:
        with translated():
            async with conn.transaction():
                existing = await queries.transfers_by_id(conn, ids)
                if existing:
                    return _replay(transfers, existing)
                return [await _insert(conn, t) for t in transfers]

    try:
        return await retrying(attempt)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "ledger_transfers_pkey":
            raise
        # A concurrent twin of this batch committed first: answer what it posted.
        async with conn.transaction():
            return _replay(transfers, await queries.transfers_by_id(conn, ids))


def _replay(wanted: Sequence[NewTransfer], existing: list[TransferRow]) -> list[TransferRow]:
    by_id = {row.id: row for row in existing}
    if len(by_id) != len(wanted) or not all(t.matches(by_id[t.id]) for t in wanted):
        raise TransferExists(
            "a transfer with this id exists and differs, or only part of this batch exists"
        )
    return [by_id[t.id] for t in wanted]


async def _insert(conn: Conn, transfer: NewTransfer) -> TransferRow:
    return await queries.insert_transfer(
        conn,
        id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        asset=transfer.asset,
        amount=transfer.amount,
        kind=transfer.kind,
        phase=transfer.phase,
        pending_id=transfer.pending_id,
        reference=transfer.reference,
        metadata=transfer.metadata,
        forced=transfer.forced,
    )


async def reserve_tokens(
    conn: Conn,
    settings: Settings,
    *,
    transfer_id: str,
    user_id: int,
    tokens: int,
    kind: str,
    reference: str | None = None,
) -> TransferRow:
    """Reserve tokens in a user's wallet (a pending transfer to the platform's escrow account):
    they stop being available until the reservation is posted or voided."""
    if tokens <= 0:
        raise InvalidInput("tokens must be positive")
    wallet = await wallet_account_id(conn, user_id)
    escrow = await queries.account_id(conn, owner_id=None, asset=TKN, kind="escrow")
    [row] = await post_transfers(
        conn,
        [
            NewTransfer(
                id=transfer_id,
                debit_account_id=wallet,
                credit_account_id=escrow,
                asset=TKN,
                amount=tokens,
                kind=kind,
                reference=reference,
                phase="pending",
            )
        ],
    )
    return row


async def resolve_pending(
    conn: Conn, *, transfer_id: str, pending_id: str, post: bool, amount: int | None = None
) -> TransferRow:
    """Post (all of, or part of: amount) or void a pending transfer, exactly once."""
    found = await queries.transfers_by_id(conn, [pending_id])
    pending = found[0] if found else None
    if pending is None or pending.phase != "pending":
        raise queries.TransferNotFound(f"no pending transfer {pending_id}")
    [row] = await post_transfers(
        conn,
        [
            NewTransfer(
                id=transfer_id,
                debit_account_id=pending.debit_account_id,
                credit_account_id=pending.credit_account_id,
                asset=pending.asset,
                amount=pending.amount if amount is None or not post else amount,
                kind=pending.kind,
                reference=pending.reference,
                phase="post_pending" if post else "void_pending",
                pending_id=pending_id,
            )
        ],
    )
    return row


# --------------------------------------------------------------------------- issuing tokens


async def issue_tokens(
    conn: Conn,
    settings: Settings,
    *,
    user_id: int,
    tokens: int,
    transfer_prefix: str,
    funding_account_id: int,
    funding_units: int,
    kind: str,
    reference: str,
    metadata: dict[str, Any] | None = None,
) -> list[TransferRow]:
    """Put tokens in a user's wallet, paid for by funding_units from funding_account (a
    processor's clearing account, promotions). In one transaction: TKN issuance → wallet; the
    tokens' value funding → token liability; any difference to purchase revenue (a price above
    the tokens' value) or from promotions (bonus tokens); a lot for FIFO spending. Call inside
    the caller's transaction; idempotent by transfer_prefix."""
    if tokens <= 0 or funding_units < 0:
        raise InvalidInput("tokens must be positive")
    await ensure_currency(conn, settings)
    rates = Rates.from_settings(settings)
    currency = rates.currency
    value = rates.tokens_value(tokens)
    shard = random_shard(settings)
    wallet = await wallet_account_id(conn, user_id)
    # The wallet row first: the same lock order as a tip.
    await queries.lock_account(conn, wallet)
    issuance = await platform_account_id(conn, settings, ISSUANCE, shard=shard)
    liability = await platform_account_id(conn, settings, TOKEN_LIABILITY, shard=shard)
    meta = metadata or {}
    transfers = [
        NewTransfer(
            f"{transfer_prefix}:tokens", issuance, wallet, TKN, tokens, kind, reference, meta
        )
    ]
    covered = min(value, funding_units)
    if covered:
        transfers.append(
            NewTransfer(
                f"{transfer_prefix}:value",
                funding_account_id,
                liability,
                currency,
                covered,
                kind,
                reference,
                meta,
            )
        )
    if funding_units > value:
        margin = await platform_account_id(conn, settings, REVENUE, code="purchases", shard=shard)
        transfers.append(
            NewTransfer(
                f"{transfer_prefix}:margin",
                funding_account_id,
                margin,
                currency,
                funding_units - value,
                kind,
                reference,
                meta,
            )
        )
    elif value > funding_units:
        promotions = await platform_account_id(conn, settings, PROMOTIONS)
        transfers.append(
            NewTransfer(
                f"{transfer_prefix}:bonus",
                promotions,
                liability,
                currency,
                value - funding_units,
                kind,
                reference,
                meta,
            )
        )
    existing = await queries.transfers_by_id(conn, [t.id for t in transfers])
    if existing:
        return _replay(transfers, existing)
    with translated():
        # The apply trigger opens the wallet's lot for the token transfer.
        return [await _insert(conn, t) for t in transfers]


async def grant_tokens(
    conn: Conn,
    settings: Settings,
    *,
    user_id: int,
    tokens: int,
    grant_id: str,
    reason: str,
    actor_id: int | None,
    ip: str | None = None,
) -> list[TransferRow]:
    """Give a user tokens the platform pays for (promotions, goodwill, demo data); audited."""

    async def attempt() -> list[TransferRow]:
        async with conn.transaction():
            promotions = await platform_account_id(conn, settings, PROMOTIONS)
            rows = await issue_tokens(
                conn,
                settings,
                user_id=user_id,
                tokens=tokens,
                transfer_prefix=f"grant:{grant_id}",
                funding_account_id=promotions,
                funding_units=0,
                kind="grant",
                reference=f"grant:{grant_id}",
                metadata={"reason": reason},
            )
            await audit.record(
                conn,
                "ledger.grant",
                actor_id=actor_id,
                target_type="user",
                target_id=user_id,
                ip=ip,
                details={"tokens": tokens, "grant_id": grant_id, "reason": reason},
            )
            return rows

    return await retrying(attempt)


async def debit_earnings(
    conn: Conn,
    *,
    performer_id: int,
    currency: str,
    units: int,
    credit_account_id: int,
    transfer_prefix: str,
    kind: str,
    reference: str,
    phase: str = "posted",
) -> int:
    """Take up to `units` from a performer's earnings, each shard giving only what it holds
    (shards carry the no-overdraft flag), as transfers to credit_account (pending ones when
    phase='pending'). Returns the units taken; call inside the caller's transaction."""
    shards = await queries.lock_owner_accounts(conn, performer_id, currency, EARNINGS)
    left = units
    transfers = []
    for shard in shards:
        if left == 0:
            break
        take = min(shard.balance - shard.debits_pending, left)
        if take > 0:
            transfers.append(
                NewTransfer(
                    f"{transfer_prefix}:s{shard.shard}",
                    shard.id,
                    credit_account_id,
                    currency,
                    take,
                    kind,
                    reference,
                    phase=phase,
                )
            )
            left -= take
    await post_transfers(conn, transfers)
    return units - left


async def earnings_available(conn: Conn, performer_id: int, currency: str) -> int:
    """Posted earnings less what pending payouts hold, over all shards."""
    shards = await queries.accounts_of(conn, performer_id)
    return sum(
        s.balance - s.debits_pending for s in shards if s.kind == EARNINGS and s.asset == currency
    )


# --------------------------------------------------------------------------- balances, history


async def wallet(conn: Conn, user_id: int) -> Wallet:
    row = await queries.find_account(conn, owner_id=user_id, asset=TKN, kind=WALLET)
    if row is None:
        return Wallet(user_id=user_id, balance=0, available=0, reserved=0, frozen=False)
    return Wallet(
        user_id=user_id,
        balance=row.balance,
        available=row.balance - row.debits_pending,
        reserved=row.debits_pending,
        frozen=row.frozen_at is not None,
    )


async def balances(conn: Conn, owner_id: int | None) -> list[AccountTotal]:
    """Every logical account of a user (or the platform, None), shards added up."""
    return await queries.account_totals(conn, owner_id)


async def history(
    conn: Conn,
    owner_id: int,
    *,
    kinds: Sequence[str] = (WALLET,),
    before_seq: int | None = None,
    limit: int = 50,
) -> list[HistoryRow]:
    """The transfers of a user's accounts of these kinds, newest first."""
    ids = [a.id for a in await queries.accounts_of(conn, owner_id) if a.kind in kinds]
    if not ids:
        return []
    return await queries.history(conn, ids, before_seq=before_seq, limit=limit)


async def set_wallet_frozen(
    conn: Conn,
    user_id: int,
    *,
    frozen: bool,
    reason: str | None,
    actor_id: int | None,
    ip: str | None = None,
) -> Wallet:
    """Freeze a wallet for review, or release it (refused while it is negative); audited."""
    async with conn.transaction():
        account = await wallet_account_id(conn, user_id)
        with translated():
            await queries.set_frozen(conn, [account], frozen=frozen, reason=reason)
        await audit.record(
            conn,
            "ledger.freeze" if frozen else "ledger.unfreeze",
            actor_id=actor_id,
            target_type="user",
            target_id=user_id,
            ip=ip,
            details={"reason": reason or ""},
        )
    return await wallet(conn, user_id)


async def set_earnings_frozen(
    conn: Conn,
    performer_id: int,
    *,
    frozen: bool,
    reason: str | None,
    actor_id: int | None,
    ip: str | None = None,
) -> int:
    """Freeze (or release) a performer's earnings accounts, which stops payouts from them (a
    frozen account takes no debits); used by moderation. Audited; returns how many accounts."""
    async with conn.transaction():
        ids = [a.id for a in await queries.accounts_of(conn, performer_id) if a.kind == EARNINGS]
        if ids:
            with translated():
                await queries.set_frozen(conn, ids, frozen=frozen, reason=reason)
        await audit.record(
            conn,
            "ledger.earnings_freeze" if frozen else "ledger.earnings_unfreeze",
            actor_id=actor_id,
            target_type="user",
            target_id=performer_id,
            ip=ip,
            details={"reason": reason or "", "accounts": len(ids)},
        )
    return len(ids)


async def stream_tips_so_far(
    conn: Conn, stream_id: int, *, recent: int, top: int
) -> tuple[list[queries.StreamTip], list[queries.StreamTipper]]:
    """A show's latest public tips and its top tippers, for a viewer who joins late."""
    return (
        await queries.recent_stream_tips(conn, stream_id, limit=recent),
        await queries.top_stream_tippers(conn, stream_id, limit=top),
    )
