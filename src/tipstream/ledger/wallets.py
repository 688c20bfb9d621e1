"""What the wallet API and tipctl show: balances, history pages with cursors, token packages,
as the API's schemas, so the CLI and the API can never disagree."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.ledger import queries, service
from tipstream.ledger.money import Rates
from tipstream.ledger.schemas import (
    AccountBalance,
    HistoryEntry,
    HistoryPage,
    TokenPackage,
    Wallet,
)

CURSOR_PREFIX = b"seq:"


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(CURSOR_PREFIX + str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq = int(raw.removeprefix(CURSOR_PREFIX)) if raw.startswith(CURSOR_PREFIX) else 0
    except (ValueError, binascii.Error):
        seq = 0
    if not 0 < seq < 2**63:
        raise InvalidInput("cursor is not one this API gave out")
    return seq


def display(rates: Rates, asset: str, amount: int) -> str:
    return str(amount) if asset == service.TKN else rates.format_units(amount)


async def wallet(conn: Conn, user_id: int) -> Wallet:
    found = await service.wallet(conn, user_id)
    return Wallet(
        asset="TKN",
        balance=found.balance,
        available=found.available,
        reserved=found.reserved,
        frozen=found.frozen,
    )


async def account_balances(
    conn: Conn, settings: Settings, owner_id: int | None
) -> list[AccountBalance]:
    rates = Rates.from_settings(settings)
    return [
        AccountBalance(
            owner_id=t.owner_id,
            asset=t.asset,
            kind=t.kind,
            code=t.code,
            shards=t.shards,
            balance=t.credits_posted - t.debits_posted,
            balance_display=display(rates, t.asset, t.credits_posted - t.debits_posted),
            pending_debits=t.debits_pending,
            pending_credits=t.credits_pending,
            frozen=t.frozen,
        )
        for t in await service.balances(conn, owner_id)
    ]


async def history_page(
    conn: Conn,
    settings: Settings,
    owner_id: int,
    *,
    kinds: Sequence[str] = (service.WALLET,),
    cursor: str | None = None,
    limit: int = 50,
) -> HistoryPage:
    rates = Rates.from_settings(settings)
    before = decode_cursor(cursor) if cursor else None
    rows = await service.history(conn, owner_id, kinds=kinds, before_seq=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return HistoryPage(
        items=[_entry(rates, r) for r in rows],
        next_cursor=encode_cursor(rows[-1].seq) if more and rows else None,
    )


def _entry(rates: Rates, row: queries.HistoryRow) -> HistoryEntry:
    return HistoryEntry(
        id=row.id,
        seq=row.seq,
        at=row.created_at,
        kind=row.kind,
        asset=row.asset,
        account=row.account_kind,
        amount=row.amount,
        amount_display=display(rates, row.asset, row.amount),
        phase=row.phase,
        reference=row.reference,
    )


def packages(settings: Settings) -> list[TokenPackage]:
    rates = Rates.from_settings(settings)
    return [
        TokenPackage(
            id=p.id,
            tokens=p.tokens,
            price=rates.format_units(rates.to_units(p.price)),
            currency=rates.currency,
            label=p.label or f"{p.tokens} tokens",
        )
        for p in settings.ledger.packages
    ]
