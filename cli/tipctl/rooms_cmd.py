"""tipctl rooms stats"""

from __future__ import annotations

import sys
from typing import Any

import structlog
import typer
from valkey.asyncio import Valkey

from tipctl.common import out, print_json, print_table, run, settings, with_conn_kv
from tipstream import kv as kvmod
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.rooms import queries, service
from tipstream.rooms.janus import JanusError
from tipstream.rooms.sfu import Sfu


def _logs_to_stderr() -> None:
    """The Janus client logs as it connects; stdout is for the command's output (--json)."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


app = typer.Typer(help="Live rooms: viewers and media per room.", no_args_is_help=True)


async def _stats(cfg: Settings, conn: Conn, kv: Valkey) -> list[dict[str, Any]]:
    rows = await queries.list_streams(conn, status="live", limit=10_000)
    counts = await service.viewer_counts(kv, cfg, [r.id for r in rows])
    _logs_to_stderr()
    sfu = Sfu(cfg)
    stats = []
    try:
        for row in rows:
            publishing = bool(await kv.exists(kvmod.key(cfg, "room", row.id, "publisher")))
            janus: int | None
            try:
                room = service.room_of(row)
                janus = len(await sfu.participants(room.room_id, room.secret))
            except JanusError:
                janus = None  # Janus unreachable, or the room is gone
            stats.append(
                {
                    "stream_id": row.id,
                    "title": row.title,
                    "performer_id": row.performer_id,
                    "viewers": counts.get(row.id, 0),
                    "publishing": publishing,
                    "janus_publishers": janus,
                    "started_at": row.started_at,
                }
            )
    finally:
        await sfu.close()
    return stats


@app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every live room: viewers connected, whether the performer is sending, Janus's view."""
    cfg = settings()
    result = run(with_conn_kv(cfg, lambda conn, kv: _stats(cfg, conn, kv)))
    if as_json:
        print_json(result)
        return
    print_table(
        ["stream", "title", "viewers", "publishing", "janus publishers"],
        [
            (
                r["stream_id"],
                r["title"],
                r["viewers"],
                "yes" if r["publishing"] else "no",
                "?" if r["janus_publishers"] is None else r["janus_publishers"],
            )
            for r in result
        ],
    )
    total = sum(r["viewers"] for r in result)
    out.print(f"{len(result)} live room(s), {total} viewer(s)")
