"""Payouts end to end over HTTP: KYC, minimum and hold period; the weekly batch; finance
approval with 2FA and the two-person rule above the threshold; CSV and SEPA pain.001 export;
paid, and failed with the money returned."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import running_app
from tests.helpers import Browser, assert_problem, scalar
from tests.integration.ledger.conftest import Fund, NewStream, NewUser
from tests.integration.payments.conftest import payments_settings
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import tips

UserFactory = Callable[..., Awaitable[Browser]]
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"


@pytest.fixture(scope="module")
async def payout_app(
    pay_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, AsyncTestClient[Litestar]]]:
    settings = payments_settings(
        pay_settings,
        tmp_path_factory.mktemp("payouts"),
        earnings_hold_days=0,
        payout_second_approval_above="55.00",
    )
    async with running_app(settings) as client:
        yield settings, client


def key() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


async def test_a_payout_from_request_to_bank_file_to_paid_or_failed(
    db: Conn,
    payout_app: tuple[Settings, AsyncTestClient[Litestar]],
    pay_client: AsyncTestClient[Litestar],
    make_user: UserFactory,
    make_admin: UserFactory,
    set_role: Any,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
) -> None:
    settings, client = payout_app
    performer = await make_user("performer", client=client)
    await set_role(performer, "performer")
    viewer = await new_user()
    await fund(viewer, 20_000)
    stream = await new_stream(performer.user_id)
    await tips.post_tip(
        db,
        settings,
        viewer_id=viewer,
        stream_id=stream,
        tokens=20_000,
        message=None,
        private=False,
        idempotency_key=uuid.uuid4().hex,
    )
    earnings = (await performer.get("/api/payouts/earnings")).json()
    assert earnings == {
        "currency": "USD",
        "balance": "140.00",
        "held_for_payouts": "0.00",
        "in_hold_period": "0.00",
        "payable": "140.00",
    }
    body = {
        "amount": "50.00",
        "account_holder": "Perry Former",
        "iban": "DE44 5001 0517 5407 3249 31",
        "bic": "INGDDEFFXXX",
    }
    assert_problem(
        await performer.post("/api/payouts", json=body, headers=key()), 403, "kyc-required"
    )
    await db.execute(
        "INSERT INTO kyc (user_id, status) VALUES (%s, 'approved')", (performer.user_id,)
    )
    assert_problem(
        await performer.post("/api/payouts", json={**body, "amount": "49.99"}, headers=key()),
        422,
        "payout-below-minimum",
    )
    assert_problem(
        await performer.post("/api/payouts", json={**body, "amount": "140.01"}, headers=key()),
        409,
        "insufficient-funds",
    )
    assert_problem(await performer.post("/api/payouts", json=body), 400)
    headers = key()
    first = await performer.post("/api/payouts", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await performer.post("/api/payouts", json=body, headers=headers)
    reused = await performer.post(
        "/api/payouts", json={**body, "account_holder": "Someone Else"}, headers=headers
    )
    assert_problem(reused, 409)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"]
    big = await performer.post("/api/payouts", json={**body, "amount": "60.00"}, headers=key())
    assert big.status_code == 201
    small_id, big_id = first.json()["id"], big.json()["id"]
    # Both are held: the same earnings cannot be asked for twice.
    earnings = (await performer.get("/api/payouts/earnings")).json()
    assert (earnings["held_for_payouts"], earnings["payable"]) == ("110.00", "30.00")
    assert_problem(
        await performer.post("/api/payouts", json=body, headers=key()), 409, "insufficient-funds"
    )

    # Finance: a plain admin may not; a finance admin with 2FA may.
    plain = await make_admin("plain-admin", client=client)
    assert_problem(await plain.post("/api/admin/payouts/batch"), 403)
    finance = await make_admin("finance", client=client)
    await accounts.set_permissions(db, finance.user_id, ["finance"], actor_id=None)
    second = await make_admin("finance2", client=client)
    await accounts.set_permissions(db, second.user_id, ["finance"], actor_id=None)
    assert_problem(
        await finance.post(f"/api/admin/payouts/{small_id}/approve"), 409, "payout-state"
    )  # not batched yet
    batch = (await finance.post("/api/admin/payouts/batch")).json()
    assert batch["payouts"] >= 2
    approved = (await finance.post(f"/api/admin/payouts/{small_id}/approve")).json()
    assert (approved["payout"]["status"], approved["approvals"], approved["needed"]) == (
        "approved",
        1,
        1,
    )
    # 60.00 is above the 55.00 threshold: one admin twice is still one approval.
    for _ in range(2):
        pending = (await finance.post(f"/api/admin/payouts/{big_id}/approve")).json()
        assert (pending["payout"]["status"], pending["approvals"], pending["needed"]) == (
            "requested",
            1,
            2,
        )
    done = (await second.post(f"/api/admin/payouts/{big_id}/approve")).json()
    assert done["payout"]["status"] == "approved"
    cleared = await scalar(
        db,
        "SELECT sum(credits_posted - debits_posted) FROM ledger_accounts"
        " WHERE owner_id IS NULL AND kind = 'payout_clearing'",
    )
    assert cleared >= 1_100_000  # 110.00 USD at 1/10,000

    csv_file = await finance.get(
        f"/api/admin/payouts/batches/{batch['batch_id']}/export", params={"format": "csv"}
    )
    assert csv_file.status_code == 200 and csv_file.headers["content-type"].startswith("text/csv")
    lines = csv_file.text.splitlines()
    assert lines[0].startswith("payout_id,performer_id,account_holder,iban")
    assert (
        f"{small_id},{performer.user_id},Perry Former,DE44500105175407324931,INGDDEFFXXX,50.00,USD"
        in csv_file.text
    )
    sepa = await finance.get(
        f"/api/admin/payouts/batches/{batch['batch_id']}/export", params={"format": "sepa"}
    )
    doc = ET.fromstring(sepa.text)
    header = doc.find(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr")
    assert header is not None
    assert header.findtext(f"{PAIN}NbOfTxs") == str(len(lines) - 1)
    amounts = [e.text for e in doc.iter(f"{PAIN}InstdAmt")]
    assert "50.00" in amounts and "60.00" in amounts
    assert "DE44500105175407324931" in [e.text for e in doc.iter(f"{PAIN}IBAN")]

    paid = (await finance.post(f"/api/admin/payouts/{small_id}/paid")).json()
    assert paid["status"] == "paid"
    failed = (
        await finance.post(f"/api/admin/payouts/{big_id}/failed", json={"reason": "account closed"})
    ).json()
    assert failed["status"] == "failed"
    assert_problem(await finance.post(f"/api/admin/payouts/{small_id}/paid"), 409)
    earnings = (await performer.get("/api/payouts/earnings")).json()
    assert (earnings["balance"], earnings["payable"]) == ("90.00", "90.00")
    mine = (await performer.get("/api/payouts")).json()
    assert {p["id"]: p["status"] for p in mine} == {small_id: "paid", big_id: "failed"}

    today = datetime.now(UTC).date()
    statement = (
        await performer.get(
            "/api/payouts/statement",
            params={"start": str(today), "end": str(today + timedelta(days=1))},
        )
    ).json()
    assert {
        k: statement[k]
        for k in (
            "opening_balance",
            "tips",
            "tokens",
            "gross",
            "platform_fees",
            "tip_earnings",
            "chargebacks",
            "payouts",
            "payouts_returned",
            "closing_balance",
        )
    } == {
        "opening_balance": "0.00",
        "tips": 1,
        "tokens": 20_000,
        "gross": "200.00",
        "platform_fees": "60.00",
        "tip_earnings": "140.00",
        "chargebacks": "0.00",
        "payouts": "110.00",
        "payouts_returned": "60.00",
        "closing_balance": "90.00",
    }
    assert_problem(
        await performer.get(
            "/api/payouts/statement", params={"start": str(today), "end": str(today)}
        ),
        422,
    )


async def test_earnings_in_the_hold_period_cannot_be_paid_out(
    db: Conn,
    pay_client: AsyncTestClient[Litestar],
    make_user: UserFactory,
    set_role: Any,
    new_user: NewUser,
    new_stream: NewStream,
    fund: Fund,
    pay_settings: Settings,
) -> None:
    performer = await make_user("performer", client=pay_client)
    await set_role(performer, "performer")
    await db.execute(
        "INSERT INTO kyc (user_id, status) VALUES (%s, 'approved')", (performer.user_id,)
    )
    viewer = await new_user()
    await fund(viewer, 10_000)
    stream = await new_stream(performer.user_id)
    await tips.post_tip(
        db,
        pay_settings,
        viewer_id=viewer,
        stream_id=stream,
        tokens=10_000,
        message=None,
        private=False,
        idempotency_key=uuid.uuid4().hex,
    )
    earnings = (await performer.get("/api/payouts/earnings")).json()
    assert (earnings["balance"], earnings["in_hold_period"], earnings["payable"]) == (
        "70.00",
        "70.00",
        "0.00",
    )
    response = await performer.post(
        "/api/payouts",
        headers=key(),
        json={"amount": "50.00", "account_holder": "P", "iban": "DE44500105175407324931"},
    )
    assert_problem(response, 409, "insufficient-funds")
