"""Manual adjustments follow the two-person rule: proposed by one admin (held, not final),
approved by another (posted) or cancelled (voided); the proposer cannot approve; audited."""

from __future__ import annotations

import pytest

from tests.helpers import scalar
from tests.integration.ledger.conftest import Fund, NewUser
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.ledger import adjustments, service
from tipstream.ledger.errors import InsufficientFunds


async def test_an_adjustment_needs_a_second_admin(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    first, second = await new_user("admin"), await new_user("admin")
    viewer = await new_user()
    await fund(viewer, 100)
    proposed = await adjustments.propose(
        db,
        settings,
        debit=f"wallet:{viewer}",
        credit="platform:issuance",
        amount="30",
        reason="duplicate grant",
        admin_id=first,
    )
    # Held at once, not final.
    wallet = await service.wallet(db, viewer)
    assert (wallet.balance, wallet.available, wallet.reserved) == (100, 70, 30)
    assert [r.id for r in await adjustments.pending_adjustments(db)] == [proposed.id]
    with pytest.raises(adjustments.SecondAdminRequired):
        await adjustments.decide(db, transfer_id=proposed.id, admin_id=first, approve=True)
    await adjustments.decide(db, transfer_id=proposed.id, admin_id=second, approve=True)
    assert (await service.wallet(db, viewer)).balance == 70
    with pytest.raises(adjustments.AdjustmentNotFound):
        await adjustments.decide(db, transfer_id=proposed.id, admin_id=second, approve=True)
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM audit_logs"
            " WHERE target_id = %s AND action LIKE 'ledger.adjust.%%'",
            (proposed.id,),
        )
        == 2
    )

    cancelled = await adjustments.propose(
        db,
        settings,
        debit="platform:promotions",
        credit=f"earnings:{viewer}",
        amount="1.25",
        reason="goodwill",
        admin_id=first,
    )
    await adjustments.decide(db, transfer_id=cancelled.id, admin_id=first, approve=False)
    assert await adjustments.pending_adjustments(db) == []

    with pytest.raises(InsufficientFunds):
        await adjustments.propose(
            db,
            settings,
            debit=f"wallet:{viewer}",
            credit="platform:issuance",
            amount="71",
            reason="x",
            admin_id=first,
        )
    for debit, credit, amount in (
        (f"wallet:{viewer}", "platform:promotions", "1"),  # TKN against currency
        (f"wallet:{viewer}", "platform:issuance", "1.5"),  # half a token
        ("nonsense", "platform:issuance", "1"),
    ):
        with pytest.raises(InvalidInput):
            await adjustments.propose(
                db, settings, debit=debit, credit=credit, amount=amount, reason="x", admin_id=first
            )
