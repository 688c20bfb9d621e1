"""What every processor adapter does: start a hosted checkout (a full redirect: no card data
ever reaches the app, PCI SAQ A) and turn a webhook into verified events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tipstream.errors import Problem

EventKind = Literal["sale", "refund", "chargeback", "failed", "other"]


class BadWebhook(Problem):
    """Forged, stale or malformed: refused, nothing recorded."""

    status, slug, title = 400, "bad-webhook", "Webhook refused"


class ForbiddenSource(Problem):
    status, slug, title = 403, "webhook-source-refused", "Webhook from an unknown network"


@dataclass(frozen=True)
class CheckoutPurchase:
    id: int
    user_id: int
    package_id: str
    tokens: int
    currency: str
    price_units: int
    # Decimal string in the currency, e.g. "9.99".
    price: str
    description: str


@dataclass(frozen=True)
class Checkout:
    redirect_url: str
    # The processor's id for this checkout (stripe session id); None when the sale names it.
    processor_ref: str | None = None


@dataclass(frozen=True)
class WebhookRequest:
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    client_ip: str


@dataclass(frozen=True)
class ProcessorEvent:
    event_id: str
    kind: EventKind
    event_type: str
    payload: dict[str, Any]
    purchase_id: int | None = None
    processor_ref: str | None = None
    # What the processor says was paid (sales), to compare with the purchase.
    amount: str | None = None
    currency: str | None = None
    # Set when the event is only a hint: the sale is confirmed with the processor first.
    needs_confirmation: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Processor(Protocol):
    name: str

    async def start_checkout(self, purchase: CheckoutPurchase, return_url: str) -> Checkout: ...

    async def parse_webhook(self, request: WebhookRequest) -> list[ProcessorEvent]:
        """Verify the webhook (signature, source, freshness) and say what happened; raise
        BadWebhook / ForbiddenSource when it cannot be trusted."""
        ...

    async def confirm(self, event: ProcessorEvent) -> bool:
        """For hint-only events: ask the processor whether the sale is real."""
        ...

    def acknowledge(self) -> tuple[str, str]:
        """The body and media type the processor expects as a success answer."""
        ...
