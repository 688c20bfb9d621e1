"""Payouts: a performer asks for a withdrawal of payable earnings; the weekly batch collects the
requests; finance approves (with 2FA; a second admin above payments.payout_second_approval_above);
the money moves earnings → payout clearing; the batch is exported for the bank (CSV, SEPA
pain.001); each payout is marked paid (clearing → bank) or failed (money returned).

Money is held from the moment of the request: the request is a set of *pending* transfers from
the performer's earnings shards to payout clearing, so the same earnings cannot be asked for
twice. Approval posts them; rejection or failure before approval voids them.

Payable = posted earnings - what pending payouts hold - the performer's share of tips younger
than payments.earnings_hold_days (the chargeback window).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from xml.sax.saxutils import escape

from psycopg.rows import class_row

from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Conflict, Forbidden, InvalidInput, NotFound
from tipstream.kyc import service as kyc
from tipstream.ledger import queries, service
from tipstream.ledger.errors import InsufficientFunds, translated
from tipstream.ledger.money import Rates
from tipstream.ledger.service import NewTransfer

PAYOUT_DECIMALS = 2


class KycRequired(Forbidden):
    slug, title = "kyc-required", "Approved KYC is required for payouts"


class PayoutNotFound(NotFound):
    slug, title = "payout-not-found", "Payout not found"


class PayoutState(Conflict):
    slug, title = "payout-state", "The payout is not in a state that allows this"


class PayoutsFrozen(Conflict):
    slug, title = "payouts-frozen", "Payouts are on hold while moderation reviews the account"


def _refuse_frozen(shards: list[queries.AccountRow], performer_id: int) -> None:
    """Moderation's freeze_payouts freezes the performer's earnings accounts: no payout may be
    requested or approved from them until unfreeze_payouts (the database would refuse the
    transfer too; this says why, before anything is written)."""
    if any(a.frozen_at is not None for a in shards):
        raise PayoutsFrozen(f"the payouts of performer {performer_id} are frozen for review")


class BelowMinimum(InvalidInput):
    slug, title = "payout-below-minimum", "Below the minimum payout"


@dataclass
class PayoutRow:
    id: int
    performer_id: int
    currency: str
    amount_units: int
    status: str
    account_holder: str
    iban: str
    bic: str | None
    idempotency_key: str
    batch_id: int | None
    requested_at: datetime
    approved_at: datetime | None
    paid_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None


@dataclass(frozen=True)
class Earnings:
    performer_id: int
    currency: str
    balance: int
    held_for_payouts: int
    in_hold_period: int
    payable: int


@dataclass(frozen=True)
class Approval:
    payout: PayoutRow
    approvals: int
    needed: int


def _amount_units(rates: Rates, amount: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise InvalidInput("amount must be a decimal such as 120.50") from None
    if not value.is_finite() or value <= 0 or value != round(value, PAYOUT_DECIMALS):
        raise InvalidInput(f"amount must be positive with at most {PAYOUT_DECIMALS} decimals")
    return rates.to_units(value)


async def _select(conn: Conn, query: str, params: dict[str, object]) -> list[PayoutRow]:
    async with conn.cursor(row_factory=class_row(PayoutRow)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def get(conn: Conn, payout_id: int, *, lock: bool = False) -> PayoutRow:
    rows = await _select(
        conn,
        "SELECT * FROM payouts WHERE id = %(id)s" + (" FOR UPDATE" if lock else ""),
        {"id": payout_id},
    )
    if not rows:
        raise PayoutNotFound(f"no payout {payout_id}")
    return rows[0]


async def earnings(conn: Conn, settings: Settings, performer_id: int) -> Earnings:
    rates = Rates.from_settings(settings)
    shards = [
        a
        for a in await queries.accounts_of(conn, performer_id)
        if a.kind == service.EARNINGS and a.asset == rates.currency
    ]
    balance = sum(a.balance for a in shards)
    pending = sum(a.debits_pending for a in shards)
    cur = await conn.execute(
        """
        SELECT coalesce(sum(performer_units), 0)::bigint AS held FROM tips
        WHERE performer_id = %(p)s AND currency = %(c)s
          AND created_at > now() - make_interval(days => %(days)s)
        """,
        {"p": performer_id, "c": rates.currency, "days": settings.payments.earnings_hold_days},
    )
    row = await cur.fetchone()
    held = int(row["held"]) if row else 0
    payable = max(0, balance - pending - held)
    return Earnings(performer_id, rates.currency, balance, pending, held, payable)


async def request_payout(
    conn: Conn,
    settings: Settings,
    *,
    performer_id: int,
    amount: str,
    account_holder: str,
    iban: str,
    bic: str | None,
    idempotency_key: str,
) -> tuple[PayoutRow, bool]:
    """Ask for a withdrawal; (payout, replayed). The amount is held at once."""
    rates = Rates.from_settings(settings)
    units = _amount_units(rates, amount)
    minimum = rates.to_units(settings.payments.payout_minimum)
    iban = iban.replace(" ", "").upper()
    bic = bic.replace(" ", "").upper() if bic else None

    async def attempt() -> tuple[PayoutRow, bool]:
        async with conn.transaction():
            # The shards first: concurrent requests of one performer queue here.
            shards = await queries.lock_owner_accounts(
                conn, performer_id, rates.currency, service.EARNINGS
            )
            found = await _select(
                conn,
                "SELECT * FROM payouts WHERE performer_id = %(p)s AND idempotency_key = %(k)s",
                {"p": performer_id, "k": idempotency_key},
            )
            if found:
                # The request is kept with its key for good: the same key with any other field
                # is another request.
                before = found[0]
                same = (before.amount_units, before.account_holder, before.iban, before.bic) == (
                    units,
                    account_holder,
                    iban,
                    bic,
                )
                if not same:
                    raise Conflict("this Idempotency-Key was used for another payout request")
                return found[0], True
            if not await kyc.is_approved(conn, performer_id):  # approved, document unexpired
                raise KycRequired("payouts need approved KYC (identity verification)")
            _refuse_frozen(shards, performer_id)
            if units < minimum:
                raise BelowMinimum(
                    f"the minimum payout is {rates.format_units(minimum)} {rates.currency}"
                )
            current = await earnings(conn, settings, performer_id)
            if units > current.payable:
                raise InsufficientFunds(
                    f"payable now: {rates.format_units(current.payable)} {rates.currency}",
                    extra={"payable": rates.format_units(current.payable)},
                )
            [row] = await _select(
                conn,
                """
                INSERT INTO payouts (performer_id, currency, amount_units, account_holder, iban,
                                     bic, idempotency_key)
                VALUES (%(p)s, %(c)s, %(units)s, %(holder)s, %(iban)s, %(bic)s, %(key)s)
                RETURNING *
                """,
                {
                    "p": performer_id,
                    "c": rates.currency,
                    "units": units,
                    "holder": account_holder,
                    "iban": iban,
                    "bic": bic,
                    "key": idempotency_key,
                },
            )
            clearing = await service.platform_account_id(conn, settings, service.PAYOUT_CLEARING)
            with translated():
                held = await service.debit_earnings(
                    conn,
                    performer_id=performer_id,
                    currency=rates.currency,
                    units=units,
                    credit_account_id=clearing,
                    transfer_prefix=f"payout:{row.id}:hold",
                    kind="payout",
                    reference=f"payout:{row.id}",
                    phase="pending",
                )
            if held != units:
                raise InsufficientFunds("earnings changed while requesting; try again")
            return row, False

    return await service.retrying(attempt)


async def list_payouts(
    conn: Conn,
    *,
    status: str | None = None,
    performer_id: int | None = None,
    batch_id: int | None = None,
    limit: int = 200,
) -> list[PayoutRow]:
    return await _select(
        conn,
        """
        SELECT * FROM payouts
        WHERE (%(status)s::text IS NULL OR status = %(status)s)
          AND (%(performer)s::bigint IS NULL OR performer_id = %(performer)s)
          AND (%(batch)s::bigint IS NULL OR batch_id = %(batch)s)
        ORDER BY id
        LIMIT %(limit)s
        """,
        {"status": status, "performer": performer_id, "batch": batch_id, "limit": limit},
    )


async def create_batch(conn: Conn, *, actor_id: int | None) -> tuple[int | None, int]:
    """Collect every requested payout not yet in a batch into a new batch: (batch id, count).
    Nothing to collect: (None, 0)."""
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT count(*) AS n FROM payouts WHERE status = 'requested' AND batch_id IS NULL"
        )
        row = await cur.fetchone()
        if not row or int(row["n"]) == 0:
            return None, 0
        cur = await conn.execute(
            "INSERT INTO payout_batches (created_by) VALUES (%(a)s) RETURNING id", {"a": actor_id}
        )
        batch = await cur.fetchone()
        assert batch is not None
        cur = await conn.execute(
            """
            UPDATE payouts SET batch_id = %(b)s
            WHERE status = 'requested' AND batch_id IS NULL
            RETURNING id
            """,
            {"b": batch["id"]},
        )
        count = len(await cur.fetchall())
        await audit.record(
            conn,
            "payouts.batch",
            actor_id=actor_id,
            target_type="payout_batch",
            target_id=batch["id"],
            details={"payouts": count},
        )
    return int(batch["id"]), count


async def approve(
    conn: Conn, settings: Settings, *, payout_id: int, admin_id: int, ip: str | None = None
) -> Approval:
    """Record one finance admin's approval; with enough of them (two above the threshold, from
    different admins) the held earnings move to payout clearing."""
    rates = Rates.from_settings(settings)
    threshold = rates.to_units(settings.payments.payout_second_approval_above)

    async def attempt() -> Approval:
        async with conn.transaction():
            payout = await get(conn, payout_id, lock=True)
            if payout.status != "requested":
                raise PayoutState(f"payout {payout_id} is {payout.status}")
            if payout.batch_id is None:
                raise PayoutState("payouts are approved in a batch: run the batch first")
            shards = await queries.lock_owner_accounts(
                conn, payout.performer_id, payout.currency, service.EARNINGS
            )
            _refuse_frozen(shards, payout.performer_id)
            await conn.execute(
                """
                INSERT INTO payout_approvals (payout_id, admin_id) VALUES (%(p)s, %(a)s)
                ON CONFLICT DO NOTHING
                """,
                {"p": payout_id, "a": admin_id},
            )
            cur = await conn.execute(
                "SELECT count(*) AS n FROM payout_approvals WHERE payout_id = %(p)s",
                {"p": payout_id},
            )
            row = await cur.fetchone()
            approvals = int(row["n"]) if row else 0
            needed = 2 if payout.amount_units > threshold else 1
            await audit.record(
                conn,
                "payouts.approve",
                actor_id=admin_id,
                target_type="payout",
                target_id=payout_id,
                ip=ip,
                details={"approvals": approvals, "needed": needed},
            )
            if approvals >= needed:
                for hold in await _holds(conn, payout_id):
                    await service.resolve_pending(
                        conn,
                        transfer_id=hold.id.replace(":hold:", ":approve:"),
                        pending_id=hold.id,
                        post=True,
                    )
                [payout] = await _select(
                    conn,
                    """
                    UPDATE payouts SET status = 'approved', approved_at = now()
                    WHERE id = %(id)s RETURNING *
                    """,
                    {"id": payout_id},
                )
            return Approval(payout, approvals, needed)

    return await service.retrying(attempt)


async def _holds(conn: Conn, payout_id: int) -> list[queries.TransferRow]:
    return [
        t
        for t in await queries.transfers_by_reference(conn, f"payout:{payout_id}")
        if t.phase == "pending"
    ]


async def mark_paid(
    conn: Conn, settings: Settings, *, payout_id: int, actor_id: int | None
) -> PayoutRow:
    """The bank paid it: payout clearing → bank."""
    async with conn.transaction():
        payout = await get(conn, payout_id, lock=True)
        if payout.status != "approved":
            raise PayoutState(f"payout {payout_id} is {payout.status}; only approved ones are paid")
        clearing = await service.platform_account_id(conn, settings, service.PAYOUT_CLEARING)
        bank = await service.platform_account_id(conn, settings, service.BANK)
        await service.post_transfers(
            conn,
            [
                NewTransfer(
                    f"payout:{payout_id}:paid",
                    clearing,
                    bank,
                    payout.currency,
                    payout.amount_units,
                    "payout",
                    f"payout:{payout_id}",
                )
            ],
        )
        [payout] = await _select(
            conn,
            "UPDATE payouts SET status = 'paid', paid_at = now() WHERE id = %(id)s RETURNING *",
            {"id": payout_id},
        )
        await audit.record(
            conn, "payouts.paid", actor_id=actor_id, target_type="payout", target_id=payout_id
        )
    return payout


async def mark_failed(
    conn: Conn, settings: Settings, *, payout_id: int, reason: str, actor_id: int | None
) -> PayoutRow:
    """The bank returned it, or it is rejected: the money goes back to the performer's
    earnings (or the hold is released if it was never approved)."""
    async with conn.transaction():
        payout = await get(conn, payout_id, lock=True)
        if payout.status == "approved":
            clearing = await service.platform_account_id(conn, settings, service.PAYOUT_CLEARING)
            earnings_account = await queries.account_id(
                conn,
                owner_id=payout.performer_id,
                asset=payout.currency,
                kind=service.EARNINGS,
                no_overdraft=True,
            )
            await service.post_transfers(
                conn,
                [
                    NewTransfer(
                        f"payout:{payout_id}:returned",
                        clearing,
                        earnings_account,
                        payout.currency,
                        payout.amount_units,
                        "payout_returned",
                        f"payout:{payout_id}",
                    )
                ],
            )
        elif payout.status == "requested":
            for hold in await _holds(conn, payout_id):
                await service.resolve_pending(
                    conn,
                    transfer_id=hold.id.replace(":hold:", ":void:"),
                    pending_id=hold.id,
                    post=False,
                )
        else:
            raise PayoutState(f"payout {payout_id} is {payout.status}")
        [payout] = await _select(
            conn,
            """
            UPDATE payouts SET status = 'failed', failed_at = now(), failure_reason = %(r)s
            WHERE id = %(id)s RETURNING *
            """,
            {"id": payout_id, "r": reason},
        )
        await audit.record(
            conn,
            "payouts.failed",
            actor_id=actor_id,
            target_type="payout",
            target_id=payout_id,
            details={"reason": reason},
        )
    return payout


# --------------------------------------------------------------------------- bank files


def _money(rates: Rates, units: int) -> str:
    return f"{Decimal(units).scaleb(-rates.scale):.{PAYOUT_DECIMALS}f}"


async def export_batch(
    conn: Conn, settings: Settings, *, batch_id: int, fmt: str, actor_id: int | None
) -> str:
    """The batch's approved payouts as a bank file: 'csv' or 'sepa' (pain.001.001.03)."""
    rates = Rates.from_settings(settings)
    payouts = [p for p in await list_payouts(conn, batch_id=batch_id) if p.status == "approved"]
    if not payouts:
        raise PayoutState(f"batch {batch_id} has no approved payouts to export")
    if fmt == "csv":
        content = _csv(rates, payouts)
    elif fmt == "sepa":
        content = _pain001(settings, rates, batch_id, payouts)
    else:
        raise InvalidInput("format must be csv or sepa")
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE payout_batches SET exported_at = now(), exported_by = %(a)s
            WHERE id = %(b)s
            """,
            {"a": actor_id, "b": batch_id},
        )
        await audit.record(
            conn,
            "payouts.export",
            actor_id=actor_id,
            target_type="payout_batch",
            target_id=batch_id,
            details={"format": fmt, "payouts": len(payouts)},
        )
    return content


def _csv(rates: Rates, payouts: list[PayoutRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "payout_id",
            "performer_id",
            "account_holder",
            "iban",
            "bic",
            "amount",
            "currency",
            "reference",
        ]
    )
    for p in payouts:
        writer.writerow(
            [
                p.id,
                p.performer_id,
                p.account_holder,
                p.iban,
                p.bic or "",
                _money(rates, p.amount_units),
                p.currency,
                f"tipstream payout {p.id}",
            ]
        )
    return out.getvalue()


def _pain001(settings: Settings, rates: Rates, batch_id: int, payouts: list[PayoutRow]) -> str:
    pay = settings.payments
    now = datetime.now(UTC)
    total = sum(p.amount_units for p in payouts)
    message_id = f"TIPSTREAM-B{batch_id}-{now:%Y%m%d%H%M%S}"
    service_level = (
        "<PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl></PmtTpInf>" if rates.currency == "EUR" else ""
    )
    transactions = "".join(
        f"""
      <CdtTrfTxInf>
        <PmtId><EndToEndId>TIPSTREAM-P{p.id}</EndToEndId></PmtId>
        <Amt><InstdAmt Ccy="{p.currency}">{_money(rates, p.amount_units)}</InstdAmt></Amt>"""
        + (
            f"""
        <CdtrAgt><FinInstnId><BIC>{escape(p.bic)}</BIC></FinInstnId></CdtrAgt>"""
            if p.bic
            else ""
        )
        + f"""
        <Cdtr><Nm>{escape(p.account_holder[:70])}</Nm></Cdtr>
        <CdtrAcct><Id><IBAN>{escape(p.iban)}</IBAN></Id></CdtrAcct>
        <RmtInf><Ustrd>tipstream payout {p.id}</Ustrd></RmtInf>
      </CdtTrfTxInf>"""
        for p in payouts
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03">
  <CstmrCdtTrfInitn>
    <GrpHdr>
      <MsgId>{message_id}</MsgId>
      <CreDtTm>{now:%Y-%m-%dT%H:%M:%S}</CreDtTm>
      <NbOfTxs>{len(payouts)}</NbOfTxs>
      <CtrlSum>{_money(rates, total)}</CtrlSum>
      <InitgPty><Nm>{escape(pay.sepa_debtor_name[:70])}</Nm></InitgPty>
    </GrpHdr>
    <PmtInf>
      <PmtInfId>{message_id}</PmtInfId>
      <PmtMtd>TRF</PmtMtd>
      <NbOfTxs>{len(payouts)}</NbOfTxs>
      <CtrlSum>{_money(rates, total)}</CtrlSum>
      {service_level}
      <ReqdExctnDt>{now:%Y-%m-%d}</ReqdExctnDt>
      <Dbtr><Nm>{escape(pay.sepa_debtor_name[:70])}</Nm></Dbtr>
      <DbtrAcct><Id><IBAN>{escape(pay.sepa_debtor_iban)}</IBAN></Id></DbtrAcct>
      <DbtrAgt><FinInstnId><BIC>{escape(pay.sepa_debtor_bic)}</BIC></FinInstnId></DbtrAgt>
      <ChrgBr>SLEV</ChrgBr>{transactions}
    </PmtInf>
  </CstmrCdtTrfInitn>
</Document>
"""
