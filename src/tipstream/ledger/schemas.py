"""Requests, responses and events of the ledger API. Amounts of currency are decimal strings
(exact); token amounts are integers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tipstream.accounts.schemas import PRINTABLE

PositiveTokens = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class TipRequest(msgspec.Struct, forbid_unknown_fields=True):
    tokens: PositiveTokens
    message: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    # A private message is shown to the performer only, never on the room channel.
    private: bool = False


class Tip(msgspec.Struct):
    id: int
    stream_id: int
    performer_id: int
    viewer_id: int
    tokens: int
    message: str | None
    private: bool
    currency: str
    # The rate and fee in force for this tip, and the split they gave.
    tokens_per_currency_unit: int
    fee_bps: int
    gross: str
    performer_share: str
    platform_fee: str
    created_at: datetime


class TipEvent(msgspec.Struct, tag_field="type", tag="tip"):
    """Published on the stream's room channel (and by the outbox relay after a crash)."""

    tip_id: int
    stream_id: int
    performer_id: int
    viewer_id: int
    viewer_name: str
    tokens: int
    message: str | None
    private_message: bool
    at: datetime


class Wallet(msgspec.Struct):
    asset: Literal["TKN"]
    balance: int
    available: int
    reserved: int
    frozen: bool


class HistoryEntry(msgspec.Struct):
    id: str
    seq: int
    at: datetime
    kind: str
    asset: str
    account: str
    # Signed: positive credited to the user's account, negative debited.
    amount: int
    amount_display: str
    phase: str
    reference: str | None


class HistoryPage(msgspec.Struct):
    items: list[HistoryEntry]
    # Pass as ?cursor= for the next (older) page; null at the end.
    next_cursor: str | None


class TokenPackage(msgspec.Struct):
    id: str
    tokens: int
    price: str
    currency: str
    label: str


class AccountBalance(msgspec.Struct):
    owner_id: int | None
    asset: str
    kind: str
    code: str
    shards: int
    balance: int
    balance_display: str
    pending_debits: int
    pending_credits: int
    frozen: bool


class VerifyCheck(msgspec.Struct):
    name: str
    ok: bool
    checked: int
    problems: list[str]


class VerifyReport(msgspec.Struct):
    ok: bool
    checks: list[VerifyCheck]
    notes: list[str]


class EarningsView(msgspec.Struct):
    currency: str
    balance: str
    held_for_payouts: str
    in_hold_period: str
    payable: str


class PayoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    # [0-9], not \d (which takes any script's digits); no control characters (a NUL cannot be
    # stored; a bank file must not carry the others).
    amount: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,12}(\.[0-9]{1,2})?$")]
    account_holder: Annotated[str, msgspec.Meta(min_length=1, max_length=70, pattern=PRINTABLE)]
    iban: Annotated[str, msgspec.Meta(min_length=15, max_length=40, pattern=r"^[A-Za-z0-9 ]+$")]
    bic: (
        Annotated[str, msgspec.Meta(min_length=8, max_length=11, pattern=r"^[A-Za-z0-9]+$")] | None
    ) = None


class Payout(msgspec.Struct):
    id: int
    performer_id: int
    amount: str
    currency: str
    status: str
    account_holder: str
    iban: str
    batch_id: int | None
    requested_at: datetime
    approved_at: datetime | None
    paid_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None


class PayoutApproval(msgspec.Struct):
    payout: Payout
    approvals: int
    needed: int


class PayoutBatch(msgspec.Struct):
    batch_id: int | None
    payouts: int


class FailRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class Statement(msgspec.Struct):
    """A performer's earnings over a period [start, end) in UTC, from the ledger."""

    performer_id: int
    currency: str
    start: datetime
    end: datetime
    opening_balance: str
    tips: int
    tokens: int
    gross: str
    platform_fees: str
    tip_earnings: str
    chargebacks: str
    payouts: str
    payouts_returned: str
    closing_balance: str
