"""The [vault.s3] settings: read from the config, the secret key only from its secret file, and
an incomplete S3 setup refused at start-up naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tipstream.config import ConfigError, Settings, load_settings
from tipstream.vault.storage import LocalDiskStorage, S3Storage, StorageUnavailable, storage_for

S3 = """
[vault]
backend = "s3"

[vault.s3]
endpoint = "https://s3.internal.example:9000"
bucket = "tipstream-vault"
access_key_id = "tipstream-app"
"""


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "session_key").write_text("k" * 48 + "\n")
    return directory


def load(tmp_path: Path, secrets_dir: Path, body: str) -> Settings:
    path = tmp_path / "tipstream.toml"
    path.write_text(f'secrets_dir = "{secrets_dir}"\n' + body)
    return load_settings(path, environ={})


def test_s3_settings_and_the_secret_file(tmp_path: Path, secrets_dir: Path) -> None:
    (secrets_dir / "vault_s3_secret_key").write_text("s3-secret-key-value\n")
    settings = load(tmp_path, secrets_dir, S3)
    assert settings.vault.backend == "s3"
    assert settings.vault.s3.region == "us-east-1"
    assert settings.secrets.vault_s3_secret_key == "s3-secret-key-value"
    storage = storage_for(settings)
    assert isinstance(storage, S3Storage) and storage.endpoint == "https://s3.internal.example:9000"
    assert isinstance(storage_for(load(tmp_path, secrets_dir, "")), LocalDiskStorage)


def test_without_the_secret_file_the_storage_is_unavailable(
    tmp_path: Path, secrets_dir: Path
) -> None:
    settings = load(tmp_path, secrets_dir, S3)
    with pytest.raises(StorageUnavailable, match="vault_s3_secret_key"):
        storage_for(settings)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (('endpoint = "https://s3.internal.example:9000"', 'endpoint = "s3.example"'), "endpoint"),
        (('bucket = "tipstream-vault"', 'bucket = ""'), "bucket"),
        (('access_key_id = "tipstream-app"', ""), "access_key_id"),
    ],
)
def test_an_incomplete_s3_setup_is_refused(
    tmp_path: Path, secrets_dir: Path, edit: tuple[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"vault.s3.{named}"):
        load(tmp_path, secrets_dir, S3.replace(*edit))
