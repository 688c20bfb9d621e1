"""Test setup: real Postgres and Valkey, a fresh database per run, the real app.

Where the services are: ``TIPSTREAM_PG_ADMIN_URL`` / ``TIPSTREAM_VALKEY_URL`` from the
environment, else from ``var/services.env`` (written by ``appliance/lib/services.sh``), else the
usual loopback defaults. When they do not answer, ``appliance/lib/services.sh ensure`` is run if it
exists; otherwise the run stops with a message saying what is missing and how to start it.

Each run creates its own database ``tipstream_test_<hex>`` (dropped at the end) and its own Valkey
key prefix, so runs never see each other's data. The app under test is the real one from
``tipstream.app.create_app``; its lifespan opens a real pool and Valkey client.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg import sql
from valkey.asyncio import Valkey

from tests.helpers import Browser, BrowserFactory, UserFactory, running_app, unique_email
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.config import Settings, generate_secret, load_settings

ROOT = Path(__file__).resolve().parent.parent
SERVICES_ENV = ROOT / "var" / "services.env"
SERVICES_SH = ROOT / "appliance" / "lib" / "services.sh"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_VALKEY_URL = "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- options, markers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true", default=False, help="skip tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    # Litestar 2.x announces 3.0 changes (inferred dependencies) once per handler and app; they
    # say nothing about behaviour and would bury the test output.
    config.addinivalue_line(
        "filterwarnings", "ignore::litestar.utils.deprecation.LitestarDeprecationWarning"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    skip = pytest.mark.skip(reason="slow test skipped by --fast")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- services


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def _service_urls() -> tuple[str, str]:
    from_file = _read_env_file(SERVICES_ENV)
    pg = os.environ.get("TIPSTREAM_PG_ADMIN_URL") or from_file.get("TIPSTREAM_PG_ADMIN_URL")
    kv = os.environ.get("TIPSTREAM_VALKEY_URL") or from_file.get("TIPSTREAM_VALKEY_URL")
    return pg or DEFAULT_PG_ADMIN_URL, kv or DEFAULT_VALKEY_URL


def _probe(pg_url: str, kv_url: str) -> list[str]:
    """What does not answer, as readable reasons; empty when both services are up."""
    import valkey

    problems = []
    try:
        with psycopg.connect(pg_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        problems.append(f"Postgres at {pg_url}: {type(exc).__name__}: {exc}".strip())
    try:
        client = valkey.Valkey.from_url(kv_url.replace("valkey://", "redis://", 1))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        problems.append(f"Valkey at {kv_url}: {type(exc).__name__}: {exc}".strip())
    return problems


@pytest.fixture(scope="session")
def service_urls() -> tuple[str, str]:
    """(Postgres superuser URL, Valkey URL), started by appliance/lib/services.sh if needed."""
    pg_url, kv_url = _service_urls()
    problems = _probe(pg_url, kv_url)
    if problems and SERVICES_SH.exists():
        result = subprocess.run(
            [str(SERVICES_SH), "ensure"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        pg_url, kv_url = _service_urls()
        problems = _probe(pg_url, kv_url)
        if problems and result.returncode != 0:
            problems.append(
                f"{SERVICES_SH.relative_to(ROOT)} ensure exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
    if problems:
        how = (
            f"{SERVICES_SH.relative_to(ROOT)} ensure did not bring them up (an URL set in the "
            "environment wins over the var/services.env it writes)"
            if SERVICES_SH.exists()
            else "start Postgres and Valkey (or Redis) on loopback, or point "
            "TIPSTREAM_PG_ADMIN_URL (a superuser libpq URL) and TIPSTREAM_VALKEY_URL at them "
            "(environment or var/services.env); `appliance/lib/services.sh ensure` does this "
            "once it exists"
        )
        pytest.exit(
            "integration tests need real services, which do not answer:\n  - "
            + "\n  - ".join(problems)
            + f"\n{how}",
            returncode=1,
        )
    return pg_url, kv_url


def url_with_dbname(url: str, dbname: str) -> str:
    """The same libpq URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


async def create_database(admin_url: str, dbname: str) -> str:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return url_with_dbname(admin_url, dbname)


