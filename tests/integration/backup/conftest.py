"""Backup fixtures: a "box" is what one installed node holds (its own database, secrets dir,
vault dir and config file), driven with tipctl as the operator runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.conftest import _to_toml, create_database, drop_database
from tests.integration.kyc.conftest import s3_server  # noqa: F401 (the S3 tests' server)
from tipstream import db as tsdb
from tipstream.config import Settings, generate_secret, load_settings

TIPCTL = [sys.executable, "-c", "from tipctl.main import app; app()"]


@dataclass
class Box:
    name: str
    root: Path
    database_url: str
    valkey_url: str
    key_prefix: str
    # The [vault] section; default: local files under root/var/vault.
    vault_section: dict[str, Any] | None = None
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.secrets.mkdir(mode=0o700, parents=True)
        (self.secrets / "session_key").write_text(generate_secret() + "\n")
        tree = {
            "secrets_dir": str(self.secrets),
            "database": {"url": self.database_url, "pool_min": 1, "pool_max": 2},
            "valkey": {"url": self.valkey_url, "key_prefix": self.key_prefix},
            "vault": self.vault_section or {"dir": str(self.vault)},
            "logging": {"level": "WARNING", "json": True},
        }
        self.config = self.root / "tipstream.toml"
        self.config.write_text(_to_toml(tree))

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def vault(self) -> Path:
        return self.root / "var" / "vault"

    def settings(self) -> Settings:
        """Read afresh: a restore changes the secret files."""
        return load_settings(self.config, environ={})

    async def tipctl(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        env = dict(os.environ, TIPSTREAM_CONFIG=str(self.config), COLUMNS="200")
        result = await asyncio.to_thread(
            subprocess.run,
            [*TIPCTL, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode, result.stdout, result.stderr


NewBox = Callable[..., Awaitable[Box]]


@pytest.fixture(scope="module")
async def new_box(
    service_urls: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    key_prefix: str,
) -> AsyncIterator[NewBox]:
    """Boxes with an empty database each (dropped at the end); migrate=True installs the schema
    as the playbook does, keys=True makes the vault keys as `tipctl keys init` does."""
    admin_url, valkey_url = service_urls
    made: list[str] = []
    roles: list[str] = []

    async def build(
        label: str,
        *,
        migrate: bool = True,
        keys: bool = True,
        own_role: bool = False,
        vault: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> Box:
        dbname = f"tipstream_test_{uuid.uuid4().hex[:12]}_{label}"
        url = await create_database(admin_url, dbname)
        made.append(dbname)
        if own_role:
            # As installed: the app connects as a login role that owns its database and is
            # no superuser.
            role = f"tipstream_test_{uuid.uuid4().hex[:8]}"
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
                await conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(dbname), sql.Identifier(role)
                    )
                )
            roles.append(role)
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        box = Box(
            name=label,
            root=tmp_path_factory.mktemp(f"box-{label}"),
            database_url=url,
            valkey_url=valkey_url,
            key_prefix=f"{key_prefix}bk{uuid.uuid4().hex[:6]}:",
            vault_section=vault,
        )
        for name, value in (secrets or {}).items():
            (box.secrets / name).write_text(value + "\n")
        if migrate:
            async with tsdb.connect(box.settings()) as conn:
                await tsdb.migrate(conn)
        if keys:
            code, _, err = await box.tipctl("keys", "init")
            assert code == 0, err
        return box

    yield build
    for dbname in made:
        await drop_database(admin_url, dbname)
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        for role in roles:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
