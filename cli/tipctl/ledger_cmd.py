"""tipctl ledger verify|balance|history|relay-outbox"""

from __future__ import annotations

import re
import sys
from collections.abc import Coroutine
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from valkey.asyncio import Valkey

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    err,
    fail,
    out,
    print_json,
    print_table,
    read_secret_file,
    settings,
    with_conn,
    with_conn_kv,
)
from tipctl.common import (
    run as run_service,
)
from tipstream.accounts import service as accounts
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import adjustments, outbox, statements, wallets
from tipstream.ledger import service as ledger_service
from tipstream.ledger import verify as ledger_verify
from tipstream.ledger.money import Rates
from tipstream.ledger.schemas import AccountBalance, HistoryPage, Statement, VerifyReport
from tipstream.payments import queries as payment_queries
from tipstream.payments import service as payment_service
from tipstream.payments.queries import PurchaseRow

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """tipctl's run, with a missing ledger schema explained."""
    try:
        return run_service(coro)
    except psycopg.errors.UndefinedTable:
        fail("the ledger tables are missing: run tipctl db migrate")


app = typer.Typer(
    help="The ledger: verify the books, balances, history, outbox.", no_args_is_help=True
)


@app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Prove the books: every asset sums to zero, every balance equals its transfers, no
    forbidden negative balance, every tip has its split, every purchase its processor event.
    Exit 1 if any check fails."""
    cfg = settings()

    async def check(conn: Conn) -> VerifyReport:
        if as_json:
            return await ledger_verify.verify(conn)
        with Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done, total=total)

            return await ledger_verify.verify(conn, progress)

    report = run(with_conn(cfg, check))
    if as_json:
        print_json(report)
    else:
        for c in report.checks:
            mark = "[green]ok  [/green]" if c.ok else "[red]FAIL[/red]"
            out.print(f"{mark} {c.name} ({c.checked} checked)", highlight=False)
            for problem in c.problems:
                out.print(f"       {problem}", markup=False, highlight=False)
        for note in report.notes:
            out.print(f"note {note}", markup=False, highlight=False)
        passed = sum(c.ok for c in report.checks)
        out.print(f"done: {passed} checks passed, {len(report.checks) - passed} failed")
    if not report.ok:
        raise typer.Exit(1)


async def _resolve_owner(conn: Conn, who: str) -> int | None:
    if who == "platform":
        return None
    return (await accounts.find_user(conn, who)).id


@app.command("balance")
def balance(
    who: str = typer.Argument(..., help="User id or email, or 'platform'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every account of a user (or of the platform), shards added up."""
    cfg = settings()

    async def fetch(conn: Conn) -> list[AccountBalance]:
        owner = await _resolve_owner(conn, who)
        return await wallets.account_balances(conn, cfg, owner)

    rows = run(with_conn(cfg, fetch))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"{who} has no ledger accounts yet")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    print_table(
        [
            "asset",
            "kind",
            "code",
            "balance",
            "pending debits",
            "pending credits",
            "shards",
            "frozen",
        ],
        [
            (
                r.asset,
                r.kind,
                r.code,
                r.balance_display,
                r.pending_debits,
                r.pending_credits,
                r.shards,
                "FROZEN" if r.frozen else "",
            )
            for r in rows
        ],
    )


