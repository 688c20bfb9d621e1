"""How the services read their secrets on an installed node: as systemd credentials
($CREDENTIALS_DIRECTORY), while the shared tipstream.toml names the root-only secrets_dir that
tipctl run by root uses. The unprivileged service must start, not trip over that directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.appliance.conftest import ROOT
from tipstream.config import generate_secret

NOBODY = 65534


def _load_as_nobody(
    config: Path, credentials: Path, code_root: Path
) -> subprocess.CompletedProcess[str]:
    # The venv's interpreter lives under root's home; Debian's python3 (same 3.11 ABI) runs the
    # code as `nobody` with the venv's packages on its path.
    deps = Path(msgspec.__file__).parent.parent
    code = (
        "import json, sys; from tipstream.config import load_settings; "
        "s = load_settings(__import__('pathlib').Path(sys.argv[1])); "
        "print(json.dumps({k: getattr(s.secrets, k) for k in "
        "('session_key', 'database_password', 'valkey_password')}))"
    )
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={
            "PYTHONPATH": f"{code_root}:{deps}",
            "CREDENTIALS_DIRECTORY": str(credentials),
            "PATH": "/usr/bin:/bin",
        },
    )


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    # pytest's tmp_path sits under a 0700 directory that `nobody` cannot enter.
    path = Path(tempfile.mkdtemp(prefix="tipstream-creds-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_service_reads_credentials_and_ignores_the_root_only_secrets_dir(
    world_readable_tmp: Path,
) -> None:
    assert os.geteuid() == 0, "runs as root to build a root-only directory"
    tmp_path = world_readable_tmp
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    values = {name: generate_secret() for name in ("session_key", "database_password")}
    values["valkey_password"] = generate_secret()
    for name, value in values.items():
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o600)
    # What systemd's LoadCredential= hands the service: copies readable by the service alone.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    for name, value in values.items():
        (credentials / name).write_text(value + "\n")
    os.chown(credentials, NOBODY, NOBODY)
    for path in credentials.iterdir():
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o400)
    config = tmp_path / "tipstream.toml"
    config.write_text(f'secrets_dir = "{secrets_dir}"\n')
    config.chmod(0o644)

    # The checkout may sit in a directory `nobody` cannot enter (CI's clone, a mktemp -d):
    # give it a readable copy of the code, as an installed node has.
    code_root = tmp_path / "src"
    shutil.copytree(ROOT / "src", code_root, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [code_root, *code_root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    result = _load_as_nobody(config, credentials, code_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == values
    assert sys.version_info[:2] == (3, 11)
