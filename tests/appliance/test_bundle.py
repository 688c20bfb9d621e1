"""The offline bundle: `appliance/bundle` writes one archive (with a checksum) from which a
controller without internet installs Ansible and checks the playbook, and from which Debian 12's
own Python installs tipstream with no index at all (the hosts' path)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.appliance.conftest import ROOT

pytestmark = pytest.mark.slow

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NAME = f"tipstream-{VERSION}-offline"
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root"}


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env=CLEAN_ENV,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    result = _run(ROOT / "appliance" / "bundle", "--output", out)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    archive = out / f"{NAME}.tar.gz"
    checksum = (out / f"{NAME}.tar.gz.sha256").read_text().split()[0]
    assert checksum == hashlib.sha256(archive.read_bytes()).hexdigest()
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked / NAME


def test_bundle_holds_the_playbook_templates_and_wheels(bundle: Path) -> None:
    for path in (
        "ansible/site.yml",
        "ansible/inventories/single-node/hosts.yml",
        "ansible/inventories/small-cluster/hosts.yml",
        "ansible/roles/app/defaults/main.yml",
        "systemd/tipstream-api.service",
        "nginx/tipstream-site.conf.j2",
        "appliance/janus/janus.jcfg.j2",
        "appliance/coturn/turnserver.conf.j2",
        "pyproject.toml",
        "requirements.lock",
        "INSTALL.md",
        f"dist/tipstream-{VERSION}-wheelhouse.tar",
    ):
        assert (bundle / path).exists(), path
    with tarfile.open(bundle / f"dist/tipstream-{VERSION}-wheelhouse.tar") as tar:
        assert f"./tipstream-{VERSION}-py3-none-any.whl" in tar.getnames()
    assert any((bundle / "controller-wheels").glob("ansible-*.whl"))
    assert any((bundle / "controller-wheels").glob("ansible_core-*.whl"))


def test_hosts_install_tipstream_from_the_bundle_without_an_index(
    bundle: Path, tmp_path: Path
) -> None:
    # Debian 12's own interpreter (3.11.2), as on the hosts: markers differ from the
    # controller's Python (redis needs async-timeout below 3.11.3).
    wheels = tmp_path / "wheels"
    with tarfile.open(bundle / f"dist/tipstream-{VERSION}-wheelhouse.tar") as tar:
        tar.extractall(wheels, filter="data")
    venv = tmp_path / "venv"
    assert _run("/usr/bin/python3", "-m", "venv", venv).returncode == 0
    install = _run(
        venv / "bin/pip",
        "install",
        "--no-index",
        "--no-cache-dir",
        f"--find-links={wheels}",
        f"tipstream=={VERSION}",
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert _run(venv / "bin/tipctl", "--help").returncode == 0


def test_controller_installs_ansible_offline_and_checks_the_playbook(
    bundle: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "controller"
    assert _run("/usr/bin/python3", "-m", "venv", venv).returncode == 0
    install = _run(
        venv / "bin/pip",
        "install",
        "--no-index",
        "--no-cache-dir",
        f"--find-links={bundle}/controller-wheels",
        "ansible",
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    for inventory in ("single-node", "small-cluster"):
        check = _run(
            venv / "bin/ansible-playbook",
            "-i",
            f"inventories/{inventory}",
            "site.yml",
            "--syntax-check",
            cwd=bundle / "ansible",
        )
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
