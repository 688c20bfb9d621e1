"""tipctl audit verify|tail"""

from __future__ import annotations

import typer

from tipctl.common import err, fail, out, print_json, print_table, run, settings, with_conn
from tipstream.audit import service
from tipstream.audit.schemas import AuditEntry, VerifyResult
from tipstream.db import Conn

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.command("verify")
def verify(
    anchor: str | None = typer.Option(
        None,
        "--anchor",
        metavar="ID:HASH",
        help="An entry id and hash printed by an earlier verify and kept off this box; "
        "fails if the log no longer holds exactly that entry.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Walk the whole chain; exit 1 naming the first entry that was edited or removed."""
    expected = parse_anchor(anchor) if anchor else None

    async def check(conn: Conn) -> VerifyResult:
        return await service.verify(conn, expected)

    result = run(with_conn(settings(), check))
    if as_json:
        print_json(result)
    elif result.ok:
        out.print(f"audit log intact: {result.checked} entries verified")
        if result.head_id is not None:
            out.print(
                f"head: {result.head_id}:{result.head_hash} "
                "(keep this off the box; pass it as --anchor later)",
                markup=False,
            )
    else:
        err.print(
            f"tipctl: audit log BROKEN at entry {result.broken_id}: {result.reason} "
            f"({result.checked} entries before it verified)",
            markup=False,
        )
    if not result.ok:
        raise typer.Exit(1)


def parse_anchor(text: str) -> service.AuditAnchor:
    entry_id, sep, digest = text.partition(":")
    if not sep or not entry_id.isdigit() or len(digest) != 64 or not is_hex(digest):
        fail("--anchor must be ID:HASH as printed by `tipctl audit verify`", code=2)
    return service.AuditAnchor(int(entry_id), digest.lower())


def is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


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
