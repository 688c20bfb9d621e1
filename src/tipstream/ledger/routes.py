"""HTTP routes of the token economy: tips, the wallet, its history, token packages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from litestar import Controller, Litestar, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import payouts, statements, tips, wallets
from tipstream.ledger.batcher import TipBatcher
from tipstream.ledger.money import Rates
from tipstream.ledger.schemas import (
    EarningsView,
    FailRequest,
    HistoryPage,
    Payout,
    PayoutApproval,
    PayoutBatch,
    PayoutRequest,
    Statement,
    Tip,
    TipRequest,
    TokenPackage,
    Wallet,
)

PRINCIPAL = {"principal": Provide(guards.provide_principal)}
StreamId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]
IDEMPOTENCY_HEADER = "idempotency-key"


class IdempotencyKeyMissing(Problem):
    status, slug, title = 400, "idempotency-key-missing", "Idempotency-Key header required"


class TipController(Controller):
    path = "/api/streams"
    tags = ["tips"]
    dependencies = PRINCIPAL

    @post("/{stream_id:int}/tips", guards=[guards.signed_in], status_code=201)
    async def tip(
        self,
        request: Request[Any, Any, Any],
        stream_id: StreamId,
        data: TipRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
    ) -> Response[Tip]:
        """Tip the stream's performer. Send a fresh Idempotency-Key per tip (a UUID) and the
        same key when retrying: the retry answers the original tip; the same key with another
        body is a 409. Private messages reach the performer only."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            raise IdempotencyKeyMissing("send an Idempotency-Key header (a fresh UUID per tip)")
        tip, replayed = await tips.tip(
            conn,
            kv,
            settings,
            viewer_id=principal.user.id,
            stream_id=stream_id,
            tokens=data.tokens,
            message=data.message,
            private=data.private,
            idempotency_key=key,
            batcher=request.app.state.get("tip_batcher"),
        )
        headers = {"idempotent-replayed": "true"} if replayed else {}
        return Response(tip, status_code=201, headers=headers)


class WalletController(Controller):
    path = "/api/wallet"
    tags = ["wallet"]
    dependencies = PRINCIPAL

    @get("/", guards=[guards.signed_in])
    async def wallet(self, principal: Principal, conn: Conn) -> Wallet:
        """Your tokens: balance, available (balance less reserved) and reserved."""
        return await wallets.wallet(conn, principal.user.id)

    @get("/history", guards=[guards.signed_in])
    async def history(
        self,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        cursor: Annotated[str | None, Parameter(max_length=64)] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        account: Annotated[str, Parameter(pattern="^(wallet|earnings)$")] = "wallet",
    ) -> HistoryPage:
        """Your transfers, newest first; pass next_cursor as ?cursor= for the next page."""
        return await wallets.history_page(
            conn, settings, principal.user.id, kinds=(account,), cursor=cursor, limit=limit
        )

    @get("/packages", guards=[guards.public])
    async def packages(self, settings: Settings) -> list[TokenPackage]:
        """The token packages on sale."""
        return wallets.packages(settings)


PayoutId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]


def payout_schema(row: payouts.PayoutRow, rates: Rates) -> Payout:
    return Payout(
        id=row.id,
        performer_id=row.performer_id,
        amount=rates.format_units(row.amount_units),
        currency=row.currency,
        status=row.status,
        account_holder=row.account_holder,
        iban=row.iban,
        batch_id=row.batch_id,
        requested_at=row.requested_at,
        approved_at=row.approved_at,
        paid_at=row.paid_at,
        failed_at=row.failed_at,
        failure_reason=row.failure_reason,
    )


