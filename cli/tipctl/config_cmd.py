"""tipctl config check"""

from __future__ import annotations

from pathlib import Path

import typer

from tipctl.common import config_path, fail, out
from tipstream.config import ConfigError, load_settings

app = typer.Typer(help="Configuration.", no_args_is_help=True)


@app.command("check")
def check(
    path: Path | None = typer.Argument(
        None, help="Config file (default: --config, $TIPSTREAM_CONFIG or /etc/tipstream)."
    ),
) -> None:
    """Validate a config file, its environment overrides and secret files; start nothing."""
    try:
        settings = load_settings(path or config_path())
    except ConfigError as exc:
        fail(str(exc))
    out.print(
        f"config ok: app {settings.server.host}:{settings.server.port} "
        f"({settings.server.workers} workers), public URL {settings.server.public_url}"
    )
