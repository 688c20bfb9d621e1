"""tipctl payouts list|approve|batch|export|mark-paid|mark-failed"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    fail,
    out,
    print_json,
    print_table,
    run,
    settings,
    with_conn,
)
from tipctl.ledger_cmd import second_factor, verified_admin
from tipstream.db import Conn
from tipstream.ledger import payouts
from tipstream.ledger.money import Rates
from tipstream.ledger.routes import payout_schema
from tipstream.ledger.schemas import Payout

app = typer.Typer(
    help="Performer payouts: batch, approve (2FA), export, paid/failed.", no_args_is_help=True
)
STATUSES = ("requested", "approved", "paid", "failed", "rejected", "cancelled")


def _print(rows: list[Payout]) -> None:
    print_table(
        ["id", "performer", "amount", "status", "batch", "holder", "iban", "requested"],
        [
            (
                p.id,
                p.performer_id,
                f"{p.amount} {p.currency}",
                p.status,
                p.batch_id or "",
                p.account_holder,
                p.iban,
                p.requested_at.strftime("%Y-%m-%d %H:%M"),
            )
            for p in rows
        ],
    )


@app.command("list")
def list_payouts(
    status: str | None = typer.Option(None, "--status", help="|".join(STATUSES)),
    batch: int | None = typer.Option(None, "--batch", help="Only this batch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """List payouts."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}", EXIT_USAGE)
    cfg = settings()
    rates = Rates.from_settings(cfg)

    async def fetch(conn: Conn) -> list[Payout]:
        rows = await payouts.list_payouts(conn, status=status, batch_id=batch)
        return [payout_schema(r, rates) for r in rows]

    rows = run(with_conn(cfg, fetch))
    if as_json:
        print_json(rows)
    else:
        _print(rows)


@app.command("batch")
def batch(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be batched."),
) -> None:
    """Collect every open payout request into a new batch (the weekly job does the same)."""
    cfg = settings()

    async def collect(conn: Conn) -> tuple[int | None, int]:
        if dry_run:
            return None, len(await payouts.list_payouts(conn, status="requested"))
        return await payouts.create_batch(conn, actor_id=None)

    batch_id, count = run(with_conn(cfg, collect))
    if dry_run:
        out.print(f"would batch up to {count} requested payouts (dry run)")
        return
    if batch_id is None:
        out.print("no open payout requests; nothing to batch")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    out.print(f"done: batch {batch_id} with {count} payouts")


@app.command("approve")
def approve(
    payout_ids: list[int] = typer.Argument(..., help="Payout ids."),
    admin: str = typer.Option(..., "--admin", help="The approving finance admin (id or email)."),
    totp_file: Path | None = typer.Option(
        None, "--totp-file", help="File holding the admin's current 2FA code; else asked for."
    ),
    yes: bool = typer.Option(False, "--yes", help="Approve without asking again."),
) -> None:
    """Approve payouts as a finance admin with 2FA. Above the configured amount a second,
    different admin must approve too (two-person rule)."""
    cfg = settings()
    code = second_factor(totp_file)

    async def do(conn: Conn) -> list[payouts.Approval]:
        admin_id = await verified_admin(conn, admin, code, permission="finance")
        return [
            await payouts.approve(conn, cfg, payout_id=pid, admin_id=admin_id) for pid in payout_ids
        ]

    if not yes and sys.stdin.isatty():
        typer.confirm(f"approve payouts {', '.join(map(str, payout_ids))} as {admin}?", abort=True)
    results = run(with_conn(cfg, do))
    for r in results:
        state = (
            "approved"
            if r.payout.status == "approved"
            else (f"needs {r.needed - r.approvals} more approval(s)")
        )
        out.print(f"payout {r.payout.id}: {state}")
    out.print(f"done: {sum(r.payout.status == 'approved' for r in results)} approved")


@app.command("export")
def export(
    batch_id: int = typer.Argument(..., help="Batch id."),
    fmt: str = typer.Option("csv", "--format", help="csv or sepa (pain.001.001.03)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Write a batch's approved payouts as a bank file."""
    if fmt not in ("csv", "sepa"):
        fail("--format must be csv or sepa", EXIT_USAGE)
    cfg = settings()

    async def do(conn: Conn) -> str:
        return await payouts.export_batch(conn, cfg, batch_id=batch_id, fmt=fmt, actor_id=None)

    content = run(with_conn(cfg, do))
    if output is None:
        sys.stdout.write(content)
    else:
        output.write_text(content)
        out.print(f"wrote {output}")


@app.command("mark-paid")
def mark_paid(
    payout_ids: list[int] = typer.Argument(..., help="Payout ids the bank paid."),
    yes: bool = typer.Option(False, "--yes", help="Required: this books the money as paid."),
) -> None:
    """Mark approved payouts paid (payout clearing → bank)."""
    if not yes:
        fail(f"this marks payouts {payout_ids} paid; add --yes", EXIT_USAGE)
    cfg = settings()

    async def do(conn: Conn) -> int:
        for pid in payout_ids:
            await payouts.mark_paid(conn, cfg, payout_id=pid, actor_id=None)
        return len(payout_ids)

    out.print(f"done: {run(with_conn(cfg, do))} marked paid")


@app.command("mark-failed")
def mark_failed(
    payout_ids: list[int] = typer.Argument(..., help="Payout ids."),
    reason: str = typer.Option(..., "--reason", help="Why (shown to the performer)."),
    yes: bool = typer.Option(False, "--yes", help="Required."),
) -> None:
    """Mark payouts failed: the money goes back to the performers' earnings."""
    if not yes:
        fail(f"this returns payouts {payout_ids} to earnings; add --yes", EXIT_USAGE)
    cfg = settings()

    async def do(conn: Conn) -> int:
        for pid in payout_ids:
            await payouts.mark_failed(conn, cfg, payout_id=pid, reason=reason, actor_id=None)
        return len(payout_ids)

    out.print(f"done: {run(with_conn(cfg, do))} marked failed, money returned")
