"""KYC fixtures: a database of their own (so the shared run's other tests never meet a
submission they cannot decrypt), a vault directory and keyring, an app on them, and people:
performers, moderators and admins with 2FA."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image
from valkey.asyncio import Valkey

from tests.conftest import _to_toml, create_database, drop_database, make_settings
from tests.helpers import Browser, UserFactory, running_app
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.config import Settings, generate_secret
from tipstream.vault.keys import new_keyring
from tipstream.vault.service import Vault

SetRole = Callable[[Browser, str], Awaitable[None]]


def write_keyring(secrets: Path) -> None:
    (secrets / "vault_keys").write_text(new_keyring().format())
    (secrets / "kyc_index_key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")


@pytest.fixture(scope="session")
async def kyc_database_url(service_urls: tuple[str, str]) -> AsyncIterator[str]:
    admin_url, _ = service_urls
    name = f"tipstream_test_{uuid.uuid4().hex[:12]}_kyc"
    url = await create_database(admin_url, name)
    try:
        yield url
    finally:
        await drop_database(admin_url, name)


@pytest.fixture(scope="session")
def kyc_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("kyc-secrets")
    (directory / "session_key").write_text(generate_secret() + "\n")
    write_keyring(directory)
    directory.chmod(0o700)
    return directory


@pytest.fixture(scope="session")
def vault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vault")


@pytest.fixture(scope="session")
def kyc_settings_factory(
    kyc_database_url: str,
    service_urls: tuple[str, str],
    kyc_secrets: Path,
    vault_dir: Path,
    key_prefix: str,
) -> Callable[..., Settings]:
    def build(secrets: Path | None = None, **sections: Any) -> Settings:
        sections.setdefault("vault", {"dir": str(vault_dir)})
        prefix = f"{key_prefix}kyc{uuid.uuid4().hex[:6]}:"
        return make_settings(
            kyc_database_url, service_urls[1], secrets or kyc_secrets, prefix, **sections
        )

    return build


@pytest.fixture(scope="session")
async def kyc_settings(kyc_settings_factory: Callable[..., Settings]) -> Settings:
    settings = kyc_settings_factory(
        security={"min_age_by_country": {"US": 21}}, payments={"earnings_hold_days": 0}
    )
    async with tsdb.connect(settings) as conn:
        await tsdb.migrate(conn)
    return settings


@pytest.fixture(scope="session")
async def kyc_db(kyc_settings: Settings) -> AsyncIterator[tsdb.Conn]:
    async with tsdb.connect(kyc_settings) as conn:
        yield conn


@pytest.fixture(scope="session")
async def kyc_client(kyc_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with running_app(kyc_settings) as client:
        yield client


@pytest.fixture
def vault(kyc_settings: Settings) -> Vault:
    return Vault.from_settings(kyc_settings)


@pytest.fixture
def kyc_set_role(kyc_db: tsdb.Conn, kv: Valkey, kyc_settings: Settings) -> SetRole:
    async def apply(user: Browser, role: str) -> None:
        await accounts.set_role(kyc_db, kv, kyc_settings, user.user_id, role, actor_id=None)
        user.user["role"] = role

    return apply


@pytest.fixture
def performer(make_user: UserFactory, kyc_client: AsyncTestClient[Litestar]) -> UserFactory:
    async def build(tag: str = "performer", **fields: Any) -> Browser:
        return await make_user(tag, client=kyc_client, role="performer", **fields)

    return build


@pytest.fixture
def reviewer(
    make_user: UserFactory, kyc_client: AsyncTestClient[Litestar], kyc_set_role: SetRole
) -> UserFactory:
    async def build(role: str = "moderator", *, totp: bool = True) -> Browser:
        person = await make_user(role, client=kyc_client)
        await kyc_set_role(person, role)
        if totp:
            await person.enroll_totp()
        return person

    return build


@pytest.fixture
def viewer(make_user: UserFactory, kyc_client: AsyncTestClient[Litestar]) -> UserFactory:
    async def build() -> Browser:
        return await make_user("viewer", client=kyc_client)

    return build


# --------------------------------------------------------------------------- documents


def photo(width: int = 640, height: int = 400, *, fmt: str = "JPEG", **save: Any) -> bytes:
    """A real photo-like image: a gradient with a distinctive block."""
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    assert pixels is not None
    for x in range(0, width, 4):
        for y in range(0, height, 4):
            colour = (x * 255 // width, y * 255 // height, (x + y) % 256)
            for dx in range(4):
                for dy in range(4):
                    if x + dx < width and y + dy < height:
                        pixels[x + dx, y + dy] = colour
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


PASSPORT_MRZ = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\n"
    "L898902C36UTO7408122F{expiry}<<<<<<<<<<<<<<{composite}"
)


def form_fields(**overrides: Any) -> dict[str, str]:
    fields = {
        "legal_name": "Anna Maria Eriksson",
        "date_of_birth": "1990-05-17",
        "country": "SE",
        "document_type": "passport",
        "document_number": f"X{uuid.uuid4().hex[:8].upper()}",
        "document_expiry": "2034-04-15",
        "agreement_version": "2026-01",
        "accept_agreement": "true",
    }
    fields.update({k: str(v) for k, v in overrides.items() if v is not None})
    for key in [k for k, v in overrides.items() if v is None]:
        fields.pop(key, None)
    return fields


def image_files(**overrides: bytes | None) -> dict[str, tuple[str, bytes, str]]:
    files: dict[str, bytes | None] = {"front": photo(), "selfie": photo(480, 640)}
    files.update(overrides)
    return {
        name: (f"../../etc/{name}.jpg", data, "image/jpeg")
        for name, data in files.items()
        if data is not None
    }


async def submit(
    browser: Browser,
    fields: dict[str, str] | None = None,
    files: dict[str, tuple[str, bytes, str]] | None = None,
) -> Any:
    return await browser.post(
        "/api/kyc/submission",
        data=form_fields() if fields is None else fields,
        files=image_files() if files is None else files,
    )


# --------------------------------------------------------------------------- tipctl


TIPCTL = Path(sys.executable).with_name("tipctl")


@dataclass
class Tipctl:
    """tipctl run as the operator runs it: its own process, a config file, a secrets_dir."""

    config: Path
    secrets: Path

    async def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(TIPCTL),
            "--config",
            str(self.config),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin else None), 120
        )
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


def operator_tipctl(
    settings: Settings, secrets_from: Path, vault: dict[str, Any], tmp_path: Path
) -> Tipctl:
    """tipctl on the KYC database with a copy of the secrets (so rotating there leaves the
    running app's keyring alone until the test puts things back)."""
    secrets = tmp_path / "secrets"
    shutil.copytree(secrets_from, secrets)
    config = tmp_path / "tipstream.toml"
    config.write_text(
        _to_toml(
            {
                "secrets_dir": str(secrets),
                "database": {"url": settings.database.url, "pool_min": 1, "pool_max": 2},
                "valkey": {"url": settings.valkey.url, "key_prefix": settings.valkey.key_prefix},
                "vault": vault,
                "security": {"min_age_by_country": {"US": 21}},
                "logging": {"level": "WARNING", "json": True},
            }
        )
    )
    return Tipctl(config, secrets)


@pytest.fixture
def tipctl(kyc_settings: Settings, kyc_secrets: Path, vault_dir: Path, tmp_path: Path) -> Tipctl:
    return operator_tipctl(kyc_settings, kyc_secrets, {"dir": str(vault_dir)}, tmp_path)


# --------------------------------------------------------------------------- S3 storage


S3_SERVER_DIR = Path(__file__).resolve().parents[2] / "s3server"


@dataclass
class S3Server:
    """A real S3-compatible server on loopback (s3rver behind a SigV4 check, tests/s3server):
    objects are files under ``directory``, so a test can read what the server really holds."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_key: str
    directory: Path

    def file_of(self, key: str) -> Path:
        return self.directory / self.bucket / f"{key}._S3rver_object"

    def vault_section(self, **overrides: Any) -> dict[str, Any]:
        s3 = {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "region": "us-east-1",
            "access_key_id": self.access_key_id,
            "timeout_seconds": 3.0,
        }
        return {"backend": "s3", "dir": "/nonexistent/not-used-by-s3", "s3": s3 | overrides}


@pytest.fixture(scope="session")
async def s3_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[S3Server]:
    """Started once per session; fails loudly when it cannot start."""
    node = shutil.which("node")
    if node is None or not (S3_SERVER_DIR / "node_modules" / "s3rver").is_dir():
        pytest.fail(
            "the S3 test server is not installed (node and tests/s3server/node_modules): run "
            "./appliance/test, which runs npm ci --prefix tests/s3server"
        )
    directory = tmp_path_factory.mktemp("s3-data")
    access_key_id = f"AKTEST{uuid.uuid4().hex[:10].upper()}"
    secret_key = base64.b64encode(os.urandom(30)).decode()
    process = await asyncio.create_subprocess_exec(
        node,
        str(S3_SERVER_DIR / "serve.js"),
        "--directory",
        str(directory),
        "--bucket",
        "tipstream-vault",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "S3_ACCESS_KEY_ID": access_key_id, "S3_SECRET_ACCESS_KEY": secret_key},
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    except TimeoutError:
        line = ""
    if not line.startswith("ready "):
        process.kill()
        _, err = await process.communicate()
        pytest.fail(f"the S3 test server did not start: {line!r} {err.decode()[-2000:]}")
    try:
        yield S3Server(
            f"http://127.0.0.1:{int(line.split()[1])}",
            "tipstream-vault",
            access_key_id,
            secret_key,
            directory,
        )
    finally:
        process.terminate()
        await process.wait()
