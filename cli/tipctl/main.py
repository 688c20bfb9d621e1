"""The tipctl entry point: `tipctl <noun> <verb>`."""

from __future__ import annotations

from pathlib import Path

import typer

from tipctl import (
    audit_cmd,
    backup_cmd,
    config_cmd,
    db_cmd,
    doctor_cmd,
    keys_cmd,
    kyc_cmd,
    ledger_cmd,
    moderation_cmd,
    payments_cmd,
    payouts_cmd,
    rooms_cmd,
    run_cmd,
    streams_cmd,
    user_cmd,
)
from tipctl.common import set_config_path

app = typer.Typer(
    help="Operate a tipstream node: database, users, audit log, health.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="TIPSTREAM_CONFIG", help="Config file."
    ),
) -> None:
    set_config_path(config)


app.add_typer(db_cmd.app, name="db")
app.add_typer(user_cmd.app, name="user")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(config_cmd.app, name="config")
app.add_typer(run_cmd.app, name="run")
app.add_typer(ledger_cmd.app, name="ledger")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(kyc_cmd.app, name="kyc")
app.add_typer(streams_cmd.app, name="streams")
app.add_typer(rooms_cmd.app, name="rooms")
app.add_typer(payouts_cmd.app, name="payouts")
app.add_typer(payments_cmd.app, name="payments")
app.add_typer(moderation_cmd.app, name="moderation")
app.command("doctor")(doctor_cmd.doctor)
app.add_typer(backup_cmd.app, name="backup")
app.command("restore")(backup_cmd.restore)
