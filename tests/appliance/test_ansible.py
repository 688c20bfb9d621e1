"""The playbook is clean: ansible-lint's production profile passes and both inventories pass
`ansible-playbook --syntax-check`; the inventories name every group the roles expect."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.appliance.conftest import ANSIBLE_DIR, render_credentials, venv_tool

INVENTORIES = ["single-node", "small-cluster"]
GROUPS = {"api", "sfu", "turn", "db", "kv", "workers", "moderation"}
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "ANSIBLE_NOCOLOR": "1"}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=600, check=False, env=ENV
    )


def test_ansible_lint_production_profile_passes() -> None:
    result = _run(venv_tool("ansible-lint"), "--profile", "production", "--nocolor")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_syntax_check(inventory: str) -> None:
    result = _run(
        venv_tool("ansible-playbook"),
        "-i",
        f"inventories/{inventory}",
        "site.yml",
        "--syntax-check",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_has_every_group_and_debian_python(inventory: str) -> None:
    result = _run(venv_tool("ansible-inventory"), "-i", f"inventories/{inventory}", "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["tipstream"]["children"]) == GROUPS
    for group in GROUPS:
        assert data[group]["hosts"], f"group {group} has no host"
    for host, hostvars in data["_meta"]["hostvars"].items():
        assert hostvars["ansible_python_interpreter"] == "/usr/bin/python3", host


def test_small_cluster_has_a_replica_and_private_addresses() -> None:
    result = _run(venv_tool("ansible-inventory"), "-i", "inventories/small-cluster", "--list")
    data = json.loads(result.stdout)
    assert len(data["db"]["hosts"]) >= 2
    for host, hostvars in data["_meta"]["hostvars"].items():
        assert hostvars.get("tipstream__private_address"), host


def test_no_secret_values_in_inventories_or_roles() -> None:
    # Secrets are generated on the hosts; nothing in ansible/ may carry one.
    for path in ANSIBLE_DIR.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            key = line.split(":", 1)[0].strip().lower()
            if key.endswith(("password", "secret", "session_key")) and ":" in line:
                value = line.split(":", 1)[1].strip()
                assert value in {"", "''", '""'} or "{{" in value, f"{path}: {line}"


def test_every_role_runs_from_site_yml_under_its_own_tag_with_documented_defaults() -> None:
    import yaml

    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    tagged = {
        entry["role"]: set(entry.get("tags", []))
        for play in plays
        for entry in play.get("roles", [])
    }
    roles = {path.name for path in (ANSIBLE_DIR / "roles").iterdir() if path.is_dir()}
    assert roles >= {"common", "postgres", "valkey", "janus", "coturn", "nginx", "app"}
    assert roles >= {"workers", "moderation"}
    for role in roles:
        assert role in tagged, f"{role} is not in site.yml"
        assert role in tagged[role], f"{role} has no tag of its own"
        defaults = (ANSIBLE_DIR / "roles" / role / "defaults" / "main.yml").read_text()
        # The role's interface is documented where it is declared (DebOps style).
        assert defaults.splitlines()[1].startswith(f"# {role}:"), role
    # An upgrade (--tags app) restarts every tipstream process.
    assert {"app", "workers"} <= tagged["workers"]
    assert {"app", "moderation"} <= tagged["moderation"]


def test_moderation_and_workers_hosts_get_their_roles() -> None:
    import yaml

    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    for play in plays:
        names = [entry["role"] for entry in play.get("roles", [])]
        if "moderation" in names or "workers" in names:
            assert set(play["hosts"].split(":")) == {"api", "workers", "moderation"}
            assert names.index("app") < names.index("workers") < names.index("moderation")
            # Each on its own group's hosts only (on a cluster an api host runs no worker).
            conditions = {entry["role"]: entry.get("when", "") for entry in play["roles"]}
            assert conditions["workers"] == "inventory_hostname in groups['workers']"
            assert conditions["moderation"] == "inventory_hostname in groups['moderation']"
            break
    else:
        pytest.fail("no play runs the workers and moderation roles")


CCBILL = ("ccbill_salt", "ccbill_datalink_username", "ccbill_datalink_password")
STRIPE = ("stripe_api_key", "stripe_webhook_secret")


def _credentials(dropin: Path) -> list[str]:
    lines = dropin.read_text().splitlines()
    assert "[Service]" in lines, dropin
    return [line for line in lines if line.startswith("LoadCredential")]


def _recap_changed(stdout: str) -> int:
    import re

    found = re.search(r"node\s*: ok=\d+\s+changed=(\d+)", stdout)
    assert found, stdout[-2000:]
    return int(found.group(1))


def test_enabled_processors_secrets_reach_exactly_the_units_that_use_them(tmp_path: Path) -> None:
    # An operator enabled CCBill and Stripe and put their files on the host; a Verotel key
    # and an S3 key lying around too are not handed to anyone (those features are off).
    files = (*CCBILL, *STRIPE, "verotel_signature_key", "vault_s3_secret_key")
    run = render_credentials(
        tmp_path, files=files, extra={"app__payment_processors": ["ccbill", "stripe"]}
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    expected = [f"LoadCredential={n}:{tmp_path}/secrets/{n}" for n in (*CCBILL, *STRIPE)]
    systemd = tmp_path / "systemd"
    assert _credentials(systemd / "tipstream-api.service.d/credentials.conf") == expected
    assert _credentials(systemd / "tipstream-worker.service.d/credentials.conf") == expected
    # The moderator worker takes no payments.
    assert _credentials(systemd / "tipstream-moderator.service.d/credentials.conf") == []
    for name in files[: len(CCBILL) + len(STRIPE)]:
        assert (tmp_path / "secrets" / name).stat().st_mode & 0o777 == 0o600
    # Idempotent: a second run changes nothing.
    again = render_credentials(
        tmp_path, files=(), extra={"app__payment_processors": ["ccbill", "stripe"]}
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert _recap_changed(again.stdout) == 0, again.stdout[-3000:]
    # Turning Stripe off takes its credentials away again.
    fewer = render_credentials(tmp_path, extra={"app__payment_processors": ["ccbill"]})
    assert fewer.returncode == 0, fewer.stdout[-3000:]
    assert _credentials(systemd / "tipstream-api.service.d/credentials.conf") == expected[:3]


def test_s3_vault_key_reaches_every_unit_and_only_this_hosts_units_get_dropins(
    tmp_path: Path,
) -> None:
    run = render_credentials(
        tmp_path,
        groups=("workers", "moderation"),
        files=("vault_s3_secret_key",),
        extra={"app__vault_backend": "s3", "app__backup_recipients": ["age1" + "q" * 58]},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = f"LoadCredential=vault_s3_secret_key:{tmp_path}/secrets/vault_s3_secret_key"
    systemd = tmp_path / "systemd"
    assert _credentials(systemd / "tipstream-worker.service.d/credentials.conf") == [line]
    assert _credentials(systemd / "tipstream-moderator.service.d/credentials.conf") == [line]
    # No api on this host: no api drop-in, and no backups (they run on the first api host).
    assert not (systemd / "tipstream-api.service.d").exists()
    assert not (systemd / "tipstream-backup.service.d").exists()


def test_a_missing_secret_file_stops_the_role_naming_it(tmp_path: Path) -> None:
    run = render_credentials(
        tmp_path,
        files=("stripe_api_key",),
        extra={"app__payment_processors": ["stripe"], "app__vault_backend": "s3"},
    )
    assert run.returncode != 0
    missing = f"{tmp_path}/secrets/stripe_webhook_secret, {tmp_path}/secrets/vault_s3_secret_key"
    assert missing in run.stdout, run.stdout[-3000:]
    assert f"{tmp_path}/secrets/stripe_api_key," not in run.stdout
    # Nothing written that would keep a unit from starting.
    assert not (tmp_path / "systemd").exists()


@pytest.mark.parametrize(
    "extra",
    [{"app__payment_processors": ["paypal"]}, {"app__vault_backend": "nfs"}],
    ids=["unknown-processor", "unknown-vault-backend"],
)
def test_unknown_processor_or_vault_backend_is_refused(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    run = render_credentials(tmp_path, extra=extra)
    assert run.returncode != 0
    assert "app__payment_processors may name ccbill, verotel, stripe" in run.stdout, run.stdout
    assert not (tmp_path / "systemd").exists()


def test_every_secret_file_the_app_reads_is_required_or_optional_in_the_roles() -> None:
    import yaml

    from tipstream.config import SECRET_FILES

    defaults = yaml.safe_load((ANSIBLE_DIR / "roles/app/defaults/main.yml").read_text())
    optional = {n for names in defaults["app__processor_secrets"].values() for n in names}
    optional.add("vault_s3_secret_key")
    # The rest come from the secrets role or tipctl keys init, and are in the units themselves.
    in_units = set()
    for unit in ("tipstream-api", "tipstream-worker", "tipstream-moderator"):
        text = (ANSIBLE_DIR.parent / "systemd" / f"{unit}.service").read_text()
        in_units |= {
            line.split("=", 1)[1].split(":", 1)[0]
            for line in text.splitlines()
            if line.startswith("LoadCredential=")
        }
    assert set(SECRET_FILES.values()) == optional | in_units
