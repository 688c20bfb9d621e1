"""tipctl db migrate|status"""

from __future__ import annotations

import typer

from tipctl.common import EXIT_NOTHING_TO_DO, out, print_json, print_table, run, settings, with_conn
from tipstream import db

app = typer.Typer(help="Database schema: apply and inspect migrations.", no_args_is_help=True)


@app.command("migrate")
def migrate() -> None:
    """Apply pending migrations in order (safe to run from several hosts at once)."""
    applied = run(with_conn(settings(), db.migrate))
    if not applied:
        out.print("database is up to date; nothing to apply")
        raise typer.Exit(EXIT_NOTHING_TO_DO)
    for migration in applied:
        out.print(f"applied {migration.version:04d}_{migration.name}")
    out.print(f"done: {len(applied)} applied")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List every migration and whether it is applied, pending or changed."""
    rows = run(with_conn(settings(), db.migration_status))
    if as_json:
        print_json(
            [
                {"version": r.version, "name": r.name, "state": r.state, "applied_at": r.applied_at}
                for r in rows
            ]
        )
    else:
        print_table(
            ["version", "name", "state", "applied at"],
            [(f"{r.version:04d}", r.name, r.state, r.applied_at) for r in rows],
        )
    if any(r.state in ("changed", "missing-file") for r in rows):
        raise typer.Exit(1)
