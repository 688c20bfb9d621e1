"""tipctl payments reconcile|hints"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta

import structlog
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    err,
    fail,
    out,
    print_json,
    print_table,
    run,
    settings,
    with_conn,
)
from tipstream.db import Conn
from tipstream.payments import queries, reconcile
from tipstream.payments.queries import SaleHintRow

app = typer.Typer(help="Payment processors: reconciliation, announced sales.", no_args_is_help=True)


@app.callback()
def _logs_to_stderr() -> None:
    """The services' log lines go to stderr, so stdout stays the table or the JSON."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


DURATION = re.compile(r"^([0-9]{1,5})([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, option: str) -> datetime:
    """An ISO date or time (UTC unless it says otherwise) or a span back from now: 90m, 6h, 2d."""
    span = DURATION.match(text.strip())
    if span:
        return datetime.now(UTC) - timedelta(**{UNITS[span.group(2)]: int(span.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{option}: {text!r} is neither an ISO date/time nor a span like 6h", EXIT_USAGE)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("reconcile")
def reconcile_cmd(
    processor: str = typer.Option("ccbill", "--processor", help="Processor to reconcile."),
    since: str | None = typer.Option(
        None,
        "--since",
        help="Start (ISO time, UTC by default, or 6h/2d back); default: "
        "a little before the last good run ended.",
    ),
    until: str | None = typer.Option(None, "--until", help="End (default: now)."),
    force: bool = typer.Option(
        False, "--force", help="Ask even within Data Link's one-request-an-hour interval."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ask the processor's transaction report (CCBill Data Link) for a time window: credit the
    announced sales it confirms (once each), apply its refunds and chargebacks, flag announced
    sales it never confirmed. Exit 1 if Data Link failed (nothing changed), 3 if another run
    holds the lock or Data Link was asked too recently."""
    cfg = settings()
    start = parse_moment(since, "--since") if since else None
    end = parse_moment(until, "--until") if until else None

    async def go(conn: Conn) -> reconcile.ReconcileSummary:
        if as_json:
            return await reconcile.reconcile(
                conn, cfg, processor, since=start, until=end, trigger="operator", force=force
            )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(f"asking {processor}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, description="applying", completed=done, total=total)

            return await reconcile.reconcile(
                conn,
                cfg,
                processor,
                since=start,
                until=end,
                trigger="operator",
                force=force,
                progress=progress,
            )

    summary = run(with_conn(cfg, go))
    if as_json:
        print_json(summary.as_dict())
    else:
        c = summary.counts
        if summary.window_start and summary.window_end:
            out.print(
                f"window {summary.window_start:%Y-%m-%d %H:%M:%S} .. "
                f"{summary.window_end:%Y-%m-%d %H:%M:%S} UTC (run {summary.run_id})",
                highlight=False,
            )
        if summary.remaining_until:
            span = cfg.payments.ccbill.datalink_max_window_hours
            out.print(
                f"one Data Link request covers at most {span} h: "
                f"{summary.window_end:%Y-%m-%d %H:%M:%S} .. "
                f"{summary.remaining_until:%Y-%m-%d %H:%M:%S} is left to the next runs",
                highlight=False,
            )
        if summary.status == "ok":
            out.print(
                f"done: {c.records} records: {c.credited} credited, {c.reversed} reversed, "
                f"{c.duplicates} already applied, {c.unmatched} unmatched, {c.skipped} skipped; "
                f"{c.flagged} unconfirmed sales flagged",
                highlight=False,
            )
        elif summary.status == "failed":
            err.print(f"tipctl: nothing changed: {summary.error}", markup=False, highlight=False)
        elif summary.status == "busy":
            out.print("another reconciliation is running; nothing done")
        else:
            out.print("Data Link was asked less than an hour ago; nothing done (or --force)")
    if summary.status == "failed":
        raise typer.Exit(1)
    if summary.status in ("busy", "too-soon"):
        raise typer.Exit(EXIT_NOTHING_TO_DO)


@app.command("hints")
def hints_cmd(
    processor: str = typer.Option("ccbill", "--processor"),
    status: list[str] = typer.Option(
        ["pending", "flagged"], "--status", help="pending, flagged, confirmed or closed."
    ),
    limit: int = typer.Option(200, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Sales a webhook announced, and where their confirmation stands (flagged: never confirmed
    by the processor within payments.ccbill.confirm_window_hours)."""
    for value in status:
        if value not in ("pending", "flagged", "confirmed", "closed"):
            fail(f"--status: unknown status {value!r}", EXIT_USAGE)
    cfg = settings()

    async def load(conn: Conn) -> list[SaleHintRow]:
        return await queries.hints(conn, processor, statuses=status, limit=limit)

    rows = run(with_conn(cfg, load))
    if as_json:
        print_json(
            [
                {
                    "purchase_id": r.purchase_id,
                    "processor": r.processor,
                    "subscription_id": r.subscription_id,
                    "event_id": r.event_id,
                    "amount": r.amount,
                    "status": r.status,
                    "hinted_at": r.hinted_at.isoformat(),
                    "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
                }
                for r in rows
            ]
        )
        return
    print_table(
        ["purchase", "subscription", "amount", "status", "announced", "resolved"],
        [
            (
                r.purchase_id,
                r.subscription_id,
                r.amount,
                r.status,
                f"{r.hinted_at:%Y-%m-%d %H:%M}",
                f"{r.resolved_at:%Y-%m-%d %H:%M}" if r.resolved_at else "",
            )
            for r in rows
        ],
    )
