"""A box of its own for the TOTP-at-rest tests: a database, a secrets dir with a vault keyring
(rotated by these tests, so no other test shares it), settings read from files as a restarted
app reads them, and tipctl run as the operator runs it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from tests.conftest import _to_toml, create_database, drop_database, make_settings
from tests.integration.kyc.conftest import Tipctl
from tipstream import db as tsdb
from tipstream.config import Settings, generate_secret
from tipstream.vault.keys import Keyring, new_keyring


@dataclass
class Box:
    database_url: str
    valkey_url: str
    secrets: Path
    key_prefix: str
    tipctl: Tipctl

    def settings(self) -> Settings:
        """The settings as an app (re)started now reads them: the keyring file as it is."""
        return make_settings(self.database_url, self.valkey_url, self.secrets, self.key_prefix)

    def keyring(self) -> Keyring:
        return Keyring.parse((self.secrets / "vault_keys").read_text())

    async def pg_dump(self, *tables: str) -> str:
        """The data of these tables as pg_dump writes it into a backup."""
        args = [arg for table in tables for arg in ("--table", table)]
        process = await asyncio.create_subprocess_exec(
            "pg_dump", "--data-only", *args, self.database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return out.decode()


@pytest.fixture(scope="module")
async def box(
    service_urls: tuple[str, str], key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Box]:
    admin_url, valkey_url = service_urls
    name = f"tipstream_test_{uuid.uuid4().hex[:12]}_totp"
    url = await create_database(admin_url, name)
    secrets = tmp_path_factory.mktemp("totp-secrets")
    (secrets / "session_key").write_text(generate_secret() + "\n")
    (secrets / "vault_keys").write_text(new_keyring().format())
    os.chmod(secrets, 0o700)
    prefix = f"{key_prefix}totp{uuid.uuid4().hex[:6]}:"
    config = secrets.parent / "tipctl-totp.toml"
    config.write_text(
        _to_toml(
            {
                "secrets_dir": str(secrets),
                "database": {"url": url, "pool_min": 1, "pool_max": 2},
                "valkey": {"url": valkey_url, "key_prefix": prefix},
                "vault": {"dir": str(tmp_path_factory.mktemp("totp-vault"))},
                "logging": {"level": "WARNING", "json": True},
            }
        )
    )
    built = Box(url, valkey_url, secrets, prefix, Tipctl(config, secrets))
    async with tsdb.connect(built.settings()) as conn:
        await tsdb.migrate(conn)
    try:
        yield built
    finally:
        await drop_database(admin_url, name)


@pytest.fixture
async def box_db(box: Box) -> AsyncIterator[tsdb.Conn]:
    async with tsdb.connect(box.settings()) as conn:
        yield conn


async def users_row_text(conn: tsdb.Conn, user_id: int) -> str:
    """Every column of a user's row as text (bytea as hex, as a dump shows it)."""
    cur = await conn.execute(
        sql.SQL("SELECT u::text AS row FROM users u WHERE id = %s"), (user_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["row"])
