"""Processor adapters, by name (dev, ccbill, verotel, stripe)."""

from __future__ import annotations

from tipstream.config import Settings
from tipstream.errors import NotFound
from tipstream.payments.processors.base import Processor


class UnknownProcessor(NotFound):
    slug, title = "unknown-processor", "No such payment processor here"


def get(settings: Settings, name: str) -> Processor:
    """The adapter for an enabled processor (imported on first use: stripe is heavy)."""
    if name not in settings.payments.processors:
        raise UnknownProcessor(f"payment processor {name!r} is not enabled")
    if name == "dev":
        from tipstream.payments.processors.dev import DevProcessor

        return DevProcessor(settings)
    if name == "ccbill":
        from tipstream.payments.processors.ccbill import CcbillProcessor

        return CcbillProcessor(settings)
    if name == "verotel":
        from tipstream.payments.processors.verotel import VerotelProcessor

        return VerotelProcessor(settings)
    if name == "stripe":
        from tipstream.payments.processors.stripe_checkout import StripeProcessor

        return StripeProcessor(settings)
    raise UnknownProcessor(f"payment processor {name!r} is not known")
