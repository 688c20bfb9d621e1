"""Payments' background work: the hourly CCBill reconciliation with Data Link."""

from __future__ import annotations

import asyncio

import dramatiq
import structlog

from tipstream import db
from tipstream.payments import reconcile
from tipstream.payments.processors.datalink import DatalinkNotConfigured
from tipstream.workers import broker

log = structlog.get_logger("tipstream.payments")

# Data Link answers one request an hour; the job asks once an hour, at ten past.
RECONCILE_EVERY_SECONDS = 3600
RECONCILE_OFFSET_SECONDS = 600


async def _reconcile_ccbill() -> str:
    settings = broker.settings()
    if "ccbill" not in settings.payments.processors:
        return "disabled"
    async with db.connect(settings) as conn:
        try:
            summary = await reconcile.reconcile(conn, settings, "ccbill", trigger="schedule")
        except DatalinkNotConfigured as exc:
            log.warning("reconcile_not_configured", processor="ccbill", detail=exc.detail)
            return "not-configured"
    return summary.status


@dramatiq.actor(queue_name="payments", max_retries=0, time_limit=30 * 60_000)
def reconcile_ccbill() -> None:
    """Confirm announced CCBill sales, apply refunds and chargebacks Data Link reports, flag
    sales never confirmed (a failed run is retried by the next hourly one)."""
    asyncio.run(_reconcile_ccbill())
