"""Moderation tests run against a real app process (granian) on the rooms tests' Janus and
coturn, with a vault (its keyring handed over as a systemd credential would be) and per-room
chat policies for three performers made up front."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec
import pytest
from valkey.asyncio import Valkey

from tests.integration.rooms.conftest import (  # noqa: F401 (fixtures used by name)
    AppServer,
    AppServerFactory,
    app_server,
    app_server_factory,
    janus_server,
    media_net,
    media_secrets,
    rooms_settings,
    rooms_settings_factory,
    turn_server,
)
from tests.integration.rooms.people import Person, sign_up
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.vault.keys import new_keyring
from tipstream.vault.service import Vault


@dataclass
class Rooms:
    """Performers whose rooms have the policies allow, hold and block (others: mask)."""

    allow: Person
    hold: Person
    block: Person


@dataclass
class ModWorld:
    server: AppServer
    settings: Settings
    vault: Vault
    rooms: Rooms
    # The environment the app process runs with (vault credentials, policies): tipctl too.
    env: dict[str, str]


@pytest.fixture(scope="session")
async def mod_world(
    app_server: AppServer,  # noqa: F811
    app_server_factory: AppServerFactory,  # noqa: F811
    rooms_settings_factory: Callable[..., Settings],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ModWorld]:
    credentials = tmp_path_factory.mktemp("mod-credentials")
    keyring = new_keyring().format()
    (credentials / "vault_keys").write_text(keyring)
    vault_dir = tmp_path_factory.mktemp("mod-vault")
    performers = [await sign_up(app_server, "performer", f"perf{p}") for p in range(3)]
    rooms = Rooms(*performers)
    by_room = {
        str(rooms.allow.id): "allow",
        str(rooms.hold.id): "hold",
        str(rooms.block.id): "block",
    }
    # No hold period on earnings: the payout tests pay out a tip at once.
    settings = rooms_settings_factory(
        vault={"dir": str(vault_dir)},
        moderation={"chat_policy_by_room": by_room},
        payments={"earnings_hold_days": 0},
    )
    settings.secrets.vault_keys = keyring
    env = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "TIPSTREAM_VAULT__DIR": str(vault_dir),
        "TIPSTREAM_MODERATION__CHAT_POLICY": "mask",
        "TIPSTREAM_MODERATION__CHAT_POLICY_BY_ROOM": _inline_table(by_room),
        "TIPSTREAM_MODERATION__OFFENCES_BEFORE_MUTE": "3",
        "TIPSTREAM_PAYMENTS__EARNINGS_HOLD_DAYS": "0",
    }
    server = await start_app_with_env(app_server_factory, settings, env)
    for performer in performers:
        performer.server = server
        performer.http.base_url = server.base_url  # type: ignore[assignment]
    yield ModWorld(server, settings, Vault.from_settings(settings), rooms, env)


def _inline_table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in values.items()) + " }"


inline_table = _inline_table


async def start_app_with_env(
    factory: AppServerFactory, settings: Settings, env: dict[str, str]
) -> AppServer:
    """An app process started with these extra environment variables (settings such as the
    per-room policies, the vault's credentials), which this process keeps out of its own."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return await factory(settings)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
async def mod_db(mod_world: ModWorld) -> AsyncIterator[tsdb.Conn]:
    async with tsdb.connect(mod_world.settings) as conn:
        yield conn


@pytest.fixture(scope="session")
async def mod_kv(mod_world: ModWorld) -> AsyncIterator[Valkey]:
    client = Valkey.from_url(mod_world.settings.valkey.url.replace("valkey://", "redis://", 1))
    yield client
    await client.aclose()


MakeModerator = Callable[..., Awaitable[Person]]


@pytest.fixture
def make_moderator(mod_world: ModWorld, mod_db: tsdb.Conn, mod_kv: Valkey) -> MakeModerator:
    """A moderator (or admin) signed in with 2FA on the moderation app server."""

    async def build(role: str = "moderator", *, with_2fa: bool = True) -> Person:
        person = await sign_up(mod_world.server, "viewer", role)
        await accounts.set_role(mod_db, mod_kv, mod_world.settings, person.id, role, actor_id=None)
        if with_2fa:
            import pyotp

            enrollment, _ = await accounts.provision_totp(
                mod_db, mod_world.settings, person.id, actor_id=None
            )
            await person.login(totp_code=pyotp.TOTP(enrollment.secret).now())
        else:
            await person.login()
        return person

    return build


def decode(data: bytes | str) -> dict[str, object]:
    return msgspec.json.decode(data, type=dict[str, object])
