"""Shared helpers for the appliance tests: where the repo and the Ansible tools are."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"


def venv_tool(name: str) -> str:
    """A console script of the project's venv (ansible-playbook, ansible-lint, ...)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is missing: it comes with the dev extra (pip install -e '.[dev]', "
            "or appliance/lib/venv.sh builds the venv from requirements.lock)"
        )
    return found


def render_locally(playbook: str, extra: dict[str, object]) -> None:
    """Run one of tests/appliance/playbooks/ (a role's own tasks on this machine, into scratch
    paths given as extra vars)."""
    result = subprocess.run(
        [
            venv_tool("ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            json.dumps(extra),
            str(Path(__file__).parent / "playbooks" / playbook),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": "/root"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _which(binary: str) -> str | None:
    # root's PATH may lack /usr/sbin, where Debian puts nginx and friends.
    return shutil.which(binary, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def _apt_install(package: str) -> str:
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        capture_output=True,
        text=True,
        check=False,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return result.stderr


def apt_tool(binary: str, package: str) -> str:
    """A Debian binary the test needs, installed with apt-get when missing."""
    found = _which(binary)
    if found:
        return found
    stderr = _apt_install(package)
    found = _which(binary)
    if not found:
        pytest.fail(f"{binary} is missing and `apt-get install {package}` failed: {stderr}")
    return found


def apt_file(path: str, package: str) -> Path:
    """A file of a Debian package the test needs (not a binary), installed when missing."""
    if not Path(path).exists():
        stderr = _apt_install(package)
        if not Path(path).exists():
            pytest.fail(f"{path} is missing and `apt-get install {package}` failed: {stderr}")
    return Path(path)


def render_credentials(
    tmp: Path,
    *,
    groups: tuple[str, ...] = ("api", "workers", "moderation"),
    files: tuple[str, ...] = (),
    extra: dict[str, object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the app role's optional-secrets tasks for one host of the given groups, with the
    given files in a scratch secrets directory; the drop-ins land in tmp/'systemd'. Returns the
    run (it may fail: a missing file stops the role)."""
    secrets_dir, systemd_dir = tmp / "secrets", tmp / "systemd"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    for name in files:
        (secrets_dir / name).write_text("not-a-real-secret\n")
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "hosts": {"node": host},
            # Every group a real inventory has; the host is in the given ones.
            "children": {
                g: {"hosts": {"node": None} if g in groups else {}}
                for g in ("api", "workers", "moderation", "db", "kv", "sfu", "turn")
            },
        }
    }
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    variables = {
        "app__secrets_dir": str(secrets_dir),
        "app__systemd_dir": str(systemd_dir),
        # Its restart handler then restarts nothing on this machine.
        "app__units_to_start": [],
        **(extra or {}),
    }
    return subprocess.run(
        [
            venv_tool("ansible-playbook"),
            "-i",
            str(tmp / "inventory.json"),
            "-e",
            json.dumps(variables),
            str(Path(__file__).parent / "playbooks" / "render_credentials.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": "/root"},
    )
