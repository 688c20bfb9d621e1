"""Purchases: start a hosted checkout, apply processor events to the ledger exactly once, reverse
refunds and chargebacks.

Exactly once, whatever the retries and their order: each (processor, event id) is recorded once
(the primary key of processor_events), events for one purchase queue on the purchase row, and the
purchase's status machine decides what an event still means: a sale credits a purchase that is
'created' and nothing else; a refund or chargeback reverses a 'credited' purchase, and closes a
'created' one uncredited (so a sale arriving after its own refund credits nothing).

A reversal takes the tokens back from the wallet. Tokens already tipped leave the wallet short:
it is frozen for review (and may go negative), and the shortfall is charged per
payments.chargeback_policy: 'reserve' (the platform's chargeback reserve) or 'performer' (the
earnings of the performers those tokens reached, traced through the purchase's lot; what their
earnings cannot cover comes from the reserve).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import structlog

from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Conflict, InvalidInput, NotFound
from tipstream.ledger import queries as ledger_queries
from tipstream.ledger import service as ledger
from tipstream.ledger.errors import AccountFrozen, translated
from tipstream.ledger.money import Rates
from tipstream.ledger.service import TKN, NewTransfer
from tipstream.payments import processors, queries
from tipstream.payments.processors.base import (
    CheckoutPurchase,
    ProcessorEvent,
    WebhookRequest,
)
from tipstream.payments.queries import PurchaseRow

log = structlog.get_logger("tipstream.payments")

REVERSAL_STATUS = {"refund": "refunded", "chargeback": "charged_back"}


class UnknownPackage(NotFound):
    slug, title = "unknown-package", "No such token package"


class PurchaseNotRefundable(Conflict):
    slug, title = "purchase-not-refundable", "Only a credited purchase can be refunded"


@dataclass(frozen=True)
class CheckoutStarted:
    purchase_id: int
    processor: str
    redirect_url: str


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    # credit | refund | chargeback | failed | ignored | duplicate | pending (a hint to confirm)
    effect: str
    purchase_id: int | None


def _package(settings: Settings, package_id: str) -> tuple[int, str]:
    for package in settings.ledger.packages:
        if package.id == package_id:
            return package.tokens, package.price
    raise UnknownPackage(f"no token package {package_id!r}")


async def start_checkout(
    conn: Conn, settings: Settings, *, user_id: int, package_id: str, processor_name: str
) -> CheckoutStarted:
    """Create the purchase and the processor's hosted checkout; the browser is sent there."""
    processor = processors.get(settings, processor_name)
    tokens, price = _package(settings, package_id)
    rates = Rates.from_settings(settings)
    if (await ledger.wallet(conn, user_id)).frozen:
        raise AccountFrozen("your wallet is frozen for review; purchases are paused")
    row = await queries.insert_purchase(
        conn,
        user_id=user_id,
        processor=processor.name,
        package_id=package_id,
        tokens=tokens,
        currency=rates.currency,
        price_units=rates.to_units(price),
    )
    checkout = await processor.start_checkout(
        CheckoutPurchase(
            id=row.id,
            user_id=user_id,
            package_id=package_id,
            tokens=tokens,
            currency=rates.currency,
            price_units=row.price_units,
            price=rates.format_units(row.price_units),
            description=f"{tokens} tokens",
        ),
        return_url=f"{settings.server.public_url.rstrip('/')}/wallet?purchase={row.id}",
    )
    if checkout.processor_ref:
        await queries.set_processor_ref(conn, row.id, checkout.processor_ref)
    return CheckoutStarted(row.id, processor.name, checkout.redirect_url)


async def handle_webhook(
    conn: Conn, settings: Settings, processor_name: str, request: WebhookRequest
) -> tuple[list[EventOutcome], tuple[str, str]]:
    """Verify a webhook and apply its events; answer what the processor expects."""
    processor = processors.get(settings, processor_name)
    events = await processor.parse_webhook(request)
    outcomes = []
    for event in events:
        if event.needs_confirmation and event.kind == "sale" and not await processor.confirm(event):
            outcomes.append(await _hinted_sale(conn, settings, processor.name, event))
            continue
        outcomes.append(await apply_event(conn, settings, processor.name, event))
    return outcomes, processor.acknowledge()


async def _hinted_sale(
    conn: Conn, settings: Settings, processor_name: str, event: ProcessorEvent
) -> EventOutcome:
    """An unsigned sale: kept as a hint that the reconciliation confirms with the processor
    (payments/reconcile.py), at once when the operator turned webhook lookups on."""
    from tipstream.payments import reconcile

    if not await reconcile.record_hint(conn, processor_name, event):
        log.warning("webhook_sale_unconfirmed", processor=processor_name, event_id=event.event_id)
        return EventOutcome(event.event_id, "ignored", event.purchase_id)
    log.info("webhook_sale_pending", processor=processor_name, event_id=event.event_id)
    await reconcile.confirm_now(conn, settings, processor_name, event)
    row = await queries.purchase(conn, event.purchase_id) if event.purchase_id else None
    effect = "credit" if row is not None and row.status == "credited" else "pending"
    return EventOutcome(event.event_id, effect, event.purchase_id)


