"""The hardened units: `systemd-analyze verify` passes and `systemd-analyze security` rates each
unit OK or better (exposure below 4.0), with the hardening the issue names present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.appliance.conftest import ROOT, apt_tool, render_credentials
from tests.appliance.test_ansible import CCBILL, STRIPE

UNITS = sorted((ROOT / "systemd").glob("*.service"))


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unit_root(tmp_path_factory.mktemp("unit-root"))


# Nightly backups on in both: the backup unit copies the vault's objects (from S3 when on).
BACKUPS = {"app__backup_recipients": ["age1" + "q" * 58]}
FEATURES = {
    "ccbill-stripe-s3": {
        "app__payment_processors": ["ccbill", "stripe"],
        "app__vault_backend": "s3",
        **BACKUPS,
    },
    # No optional feature: drop-ins without a credential line.
    "defaults": BACKUPS,
}


@pytest.fixture(scope="module", params=sorted(FEATURES))
def unit_root_with_optional_secrets(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The same root with the credentials drop-ins the app role writes on a single node with
    the features of FEATURES[request.param] on."""
    root = _unit_root(tmp_path_factory.mktemp("unit-root-dropins"))
    scratch = tmp_path_factory.mktemp("render")
    run = render_credentials(
        scratch,
        files=(*CCBILL, *STRIPE, "vault_s3_secret_key"),
        extra=FEATURES[request.param],
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for dropin in (scratch / "systemd").glob("*.service.d/credentials.conf"):
        target = root / "etc/systemd/system" / dropin.parent.name
        target.mkdir(exist_ok=True)
        # The paths the role writes on a host (it rendered into a scratch secrets dir here).
        text = dropin.read_text().replace(f"{scratch}/secrets/", "/etc/tipstream/secrets/")
        (target / dropin.name).write_text(text)
    return root, request.param


def _unit_root(root: Path) -> Path:
    """A root with systemd's own units, the repo's units and the venv paths they start."""
    apt_tool("systemd-analyze", "systemd")
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, units / unit.name)
        exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M)
        assert exec_start, unit
        binary = root / exec_start.group(1).lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


def test_there_are_units_for_api_workers_and_moderator() -> None:
    assert {u.name for u in UNITS} >= {
        "tipstream-api.service",
        "tipstream-worker.service",
        "tipstream-moderator.service",
    }


def _analyze(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *argv], capture_output=True, text=True, check=False)


def _assert_verify_passes(root: Path, unit_name: str) -> None:
    result = _analyze("verify", f"--root={root}", f"/etc/systemd/system/{unit_name}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def _assert_rates_ok_or_better(root: Path, unit_name: str) -> None:
    # --threshold is in tenths: exposure above 3.9 ("MEDIUM" starts at 4.0) fails.
    result = _analyze(
        "security", "--offline=true", f"--root={root}", "--threshold=39", "--no-pager", unit_name
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    level = re.search(rf"Overall exposure level for {unit_name}: ([\d.]+) (\w+)", result.stdout)
    assert level, result.stdout[-2000:]
    assert float(level.group(1)) < 4.0
    assert level.group(2) in {"OK", "SAFE"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_verify_passes(unit: Path, unit_root: Path) -> None:
    _assert_verify_passes(unit_root, unit.name)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_security_rates_ok_or_better(unit: Path, unit_root: Path) -> None:
    _assert_rates_ok_or_better(unit_root, unit.name)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_hardening_line_is_commented(unit: Path) -> None:
    lines = unit.read_text().splitlines()
    service = lines[lines.index("[Service]") + 1 : lines.index("[Install]")]
    hardening = ("Protect", "Private", "Restrict", "NoNewPrivileges", "Capability", "SystemCall")
    for index, line in enumerate(service):
        if line.startswith(hardening):
            above = [entry for entry in service[:index] if entry.strip()]
            # The nearest comment above explains it (a block of related lines shares one).
            assert any(e.startswith("#") for e in above[-6:]), line
    for required in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "User=tipstream",
    ):
        assert required in lines, f"{unit.name} lacks {required}"
    assert any(line.startswith("RestrictAddressFamilies=") for line in lines)
    assert "LoadCredential=session_key:/etc/tipstream/secrets/session_key" in lines


@pytest.mark.parametrize("with_port_dropin", [False, True], ids=["turn", "turns-on-443"])
def test_coturn_dropins_rate_ok_and_grant_only_the_port_capability(
    tmp_path: Path, with_port_dropin: bool
) -> None:
    # Debian's own coturn.service with the roles' drop-ins; turns-port.conf must come after
    # tipstream.conf (name order) to add CAP_NET_BIND_SERVICE to its empty set.
    apt_tool("turnserver", "coturn")
    units = tmp_path / "etc/systemd/system"
    (units / "coturn.service.d").mkdir(parents=True)
    shutil.copy("/lib/systemd/system/coturn.service", units)
    dropins = ["tipstream.conf"] + (["turns-port.conf"] if with_port_dropin else [])
    for name in dropins:
        shutil.copy(ROOT / "systemd/coturn.service.d" / name, units / "coturn.service.d")
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy("/usr/bin/turnserver", tmp_path / "usr/bin")
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={tmp_path}",
            "--no-pager",
            "--threshold=39",
            "coturn.service",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert re.search(r"Overall exposure level for coturn.service: [\d.]+ (OK|SAFE)", result.stdout)
    bind = re.search(r"([✓✗]) CapabilityBoundingSet=~CAP_NET_\(BIND_SERVICE", result.stdout)
    assert bind, result.stdout[-3000:]
    assert bind.group(1) == ("✗" if with_port_dropin else "✓")
    admin = re.search(r"([✓✗]) CapabilityBoundingSet=~CAP_SYS_ADMIN", result.stdout)
    assert admin and admin.group(1) == "✓"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_with_optional_secrets_dropins_verify_rate_ok_and_get_them(
    unit: Path, unit_root_with_optional_secrets: tuple[Path, str]
) -> None:
    root, features = unit_root_with_optional_secrets
    # The role writes one for each tipstream unit of the host, whatever is on.
    assert (root / "etc/systemd/system" / f"{unit.name}.d/credentials.conf").is_file()
    _assert_verify_passes(root, unit.name)
    _assert_rates_ok_or_better(root, unit.name)
    # What systemd reads for the unit (the unit and the drop-ins it finds): the unit's own
    # credentials plus exactly those of the features that are on.
    cat = _analyze("cat-config", f"--root={root}", f"systemd/system/{unit.name}")
    assert cat.returncode == 0, cat.stderr
    loaded, own = _credential_ids(cat.stdout), _credential_ids(unit.read_text())
    optional = {
        "tipstream-api.service": [*CCBILL, *STRIPE, "vault_s3_secret_key"],
        "tipstream-worker.service": [*CCBILL, *STRIPE, "vault_s3_secret_key"],
        "tipstream-moderator.service": ["vault_s3_secret_key"],
        "tipstream-backup.service": ["vault_s3_secret_key"],
    }[unit.name]
    assert loaded == own + (optional if features != "defaults" else [])


def _credential_ids(unit_text: str) -> list[str]:
    return [
        line.split("=", 1)[1].split(":", 1)[0]
        for line in unit_text.splitlines()
        if line.startswith("LoadCredential=")
    ]
