"""Manual ledger adjustments under the two-person rule: one admin proposes a transfer (a pending
transfer, so its debit is held at once and nothing is final), a different admin approves it
(posted) or either cancels it (voided). Both steps are audited. Corrections never edit a
transfer: they are new transfers like any other."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Forbidden, InvalidInput, NotFound
from tipstream.ledger import queries, service
from tipstream.ledger.money import Rates
from tipstream.ledger.queries import TransferRow
from tipstream.ledger.service import TKN, NewTransfer

KIND = "adjustment"
USER_KINDS = {"wallet": (TKN, True), "earnings": (None, True)}


class AdjustmentNotFound(NotFound):
    slug, title = "adjustment-not-found", "No such pending adjustment"


class SecondAdminRequired(Forbidden):
    slug, title = "second-admin-required", "Another admin must approve this adjustment"


async def account_for(conn: Conn, settings: Settings, spec: str) -> tuple[int, str]:
    """'wallet:USER', 'earnings:USER' or 'platform:KIND[:CODE]' → (account id, asset)."""
    parts = spec.split(":")
    if parts[0] in USER_KINDS and len(parts) == 2 and parts[1].isdigit():
        asset = TKN if parts[0] == "wallet" else settings.ledger.currency
        account = await queries.account_id(
            conn, owner_id=int(parts[1]), asset=asset, kind=parts[0], no_overdraft=True
        )
        return account, asset
    if parts[0] == "platform" and len(parts) in (2, 3):
        kind, code = parts[1], parts[2] if len(parts) == 3 else ""
        account = await service.platform_account_id(conn, settings, kind, code=code)
        return account, TKN if kind == service.ISSUANCE else settings.ledger.currency
    raise InvalidInput(f"{spec!r}: say wallet:USER_ID, earnings:USER_ID or platform:KIND[:CODE]")


def _units(settings: Settings, asset: str, amount: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise InvalidInput("amount must be a number") from None
    units = int(value) if asset == TKN else Rates.from_settings(settings).to_units(value)
    if units <= 0 or (asset == TKN and value != int(value)):
        raise InvalidInput("amount must be positive (whole tokens for TKN)")
    return units


async def propose(
    conn: Conn,
    settings: Settings,
    *,
    debit: str,
    credit: str,
    amount: str,
    reason: str,
    admin_id: int,
    ip: str | None = None,
) -> TransferRow:
    if not reason.strip():
        raise InvalidInput("an adjustment needs a reason")
    async with conn.transaction():
        debit_id, asset = await account_for(conn, settings, debit)
        credit_id, credit_asset = await account_for(conn, settings, credit)
        if asset != credit_asset:
            raise InvalidInput(f"{debit} holds {asset} and {credit} holds {credit_asset}")
        units = _units(settings, asset, amount)
        transfer_id = f"adjustment:{uuid.uuid4().hex}"
        [row] = await service.post_transfers(
            conn,
            [
                NewTransfer(
                    transfer_id,
                    debit_id,
                    credit_id,
                    asset,
                    units,
                    KIND,
                    transfer_id,
                    {"reason": reason, "proposed_by": admin_id, "debit": debit, "credit": credit},
                    phase="pending",
                )
            ],
        )
        await audit.record(
            conn,
            "ledger.adjust.propose",
            actor_id=admin_id,
            target_type="transfer",
            target_id=transfer_id,
            ip=ip,
            details={
                "debit": debit,
                "credit": credit,
                "asset": asset,
                "amount": units,
                "reason": reason,
            },
        )
    return row


async def _pending(conn: Conn, transfer_id: str) -> TransferRow:
    found = await queries.transfers_by_id(conn, [transfer_id])
    if (
        not found
        or found[0].kind != KIND
        or found[0].phase != "pending"
        or await queries.pending_resolution(conn, transfer_id) is not None
    ):
        raise AdjustmentNotFound(f"no pending adjustment {transfer_id}")
    return found[0]


async def decide(
    conn: Conn, *, transfer_id: str, admin_id: int, approve: bool, ip: str | None = None
) -> TransferRow:
    """Approve (a different admin than the proposer) or cancel (any admin) an adjustment."""
    async with conn.transaction():
        pending = await _pending(conn, transfer_id)
        if approve and pending.metadata.get("proposed_by") == admin_id:
            raise SecondAdminRequired("the admin who proposed an adjustment cannot approve it")
        row = await service.resolve_pending(
            conn,
            transfer_id=f"{transfer_id}:{'approved' if approve else 'cancelled'}",
            pending_id=transfer_id,
            post=approve,
        )
        await audit.record(
            conn,
            "ledger.adjust.approve" if approve else "ledger.adjust.cancel",
            actor_id=admin_id,
            target_type="transfer",
            target_id=transfer_id,
            ip=ip,
            details={"amount": pending.amount, "asset": pending.asset},
        )
    return row


async def pending_adjustments(conn: Conn) -> list[TransferRow]:
    rows = await queries.transfers_by_kind_phase(conn, kind=KIND, phase="pending")
    return [r for r in rows if await queries.pending_resolution(conn, r.id) is None]
