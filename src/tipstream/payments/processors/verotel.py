"""Verotel FlexPay (protocol 4): signed purchase requests and signed postbacks.

signature = SHA-256 of the signature key and every parameter as key=value, sorted by key and
joined with ':' (lower-case hex), as Verotel's FlexPay client computes it. Purchase URLs carry
it; postbacks (GET with the sale's parameters) are refused unless theirs matches. The purchase
id travels as referenceID. The postback is answered with the plain text "OK".
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from tipstream.config import Settings
from tipstream.payments.processors.base import (
    BadWebhook,
    Checkout,
    CheckoutPurchase,
    EventKind,
    ProcessorEvent,
    WebhookRequest,
)

PROTOCOL_VERSION = "4"
EVENT_KINDS: dict[str, EventKind] = {
    "purchase": "sale",
    "credit": "refund",
    "refund": "refund",
    "chargeback": "chargeback",
}


def signature(key: str, params: dict[str, str]) -> str:
    parts = [key, *(f"{k}={params[k]}" for k in sorted(params))]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


class VerotelProcessor:
    name = "verotel"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.payments.verotel
        self.key = settings.secrets.verotel_signature_key or ""

    async def start_checkout(self, purchase: CheckoutPurchase, return_url: str) -> Checkout:
        params = {
            "shopID": self.config.shop_id,
            "version": PROTOCOL_VERSION,
            "type": "purchase",
            "priceAmount": purchase.price,
            "priceCurrency": purchase.currency,
            "description": purchase.description,
            "referenceID": str(purchase.id),
            "successURL": return_url,
        }
        params["signature"] = signature(self.key, params)
        return Checkout(redirect_url=f"{self.config.flexpay_url}?{urlencode(params)}")

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        params = dict(request.query)
        sent = params.pop("signature", "").lower()
        # As bytes: a query string may carry any text; compare_digest takes ASCII str only.
        if not self.key or not hmac.compare_digest(
            sent.encode(), signature(self.key, params).encode()
        ):
            raise BadWebhook("FlexPay signature does not match")
        if params.get("shopID") != self.config.shop_id:
            raise BadWebhook("postback for another shop")
        sale = params.get("saleID", "")
        if not sale:
            raise BadWebhook("saleID missing")
        event_type = params.get("type") or params.get("event") or "purchase"
        kind = EVENT_KINDS.get(event_type, "other")
        reference = params.get("referenceID", "")
        return [
            ProcessorEvent(
                event_id=f"{event_type}:{sale}:{params.get('transactionID', '')}",
                kind=kind,
                event_type=event_type,
                payload=params,
                purchase_id=int(reference) if reference.isdigit() else None,
                processor_ref=sale,
                amount=params.get("priceAmount") if kind == "sale" else None,
                currency=params.get("priceCurrency") if kind == "sale" else None,
            )
        ]

    async def confirm(self, event: ProcessorEvent) -> bool:
        return True

    def acknowledge(self) -> tuple[str, str]:
        return "OK", "text/plain"
