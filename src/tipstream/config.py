"""Typed settings: one TOML file, then TIPSTREAM_* environment overrides, then secret files.

Order of precedence (last wins): defaults < TOML file < environment < secret files.
Environment keys name a setting by section and key joined with a double underscore,
e.g. ``TIPSTREAM_DATABASE__URL`` or ``TIPSTREAM_SERVER__WORKERS``.
Secrets are never read from the TOML file or the environment: only from files in
``$CREDENTIALS_DIRECTORY`` (systemd) or the configured ``secrets_dir``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

import msgspec

DEFAULT_CONFIG_PATH = Path("/etc/tipstream/tipstream.toml")
ENV_PREFIX = "TIPSTREAM_"

# Secret name -> file name in the secrets directory. Missing optional secrets stay None.
SECRET_FILES = {
    "session_key": "session_key",
    "database_password": "database_password",
}
REQUIRED_SECRETS = ("session_key",)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    public_url: str = "http://127.0.0.1:8000"
    # Largest request body the app accepts; nginx is configured with the same limit.
    max_body_bytes: int = 1_048_576
    # Client addresses are taken from X-Forwarded-For only when the peer is one of these.
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "postgresql://tipstream@127.0.0.1:5432/tipstream"
    pool_min: int = 2
    pool_max: int = 10


class ValkeySettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ts:"


class SecuritySettings(msgspec.Struct, forbid_unknown_fields=True):
    # Secure cookies need HTTPS; the one-box dev runner serves plain HTTP on loopback.
    cookie_secure: bool = True
    session_ttl_seconds: int = 7 * 24 * 3600
    min_age: int = 18
    # Per-country minimum ages (ISO 3166-1 alpha-2) where the law asks for more than min_age.
    min_age_by_country: dict[str, int] = msgspec.field(default_factory=dict)
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 30
    login_failure_window_seconds: int = 900
    lockout_seconds: int = 900
    totp_issuer: str = "tipstream"


class LoggingSettings(msgspec.Struct, forbid_unknown_fields=True):
    level: str = "INFO"
    json: bool = True


class Secrets(msgspec.Struct):
    session_key: str | None = None
    database_password: str | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    valkey: ValkeySettings = msgspec.field(default_factory=ValkeySettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    secrets_dir: str | None = None
    secrets: Secrets = msgspec.field(default_factory=Secrets)


def _set_path(tree: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = tree
    for part in dotted[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {'.'.join(dotted)}: {part} is not a section")
    node[dotted[-1]] = value


def _env_value(raw: str) -> Any:
    """Environment values are TOML literals where they parse as one (ints, bools, lists)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _read_secrets(secrets_dir: Path | None) -> dict[str, str]:
    found: dict[str, str] = {}
    dirs = [Path(d) for d in (os.environ.get("CREDENTIALS_DIRECTORY"),) if d]
    if secrets_dir is not None:
        dirs.append(secrets_dir)
    for name, file_name in SECRET_FILES.items():
        for directory in dirs:
            path = directory / file_name
            if path.is_file():
                found[name] = path.read_text().strip()
                break
    return found


def load_settings(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate settings; raise ConfigError naming the first bad setting."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        path = Path(env.get("TIPSTREAM_CONFIG", str(DEFAULT_CONFIG_PATH)))
    tree: dict[str, Any] = {}
    if path.exists():
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    elif "TIPSTREAM_CONFIG" in env or path != DEFAULT_CONFIG_PATH:
        raise ConfigError(f"config file {path}: does not exist")
    if "secrets" in tree:
        raise ConfigError(
            "setting secrets: secrets are read from files in secrets_dir, not the config"
        )

    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == "TIPSTREAM_CONFIG":
            continue
        dotted = key.removeprefix(ENV_PREFIX).lower().split("__")
        if dotted[0] == "secrets":
            raise ConfigError(f"setting {key}: secrets are read from files, not the environment")
        _set_path(tree, dotted, _env_value(raw))

    try:
        settings = msgspec.convert(tree, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None

    secrets_dir = Path(settings.secrets_dir) if settings.secrets_dir else None
    settings.secrets = msgspec.convert(_read_secrets(secrets_dir), Secrets)
    _check(settings)
    return settings


def _describe(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    # msgspec says "... - at `$.server.port`"; lead with the setting's name.
    if " - at `$." in message:
        text, where = message.rsplit(" - at `$.", 1)
        return f"setting {where.rstrip('`')}: {text}"
    if "unknown field" in message:
        name = message.split("`")[1] if "`" in message else message
        return f"setting {name}: unknown setting"
    return f"settings: {message}"


def _check(settings: Settings) -> None:
    if not 1 <= settings.server.port <= 65535:
        raise ConfigError("setting server.port: must be between 1 and 65535")
    if settings.server.workers < 1:
        raise ConfigError("setting server.workers: must be at least 1")
    if settings.server.max_body_bytes < 1024:
        raise ConfigError("setting server.max_body_bytes: must be at least 1024")
    if not settings.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("setting database.url: must be a postgresql:// URL")
    if not 1 <= settings.database.pool_min <= settings.database.pool_max:
        raise ConfigError("setting database.pool_min: must be between 1 and database.pool_max")
    if not settings.valkey.url.startswith(("redis://", "rediss://", "valkey://", "unix://")):
        raise ConfigError("setting valkey.url: must be a redis://, rediss:// or unix:// URL")
    if settings.security.min_age < 18:
        raise ConfigError("setting security.min_age: may not be below 18")
    for country, age in settings.security.min_age_by_country.items():
        if age < settings.security.min_age:
            raise ConfigError(f"setting security.min_age_by_country.{country}: below min_age")
    if settings.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("setting logging.level: must be DEBUG, INFO, WARNING or ERROR")
    for name in REQUIRED_SECRETS:
        value = getattr(settings.secrets, name)
        if not value:
            raise ConfigError(
                f"secret {name}: missing; put it in the file {SECRET_FILES[name]} in "
                "secrets_dir or $CREDENTIALS_DIRECTORY"
            )
        if len(value) < 32:
            raise ConfigError(f"secret {name}: too short (at least 32 characters)")


def generate_secret() -> str:
    return secrets.token_urlsafe(48)
