"""CCBill reconciliation: its webhooks are unsigned, so a sale they announce is only a hint
(a sale_hints row); CCBill's Data Link, asked with the operator's credentials, is what confirms
it. Each run asks Data Link for a time window and applies what it reports:

- NEW: the sale of a purchase (matched by CCBill's subscription id, which the webhook's hint
  tied to the purchase) is credited through the same path as every processor event, under the
  event id ``sale:<subscription id>``, so it is credited once whatever runs, retries or webhook
  lookups report it again, and however many of them race;
- REFUND, VOID, CHARGEBACK: reversed through the refund and chargeback path;
- REBILL: nothing (purchases are single billing);
- a hint still unconfirmed after payments.ccbill.confirm_window_hours is flagged for review
  (audited), and still credited if Data Link reports the sale later.

A run fetches and parses its whole window before it applies anything: a Data Link error or a
malformed answer changes nothing and is recorded as a failed run. Data Link answers one request
an hour, so no run asks sooner than payments.ccbill.datalink_min_interval_seconds after the
last one (the hourly job, an operator's `tipctl payments reconcile`, or a webhook lookup).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from tipstream.audit import service as audit
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput, Problem
from tipstream.payments import processors, queries
from tipstream.payments.processors import datalink
from tipstream.payments.processors.base import EventKind, ProcessorEvent
from tipstream.payments.processors.datalink import DatalinkError, DatalinkRecord

log = structlog.get_logger("tipstream.payments.reconcile")

Progress = Callable[[int, int], None]
REVERSALS: dict[str, EventKind] = {"REFUND": "refund", "VOID": "refund", "CHARGEBACK": "chargeback"}
# Within one instant a sale comes before what undoes it.
ORDER = {"NEW": 0, "REBILL": 1, "VOID": 2, "REFUND": 3, "CHARGEBACK": 4}


@dataclass
class Counts:
    records: int = 0
    credited: int = 0
    reversed: int = 0
    duplicates: int = 0
    unmatched: int = 0
    skipped: int = 0
    flagged: int = 0


@dataclass
class ReconcileSummary:
    processor: str
    # ok | failed | busy (another run holds the lock) | too-soon (Data Link's interval)
    status: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    run_id: int | None = None
    counts: Counts = field(default_factory=Counts)
    error: str | None = None
    # Set when the window asked for was longer than one Data Link request covers: the rest,
    # up to this moment, is left to the next runs.
    remaining_until: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "processor": self.processor,
            "status": self.status,
            "run_id": self.run_id,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            **asdict(self.counts),
            "error": self.error,
            "remaining_until": self.remaining_until.isoformat() if self.remaining_until else None,
        }


def _check_processor(settings: Settings, processor_name: str) -> None:
    processors.get(settings, processor_name)  # enabled at all?
    if processor_name != "ccbill":
        raise InvalidInput(f"{processor_name} needs no reconciliation: its webhooks are signed")
    datalink.credentials(settings.payments.ccbill, settings.secrets)


async def _window(
    conn: Conn, settings: Settings, since: datetime | None, until: datetime
) -> datetime:
    """Where a run starts: as asked; else a little before the last good run ended (a worker
    down for days catches up, in several requests), reaching back to the oldest unconfirmed
    hint too (a webhook later than Data Link's listing) but never more than one request's span
    for that; with no run yet, one hour back."""
    config = settings.payments.ccbill
    if since is not None:
        return since
    overlap = timedelta(minutes=config.reconcile_overlap_minutes)
    last = await queries.last_good_window_end(conn, "ccbill")
    start = last - overlap if last is not None else until - timedelta(hours=1)
    oldest = await queries.oldest_pending_hint(conn, "ccbill")
    if oldest is not None:
        start = min(
            start, max(oldest - overlap, until - timedelta(hours=config.datalink_max_window_hours))
        )
    return min(start, until - timedelta(minutes=1))


async def reconcile(
    conn: Conn,
    settings: Settings,
    processor_name: str = "ccbill",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    trigger: str = "schedule",
    force: bool = False,
    progress: Progress | None = None,
) -> ReconcileSummary:
    """Ask Data Link for [since, until) and apply what it confirms; see the module's doc."""
    _check_processor(settings, processor_name)
    config = settings.payments.ccbill
    # Never past now: a window's end is where the next run starts.
    until = min(until or datetime.now(UTC), datetime.now(UTC))
    if since is not None and since >= until:
        raise InvalidInput("--since must be before --until (and before now)")
    if not await queries.try_lock_reconciliation(conn, processor_name):
        return ReconcileSummary(processor_name, "busy")
    try:
        last = await queries.last_run_started(conn, processor_name)
        interval = timedelta(seconds=config.datalink_min_interval_seconds)
        if not force and last is not None and datetime.now(UTC) - last < interval:
            return ReconcileSummary(processor_name, "too-soon")
        start = await _window(conn, settings, since, until)
        # One request a run (CCBill answers one an hour, for at most a day): a longer window is
        # finished by the next runs, each starting where the last good one ended.
        end = min(until, start + timedelta(hours=config.datalink_max_window_hours))
        run = await queries.insert_run(
            conn, processor=processor_name, window_start=start, window_end=end, trigger=trigger
        )
        summary = ReconcileSummary(processor_name, "ok", start, end, run.id)
        summary.remaining_until = until if end < until else None
        try:
            records = await datalink.fetch(config, settings.secrets, start, end)
        except DatalinkError as exc:
            summary.status, summary.error = "failed", exc.detail
            log.warning("datalink_failed", processor=processor_name, run=run.id, error=exc.detail)
            await queries.finish_run(
                conn, run.id, status="failed", counts=asdict(summary.counts), error=exc.detail
            )
            return summary
        records.sort(key=lambda r: (r.at, ORDER[r.type]))
        summary.counts.records = len(records)
        done = 0
        try:
            for done, record in enumerate(records, start=1):
                await _apply_one(conn, settings, processor_name, record, summary.counts)
                if progress:
                    progress(done, len(records))
            summary.counts.flagged = await _flag_stale(conn, settings, processor_name)
        except Exception as exc:
            # Each record commits on its own (once per event id), so what was applied stays
            # and the next run, covering the window again, finds it done.
            error = f"stopped at record {done} of {len(records)}: {type(exc).__name__}"
            await queries.finish_run(
                conn, run.id, status="failed", counts=asdict(summary.counts), error=error
            )
            raise
        await queries.finish_run(
            conn, run.id, status="ok", counts=asdict(summary.counts), error=None
        )
        log.info("reconciled", processor=processor_name, run=run.id, **asdict(summary.counts))
        return summary
    finally:
        await queries.unlock_reconciliation(conn, processor_name)


async def _apply_one(
    conn: Conn, settings: Settings, processor_name: str, record: DatalinkRecord, counts: Counts
) -> None:
    """A record the ledger refuses (a 4xx problem, e.g. a closed wallet) is skipped and logged;
    the rest of the window goes on."""
    try:
        await _apply(conn, settings, processor_name, record, counts)
    except Problem as exc:
        log.warning(
            "datalink_record_refused",
            processor=processor_name,
            type=record.type,
            subscription=record.subscription_id,
            problem=exc.slug,
        )
        counts.skipped += 1


async def _apply(
    conn: Conn, settings: Settings, processor_name: str, record: DatalinkRecord, counts: Counts
) -> None:
    from tipstream.payments import service

    config = settings.payments.ccbill
    foreign = record.client_accnum != config.client_accnum or (
        config.client_subacc and record.client_subacc.zfill(4) != config.client_subacc.zfill(4)
    )
    if foreign or record.type == "REBILL":
        counts.skipped += 1
        return
    purchase = await queries.purchase_by_ref(conn, processor_name, record.subscription_id)
    if purchase is None:
        # A sale no webhook announced (so no purchase is tied to it), or a reversal of one.
        log.warning(
            "datalink_unmatched",
            processor=processor_name,
            type=record.type,
            subscription=record.subscription_id,
        )
        counts.unmatched += 1
        return
    stamp = record.at.strftime("%Y%m%d%H%M%S")
    payload = {
        "source": "datalink",
        "type": record.type,
        "subscriptionId": record.subscription_id,
        "timestamp": record.at.isoformat(),
        "amount": record.amount,
    }
    if record.type == "NEW":
        event = ProcessorEvent(
            event_id=sale_event_id(record.subscription_id),
            kind="sale",
            event_type="datalink:NEW",
            payload=payload,
            purchase_id=purchase.id,
            amount=record.amount,
        )
    else:
        kind = REVERSALS[record.type]
        event = ProcessorEvent(
            event_id=f"datalink:{record.type}:{record.subscription_id}:{stamp}",
            kind=kind,
            event_type=f"datalink:{record.type}",
            payload=payload,
            purchase_id=purchase.id,
        )
    outcome = await service.apply_event(conn, settings, processor_name, event)
    if outcome.effect == "credit":
        counts.credited += 1
    elif outcome.effect in ("refund", "chargeback"):
        counts.reversed += 1
    elif outcome.effect == "duplicate":
        counts.duplicates += 1
    else:
        counts.skipped += 1
    # Confirmed only by a credit (a sale recorded as ignored, e.g. at the wrong price, stays
    # unconfirmed and is flagged for a person to look at).
    credited = outcome.effect == "credit" or (
        outcome.effect == "duplicate"
        and (await queries.purchase(conn, purchase.id)).status == "credited"
    )
    if record.type == "NEW" and credited:
        await queries.confirm_hint(conn, purchase.id)


def sale_event_id(subscription_id: str) -> str:
    """One id for a CCBill sale, whichever lookup confirms it: credited once."""
    return f"sale:{subscription_id}"


async def _flag_stale(conn: Conn, settings: Settings, processor_name: str) -> int:
    window = timedelta(hours=settings.payments.ccbill.confirm_window_hours)
    async with conn.transaction():
        await queries.close_settled_hints(conn, processor_name)
        flagged = await queries.flag_stale_hints(conn, processor_name, datetime.now(UTC) - window)
        for row in flagged:
            await audit.record(
                conn,
                "payments.sale_unconfirmed",
                target_type="purchase",
                target_id=row.purchase_id,
                details={
                    "processor": processor_name,
                    "subscription_id": row.subscription_id,
                    "event_id": row.event_id,
                    "amount": row.amount,
                    "hinted_at": row.hinted_at.isoformat(),
                },
            )
            log.warning(
                "sale_unconfirmed",
                processor=processor_name,
                purchase=row.purchase_id,
                subscription=row.subscription_id,
            )
    return len(flagged)


async def record_hint(conn: Conn, processor_name: str, event: ProcessorEvent) -> bool:
    """Keep a webhook's unconfirmed sale for the reconciliation; True if it is now pending
    (or was already). Refused (False) when the purchase is unknown, not this processor's, no
    longer open, or tied to another subscription."""
    subscription = str(event.extra.get("subscription_id") or "")
    if event.purchase_id is None or not datalink.SUBSCRIPTION_ID.match(subscription):
        return False
    async with conn.transaction():
        purchase = await queries.lock_purchase(
            conn, processor=processor_name, purchase_id=event.purchase_id, processor_ref=None
        )
        if purchase is None or purchase.status != "created":
            return False
        other = await queries.purchase_by_ref(conn, processor_name, subscription)
        if other is not None and other.id != purchase.id:
            log.warning(
                "sale_hint_conflict", purchase=purchase.id, other=other.id, event=event.event_id
            )
            return False
        if not await queries.claim_processor_ref(conn, purchase.id, subscription):
            log.warning("sale_hint_other_subscription", purchase=purchase.id)
            return False
        await queries.insert_hint(
            conn,
            purchase_id=purchase.id,
            processor=processor_name,
            subscription_id=subscription,
            event_id=event.event_id,
            amount=event.amount,
        )
    return True


async def confirm_now(
    conn: Conn, settings: Settings, processor_name: str, event: ProcessorEvent
) -> str | None:
    """A webhook's sale, looked up in Data Link at once when the operator turned that on and
    Data Link's interval allows; the credit (if any) goes through the reconciliation, so it
    is the same single credit. Answers the run's status, or None when not asked."""
    if not settings.payments.ccbill.confirm_on_webhook:
        return None
    hinted = await queries.hint(conn, event.purchase_id) if event.purchase_id else None
    if hinted is None:
        return None
    try:
        # The usual window (from the last good run on), so no run leaves a gap behind it.
        summary = await reconcile(conn, settings, processor_name, trigger="webhook")
    except datalink.DatalinkNotConfigured:
        return None
    return summary.status


# A good reconciliation older than this means the hourly job is not running (or failing).
STALE_AFTER = timedelta(hours=3)


async def health(conn: Conn, settings: Settings) -> str:
    """For `tipctl doctor`: raises when CCBill sales cannot be confirmed (Data Link not
    configured, its last run failed, no good run for hours); else says where things stand."""
    if "ccbill" not in settings.payments.processors:
        return "CCBill not enabled"
    try:
        datalink.credentials(settings.payments.ccbill, settings.secrets)
    except datalink.DatalinkNotConfigured as exc:
        raise RuntimeError(exc.detail) from None
    pending = await queries.count_hints(conn, "ccbill", "pending")
    flagged = await queries.count_hints(conn, "ccbill", "flagged")
    waiting = f"{pending} sales awaiting confirmation, {flagged} flagged (tipctl payments hints)"
    last = await queries.last_run(conn, "ccbill")
    if last is None:
        return f"Data Link not asked yet; {waiting}"
    if last.status == "failed":
        raise RuntimeError(
            f"last Data Link run ({last.started_at:%Y-%m-%d %H:%M} UTC) failed: {last.error}"
        )
    good = await queries.last_good_window_end(conn, "ccbill")
    if good is None or datetime.now(UTC) - good > STALE_AFTER:
        raise RuntimeError("no good Data Link reconciliation for over 3 hours: is the worker up?")
    return f"reconciled up to {good:%Y-%m-%d %H:%M} UTC; {waiting}"