class PayoutController(Controller):
    path = "/api/payouts"
    tags = ["payouts"]
    dependencies = PRINCIPAL

    @get("/earnings", guards=[guards.performer])
    async def earnings(self, principal: Principal, conn: Conn, settings: Settings) -> EarningsView:
        """Your earnings: balance, what pending payouts hold, what is still in the hold period
        (the chargeback window), and what you can withdraw now."""
        rates = Rates.from_settings(settings)
        found = await payouts.earnings(conn, settings, principal.user.id)
        return EarningsView(
            currency=found.currency,
            balance=rates.format_units(found.balance),
            held_for_payouts=rates.format_units(found.held_for_payouts),
            in_hold_period=rates.format_units(found.in_hold_period),
            payable=rates.format_units(found.payable),
        )

    @get("/statement", guards=[guards.performer])
    async def statement(
        self,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        start: date,
        end: date,
    ) -> Statement:
        """Your earnings statement for [start, end) (UTC dates): opening balance, tips, fees,
        chargebacks, payouts, closing balance."""
        return await statements.statement(
            conn,
            settings,
            performer_id=principal.user.id,
            start=datetime.combine(start, time(), UTC),
            end=datetime.combine(end, time(), UTC),
        )

    @post("/", guards=[guards.performer], status_code=201)
    async def request_payout(
        self,
        request: Request[Any, Any, Any],
        data: PayoutRequest,
        principal: Principal,
        conn: Conn,
        settings: Settings,
    ) -> Response[Payout]:
        """Withdraw payable earnings (approved KYC and the minimum apply). Send an
        Idempotency-Key; the amount is held until finance approves the weekly batch."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        # Printable only, as for tips: a control character (a NUL) cannot be stored.
        if not key or len(key) > 200 or not key.isprintable():
            raise IdempotencyKeyMissing("send an Idempotency-Key header (a fresh UUID)")
        row, replayed = await payouts.request_payout(
            conn,
            settings,
            performer_id=principal.user.id,
            amount=data.amount,
            account_holder=data.account_holder,
            iban=data.iban,
            bic=data.bic,
            idempotency_key=key,
        )
        headers = {"idempotent-replayed": "true"} if replayed else {}
        return Response(
            payout_schema(row, Rates.from_settings(settings)), status_code=201, headers=headers
        )

    @get("/", guards=[guards.performer])
    async def mine(self, principal: Principal, conn: Conn, settings: Settings) -> list[Payout]:
        rates = Rates.from_settings(settings)
        rows = await payouts.list_payouts(conn, performer_id=principal.user.id)
        return [payout_schema(r, rates) for r in rows]


class AdminPayoutController(Controller):
    """Finance: every route needs the finance permission and a 2FA-verified session."""

    path = "/api/admin/payouts"
    tags = ["admin", "payouts"]
    guards = [guards.finance]
    dependencies = PRINCIPAL

    @get("/")
    async def list_payouts(
        self,
        conn: Conn,
        settings: Settings,
        status: Annotated[str | None, Parameter(max_length=16)] = None,
        batch_id: Annotated[int | None, Parameter(gt=0, le=2**63 - 1)] = None,
    ) -> list[Payout]:
        rates = Rates.from_settings(settings)
        rows = await payouts.list_payouts(conn, status=status, batch_id=batch_id)
        return [payout_schema(r, rates) for r in rows]

    @post("/batch", status_code=200)
    async def batch(self, principal: Principal, conn: Conn) -> PayoutBatch:
        """Collect every open request into a batch (the weekly job does this too)."""
        batch_id, count = await payouts.create_batch(conn, actor_id=principal.user.id)
        return PayoutBatch(batch_id=batch_id, payouts=count)

    @post("/{payout_id:int}/approve", status_code=200)
    async def approve(
        self,
        payout_id: PayoutId,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> PayoutApproval:
        """Approve; above payments.payout_second_approval_above a second admin must too."""
        result = await payouts.approve(
            conn, settings, payout_id=payout_id, admin_id=principal.user.id, ip=ip
        )
        return PayoutApproval(
            payout_schema(result.payout, Rates.from_settings(settings)),
            result.approvals,
            result.needed,
        )

    @post("/{payout_id:int}/paid", status_code=200)
    async def paid(
        self, payout_id: PayoutId, principal: Principal, conn: Conn, settings: Settings
    ) -> Payout:
        row = await payouts.mark_paid(
            conn, settings, payout_id=payout_id, actor_id=principal.user.id
        )
        return payout_schema(row, Rates.from_settings(settings))

    @post("/{payout_id:int}/failed", status_code=200)
    async def failed(
        self,
        payout_id: PayoutId,
        data: FailRequest,
        principal: Principal,
        conn: Conn,
        settings: Settings,
    ) -> Payout:
        """The bank returned it (or finance rejects it): the money goes back to earnings."""
        row = await payouts.mark_failed(
            conn, settings, payout_id=payout_id, reason=data.reason, actor_id=principal.user.id
        )
        return payout_schema(row, Rates.from_settings(settings))

    @get("/batches/{batch_id:int}/export")
    async def export(
        self,
        batch_id: PayoutId,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        format: Annotated[str, Parameter(pattern="^(csv|sepa)$")] = "csv",
    ) -> Response[str]:
        """The batch's approved payouts for the bank: CSV or SEPA pain.001.001.03 XML."""
        fmt = format
        content = await payouts.export_batch(
            conn, settings, batch_id=batch_id, fmt=fmt, actor_id=principal.user.id
        )
        media_type = "text/csv" if fmt == "csv" else "application/xml"
        name = f"payouts-batch-{batch_id}.{'csv' if fmt == 'csv' else 'xml'}"
        return Response(
            content,
            media_type=media_type,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )


def lifespan(settings: Settings) -> Any:
    """The process's tip batcher (group commit for tips), with its own connections; queued
    tips are posted before it stops."""

    @asynccontextmanager
    async def ledger_lifespan(app: Litestar) -> AsyncIterator[None]:
        async with TipBatcher(settings, kv=app.state.kv) as batcher:
            app.state.tip_batcher = batcher
            try:
                yield
            finally:
                del app.state.tip_batcher

    return ledger_lifespan


ROUTES = [TipController, WalletController, PayoutController, AdminPayoutController]
