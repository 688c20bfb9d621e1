"""Debian 13 (trixie), as README and docs/appliance.md describe it: a fresh Debian 13 booted with
systemd-nspawn (made and driven as in test_converge.py) converges as a cluster's database, Valkey
and TURN host (PostgreSQL 17, Valkey 8.1, coturn with TURN over TLS on 443 itself), a second run
changes nothing; the same host is refused, by name and before anything is installed, as an SFU
host (Debian 13 has no janus package) and as an app host (its Python is not the controller's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aioice import turn

from tests.appliance.test_converge import TURN_NAME, Node, _recap, booted_node
from tests.appliance.test_turns import _client_context, _credentials

pytestmark = pytest.mark.slow


def _groups(**members: bool) -> str:
    """Inventory YAML: tipstream-1 in the groups given True, every other group empty."""
    lines = ["  children:", "    tipstream:", "      children:"]
    for group in ("api", "sfu", "turn", "db", "kv", "workers", "moderation"):
        if members.get(group):
            lines += [f"        {group}:", "          hosts:", "            tipstream-1:"]
        else:
            lines.append(f"        {group}:")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trixie() -> Iterator[Node]:
    with booted_node("trixie", _groups(db=True, kv=True, turn=True)) as node:
        first = node.playbook("run1")
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        yield node


def test_release_is_debian_13(trixie: Node) -> None:
    release = trixie.run("cat", "/etc/debian_version").stdout
    assert release.startswith("13"), release


def test_database_valkey_and_coturn_converge_on_debian_13(trixie: Node) -> None:
    assert _recap(trixie.runs["run1"])["failed"] == 0
    for unit in ("postgresql", "valkey-server", "coturn"):
        assert trixie.run("systemctl", "is-active", unit).stdout.strip() == "active", unit
    version = trixie.run(
        "runuser", "-u", "postgres", "--", "psql", "-tAc", "SHOW server_version"
    ).stdout
    assert version.startswith("17"), version
    password = trixie.run("cat", "/etc/tipstream/secrets/valkey_password").stdout.strip()
    pong = trixie.run("valkey-cli", "--no-auth-warning", "-a", password, "ping").stdout
    assert pong.strip() == "PONG"
    anonymous = trixie.run("valkey-cli", "ping").stdout
    assert "NOAUTH" in anonymous


def test_second_run_on_debian_13_changes_nothing(trixie: Node) -> None:
    second = trixie.playbook("run2")
    assert second.returncode == 0, second.stdout[-4000:]
    assert _recap(second)["changed"] == 0, second.stdout[-4000:]


def test_turn_host_serves_turn_over_tls_on_443_itself(trixie: Node) -> None:
    # Not an api host: no nginx, coturn binds 443 with CAP_NET_BIND_SERVICE and nothing else.
    listening = trixie.run("ss", "-ltnpH").stdout
    assert any(":443 " in line and "turnserver" in line for line in listening.splitlines())
    caps = trixie.run("systemctl", "show", "-p", "CapabilityBoundingSet", "--value", "coturn")
    assert caps.stdout.strip() == "cap_net_bind_service"
    secret = trixie.run("cat", "/etc/tipstream/secrets/turn_secret").stdout.strip()
    username, password = _credentials(secret)

    async def allocate() -> str:
        transport, _ = await turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=(trixie.address, 443),
            username=username,
            password=password,
            ssl=_client_context(TURN_NAME, trixie.root / "etc/coturn/tls/turns.crt"),
            transport="tcp",
        )
        try:
            return str(transport.get_extra_info("sockname")[0])
        finally:
            transport.close()

    assert asyncio.run(allocate()) == trixie.address


@pytest.mark.parametrize(
    ("group", "reason"),
    [("sfu", "which has no janus package"), ("api", "but the wheelhouse")],
)
def test_debian_13_is_refused_where_it_cannot_work(trixie: Node, group: str, reason: str) -> None:
    trixie.inventory.write_text(
        trixie.inventory.read_text().split("  children:")[0]
        + _groups(db=True, kv=True, turn=True, **{group: True})
    )
    refused = trixie.playbook(f"refused-{group}", "--tags", "common")
    assert refused.returncode != 0
    assert reason in refused.stdout, refused.stdout[-3000:]
    assert "tipstream-1" in refused.stdout
