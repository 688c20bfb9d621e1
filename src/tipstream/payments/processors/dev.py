"""The dev processor: a hosted checkout page served by the app itself and an HMAC-signed
webhook, so buying tokens works end to end on one box with no outside service.

Webhook signature, as Stripe's scheme: header ``Tipstream-Dev-Signature: t=<unix>,v1=<hex>``
where v1 = HMAC-SHA256(key, "<t>.<body>"); older than the tolerance is refused (replays). The key
is derived from the session secret, so the one-box install needs no extra secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import msgspec

from tipstream.config import Settings
from tipstream.payments.processors.base import (
    BadWebhook,
    Checkout,
    CheckoutPurchase,
    ProcessorEvent,
    WebhookRequest,
)

SIGNATURE_HEADER = "tipstream-dev-signature"
KINDS = {"sale": "sale", "refund": "refund", "chargeback": "chargeback", "failed": "failed"}


class DevEvent(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    type: str
    purchase_id: int
    amount: str | None = None
    currency: str | None = None


def signing_key(settings: Settings) -> bytes:
    secret = settings.secrets.session_key or ""
    return hmac.new(secret.encode(), b"tipstream dev payment processor", hashlib.sha256).digest()


def sign(settings: Settings, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(signing_key(settings), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def page_token(settings: Settings, purchase_id: int) -> str:
    """Proof that a checkout page URL was made by the app for this purchase."""
    message = f"checkout:{purchase_id}".encode()
    return hmac.new(signing_key(settings), message, hashlib.sha256).hexdigest()[:32]


def event_body(
    event_type: str, purchase_id: int, amount: str | None, currency: str | None
) -> bytes:
    return msgspec.json.encode(
        DevEvent(
            id=f"evt_{uuid.uuid4().hex}",
            type=event_type,
            purchase_id=purchase_id,
            amount=amount,
            currency=currency,
        )
    )


class DevProcessor:
    name = "dev"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def start_checkout(self, purchase: CheckoutPurchase, return_url: str) -> Checkout:
        base = self.settings.server.public_url.rstrip("/")
        token = page_token(self.settings, purchase.id)
        return Checkout(redirect_url=f"{base}/pay/dev/{purchase.id}?token={token}")

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        header = request.headers.get(SIGNATURE_HEADER, "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        try:
            timestamp = int(parts.get("t", ""))
        except ValueError:
            raise BadWebhook("missing or malformed signature header") from None
        tolerance = self.settings.payments.dev_webhook_tolerance_seconds
        if abs(time.time() - timestamp) > tolerance:
            raise BadWebhook("signature timestamp outside the tolerance (a replay?)")
        expected = hmac.new(
            signing_key(self.settings), f"{timestamp}.".encode() + request.body, hashlib.sha256
        ).hexdigest()
        # Compared as bytes: a header may carry any latin-1 text, which compare_digest refuses
        # as str (a TypeError, not a refusal).
        if not hmac.compare_digest(expected.encode(), parts.get("v1", "").encode()):
            raise BadWebhook("signature does not match")
        try:
            event = msgspec.json.decode(request.body, type=DevEvent)
        except msgspec.ValidationError as exc:
            raise BadWebhook(f"malformed event: {exc}") from None
        payload: dict[str, Any] = msgspec.to_builtins(event)
        return [
            ProcessorEvent(
                event_id=event.id,
                kind=KINDS.get(event.type, "other"),  # type: ignore[arg-type]
                event_type=event.type,
                payload=payload,
                purchase_id=event.purchase_id,
                amount=event.amount,
                currency=event.currency,
            )
        ]

    async def confirm(self, event: ProcessorEvent) -> bool:
        return True

    def acknowledge(self) -> tuple[str, str]:
        return '{"received": true}', "application/json"
