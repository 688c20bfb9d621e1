"""pg_dump and pg_restore: the client tools matching the server, run with the app's connection
settings. The password goes to them in the environment (PGPASSWORD), never on a command line
where `ps` would show it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tipstream import db
from tipstream.config import Settings

DEBIAN_BIN = Path("/usr/lib/postgresql")
POLL_SECONDS = 0.2


class ToolError(Exception):
    """A client tool is missing, too old for the server, or failed; the message says which."""


def _major(version_output: str) -> int | None:
    match = re.search(r"\) (\d+)(?:\.\d+)?", version_output)
    return int(match[1]) if match else None


def find_tool(name: str, server_version_num: int) -> tuple[Path, str]:
    """(path, version line) of a pg_dump or pg_restore at least as new as the server: the
    server's own major version first (Debian installs each under /usr/lib/postgresql/<major>)."""
    server_major = server_version_num // 10000
    candidates = [DEBIAN_BIN / str(server_major) / "bin" / name]
    if DEBIAN_BIN.is_dir():
        newer = sorted(
            (p for p in DEBIAN_BIN.glob(f"*/bin/{name}") if p.parent.parent.name.isdigit()),
            key=lambda p: int(p.parent.parent.name),
        )
        candidates += [p for p in newer if int(p.parent.parent.name) > server_major]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if not path.is_file():
            continue
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        major = _major(result.stdout)
        if result.returncode == 0 and major is not None and major >= server_major:
            return path, result.stdout.strip()
    raise ToolError(
        f"{name} {server_major} or newer is needed for this PostgreSQL {server_major} server: "
        f"install postgresql-client-{server_major}"
    )


def connection(settings: Settings) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment carrying it)."""
    params = conninfo_to_dict(db.conninfo(settings))
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


async def _run(argv: list[str], env: dict[str, str], tick: Callable[[], None]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    while process.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), POLL_SECONDS)
        tick()
    text = (await errors).decode(errors="replace").strip()
    if process.returncode != 0:
        name = Path(argv[0]).name
        last = "; ".join(text.splitlines()[-3:]) or "no message"
        raise ToolError(f"{name} exited {process.returncode}: {last}")


async def dump(
    settings: Settings,
    pg_dump: Path,
    *,
    snapshot: str,
    target: Path,
    progress: Callable[[int], None],
) -> None:
    """The whole database in pg_dump's custom format (compressed, restorable table by table),
    as of the exported snapshot."""
    dsn, env = connection(settings)

    def tick() -> None:
        progress(target.stat().st_size if target.exists() else 0)

    await _run(
        [
            str(pg_dump),
            "--format=custom",
            f"--snapshot={snapshot}",
            f"--file={target}",
            f"--dbname={dsn}",
        ],
        env,
        tick,
    )


async def restore(
    settings: Settings, pg_restore: Path, *, source: Path, tick: Callable[[], None]
) -> None:
    """Everything in the dump, in one transaction (a failure leaves nothing half-restored),
    owned by the app's role whatever role owned it on the old box."""
    dsn, env = connection(settings)
    await _run(
        [
            str(pg_restore),
            f"--dbname={dsn}",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            str(source),
        ],
        env,
        tick,
    )