async def drop_database(admin_url: str, dbname: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture(scope="session")
async def database_url(service_urls: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh database for this run, dropped at the end."""
    admin_url, _ = service_urls
    name = f"tipstream_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(admin_url, name)
    try:
        yield url
    finally:
        await drop_database(admin_url, name)


@pytest.fixture
async def scratch_db(service_urls: tuple[str, str]) -> AsyncIterator[str]:
    """Another empty database, for tests that migrate or tamper on their own."""
    admin_url, _ = service_urls
    name = f"tipstream_test_{uuid.uuid4().hex[:12]}_scratch"
    url = await create_database(admin_url, name)
    try:
        yield url
    finally:
        await drop_database(admin_url, name)


@pytest.fixture(scope="session")
def key_prefix() -> str:
    return f"tstest:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "session_key").write_text(generate_secret() + "\n")
    directory.chmod(0o700)
    return directory


def make_settings(
    database_url: str, valkey_url: str, secrets_dir: Path, prefix: str, **sections: Any
) -> Settings:
    """Settings as the app reads them: a TOML tree through load_settings' validation."""
    tree: dict[str, Any] = {
        "secrets_dir": str(secrets_dir),
        "database": {"url": database_url, "pool_min": 1, "pool_max": 4},
        "valkey": {"url": valkey_url, "key_prefix": prefix},
        "server": {"max_body_bytes": 16_384},
        # Thousands of deliberate failures come from the one test-client address: the per-IP
        # limit is raised here and tested on its own with low limits.
        "security": {"cookie_secure": False, "login_failures_per_ip": 1_000_000},
        "logging": {"level": "WARNING", "json": True},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    path = secrets_dir.parent / f"tipstream-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(_to_toml(tree))
    return load_settings(path, environ={})


def _to_toml(tree: dict[str, Any]) -> str:
    def literal(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        if isinstance(value, dict):
            pairs = (
                f"{msgspec.json.encode(str(k)).decode()} = {literal(v)}" for k, v in value.items()
            )
            return "{ " + ", ".join(pairs) + " }"
        return msgspec.json.encode(str(value)).decode()

    top = [f"{k} = {literal(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{ik} = {literal(iv)}" for ik, iv in v.items())
        for k, v in tree.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


@pytest.fixture(scope="session")
async def settings(
    database_url: str, service_urls: tuple[str, str], secrets_dir: Path, key_prefix: str
) -> AsyncIterator[Settings]:
    """The run's settings, with the database migrated; Valkey keys removed at the end."""
    settings = make_settings(database_url, service_urls[1], secrets_dir, key_prefix)
    async with tsdb.connect(settings) as conn:
        await tsdb.migrate(conn)
    yield settings
    client = Valkey.from_url(service_urls[1].replace("valkey://", "redis://", 1))
    try:
        async for name in client.scan_iter(match=f"{key_prefix}*", count=500):
            await client.delete(name)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def settings_factory(
    database_url: str, service_urls: tuple[str, str], secrets_dir: Path, key_prefix: str
) -> Callable[..., Settings]:
    """Settings for an extra app on the run's database, e.g. ``settings_factory(security=
    {"lockout_seconds": 5})``; its own Valkey prefix (under the run's, so it is cleaned up too)
    unless one is given."""

    def build(prefix: str | None = None, **sections: Any) -> Settings:
        prefix = prefix or f"{key_prefix}{uuid.uuid4().hex[:8]}:"
        return make_settings(database_url, service_urls[1], secrets_dir, prefix, **sections)

    return build


# --------------------------------------------------------------------------- direct access


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[tsdb.Conn]:
    """The test's own connection (superuser, autocommit), to look at and arrange rows."""
    async with tsdb.connect(settings) as conn:
        yield conn


@pytest.fixture(scope="session")
async def kv(settings: Settings) -> AsyncIterator[Valkey]:
    """The test's own Valkey client (the app's lives on the app's event loop)."""
    client = Valkey.from_url(settings.valkey.url.replace("valkey://", "redis://", 1))
    yield client
    await client.aclose()


# --------------------------------------------------------------------------- the app


@pytest.fixture(scope="session")
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with running_app(settings) as client:
        yield client


@pytest.fixture(scope="session")
def app(app_client: AsyncTestClient[Litestar]) -> Litestar:
    return app_client.app


@pytest.fixture
async def new_browser(app_client: AsyncTestClient[Litestar]) -> AsyncIterator[BrowserFactory]:
    """Make browsers (each its own cookie jar) on the run's app, or on another test client."""
    made: list[Browser] = []

    def build(client: AsyncTestClient[Litestar] | None = None, peer: str | None = None) -> Browser:
        browser = Browser.on(client or app_client, peer=peer)
        made.append(browser)
        return browser

    yield build
    for browser in made:
        await browser.aclose()


@pytest.fixture
def anon(new_browser: BrowserFactory) -> Browser:
    """A browser that has not signed in."""
    return new_browser()


@pytest.fixture
def make_user(new_browser: BrowserFactory) -> UserFactory:
    """A registered, signed-in user in a browser of their own."""

    async def build(
        tag: str = "user",
        *,
        client: AsyncTestClient[Litestar] | None = None,
        peer: str | None = None,
        **fields: Any,
    ) -> Browser:
        browser = new_browser(client, peer)
        registered = await browser.register(unique_email(tag), **fields)
        assert registered.status_code == 201, registered.text
        logged_in = await browser.login()
        assert logged_in.status_code == 200, logged_in.text
        return browser

    return build


@pytest.fixture
def set_role(db: tsdb.Conn, kv: Valkey, settings: Settings) -> Callable[..., Awaitable[None]]:
    """Give a user a role the way an operator does (tipctl calls the accounts service)."""

    async def apply(user: Browser, role: str) -> None:
        await accounts.set_role(db, kv, settings, user.user_id, role, actor_id=None)
        user.user["role"] = role

    return apply


@pytest.fixture
def make_admin(make_user: UserFactory, set_role: Callable[..., Awaitable[None]]) -> UserFactory:
    """A signed-in admin with 2FA enrolled; the session is 2FA-verified."""

    async def build(tag: str = "admin", **kwargs: Any) -> Browser:
        admin = await make_user(tag, **kwargs)
        await set_role(admin, "admin")
        await admin.enroll_totp()
        return admin

    return build
