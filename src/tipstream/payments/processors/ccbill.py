"""CCBill: FlexForms dynamic pricing with the documented form digest, and webhooks.

Checkout: a full redirect to ``{flexforms_url}/{flex_id}`` with clientAccnum, clientSubacc,
initialPrice, initialPeriod, currencyCode and formDigest = MD5(initialPrice initialPeriod
currencyCode salt) concatenated (CCBill's "single billing" FlexForms digest), plus the purchase
id as a pass-through field (X-purchase_id) that CCBill echoes in its webhooks.

Webhooks carry no signature. They are heard only from the configured source networks
(payments.ccbill.webhook_networks), and a NewSaleSuccess is treated as a hint: the sale is
confirmed with CCBill's Data Link (processors/datalink.py, payments/reconcile.py) before any
token is credited. Refunds and chargebacks from the trusted networks are applied directly: they
only take tokens back.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tipstream.config import Settings
from tipstream.payments.processors.base import (
    BadWebhook,
    Checkout,
    CheckoutPurchase,
    EventKind,
    ForbiddenSource,
    ProcessorEvent,
    WebhookRequest,
)

EVENT_KINDS: dict[str, EventKind] = {
    "NewSaleSuccess": "sale",
    "NewSaleFailure": "failed",
    "Refund": "refund",
    "Void": "refund",
    "Chargeback": "chargeback",
}


def form_digest(initial_price: str, initial_period: int, currency_code: str, salt: str) -> str:
    return hashlib.md5(  # noqa: S324 (CCBill's documented digest, not our security)
        f"{initial_price}{initial_period}{currency_code}{salt}".encode()
    ).hexdigest()


class CcbillProcessor:
    name = "ccbill"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.payments.ccbill

    async def start_checkout(self, purchase: CheckoutPurchase, return_url: str) -> Checkout:
        salt = self.settings.secrets.ccbill_salt or ""
        period = self.config.initial_period_days
        params = {
            "clientAccnum": self.config.client_accnum,
            "clientSubacc": self.config.client_subacc,
            "initialPrice": purchase.price,
            "initialPeriod": str(period),
            "currencyCode": self.config.currency_code,
            "formDigest": form_digest(purchase.price, period, self.config.currency_code, salt),
            "X-purchase_id": str(purchase.id),
        }
        url = f"{self.config.flexforms_url.rstrip('/')}/{self.config.flex_id}?{urlencode(params)}"
        return Checkout(redirect_url=url)

    def _trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(n) for n in self.config.webhook_networks)

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        if not self._trusted(request.client_ip):
            raise ForbiddenSource(f"CCBill webhooks are not accepted from {request.client_ip}")
        event_type = request.query.get("eventType", "")
        if not event_type:
            raise BadWebhook("eventType missing")
        body: dict[str, Any]
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                body = json.loads(request.body or b"{}")
            else:
                body = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            raise BadWebhook("body is neither JSON nor a form") from None
        if not isinstance(body, dict):
            raise BadWebhook("body is not an object")
        transaction = str(body.get("transactionId") or body.get("subscriptionId") or "")
        if not transaction:
            raise BadWebhook("transactionId missing")
        purchase = str(body.get("X-purchase_id") or body.get("X-purchase-id") or "")
        kind = EVENT_KINDS.get(event_type, "other")
        amount = body.get("billedInitialPrice") or body.get("accountingInitialPrice")
        if kind in ("refund", "chargeback"):
            amount = None
        return [
            ProcessorEvent(
                # One sale has one transaction id; each event type on it happens once.
                event_id=f"{event_type}:{transaction}",
                kind=kind,
                event_type=event_type,
                payload={"eventType": event_type, **body},
                purchase_id=int(purchase) if purchase.isdigit() else None,
                # Without the pass-through field, the sale is found by its subscription id
                # (what the sale's hint tied to the purchase).
                processor_ref=None
                if purchase.isdigit()
                else str(body.get("subscriptionId") or transaction),
                amount=str(amount) if amount is not None else None,
                currency=None,
                needs_confirmation=kind == "sale",
                extra={
                    "transaction_id": transaction,
                    "subscription_id": str(body.get("subscriptionId") or ""),
                },
            )
        ]

    async def confirm(self, event: ProcessorEvent) -> bool:
        """Never on the webhook's word: the sale is kept as a hint and confirmed through Data
        Link by the reconciliation (payments/reconcile.py), which credits it."""
        return False

    def acknowledge(self) -> tuple[str, str]:
        return "OK", "text/plain"
