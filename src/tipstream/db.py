"""Postgres: the async connection pool and the migration runner.

Migrations are numbered SQL files in ``tipstream/migrations`` (``0001_name.sql``), applied in
order, each in its own transaction, under a session advisory lock so two migrators never race.
Each applied file is recorded with its SHA-256; an applied file that changed is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from tipstream.config import Settings

# Arbitrary constant shared by every migrator: pg_advisory_lock key for "schema migrations".
MIGRATION_LOCK_KEY = 0x7469_7073_7472_6D01
Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]

MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations on disk and in the database disagree."""


def conninfo(settings: Settings) -> str:
    """The libpq connection string, with the password from the secret file if there is one."""
    params = conninfo_to_dict(settings.database.url)
    if settings.secrets.database_password:
        params["password"] = settings.secrets.database_password
    params.setdefault("application_name", "tipstream")
    return make_conninfo("", **params)


def create_pool(settings: Settings) -> Pool:
    return AsyncConnectionPool(
        conninfo(settings),
        min_size=settings.database.pool_min,
        max_size=settings.database.pool_max,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
        name="tipstream",
    )


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Conn]:
    """One standalone connection (CLI, migrations), closed on exit."""
    conn = await AsyncConnection.connect(conninfo(settings), row_factory=dict_row, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None
    state: str  # applied | pending | changed | missing-file


def migrations_on_disk() -> list[Migration]:
    found = []
    for entry in resources.files("tipstream.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return found


CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(conn: Conn) -> dict[int, DictRow]:
    await conn.execute(CREATE_MIGRATIONS_TABLE)
    cur = await conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {int(str(row["version"])): row for row in await cur.fetchall()}


async def migration_status(conn: Conn) -> list[MigrationStatus]:
    applied = await _applied(conn)
    await conn.commit()
    rows = []
    for migration in migrations_on_disk():
        row = applied.pop(migration.version, None)
        if row is None:
            rows.append(MigrationStatus(migration.version, migration.name, None, "pending"))
        else:
            changed = row["checksum"] != migration.checksum
            state = "changed" if changed else "applied"
            at = row["applied_at"]
            assert isinstance(at, datetime)
            rows.append(MigrationStatus(migration.version, migration.name, at, state))
    for version, row in sorted(applied.items()):
        at = row["applied_at"]
        assert isinstance(at, datetime)
        rows.append(MigrationStatus(version, str(row["name"]), at, "missing-file"))
    return rows


async def migrate(conn: Conn) -> list[Migration]:
    """Apply pending migrations; return those applied. Safe to run from several processes."""
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        applied = await _applied(conn)
        on_disk = migrations_on_disk()
        for migration in on_disk:
            row = applied.get(migration.version)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name}.sql was edited after it "
                    "was applied; add a new migration instead of changing an applied one"
                )
        known = {m.version for m in on_disk}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migration {unknown[0]:04d} which this release does not know; "
                "is an older release running against a newer database?"
            )
        done = []
        for migration in on_disk:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(sql.SQL(migration.sql))
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


async def ping(conn: Conn) -> None:
    await conn.execute("SELECT 1")


__all__ = [
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "connect",
    "create_pool",
    "migrate",
    "migration_status",
    "migrations_on_disk",
    "ping",
    "psycopg",
]