def _amount_matches(settings: Settings, purchase: PurchaseRow, event: ProcessorEvent) -> bool:
    if event.amount is None:
        return True
    try:
        units = Rates.from_settings(settings).to_units(Decimal(event.amount))
    except (InvalidOperation, ValueError):
        return False
    currency_ok = event.currency is None or event.currency.upper() == purchase.currency
    return units == purchase.price_units and currency_ok


async def apply_event(
    conn: Conn, settings: Settings, processor_name: str, event: ProcessorEvent
) -> EventOutcome:
    """One processor event, once: its ledger effect and its record commit together."""

    async def attempt() -> EventOutcome:
        async with conn.transaction():
            purchase = await queries.lock_purchase(
                conn,
                processor=processor_name,
                purchase_id=event.purchase_id,
                processor_ref=event.processor_ref,
            )
            if await queries.event_seen(conn, processor_name, event.event_id):
                return EventOutcome(event.event_id, "duplicate", purchase.id if purchase else None)
            effect = "ignored"
            if purchase is None:
                log.warning(
                    "webhook_unknown_purchase", processor=processor_name, event_id=event.event_id
                )
            elif event.kind == "sale":
                if purchase.status != "created":
                    effect = "ignored"
                elif not _amount_matches(settings, purchase, event):
                    log.warning(
                        "webhook_amount_mismatch",
                        purchase=purchase.id,
                        amount=event.amount,
                        currency=event.currency,
                    )
                else:
                    await _credit(conn, settings, purchase)
                    effect = "credit"
            elif event.kind in ("refund", "chargeback"):
                if purchase.status == "credited":
                    await reverse(conn, settings, purchase, event.kind)
                    effect = event.kind
                elif purchase.status == "created":
                    # Before its sale: close it, so the sale (if it ever comes) credits nothing.
                    await queries.set_status(conn, purchase.id, REVERSAL_STATUS[event.kind])
                    effect = event.kind
            elif event.kind == "failed" and purchase.status == "created":
                await queries.set_status(conn, purchase.id, "failed")
                effect = "failed"
            recorded = await queries.insert_event(
                conn,
                processor=processor_name,
                event_id=event.event_id,
                purchase_id=purchase.id if purchase else None,
                event_type=event.event_type,
                effect=effect,
                payload=event.payload,
            )
            assert recorded, "event ids are checked under the purchase lock"
            log.info(
                "webhook_event",
                processor=processor_name,
                event_id=event.event_id,
                effect=effect,
                purchase=purchase.id if purchase else None,
            )
            return EventOutcome(event.event_id, effect, purchase.id if purchase else None)

    return await ledger.retrying(attempt)


async def _credit(conn: Conn, settings: Settings, purchase: PurchaseRow) -> None:
    clearing = await ledger.platform_account_id(
        conn, settings, ledger.PROCESSOR, code=purchase.processor
    )
    await ledger.issue_tokens(
        conn,
        settings,
        user_id=purchase.user_id,
        tokens=purchase.tokens,
        transfer_prefix=f"purchase:{purchase.id}",
        funding_account_id=clearing,
        funding_units=purchase.price_units,
        kind="purchase",
        reference=f"purchase:{purchase.id}",
        metadata={"processor": purchase.processor, "package": purchase.package_id},
    )
    await queries.set_status(conn, purchase.id, "credited")


async def reverse(conn: Conn, settings: Settings, purchase: PurchaseRow, kind: str) -> None:
    """Undo a credited purchase (kind refund or chargeback), in the caller's transaction."""
    reference = f"purchase:{purchase.id}"
    wallet_id = await ledger.wallet_account_id(conn, purchase.user_id)
    wallet = await ledger_queries.lock_account(conn, wallet_id)
    on_hand = wallet.balance - wallet.debits_pending
    short = max(0, purchase.tokens - max(wallet.balance, 0))
    if on_hand < purchase.tokens:
        # The tokens are (partly) spent or reserved: the wallet will go below what it may, so
        # it is frozen for review first (the only way a wallet may be negative).
        await ledger_queries.set_frozen(
            conn, [wallet_id], frozen=True, reason=f"{kind} of purchase {purchase.id}"
        )
    originals = [
        t
        for t in await ledger_queries.transfers_by_reference(conn, reference)
        if t.kind == "purchase"
    ]
    shard = ledger.random_shard(settings)
    issuance = await ledger.platform_account_id(conn, settings, ledger.ISSUANCE, shard=shard)
    reversals = []
    for t in originals:
        suffix = t.id.rsplit(":", 1)[-1]
        if t.asset == TKN:
            debit, credit = wallet_id, issuance
        else:
            debit, credit = t.credit_account_id, t.debit_account_id
        reversals.append(
            NewTransfer(
                f"{kind}:{purchase.id}:{suffix}",
                debit,
                credit,
                t.asset,
                t.amount,
                kind,
                reference,
                {"purchase_id": purchase.id},
                forced=True,
            )
        )
    await ledger.post_transfers(conn, reversals)
    if short:
        await _charge_shortfall(conn, settings, purchase, kind, short, wallet_id, issuance)
    await queries.set_status(conn, purchase.id, REVERSAL_STATUS[kind])


