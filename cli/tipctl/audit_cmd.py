"""tipctl audit verify|tail"""

from __future__ import annotations

import typer

from tipctl.common import err, out, print_json, print_table, run, settings, with_conn
from tipstream.audit import service
from tipstream.audit.schemas import AuditEntry
from tipstream.db import Conn

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Walk the whole chain; exit 1 naming the first entry that was edited or removed."""
    result = run(with_conn(settings(), service.verify))
    if as_json:
        print_json(result)
    elif result.ok:
        out.print(f"audit log intact: {result.checked} entries verified")
    else:
        err.print(
            f"tipctl: audit log BROKEN at entry {result.broken_id}: {result.reason} "
            f"({result.checked} entries before it verified)",
            markup=False,
        )
    if not result.ok:
        raise typer.Exit(1)


@app.command("tail")
def tail(
    lines: int = typer.Option(20, "-n", "--lines", min=1, max=10_000, help="How many entries."),
    actor: int | None = typer.Option(None, "--actor", help="Only entries by this user id."),
    action: str | None = typer.Option(
        None, "--action", help="Only this action, e.g. login.failure."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The most recent audit entries, oldest first."""

    async def fetch(conn: Conn) -> list[AuditEntry]:
        return await service.tail(conn, limit=lines, actor_id=actor, action=action)

    entries = run(with_conn(settings(), fetch))
    if as_json:
        print_json(entries)
        return
    print_table(
        ["id", "at", "actor", "action", "target", "ip", "details"],
        [
            (
                e.id,
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor_id,
                e.action,
                f"{e.target_type}:{e.target_id}" if e.target_type else "",
                e.ip,
                ", ".join(f"{k}={v}" for k, v in sorted(e.details.items())),
            )
            for e in entries
        ],
    )
