"""tipctl streams list|show|end"""

from __future__ import annotations

import sys
from typing import Any

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
from tipstream.rooms import queries, service
from tipstream.rooms.schemas import Stream
from tipstream.rooms.sfu import Sfu


def _logs_to_stderr() -> None:
    """The Janus client logs as it connects; stdout is for the command's output (--json)."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


app = typer.Typer(
    help="Streams: list, show, end (destroys the room at once).", no_args_is_help=True
)
STATUSES = ("live", "scheduled", "ended", "all")
COLUMNS = ["id", "status", "performer", "performer id", "title", "viewers", "health", "started",
           "end reason"]  # fmt: skip


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _health(stream: Stream) -> str:
    """Good, or degraded with the slow links and lost packets Janus reported lately."""
    if stream.health == "good":
        return "good"
    return f"degraded ({stream.slow_links} slow links, {stream.lost_packets} lost)"


def _rows(streams: list[Stream]) -> list[tuple[Any, ...]]:
    return [
        (
            s.id,
            s.status,
            s.performer_name,
            s.performer_id,
            s.title,
            s.viewers,
            _health(s),
            _when(s.started_at),
            s.end_reason or "",
        )
        for s in streams
    ]


@app.command("list")
def list_streams(
    status: str = typer.Option("live", "--status", help="|".join(STATUSES)),
    performer: int | None = typer.Option(None, "--performer", help="Only this performer's."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """Streams, newest first (live ones by default), with viewer counts."""
    if status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}", EXIT_USAGE)
    cfg = settings()

    async def fetch(conn: Conn, kv: Valkey) -> list[Stream]:
        rows = await queries.list_streams(
            conn,
            status=None if status == "all" else status,
            performer_id=performer,
            limit=limit,
        )
        return await service.with_live_state(kv, cfg, rows)

    streams = run(with_conn_kv(cfg, fetch))
    if as_json:
        print_json(streams)
        return
    print_table(
        COLUMNS,
        _rows(streams),
    )
    out.print(f"{len(streams)} stream(s)")


@app.command("show")
def show(
    stream_id: int = typer.Argument(..., min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys as the API's)."),
) -> None:
    """One stream (any status)."""
    cfg = settings()

    async def fetch(conn: Conn, kv: Valkey) -> Stream:
        row = await queries.get_stream(conn, stream_id)
        return (await service.with_live_state(kv, cfg, [row]))[0]

    stream = run(with_conn_kv(cfg, fetch))
    if as_json:
        print_json(stream)
        return
    print_table(
        ["field", "value"],
        [
            ("id", stream.id),
            ("title", stream.title),
            ("performer", f"{stream.performer_name} (id {stream.performer_id})"),
            ("status", stream.status),
            ("tags", ", ".join(stream.tags) or "-"),
            ("adult", "yes" if stream.adult else "no"),
            ("viewers", stream.viewers),
            ("health", _health(stream)),
            ("scheduled", _when(stream.scheduled_at)),
            ("started", _when(stream.started_at)),
            ("ended", _when(stream.ended_at)),
            ("end reason", stream.end_reason or "-"),
        ],
    )


@app.command("end")
def end(
    stream_id: int = typer.Argument(..., min=1),
    reason: str = typer.Option("ended by operator", "--reason", help="Recorded and shown."),
    yes: bool = typer.Option(False, "--yes", help="Really end it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would happen only."),
) -> None:
    """End a stream now: its Janus room is destroyed (media stops) and viewers are told."""
    cfg = settings()
    row = run(with_conn(cfg, lambda conn: queries.get_stream(conn, stream_id)))
    if row.status == "ended":
        out.print(f"stream {stream_id} has already ended ({row.end_reason})")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    what = f"end {row.status} stream {stream_id} '{row.title}' of {row.performer_name}"
    if not confirm(f"{what}, reason: {reason}", yes=yes, dry_run=dry_run):
        return

    async def do(conn: Conn, kv: Valkey) -> None:
        _logs_to_stderr()
        sfu = Sfu(cfg)
        try:
            await service.end_stream(conn, sfu, kv, cfg, None, stream_id, reason=reason, ip=None)
        finally:
            await sfu.close()

    run(with_conn_kv(cfg, do))
    out.print(f"ended stream {stream_id}: room destroyed, viewers told")