async def _charge_shortfall(
    conn: Conn,
    settings: Settings,
    purchase: PurchaseRow,
    kind: str,
    short: int,
    wallet_id: int,
    issuance: int,
) -> None:
    """The tokens of a reversed purchase that were already spent: someone other than the viewer
    bears them. Their value goes back into the token liability, and as many tokens are issued
    back to the wallet, which stays frozen for review."""
    rates = Rates.from_settings(settings)
    reference = f"purchase:{purchase.id}"
    prefix = f"{kind}:{purchase.id}:cover"
    liability = await ledger.platform_account_id(conn, settings, ledger.TOKEN_LIABILITY)
    reserve = await ledger.platform_account_id(conn, settings, ledger.RESERVE)
    transfers: list[NewTransfer] = []
    from_reserve = rates.tokens_value(short)
    if settings.payments.chargeback_policy == "performer":
        left = short
        revenue = await ledger.platform_account_id(conn, settings, ledger.REVENUE, code="tips")
        for funded in await queries.tips_funded_by(conn, f"{reference}:tokens"):
            if left == 0:
                break
            take = min(funded.tokens, left)
            gross = take * funded.units_per_token
            fee = gross * funded.fee_bps // 10_000
            share = gross - fee
            got = await ledger.debit_earnings(
                conn,
                performer_id=funded.performer_id,
                currency=rates.currency,
                units=share,
                credit_account_id=liability,
                transfer_prefix=f"{prefix}:tip{funded.tip_id}",
                kind="chargeback_clawback",
                reference=reference,
            )
            if fee:
                transfers.append(
                    NewTransfer(
                        f"{prefix}:tip{funded.tip_id}:fee",
                        revenue,
                        liability,
                        rates.currency,
                        fee,
                        "chargeback_clawback",
                        reference,
                    )
                )
            from_reserve -= got + fee
            left -= take
    if from_reserve:
        transfers.append(
            NewTransfer(
                f"{prefix}:reserve",
                reserve,
                liability,
                rates.currency,
                from_reserve,
                "chargeback_cover",
                reference,
            )
        )
    transfers.append(
        NewTransfer(
            f"{prefix}:tokens",
            issuance,
            wallet_id,
            TKN,
            short,
            "chargeback_cover",
            reference,
        )
    )
    await ledger.post_transfers(conn, transfers)


async def admin_refund(
    conn: Conn,
    settings: Settings,
    *,
    purchase_id: int,
    reason: str,
    actor_id: int | None,
    ip: str | None = None,
) -> PurchaseRow:
    """Refund a purchase for fraud (users cannot refund tokens): its tokens are taken back,
    the shortfall charged as for a chargeback; audited. The money itself is returned in the
    processor's own console."""
    if not reason.strip():
        raise InvalidInput("a refund needs a reason")

    async def attempt() -> PurchaseRow:
        async with conn.transaction():
            found = await queries.purchase(conn, purchase_id)
            row = await queries.lock_purchase(
                conn, processor=found.processor, purchase_id=purchase_id, processor_ref=None
            )
            assert row is not None
            if row.status != "credited":
                raise PurchaseNotRefundable(f"purchase {purchase_id} is {row.status}")
            with translated():
                await reverse(conn, settings, row, "refund")
            await audit.record(
                conn,
                "ledger.refund",
                actor_id=actor_id,
                target_type="purchase",
                target_id=purchase_id,
                ip=ip,
                details={
                    "reason": reason,
                    "user_id": row.user_id,
                    "tokens": row.tokens,
                    "price_units": row.price_units,
                    "processor": row.processor,
                },
            )
            return await queries.purchase(conn, purchase_id)

    return await ledger.retrying(attempt)


async def dev_complete_checkout(
    conn: Conn, settings: Settings, *, purchase_id: int, outcome: str
) -> list[EventOutcome]:
    """What the dev processor's hosted page does when its buyer pays or declines: it signs a
    webhook and delivers it through the same verification as any webhook."""
    from tipstream.payments.processors import dev

    if outcome not in ("sale", "failed"):
        raise InvalidInput("outcome must be sale or failed")
    row = await queries.purchase(conn, purchase_id)
    if row.processor != "dev":
        raise InvalidInput(f"purchase {purchase_id} is not a dev-processor purchase")
    rates = Rates.from_settings(settings)
    body = dev.event_body(outcome, row.id, rates.format_units(row.price_units), row.currency)
    outcomes, _ack = await handle_webhook(
        conn,
        settings,
        "dev",
        WebhookRequest(
            headers={dev.SIGNATURE_HEADER: dev.sign(settings, body)},
            query={},
            body=body,
            client_ip="127.0.0.1",
        ),
    )
    return outcomes