@app.command("history")
def history(
    who: str = typer.Argument(..., help="User id or email."),
    account: str = typer.Option("wallet", "--account", help="wallet or earnings."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    cursor: str | None = typer.Option(None, "--cursor", help="next_cursor of the page before."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """A user's transfers, newest first, with the cursor for the next page."""
    if account not in ("wallet", "earnings"):
        fail("--account must be wallet or earnings", 2)
    cfg = settings()

    async def fetch(conn: Conn) -> HistoryPage:
        owner = await _resolve_owner(conn, who)
        if owner is None:
            fail("history is per user; use 'tipctl ledger balance platform' for the platform")
        return await wallets.history_page(
            conn, cfg, owner, kinds=(account,), cursor=cursor, limit=limit
        )

    page = run(with_conn(cfg, fetch))
    if as_json:
        print_json(page)
        return
    print_table(
        ["seq", "at", "kind", "amount", "asset", "phase", "reference"],
        [
            (
                e.seq,
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.kind,
                e.amount_display,
                e.asset,
                e.phase,
                e.reference,
            )
            for e in page.items
        ],
    )
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}")


@app.command("relay-outbox")
def relay_outbox(
    grace: float | None = typer.Option(
        None, "--grace", min=0, help="Seconds to leave young rows (default: config)."
    ),
) -> None:
    """Publish every outbox event a crash left unpublished (the worker does this every few
    seconds; this is the same job by hand)."""
    cfg = settings()

    async def relay(conn: Conn, kv: Valkey) -> int:
        return await outbox.relay(conn, kv, cfg, grace_seconds=grace)

    count = run(with_conn_kv(cfg, relay))
    if count == 0:
        out.print("outbox empty: nothing to publish")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    out.print(f"done: {count} published")


@app.command("refund")
def refund(
    purchase_id: int = typer.Argument(..., help="The purchase to refund."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit log)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would happen."),
    yes: bool = typer.Option(False, "--yes", help="Required to refund."),
) -> None:
    """Refund a token purchase for fraud (users cannot refund tokens): its tokens leave the
    wallet (spent ones are charged per payments.chargeback_policy and the wallet frozen for
    review); audited. Return the money in the processor's console."""
    cfg = settings()
    rates = Rates.from_settings(cfg)

    async def show(conn: Conn) -> tuple[PurchaseRow, int]:
        row = await payment_queries.purchase(conn, purchase_id)
        return row, (await ledger_service.wallet(conn, row.user_id)).balance

    row, balance = run(with_conn(cfg, show))
    out.print(
        f"purchase {row.id} of user {row.user_id} via {row.processor}: {row.tokens} tokens for "
        f"{rates.format_units(row.price_units)} {row.currency}, {row.status}; the wallet holds "
        f"{balance}"
    )
    if row.status != "credited":
        fail(f"purchase {row.id} is {row.status}; only credited purchases are refunded")
    if dry_run:
        short = max(0, row.tokens - max(balance, 0))
        out.print(f"would take back {row.tokens} tokens ({short} already spent) (dry run)")
        return
    if not yes:
        fail("add --yes to refund", 2)

    async def do(conn: Conn) -> PurchaseRow:
        return await payment_service.admin_refund(
            conn, cfg, purchase_id=purchase_id, reason=reason, actor_id=None
        )

    done = run(with_conn(cfg, do))
    out.print(f"done: purchase {done.id} {done.status}")


@app.command("buy")
def buy(
    who: str = typer.Argument(..., help="User id or email."),
    package: str = typer.Argument(..., help="Token package id (see GET /api/wallet/packages)."),
    if_unfunded: bool = typer.Option(
        False, "--if-unfunded", help="Exit 3 (nothing to do) if the wallet holds tokens already."
    ),
) -> None:
    """Buy a token package through the dev processor, as its hosted page would (demo data,
    one-box testing): a real purchase, a signed webhook, the tokens credited once."""
    cfg = settings()
    if "dev" not in cfg.payments.processors:
        fail("the dev processor is not enabled (payments.processors)")

    async def do(conn: Conn) -> tuple[int | None, int]:
        user = await accounts.find_user(conn, who)
        if if_unfunded and (await ledger_service.wallet(conn, user.id)).balance > 0:
            return None, (await ledger_service.wallet(conn, user.id)).balance
        started = await payment_service.start_checkout(
            conn, cfg, user_id=user.id, package_id=package, processor_name="dev"
        )
        await payment_service.dev_complete_checkout(
            conn, cfg, purchase_id=started.purchase_id, outcome="sale"
        )
        return started.purchase_id, (await ledger_service.wallet(conn, user.id)).balance

    purchase_id, balance = run(with_conn(cfg, do))
    if purchase_id is None:
        out.print(f"{who} holds {balance} tokens already; nothing to buy")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    out.print(f"done: purchase {purchase_id} credited; {who} now holds {balance} tokens")


@app.command("statement")
def statement(
    who: str = typer.Argument(..., help="Performer id or email."),
    start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD (UTC)."),
    end: str = typer.Option(..., "--to", help="Day after the last, YYYY-MM-DD (UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """A performer's earnings statement for a period."""
    try:
        first = datetime.combine(date.fromisoformat(start), time(), UTC)
        after = datetime.combine(date.fromisoformat(end), time(), UTC)
    except ValueError:
        fail("--from and --to are dates: YYYY-MM-DD", 2)
    cfg = settings()

    async def fetch(conn: Conn) -> Statement:
        user = await accounts.find_user(conn, who)
        return await statements.statement(conn, cfg, performer_id=user.id, start=first, end=after)

    found = run(with_conn(cfg, fetch))
    if as_json:
        print_json(found)
        return
    print_table(
        ["", found.currency],
        [
            ("period", f"{start} to {end} (UTC, end excluded)"),
            ("opening balance", found.opening_balance),
            ("tips", f"{found.tips} ({found.tokens} tokens, gross {found.gross})"),
            ("platform fees", found.platform_fees),
            ("tip earnings", found.tip_earnings),
            ("chargebacks", f"-{found.chargebacks}"),
            ("payouts", f"-{found.payouts}"),
            ("payouts returned", found.payouts_returned),
            ("closing balance", found.closing_balance),
        ],
    )


# --------------------------------------------------------------------------- adjustments

adjust_app = typer.Typer(
    help="Manual adjustments, two-person rule: one admin proposes, another approves.",
    no_args_is_help=True,
)
app.add_typer(adjust_app, name="adjust")


def second_factor(code_file: Path | None) -> str:
    """The acting admin's current 2FA code, from a file or the terminal."""
    if code_file is not None:
        return read_secret_file(code_file)
    if not sys.stdin.isatty():
        fail("no terminal to ask for the 2FA code: pass --totp-file FILE", 2)
    return str(typer.prompt("2FA code", hide_input=True))


async def verified_admin(conn: Conn, who: str, code: str, *, permission: str | None = None) -> int:
    """The admin's id, once their role, permission and current TOTP code check out."""
    user = await accounts.find_user(conn, who)
    if user.role != "admin" or (permission and permission not in user.permissions):
        fail(
            f"{who} is not an admin" + (f" with the {permission} permission" if permission else "")
        )
    if not re.fullmatch(r"\d{6}", code):
        fail("a 2FA code is six digits", 2)
    try:
        await accounts.check_second_factor(conn, settings(), user.id, code)
    except accounts.TotpUnavailable as exc:
        fail(exc.detail)  # the keyring, not the code, is at fault
    except Problem:
        fail("wrong, expired or already used 2FA code")
    return user.id


ADMIN_OPTION = typer.Option(..., "--admin", help="The acting admin (id or email).")
TOTP_OPTION = typer.Option(None, "--totp-file", help="File with the admin's current 2FA code.")


@adjust_app.command("propose")
def adjust_propose(
    debit: str = typer.Argument(
        ..., help="wallet:USER_ID, earnings:USER_ID or platform:KIND[:CODE]"
    ),
    credit: str = typer.Argument(..., help="Same forms as DEBIT."),
    amount: str = typer.Argument(..., help="Whole tokens for TKN, a decimal for currency."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit log)."),
    admin: str = ADMIN_OPTION,
    totp_file: Path | None = TOTP_OPTION,
) -> None:
    """Propose a transfer; it is held (pending) until a second admin approves it."""
    cfg = settings()
    code = second_factor(totp_file)

    async def do(conn: Conn) -> str:
        admin_id = await verified_admin(conn, admin, code)
        row = await adjustments.propose(
            conn,
            cfg,
            debit=debit,
            credit=credit,
            amount=amount,
            reason=reason,
            admin_id=admin_id,
        )
        return row.id

    transfer_id = run(with_conn(cfg, do))
    out.print(f"proposed {transfer_id}; another admin approves it with:")
    out.print(f"  tipctl ledger adjust approve {transfer_id} --admin OTHER_ADMIN", markup=False)


@adjust_app.command("approve")
def adjust_approve(
    transfer_id: str = typer.Argument(..., help="The proposed adjustment's id."),
    admin: str = ADMIN_OPTION,
    totp_file: Path | None = TOTP_OPTION,
) -> None:
    """Approve (post) an adjustment another admin proposed."""
    cfg = settings()
    code = second_factor(totp_file)

    async def do(conn: Conn) -> None:
        admin_id = await verified_admin(conn, admin, code)
        await adjustments.decide(conn, transfer_id=transfer_id, admin_id=admin_id, approve=True)

    run(with_conn(cfg, do))
    out.print(f"done: {transfer_id} posted")


@adjust_app.command("cancel")
def adjust_cancel(
    transfer_id: str = typer.Argument(..., help="The proposed adjustment's id."),
    admin: str = ADMIN_OPTION,
    totp_file: Path | None = TOTP_OPTION,
) -> None:
    """Cancel (void) a proposed adjustment."""
    cfg = settings()
    code = second_factor(totp_file)

    async def do(conn: Conn) -> None:
        admin_id = await verified_admin(conn, admin, code)
        await adjustments.decide(conn, transfer_id=transfer_id, admin_id=admin_id, approve=False)

    run(with_conn(cfg, do))
    out.print(f"done: {transfer_id} voided")


@adjust_app.command("list")
def adjust_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Adjustments waiting for a second admin."""
    cfg = settings()

    async def fetch(conn: Conn) -> list[dict[str, object]]:
        return [
            {
                "id": r.id,
                "asset": r.asset,
                "amount": r.amount,
                "debit": r.metadata.get("debit"),
                "credit": r.metadata.get("credit"),
                "reason": r.metadata.get("reason"),
                "proposed_by": r.metadata.get("proposed_by"),
                "at": r.created_at,
            }
            for r in await adjustments.pending_adjustments(conn)
        ]

    rows = run(with_conn(cfg, fetch))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no adjustments waiting")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    print_table(
        ["id", "asset", "amount", "debit", "credit", "reason", "proposed by"],
        [
            (
                r["id"],
                r["asset"],
                r["amount"],
                r["debit"],
                r["credit"],
                r["reason"],
                r["proposed_by"],
            )
            for r in rows
        ],
    )
