"""The migration runner against real, fresh Postgres databases."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row

from tipctl import doctor_cmd
from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import MigrationError, migrate, migration_status, migrations_on_disk


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[tsdb.Conn]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


async def recorded(conn: tsdb.Conn) -> list[dict[str, object]]:
    cur = await conn.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    )
    return list(await cur.fetchall())


def test_migration_files_are_numbered_in_order() -> None:
    on_disk = migrations_on_disk()
    versions = [m.version for m in on_disk]
    assert versions == sorted(versions)
    assert versions[0] == 1
    assert len(set(versions)) == len(versions)


async def test_fresh_database_gets_every_migration_in_order(scratch_db: str) -> None:
    on_disk = migrations_on_disk()
    async with connect(scratch_db) as conn:
        before = await migration_status(conn)
        assert [s.state for s in before] == ["pending"] * len(on_disk)

        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in on_disk]
        rows = await recorded(conn)
        assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in on_disk]
        for row, migration in zip(rows, on_disk, strict=True):
            assert row["checksum"] == hashlib.sha256(migration.sql.encode()).hexdigest()

        # The foundation's tables exist.
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        tables = {r["table_name"] for r in await cur.fetchall()}
        assert {"users", "sessions", "api_tokens", "totp_recovery_codes", "audit_logs"} <= tables

        status = await migration_status(conn)
        assert [s.state for s in status] == ["applied"] * len(on_disk)
        assert all(s.applied_at is not None for s in status)


async def test_running_again_applies_nothing(scratch_db: str) -> None:
    async with connect(scratch_db) as conn:
        await migrate(conn)
        first = await recorded(conn)
        assert await migrate(conn) == []
        assert await recorded(conn) == first


async def test_two_concurrent_migrators_apply_each_migration_once(scratch_db: str) -> None:
    async with connect(scratch_db) as one, connect(scratch_db) as two:
        done_one, done_two = await asyncio.gather(migrate(one), migrate(two))
        versions = sorted(m.version for m in [*done_one, *done_two])
        assert versions == [m.version for m in migrations_on_disk()]
        cur = await one.execute(
            "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version"
        )
        assert all(r["n"] == 1 for r in await cur.fetchall())
        # The lock is released: a third run starts and finds nothing to do.
        assert await migrate(one) == []


async def test_edited_applied_migration_is_refused(scratch_db: str) -> None:
    async with connect(scratch_db) as conn:
        await migrate(conn)
        # As if 0001's file had been changed after it was applied.
        await conn.execute(
            "UPDATE schema_migrations SET checksum = 'x' || checksum WHERE version = 1"
        )
        with pytest.raises(MigrationError, match=r"0001_\w+\.sql was edited"):
            await migrate(conn)
        status = {s.version: s.state for s in await migration_status(conn)}
        assert status[1] == "changed"
        # The refusal let go of the lock: another migrator is not stuck behind it.
        async with connect(scratch_db) as other:
            await asyncio.wait_for(
                other.execute("SELECT pg_advisory_lock(%s)", (tsdb.MIGRATION_LOCK_KEY,)), 5
            )


async def test_database_newer_than_release_is_refused(scratch_db: str) -> None:
    async with connect(scratch_db) as conn:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
        )
        with pytest.raises(MigrationError, match="9999"):
            await migrate(conn)
        status = {s.version: s.state for s in await migration_status(conn)}
        assert status[9999] == "missing-file"


async def test_a_failing_migration_leaves_nothing_behind(scratch_db: str) -> None:
    """Each migration runs in a transaction: a file that fails halfway applies none of itself
    and is not recorded."""
    async with connect(scratch_db) as conn:
        # Make 0001 fail at its first CREATE TABLE by taking the name first.
        await conn.execute("CREATE TABLE users (id int)")
        with pytest.raises(psycopg.errors.DuplicateTable):
            await migrate(conn)
        cur = await conn.execute("SELECT count(*) AS n FROM schema_migrations")
        row = await cur.fetchone()
        assert row is not None and row["n"] == 0
        cur = await conn.execute("SELECT to_regtype('user_role') IS NULL AS gone")
        row = await cur.fetchone()
        assert row is not None and row["gone"] is True


async def test_doctor_names_an_edited_migration_without_sending_you_to_migrate(
    scratch_db: str, settings: Settings
) -> None:
    """tipctl doctor on a database whose applied migration was edited since: it names the
    migration and does not advise `tipctl db migrate`, which refuses exactly that."""
    async with connect(scratch_db) as conn:
        await migrate(conn)
        await conn.execute(
            "UPDATE schema_migrations SET checksum = 'x' || checksum WHERE version = 1"
        )
    scratch = msgspec.structs.replace(
        settings, database=msgspec.structs.replace(settings.database, url=scratch_db)
    )
    with pytest.raises(RuntimeError, match=r"0001\(changed\)") as refused:
        await doctor_cmd._postgres(scratch)
    assert "run tipctl db migrate" not in str(refused.value)
    assert "refuses edited migrations" in str(refused.value)
