"""SQL for backups: the figures a manifest records, and what a restore target holds."""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from tipstream.backup.schemas import Figures
from tipstream.db import Conn

# Row counts recorded in the manifest and compared after a restore.
FIGURE_TABLES = (
    "users",
    "ledger_accounts",
    "ledger_transfers",
    "tips",
    "purchases",
    "payouts",
    "kyc_submissions",
    "vault_objects",
    "streams",
    "moderation_cases",
    "audit_logs",
)
# A target whose tables hold rows in any of these holds someone's data: restore refuses it.
DATA_TABLES = ("users", "audit_logs", "ledger_transfers", "vault_objects")


async def existing_tables(conn: Conn, names: tuple[str, ...]) -> list[str]:
    cur = await conn.execute(
        "SELECT name FROM unnest(%(names)s::text[]) AS name"
        " WHERE to_regclass('public.' || quote_ident(name)) IS NOT NULL",
        {"names": list(names)},
    )
    return [str(row["name"]) for row in await cur.fetchall()]


async def row_count(conn: Conn, table: str) -> int:
    cur = await conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier("public", table))
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def has_rows(conn: Conn, table: str) -> bool:
    cur = await conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS found").format(sql.Identifier("public", table))
    )
    row = await cur.fetchone()
    return bool(row and row["found"])


async def figures(conn: Conn) -> Figures:
    rows = {t: await row_count(conn, t) for t in await existing_tables(conn, FIGURE_TABLES)}
    head_id, head_hash = None, None
    if "audit_logs" in rows:
        cur = await conn.execute("SELECT id, hash FROM audit_logs ORDER BY id DESC LIMIT 1")
        head = await cur.fetchone()
        if head is not None:
            head_id, head_hash = int(head["id"]), str(head["hash"])
    return Figures(rows=rows, audit_head_id=head_id, audit_head_hash=head_hash)


async def applied_migrations(conn: Conn) -> list[int]:
    if not await existing_tables(conn, ("schema_migrations",)):
        return []
    cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
    return [int(row["version"]) for row in await cur.fetchall()]


async def server_version(conn: Conn) -> tuple[str, int]:
    """('15.10 (Debian ...)', 150010)"""
    cur = await conn.execute(
        "SELECT current_setting('server_version') AS v,"
        " current_setting('server_version_num')::int AS n"
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["v"]), int(row["n"])


async def database_name(conn: Conn) -> str:
    cur = await conn.execute("SELECT current_database() AS name")
    row = await cur.fetchone()
    assert row is not None
    return str(row["name"])


async def export_snapshot(conn: Conn) -> str:
    """Call inside a repeatable-read transaction: pg_dump --snapshot sees exactly what it sees."""
    cur = await conn.execute("SELECT pg_export_snapshot() AS id")
    row = await cur.fetchone()
    assert row is not None
    return str(row["id"])


async def user_tables(conn: Conn) -> list[str]:
    """Tables in the public schema, by name."""
    cur = await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    return [str(row["tablename"]) for row in await cur.fetchall()]


async def lock_tables(conn: Conn, tables: list[str]) -> None:
    """Inside a transaction: nobody writes these until it ends."""
    if tables:
        await conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)
            )
        )


async def recreate_public_schema(conn: Conn) -> None:
    """Drop everything in the public schema (tables, functions, types, the extensions in it)."""
    await conn.execute("DROP SCHEMA public CASCADE")
    await conn.execute("CREATE SCHEMA public")


async def live_vault_objects(conn: Conn) -> list[tuple[UUID, int]]:
    """(id, plaintext size) of the vault objects whose data key still exists: a crypto-shredded
    object's ciphertext is noise nobody can open, so no backup carries it."""
    if not await existing_tables(conn, ("vault_objects",)):
        return []
    cur = await conn.execute(
        "SELECT id, size FROM vault_objects WHERE wrapped_key IS NOT NULL ORDER BY id"
    )
    return [(UUID(str(row["id"])), int(row["size"])) for row in await cur.fetchall()]
