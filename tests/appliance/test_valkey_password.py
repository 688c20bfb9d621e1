"""The app authenticates to a Valkey that requires a password (the appliance sets requirepass),
reading the password from the `valkey_password` secret file, never from the config."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey.exceptions

from tipstream import kv
from tipstream.config import generate_secret, load_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def protected_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A real redis-server/valkey-server on a loopback port with requirepass set."""
    binary = shutil.which("valkey-server") or shutil.which("redis-server")
    if binary is None:
        pytest.fail("needs valkey-server or redis-server: apt-get install redis-server")
    port, password = _free_port(), generate_secret()
    workdir = tmp_path_factory.mktemp("valkey")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--requirepass",
            password,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"{binary} did not listen on 127.0.0.1:{port}")
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _settings(tmp_path: Path, port: int, password: str | None):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "session_key").write_text(generate_secret() + "\n")
    if password is not None:
        (secrets / "valkey_password").write_text(password + "\n")
    config = tmp_path / "tipstream.toml"
    config.write_text(f'secrets_dir = "{secrets}"\n[valkey]\nurl = "redis://127.0.0.1:{port}/0"\n')
    return load_settings(config, environ={})


async def test_client_uses_the_password_from_the_secret_file(
    protected_server: tuple[int, str], tmp_path: Path
) -> None:
    port, password = protected_server
    settings = _settings(tmp_path, port, password)
    assert settings.secrets.valkey_password == password
    client = kv.create_client(settings)
    try:
        assert await client.ping()
        await client.set(kv.key(settings, "appliance-test"), b"1", ex=5)
    finally:
        await client.aclose()


async def test_without_the_secret_the_server_refuses(
    protected_server: tuple[int, str], tmp_path: Path
) -> None:
    port, _ = protected_server
    client = kv.create_client(_settings(tmp_path, port, None))
    try:
        with pytest.raises(valkey.exceptions.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()
