"""The real processors' adapters, offline, against their documented formats: CCBill's FlexForms
digest and its unsigned webhooks (source networks, sales only as hints), Verotel FlexPay's
SHA-256 signatures on purchase URLs and postbacks, Stripe Checkout sessions and webhooks verified
by the stripe library."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import Browser, assert_problem, scalar
from tests.integration.payments.conftest import (
    SECRETS,
    StubHandler,
    loopback_server,
    payments_settings,
)
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import service as ledger
from tipstream.payments import queries, service
from tipstream.payments.processors import ccbill
from tipstream.payments.processors.base import ProcessorEvent

UserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def buyer(make_user: UserFactory, pay_client: AsyncTestClient[Litestar]) -> Browser:
    return await make_user("buyer", client=pay_client)


async def checkout(buyer: Browser, processor: str, package: str = "tkn-100") -> dict[str, Any]:
    response = await buyer.post(
        "/api/purchases", json={"package_id": package, "processor": processor}
    )
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- CCBill


def test_ccbill_form_digest_matches_the_documented_example() -> None:
    # CCBill's own example: 10.00, 30 days, USD (840), salt 7d901dad245fd0ff6bc20d06.
    expected = hashlib.md5(b"10.00308407d901dad245fd0ff6bc20d06").hexdigest()
    assert ccbill.form_digest("10.00", 30, "840", "7d901dad245fd0ff6bc20d06") == expected


async def test_ccbill_checkout_webhook_sources_and_hints(
    db: Conn,
    buyer: Browser,
    new_browser: Any,
    pay_client: AsyncTestClient[Litestar],
    pay_settings: Settings,
) -> None:
    started = await checkout(buyer, "ccbill")
    url = urlsplit(started["redirect_url"])
    assert url.path.endswith("/flex-1")
    params = dict(parse_qsl(url.query))
    assert params["initialPrice"] == "1.00" and params["currencyCode"] == "840"
    assert params["formDigest"] == ccbill.form_digest("1.00", 2, "840", SECRETS["ccbill_salt"])
    assert params["X-purchase_id"] == str(started["purchase_id"])
    pid = started["purchase_id"]
    sale = {"transactionId": f"0{pid}1", "X-purchase_id": str(pid), "billedInitialPrice": "1.00"}

    stranger = new_browser(pay_client, peer="203.0.113.9")
    response = await stranger.post(
        "/api/payments/webhooks/ccbill?eventType=NewSaleSuccess", data=sale
    )
    assert_problem(response, 403, "webhook-source-refused")

    ccbill_host = new_browser(pay_client, peer="198.18.7.20")
    response = await ccbill_host.post(
        "/api/payments/webhooks/ccbill?eventType=NewSaleSuccess", data=sale
    )
    assert response.status_code == 200 and response.text == "OK"
    # Unsigned, so only a hint: nothing is credited until CCBill confirms the sale.
    assert (await queries.purchase(db, pid)).status == "created"
    assert (await ledger.wallet(db, buyer.user_id)).balance == 0

    confirmed = ProcessorEvent(
        event_id=f"confirmed:{pid}",
        kind="sale",
        event_type="sale",
        payload={},
        purchase_id=pid,
        amount="1.00",
    )
    assert (await service.apply_event(db, pay_settings, "ccbill", confirmed)).effect == "credit"
    chargeback = {"transactionId": f"0{pid}1", "X-purchase_id": str(pid)}
    for _ in range(2):  # retried: applied once
        response = await ccbill_host.post(
            "/api/payments/webhooks/ccbill?eventType=Chargeback",
            content=json.dumps(chargeback),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
    assert (await queries.purchase(db, pid)).status == "charged_back"
    assert (await ledger.wallet(db, buyer.user_id)).balance == 0


# --------------------------------------------------------------------------- Verotel


def flexpay_signature(key: str, params: dict[str, str]) -> str:
    """Verotel's FlexPay signature, written out independently of the adapter."""
    text = key + "".join(f":{k}={params[k]}" for k in sorted(params))
    return hashlib.sha256(text.encode()).hexdigest()


