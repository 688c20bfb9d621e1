"""Stripe Checkout, for operators whose content Stripe allows (its restricted-business list
excludes adult content): a Checkout Session per purchase (client_reference_id = purchase id),
and webhooks verified by the official stripe library with its replay tolerance.

Events: checkout.session.completed (paid) credits; charge.refunded reverses; charge.dispute.
created is a chargeback. Refunds and disputes name the payment intent, which the session
stored as the purchase's processor_ref.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import stripe

from tipstream.config import Settings
from tipstream.payments.processors.base import (
    BadWebhook,
    Checkout,
    CheckoutPurchase,
    EventKind,
    ProcessorEvent,
    WebhookRequest,
)

SIGNATURE_HEADER = "stripe-signature"
# Currencies Stripe counts in whole units (no cents).
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XAF", "XOF"}


def minor_units(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL else 2


class StripeProcessor:
    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.payments.stripe

    def _client(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.settings.secrets.stripe_api_key or "",
            base_addresses={"api": self.config.api_base},
            max_network_retries=2,
        )

    async def start_checkout(self, purchase: CheckoutPurchase, return_url: str) -> Checkout:
        exponent = minor_units(purchase.currency)
        amount = int(Decimal(purchase.price).scaleb(exponent))
        session = await self._client().v1.checkout.sessions.create_async(
            params={
                "mode": "payment",
                "client_reference_id": str(purchase.id),
                "metadata": {"purchase_id": str(purchase.id)},
                "payment_intent_data": {"metadata": {"purchase_id": str(purchase.id)}},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": purchase.currency.lower(),
                            "unit_amount": amount,
                            "product_data": {"name": purchase.description},
                        },
                    }
                ],
                "success_url": return_url,
                "cancel_url": return_url,
            }
        )
        return Checkout(redirect_url=str(session.url), processor_ref=str(session.id))

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        secret = self.settings.secrets.stripe_webhook_secret
        if not secret:
            raise BadWebhook("no Stripe webhook secret configured")
        try:
            verified = stripe.Webhook.construct_event(
                request.body,
                request.headers.get(SIGNATURE_HEADER, ""),
                secret,
                tolerance=self.config.tolerance_seconds,
            )
        except stripe.SignatureVerificationError as exc:
            raise BadWebhook(f"Stripe signature: {exc.user_message or 'does not verify'}") from None
        except ValueError:
            raise BadWebhook("not a Stripe event") from None
        data: dict[str, Any] = verified.to_dict()
        obj: dict[str, Any] = data.get("data", {}).get("object", {})
        event_type = str(data.get("type", ""))
        metadata = obj.get("metadata") or {}
        reference = str(obj.get("client_reference_id") or metadata.get("purchase_id") or "")
        purchase_id = int(reference) if reference.isdigit() else None

        def event(kind: EventKind, **extra: Any) -> ProcessorEvent:
            return ProcessorEvent(
                event_id=str(data.get("id")),
                kind=kind,
                event_type=event_type,
                payload=data,
                purchase_id=purchase_id,
                **extra,
            )

        if event_type == "checkout.session.completed":
            if obj.get("payment_status") != "paid":
                return [event("other")]
            currency = str(obj.get("currency", "")).upper()
            total = Decimal(int(obj.get("amount_total", 0))).scaleb(-minor_units(currency))
            return [
                event(
                    "sale", processor_ref=str(obj.get("id")), amount=str(total), currency=currency
                )
            ]
        if event_type in ("charge.refunded", "charge.dispute.created"):
            return [event("refund" if event_type == "charge.refunded" else "chargeback")]
        if event_type == "checkout.session.expired":
            return [event("failed")]
        return [event("other")]

    async def confirm(self, event: ProcessorEvent) -> bool:
        return True

    def acknowledge(self) -> tuple[str, str]:
        return '{"received": true}', "application/json"
