"""tipctl moderation queue|show|act"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import structlog
import typer
from valkey.asyncio import Valkey

from tipctl.common import (
    EXIT_NOTHING_TO_DO,
    EXIT_USAGE,
    confirm,
    fail,
    out,
    print_json,
    print_table,
    run,
    settings,
    with_conn,
    with_conn_kv,
)
from tipstream.db import Conn
from tipstream.moderation import queries, service
from tipstream.moderation.schemas import ACTIONS, CaseSummary
from tipstream.rooms.sfu import Sfu

app = typer.Typer(
    help="Moderation: the review queue (flags and reports), a case's evidence, actions.",
    no_args_is_help=True,
)
STATUSES = ("pending", "open", "escalated", "closed")


def _rows(cases: list[CaseSummary]) -> list[tuple[Any, ...]]:
    return [
        (
            c.id,
            c.severity,
            c.status,
            c.source,
            c.target_type,
            c.stream_id or "-",
            c.subject_user_id or "-",
            f"{c.age_seconds // 60} min",
            c.reason[:50],
        )
        for c in cases
    ]


@app.command("queue")
def queue(
    status: str = typer.Option("pending", "--status", help="pending (open+escalated), open, ..."),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    json: bool = typer.Option(False, "--json", help="JSON, keys as in the API."),
) -> None:
    """Flags and reports, most severe first, then oldest first."""
    if status not in STATUSES:
        fail(f"--status is one of {', '.join(STATUSES)}", EXIT_USAGE)
    cfg = settings()
    cases = run(with_conn(cfg, lambda conn: service.queue(conn, status=status, limit=limit)))
    if json:
        print_json([msgspec.to_builtins(c) for c in cases])
        return
    if not cases:
        out.print("the queue is empty")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    print_table(
        ["id", "sev", "status", "source", "target", "stream", "user", "age", "reason"],
        _rows(cases),
    )


@app.command("show")
def show(
    case_id: int = typer.Argument(..., min=1),
    json: bool = typer.Option(False, "--json", help="JSON, keys as in the API."),
) -> None:
    """One case with its actions and its decrypted evidence (the opening is audited)."""
    cfg = settings()
    found = run(
        with_conn(cfg, lambda conn: service.detail(conn, cfg, case_id, actor_id=None, ip=None))
    )
    if json:
        print_json(msgspec.to_builtins(found))
        return
    c = found.case
    out.print(f"case {c.id}: {c.source} {c.target_type}, severity {c.severity}, {c.status}")
    out.print(f"  stream {c.stream_id}  user {c.subject_user_id}  reporter {c.reporter_id}")
    out.print(f"  reason: {c.reason}")
    out.print(f"  evidence sha256: {c.evidence_sha256}")
    for a in found.actions:
        out.print(f"  {a.created_at:%Y-%m-%d %H:%M:%S} {a.action} by {a.actor_id}: {a.note or ''}")
    if found.evidence is not None:
        out.print(found.evidence, markup=False, highlight=False)


@app.command("act")
def act(
    case_id: int = typer.Argument(..., min=1),
    action: str = typer.Argument(..., help=", ".join(ACTIONS)),
    note: str = typer.Option("", "--note", help="Why; the affected user is told."),
    seconds: int = typer.Option(0, "--seconds", min=0, help="For mute (default 600)."),
    yes: bool = typer.Option(False, "--yes", help="Really do it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would happen only."),
) -> None:
    """Act on a case (audited as the operator; the affected user gets a notification)."""
    if action not in ACTIONS:
        fail(f"the action is one of {', '.join(ACTIONS)}", EXIT_USAGE)
    cfg = settings()
    case = run(with_conn(cfg, lambda conn: queries.get_case(conn, case_id)))
    if case.status == "closed" and action not in service.REVERSALS:
        out.print(f"case {case_id} is already closed ({case.resolution})")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    what = f"{action} on case {case_id} ({case.target_type}, user {case.subject_user_id})"
    if not confirm(what, yes=yes, dry_run=dry_run):
        return

    async def do(conn: Conn, kv: Valkey) -> CaseSummary:
        # The Janus client logs as it connects; stdout is for the command's output.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        sfu = Sfu(cfg) if action == "end_stream" else None
        try:
            return await service.act(
                conn, kv, sfu, cfg, case_id, action, actor=None, note=note or None,
                seconds=seconds or None,
            )  # fmt: skip
        finally:
            if sfu is not None:
                await sfu.close()

    done = run(with_conn_kv(cfg, do))
    out.print(f"case {case_id}: {action} done, now {done.status}")
