"""The playbook is clean: ansible-lint's production profile passes and both inventories pass
`ansible-playbook --syntax-check`; the inventories name every group the roles expect."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.appliance.conftest import ANSIBLE_DIR, venv_tool

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