async def test_verotel_signed_purchase_url_and_postbacks(
    db: Conn, buyer: Browser, new_browser: Any, pay_client: AsyncTestClient[Litestar]
) -> None:
    started = await checkout(buyer, "verotel", "tkn-1200")
    url = urlsplit(started["redirect_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://secure.verotel.com/startorder"
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    sent = params.pop("signature")
    assert sent == flexpay_signature(SECRETS["verotel_signature_key"], params)
    assert (
        params["shopID"],
        params["priceAmount"],
        params["priceCurrency"],
        params["referenceID"],
        params["version"],
    ) == ("12345", "10.00", "USD", str(started["purchase_id"]), "4")

    verotel = new_browser(pay_client, peer="198.51.100.4")
    postback = {
        "shopID": "12345",
        "saleID": f"9{started['purchase_id']}",
        "type": "purchase",
        "referenceID": str(started["purchase_id"]),
        "priceAmount": "10.00",
        "priceCurrency": "USD",
        "transactionID": "777",
        "paymentMethod": "CC",
    }
    signed = {
        **postback,
        "signature": flexpay_signature(SECRETS["verotel_signature_key"], postback),
    }
    tampered = {**signed, "priceAmount": "0.10"}
    assert_problem(
        await verotel.get("/api/payments/webhooks/verotel", params=tampered), 400, "bad-webhook"
    )
    unsigned = dict(postback)
    assert_problem(await verotel.get("/api/payments/webhooks/verotel", params=unsigned), 400)
    assert (await ledger.wallet(db, buyer.user_id)).balance == 0
    for _ in range(2):
        response = await verotel.get("/api/payments/webhooks/verotel", params=signed)
        assert response.status_code == 200 and response.text == "OK"
    assert (await ledger.wallet(db, buyer.user_id)).balance == 1200


# --------------------------------------------------------------------------- Stripe


def stripe_header(payload: bytes, secret: str, at: int | None = None) -> str:
    """Stripe's documented scheme: t=<unix>,v1=HMAC-SHA256(secret, '<t>.<payload>')."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def stripe_event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": event_type,
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


@pytest.fixture
def stripe_stub() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for api.stripe.com's Checkout Session endpoint."""
    seen: list[dict[str, Any]] = []

    class Handler(StubHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            form = parse_qs(self.rfile.read(length).decode())
            seen.append(
                {"path": self.path, "form": form, "auth": self.headers.get("authorization", "")}
            )
            body = json.dumps(
                {
                    "id": "cs_test_123",
                    "object": "checkout.session",
                    "url": "https://checkout.stripe.com/c/pay/cs_test_123",
                    "client_reference_id": form.get("client_reference_id", [""])[0],
                }
            ).encode()
            self.answer(200, body, "application/json")

    with loopback_server(Handler) as url:
        yield url, seen


async def test_stripe_checkout_session_and_verified_webhooks(
    db: Conn,
    pay_settings: Settings,
    tmp_path: Any,
    new_user: Any,
    stripe_stub: tuple[str, list[dict[str, Any]]],
) -> None:
    api, seen = stripe_stub
    settings = payments_settings(pay_settings, tmp_path, stripe={"api_base": api})
    user = await new_user()
    started = await service.start_checkout(
        db, settings, user_id=user, package_id="tkn-550", processor_name="stripe"
    )
    assert started.redirect_url == "https://checkout.stripe.com/c/pay/cs_test_123"
    [call] = seen
    assert call["path"] == "/v1/checkout/sessions"
    assert call["form"]["client_reference_id"] == [str(started.purchase_id)]
    assert call["form"]["line_items[0][price_data][unit_amount]"] == ["500"]
    assert call["auth"] == f"Bearer {SECRETS['stripe_api_key']}"
    assert (await queries.purchase(db, started.purchase_id)).processor_ref == "cs_test_123"

    from tipstream.payments.processors.base import WebhookRequest

    secret = SECRETS["stripe_webhook_secret"]
    completed = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_test_123",
            "object": "checkout.session",
            "payment_status": "paid",
            "client_reference_id": str(started.purchase_id),
            "amount_total": 500,
            "currency": "usd",
        },
    )

    async def deliver(payload: bytes, header: str) -> Any:
        return await service.handle_webhook(
            db,
            settings,
            "stripe",
            WebhookRequest(
                headers={"stripe-signature": header}, query={}, body=payload, client_ip="127.0.0.1"
            ),
        )

    from tipstream.payments.processors.base import BadWebhook

    for header in (
        stripe_header(completed, "whsec_wrong"),
        stripe_header(completed, secret, at=int(time.time()) - 3600),
        "t=1,v1=abc",
        "",
    ):
        with pytest.raises(BadWebhook):
            await deliver(completed, header)
    assert (await ledger.wallet(db, user)).balance == 0
    for _ in range(2):
        outcomes, _ack = await deliver(completed, stripe_header(completed, secret))
    assert [o.effect for o in outcomes] == ["duplicate"]
    assert (await ledger.wallet(db, user)).balance == 550

    dispute = stripe_event(
        "charge.dispute.created",
        {
            "id": "dp_1",
            "object": "dispute",
            "metadata": {"purchase_id": str(started.purchase_id)},
        },
    )
    outcomes, _ack = await deliver(dispute, stripe_header(dispute, secret))
    assert [o.effect for o in outcomes] == ["chargeback"]
    assert (await ledger.wallet(db, user)).balance == 0
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM processor_events WHERE processor = 'stripe' AND purchase_id = %s",
            (started.purchase_id,),
        )
        == 2
    )
