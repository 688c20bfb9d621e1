"""Settings: one TOML file, TIPSTREAM_* overrides, secrets only from files; every bad or missing
setting stops start-up with a ConfigError that names it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tipstream.config import ConfigError, Settings, generate_secret, load_settings

SESSION_KEY = "k" * 48


@pytest.fixture(autouse=True)
def _no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CREDENTIALS_DIRECTORY of the machine running the tests must not leak in."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "session_key").write_text(SESSION_KEY + "\n")
    return directory


@pytest.fixture
def write_config(tmp_path: Path, secrets_dir: Path) -> Callable[..., Path]:
    def write(body: str, *, with_secrets_dir: bool = True) -> Path:
        path = tmp_path / "tipstream.toml"
        head = f'secrets_dir = "{secrets_dir}"\n' if with_secrets_dir else ""
        path.write_text(head + body)
        return path

    return write


def load(path: Path, **env: str) -> Settings:
    return load_settings(path, environ=env)


def test_toml_values_are_read_and_typed(write_config: Callable[..., Path]) -> None:
    path = write_config(
        """
[server]
port = 9000
workers = 4
trusted_proxies = ["10.0.0.1"]

[database]
url = "postgresql://app@db.internal:5432/tipstream"

[security]
cookie_secure = false
min_age_by_country = { DE = 18, XX = 21 }
"""
    )
    settings = load(path)
    assert settings.server.port == 9000
    assert settings.server.workers == 4
    assert settings.server.trusted_proxies == ["10.0.0.1"]
    assert settings.database.url == "postgresql://app@db.internal:5432/tipstream"
    assert settings.security.cookie_secure is False
    assert settings.security.min_age_by_country == {"DE": 18, "XX": 21}
    # Untouched settings keep their defaults.
    assert settings.valkey.url == "redis://127.0.0.1:6379/0"
    assert settings.secrets.session_key == SESSION_KEY


def test_environment_overrides_toml(write_config: Callable[..., Path]) -> None:
    path = write_config("[server]\nport = 9000\nworkers = 4\n")
    settings = load(
        path,
        TIPSTREAM_SERVER__PORT="9100",
        TIPSTREAM_SECURITY__COOKIE_SECURE="false",
        TIPSTREAM_DATABASE__URL="postgresql://other@127.0.0.1/x",
        TIPSTREAM_SERVER__TRUSTED_PROXIES='["192.0.2.1", "192.0.2.2"]',
        UNRELATED_VARIABLE="ignored",
    )
    assert settings.server.port == 9100
    assert settings.server.workers == 4  # from the file
    assert settings.security.cookie_secure is False
    assert settings.database.url == "postgresql://other@127.0.0.1/x"
    assert settings.server.trusted_proxies == ["192.0.2.1", "192.0.2.2"]


def test_config_path_from_environment(write_config: Callable[..., Path]) -> None:
    path = write_config("[server]\nport = 9200\n")
    settings = load_settings(environ={"TIPSTREAM_CONFIG": str(path)})
    assert settings.server.port == 9200


def test_secrets_dir_from_environment(tmp_path: Path, secrets_dir: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text("[server]\nport = 9300\n")
    settings = load(path, TIPSTREAM_SECRETS_DIR=str(secrets_dir))
    assert settings.secrets.session_key == SESSION_KEY


def test_systemd_credentials_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    key = generate_secret()
    (creds / "session_key").write_text(key)
    (creds / "database_password").write_text("s3cret-db-password\n")
    path = tmp_path / "plain.toml"
    path.write_text("")
    # systemd sets it in the process environment (LoadCredential=).
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load(path)
    assert settings.secrets.session_key == key
    assert settings.secrets.database_password == "s3cret-db-password"


@pytest.mark.parametrize(
    ("body", "env", "named"),
    [
        ("[server]\nport = 'eighty'\n", {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[server]\nport = 0\n", {}, "server.port"),
        ("", {"TIPSTREAM_SERVER__PORT": "lots"}, "server.port"),
        ("[server]\nworkers = 0\n", {}, "server.workers"),
        ("[server]\nbogus = 1\n", {}, "bogus"),
        ("nonsense = 1\n", {}, "nonsense"),
        ("", {"TIPSTREAM_VALKEY__COLOUR": "red"}, "colour"),
        ("[database]\nurl = 'mysql://x'\n", {}, "database.url"),
        ("[database]\npool_min = 5\npool_max = 2\n", {}, "database.pool_min"),
        ("[valkey]\nurl = 'http://x'\n", {}, "valkey.url"),
        ("[security]\nmin_age = 16\n", {}, "security.min_age"),
        ("[security]\nmin_age_by_country = { XX = 17 }\n", {}, "min_age_by_country.XX"),
        ("[security]\ncookie_secure = 'maybe'\n", {}, "security.cookie_secure"),
        ("[logging]\nlevel = 'LOUD'\n", {}, "logging.level"),
        ("[server]\nmax_body_bytes = 10\n", {}, "server.max_body_bytes"),
        ("server = 5\n", {}, "server"),
    ],
)
def test_invalid_setting_is_named(
    write_config: Callable[..., Path], body: str, env: dict[str, str], named: str
) -> None:
    path = write_config(body)
    with pytest.raises(ConfigError) as raised:
        load(path, **env)
    assert named in str(raised.value)


def test_broken_toml_names_the_file(write_config: Callable[..., Path]) -> None:
    path = write_config("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as raised:
        load(path)
    assert str(path) in str(raised.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as raised:
        load(missing)
    assert str(missing) in str(raised.value)


def test_missing_session_key_is_named(write_config: Callable[..., Path], secrets_dir: Path) -> None:
    (secrets_dir / "session_key").unlink()
    path = write_config("")
    with pytest.raises(ConfigError, match="session_key") as raised:
        load(path)
    assert "missing" in str(raised.value)


def test_short_session_key_is_refused(write_config: Callable[..., Path], secrets_dir: Path) -> None:
    (secrets_dir / "session_key").write_text("short")
    with pytest.raises(ConfigError, match="session_key"):
        load(write_config(""))


def test_secrets_are_refused_from_toml(write_config: Callable[..., Path]) -> None:
    path = write_config(f"[secrets]\nsession_key = '{SESSION_KEY}'\n")
    with pytest.raises(ConfigError, match="secrets"):
        load(path)


def test_secrets_are_refused_from_environment(write_config: Callable[..., Path]) -> None:
    path = write_config("")
    with pytest.raises(ConfigError, match="TIPSTREAM_SECRETS__SESSION_KEY"):
        load(path, TIPSTREAM_SECRETS__SESSION_KEY=SESSION_KEY)


def test_secret_values_never_appear_in_errors(
    write_config: Callable[..., Path], secrets_dir: Path
) -> None:
    (secrets_dir / "database_password").write_text("hunter2-very-secret")
    path = write_config("[server]\nport = 'x'\n")
    with pytest.raises(ConfigError) as raised:
        load(path)
    assert "hunter2" not in str(raised.value)
    assert SESSION_KEY not in str(raised.value)
