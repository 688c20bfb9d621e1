"""Requests and responses of the purchase API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec


class CheckoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    package_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    processor: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "dev"


class CheckoutResponse(msgspec.Struct):
    purchase_id: int
    processor: str
    # Send the browser here (a full redirect to the processor's hosted page).
    redirect_url: str


class Purchase(msgspec.Struct):
    id: int
    processor: str
    package_id: str
    tokens: int
    price: str
    currency: str
    status: str
    created_at: datetime
    credited_at: datetime | None


class WebhookAck(msgspec.Struct):
    events: int
    effects: list[str]
