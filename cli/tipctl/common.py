"""What every tipctl command shares: loading settings, running async services, printing tables
or JSON, and turning errors into one line on stderr with the documented exit codes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import msgspec
import psycopg
import typer
from rich.console import Console
from rich.table import Table
from valkey.asyncio import Valkey

from tipstream import db, kv
from tipstream.config import ConfigError, Settings, load_settings
from tipstream.db import Conn, MigrationError
from tipstream.errors import Problem

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOTHING_TO_DO = 0, 1, 2, 3
T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True)
_config_path: Path | None = None


def set_config_path(path: Path | None) -> None:
    global _config_path  # one CLI invocation, one config file
    _config_path = path


def config_path() -> Path | None:
    return _config_path


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"tipctl: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def confirm(what: str, *, yes: bool, dry_run: bool) -> bool:
    """The destructive-command gate: True to go ahead; otherwise say what would happen and
    return (--dry-run) or exit 2 asking for --yes."""
    if dry_run or not yes:
        out.print(f"would {what}")
        if not dry_run:
            fail("add --yes to do it", EXIT_USAGE)
        return False
    return True


def settings() -> Settings:
    try:
        return load_settings(_config_path)
    except ConfigError as exc:
        fail(str(exc))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a service call; known failures become one line on stderr and exit 1."""
    try:
        return asyncio.run(coro)
    except Problem as exc:
        fail(exc.detail)
    except (ConfigError, MigrationError) as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"Postgres: {str(exc).strip().splitlines()[0]}")
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}")


async def with_conn(cfg: Settings, fn: Callable[[Conn], Awaitable[T]]) -> T:
    async with db.connect(cfg) as conn:
        return await fn(conn)


async def with_conn_kv(cfg: Settings, fn: Callable[[Conn, Valkey], Awaitable[T]]) -> T:
    client = kv.create_client(cfg)
    try:
        async with db.connect(cfg) as conn:
            return await fn(conn, client)
    finally:
        await client.aclose()


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def read_secret_file(path: Path) -> str:
    try:
        value = path.read_text().rstrip("\n")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    if not value:
        fail(f"{path} is empty", EXIT_USAGE)
    return value
