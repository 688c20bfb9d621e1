"""Buying tokens through the dev processor over HTTP, end to end; webhook replays, forgeries and
out-of-order events; refunds and chargebacks, including against tokens already tipped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import Browser, assert_problem, scalar
from tests.integration.ledger.conftest import NewStream, NewUser
from tests.integration.payments.conftest import payments_settings
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import service as ledger
from tipstream.ledger import tips
from tipstream.payments import queries, service
from tipstream.payments.processors import dev
from tipstream.payments.processors.base import ProcessorEvent

UserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def buyer(make_user: UserFactory, pay_client: AsyncTestClient[Litestar]) -> Browser:
    return await make_user("buyer", client=pay_client)


async def start(buyer: Browser, package: str = "tkn-550") -> dict[str, Any]:
    response = await buyer.post("/api/purchases", json={"package_id": package, "processor": "dev"})
    assert response.status_code == 201, response.text
    return response.json()


def signed(
    settings: Settings,
    event_type: str,
    purchase_id: int,
    amount: str | None = None,
    *,
    event_id: str | None = None,
    at: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = msgspec.json.encode(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "type": event_type,
            "purchase_id": purchase_id,
            "amount": amount,
            "currency": "USD" if amount else None,
        }
    )
    return body, {
        dev.SIGNATURE_HEADER: dev.sign(settings, body, at),
        "content-type": "application/json",
    }


async def test_buying_tokens_end_to_end_through_the_hosted_page(
    db: Conn, buyer: Browser, pay_settings: Settings
) -> None:
    started = await start(buyer)
    url = urlsplit(started["redirect_url"])
    assert url.path == f"/pay/dev/{started['purchase_id']}"
    page = await buyer.get(f"{url.path}?{url.query}")
    assert page.status_code == 200 and "550 tokens" in page.text and "5.00 USD" in page.text
    token = url.query.removeprefix("token=")
    paid = await buyer.post(url.path, data={"token": token, "outcome": "sale"}, csrf=False)
    assert paid.status_code == 303 and paid.headers["location"].endswith(
        f"/wallet?purchase={started['purchase_id']}"
    )
    assert (await buyer.get("/api/wallet")).json()["balance"] == 550
    [purchase] = (await buyer.get("/api/purchases")).json()
    assert (purchase["status"], purchase["tokens"], purchase["price"]) == ("credited", 550, "5.00")
    # The purchase's money: 5.00 USD owed by the processor, 5.50 USD of token liability (bonus
    # tokens from promotions: 550 tokens are worth 5.50).
    cur = await db.execute(
        "SELECT id, asset, amount, kind FROM ledger_transfers WHERE reference = %s ORDER BY id",
        (f"purchase:{started['purchase_id']}",),
    )
    moves = {r["id"].rsplit(":", 1)[1]: r["amount"] for r in await cur.fetchall()}
    assert moves == {"tokens": 550, "value": 50_000, "bonus": 5_000}
    # A bad link or someone else's purchase id shows nothing.
    assert_problem(await buyer.get(f"{url.path}?token=wrong"), 403)
    again = await buyer.post(url.path, data={"token": token, "outcome": "sale"}, csrf=False)
    assert again.status_code == 303
    assert (await buyer.get("/api/wallet")).json()["balance"] == 550  # paid once


async def test_declined_checkout_credits_nothing(buyer: Browser) -> None:
    started = await start(buyer, "tkn-100")
    url = urlsplit(started["redirect_url"])
    token = url.query.removeprefix("token=")
    await buyer.post(url.path, data={"token": token, "outcome": "failed"}, csrf=False)
    assert (await buyer.get("/api/wallet")).json()["balance"] == 0
    assert (await buyer.get("/api/purchases")).json()[0]["status"] == "failed"


async def test_webhook_replays_duplicates_and_forgeries(
    db: Conn,
    buyer: Browser,
    anon: Browser,
    pay_client: AsyncTestClient[Litestar],
    pay_settings: Settings,
    new_browser: Any,
) -> None:
    hook = new_browser(pay_client)
    started = await start(buyer, "tkn-100")
    pid = started["purchase_id"]
    body, headers = signed(pay_settings, "sale", pid, "1.00")
    for _ in range(3):  # the processor retries the same event
        response = await hook.post("/api/payments/webhooks/dev", content=body, headers=headers)
        assert response.status_code == 200, response.text
    other_body, other_headers = signed(pay_settings, "sale", pid, "1.00")  # another event id
    assert (
        await hook.post("/api/payments/webhooks/dev", content=other_body, headers=other_headers)
    ).status_code == 200
    assert (await buyer.get("/api/wallet")).json()["balance"] == 100
    effects = await db.execute(
        "SELECT effect FROM processor_events WHERE purchase_id = %s ORDER BY received_at", (pid,)
    )
    assert [r["effect"] for r in await effects.fetchall()] == ["credit", "ignored"]

    before = await scalar(db, "SELECT count(*) FROM processor_events")
    forged_body, _ = signed(pay_settings, "refund", pid)
    cases = [
        ({dev.SIGNATURE_HEADER: f"t={int(time.time())},v1={'0' * 64}"}, forged_body),
        ({}, forged_body),
        # A genuine signature from 10 minutes ago: a replay.
        (signed(pay_settings, "refund", pid, at=int(time.time()) - 600)[1], forged_body),
        # Signed, then the body changed.
        (signed(pay_settings, "refund", pid)[1], forged_body.replace(b"refund", b"chargeback")),
    ]
    for case_headers, case_body in cases:
        response = await hook.post(
            "/api/payments/webhooks/dev", content=case_body, headers=case_headers
        )
        assert_problem(response, 400, "bad-webhook")
    other_key = payments_settings(pay_settings, _tmp(), prefix=pay_settings.valkey.key_prefix)
    wrong_key_body, wrong_key_headers = signed(other_key, "refund", pid)
    if other_key.secrets.session_key != pay_settings.secrets.session_key:
        assert_problem(
            await hook.post(
                "/api/payments/webhooks/dev", content=wrong_key_body, headers=wrong_key_headers
            ),
            400,
            "bad-webhook",
        )
    assert_problem(
        await hook.post("/api/payments/webhooks/nope", content=body, headers=headers),
        404,
        "unknown-processor",
    )
    assert await scalar(db, "SELECT count(*) FROM processor_events") == before
    assert (await buyer.get("/api/wallet")).json()["balance"] == 100


def _tmp() -> Any:
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


async def test_a_refund_that_arrives_before_its_sale_wins(
    db: Conn, buyer: Browser, pay_settings: Settings
) -> None:
    pid = (await start(buyer, "tkn-100"))["purchase_id"]
    refund = ProcessorEvent(
        event_id=f"r-{pid}", kind="refund", event_type="refund", payload={}, purchase_id=pid
    )
    sale = ProcessorEvent(
        event_id=f"s-{pid}",
        kind="sale",
        event_type="sale",
        payload={},
        purchase_id=pid,
        amount="1.00",
        currency="USD",
    )
    assert (await service.apply_event(db, pay_settings, "dev", refund)).effect == "refund"
    assert (await service.apply_event(db, pay_settings, "dev", sale)).effect == "ignored"
    assert (await service.apply_event(db, pay_settings, "dev", sale)).effect == "duplicate"
    assert (await queries.purchase(db, pid)).status == "refunded"
    assert (await buyer.get("/api/wallet")).json()["balance"] == 0


async def test_a_sale_for_another_amount_credits_nothing(
    db: Conn, buyer: Browser, pay_settings: Settings
) -> None:
    pid = (await start(buyer, "tkn-100"))["purchase_id"]
    cheap = ProcessorEvent(
        event_id=f"s-{pid}",
        kind="sale",
        event_type="sale",
        payload={},
        purchase_id=pid,
        amount="0.01",
        currency="USD",
    )
    assert (await service.apply_event(db, pay_settings, "dev", cheap)).effect == "ignored"
    assert (await queries.purchase(db, pid)).status == "created"


async def _bought(db: Conn, settings: Settings, user_id: int, package: str) -> int:
    started = await service.start_checkout(
        db, settings, user_id=user_id, package_id=package, processor_name="dev"
    )
    event = ProcessorEvent(
        event_id=f"sale-{started.purchase_id}",
        kind="sale",
        event_type="sale",
        payload={},
        purchase_id=started.purchase_id,
    )
    assert (await service.apply_event(db, settings, "dev", event)).effect == "credit"
    return started.purchase_id


async def _earnings(db: Conn, performer: int) -> int:
    return int(
        await scalar(
            db,
            "SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
            " WHERE owner_id = %s AND kind = 'earnings'",
            (performer,),
        )
    )


async def _platform(db: Conn, kind: str, code: str = "") -> int:
    return int(
        await scalar(
            db,
            "SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
            " WHERE owner_id IS NULL AND kind = %s AND code = %s",
            (kind, code),
        )
    )


@pytest.mark.parametrize("policy", ["reserve", "performer"])
async def test_a_chargeback_after_tipping_freezes_the_wallet_and_charges_per_policy(
    db: Conn,
    pay_settings: Settings,
    tmp_path: Any,
    new_user: NewUser,
    new_stream: NewStream,
    policy: str,
) -> None:
    settings = payments_settings(pay_settings, tmp_path, chargeback_policy=policy)
    viewer, performer = await new_user(), await new_user("performer")
    stream = await new_stream(performer)
    pid = await _bought(db, settings, viewer, "tkn-100")
    posted = await tips.post_tip(
        db,
        settings,
        viewer_id=viewer,
        stream_id=stream,
        tokens=60,
        message=None,
        private=False,
        idempotency_key=uuid.uuid4().hex,
    )
    # The tip knows it was paid from this purchase.
    assert (
        await scalar(
            db,
            "SELECT l.source_id FROM lot_spends s JOIN token_lots l ON l.id = s.lot_id"
            " WHERE s.transfer_id = %s",
            (f"tip:{posted.tip.id}:tokens",),
        )
        == f"purchase:{pid}"
    )
    earned, reserve = await _earnings(db, performer), await _platform(db, "reserve")
    fees = await _platform(db, "revenue", "tips")
    chargeback = ProcessorEvent(
        event_id=f"cb-{pid}",
        kind="chargeback",
        event_type="chargeback",
        payload={},
        purchase_id=pid,
    )
    assert (await service.apply_event(db, settings, "dev", chargeback)).effect == "chargeback"
    wallet = await ledger.wallet(db, viewer)
    assert wallet.frozen and wallet.balance == 0  # 40 taken back, 60 written off
    assert (await queries.purchase(db, pid)).status == "charged_back"
    if policy == "reserve":
        assert await _earnings(db, performer) == earned == 60 * 70
        assert await _platform(db, "reserve") == reserve - 60 * 100
    else:
        assert await _earnings(db, performer) == earned - 60 * 70 == 0
        assert await _platform(db, "revenue", "tips") == fees - 60 * 30
        assert await _platform(db, "reserve") == reserve
    # Frozen: no more tips, no more purchases, until an admin has reviewed it.
    with pytest.raises(Exception, match="frozen"):
        await tips.post_tip(
            db,
            settings,
            viewer_id=viewer,
            stream_id=stream,
            tokens=1,
            message=None,
            private=False,
            idempotency_key=uuid.uuid4().hex,
        )
    with pytest.raises(Exception, match="frozen"):
        await service.start_checkout(
            db, settings, user_id=viewer, package_id="tkn-100", processor_name="dev"
        )


async def test_admin_refund_takes_the_tokens_back_and_is_audited(
    db: Conn, pay_settings: Settings, new_user: NewUser
) -> None:
    viewer = await new_user()
    pid = await _bought(db, pay_settings, viewer, "tkn-1200")
    refunded = await service.admin_refund(
        db, pay_settings, purchase_id=pid, reason="stolen card", actor_id=None
    )
    assert refunded.status == "refunded"
    wallet = await ledger.wallet(db, viewer)
    assert (wallet.balance, wallet.frozen) == (0, False)
    assert (
        await scalar(
            db,
            "SELECT details->>'reason' FROM audit_logs WHERE action = 'ledger.refund'"
            " AND target_id = %s",
            (str(pid),),
        )
        == "stolen card"
    )
    with pytest.raises(service.PurchaseNotRefundable):
        await service.admin_refund(db, pay_settings, purchase_id=pid, reason="again", actor_id=None)
