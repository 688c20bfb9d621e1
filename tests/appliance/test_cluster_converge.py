"""The small-cluster layout on two real Debian 12 nodes: node-1 runs everything and the primaries,
node-2 a Postgres streaming standby and a Valkey replica. Both boot with systemd-nspawn, each in
its own network namespace, joined by a bridge (198.18.0.0/15 addresses); the playbook converges
them, a second run changes nothing, data written through nginx on node-1 appears on node-2.
See test_converge.py for how the nodes are made and driven."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.appliance.conftest import ANSIBLE_DIR, ROOT, apt_tool, venv_tool
from tests.appliance.test_converge import CLEAN_ENV, DOMAIN, _base_root, _container_pid, _sh

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    workdir: Path
    addresses: dict[str, str]
    pids: dict[str, int]
    inventory: Path
    runs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return _sh(
            "nsenter", "-t", str(self.pids[node]), "-a", "--", *argv, check=False, env=CLEAN_ENV
        )

    def playbook(self, name: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [venv_tool("ansible-playbook"), "-i", str(self.inventory), "site.yml"],
            cwd=ANSIBLE_DIR,
            capture_output=True,
            text=True,
            timeout=2400,
            check=False,
            env=CLEAN_ENV,
        )
        (self.workdir / f"{name}.log").write_text(result.stdout + result.stderr)
        self.runs[name] = result
        return result


def _recaps(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    recap = result.stdout.split("PLAY RECAP")[-1]
    return {
        host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
        for host, rest in re.findall(r"^(node-\d)\s*:\s*(.+)$", recap, re.M)
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster converge test needs root (network namespaces, nspawn)")
    apt_tool("systemd-nspawn", "systemd-container")
    base = _base_root()
    workdir = Path(tempfile.mkdtemp(prefix="tipstream-cluster-", dir="/var/tmp"))
    tag = f"{os.getpid() % 1000:03d}{random.randint(0, 99):02d}"
    subnet = f"198.18.{random.randint(1, 254)}"
    bridge, host_ip = f"tscb{tag}", f"{subnet}.1"
    nodes = {"node-1": f"{subnet}.2", "node-2": f"{subnet}.3"}
    procs: list[subprocess.Popen[bytes]] = []
    netnses: list[str] = []
    links = [bridge]
    try:
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{host_ip}/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.appliance.aptproxy", host_ip, "3128", "deb.debian.org"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proxy)
        pids: dict[str, int] = {}
        for index, (name, address) in enumerate(nodes.items(), start=1):
            netns, outer, inner = f"tscl{tag}{index}", f"tsco{tag}{index}", f"tsci{tag}{index}"
            _sh("ip", "netns", "add", netns)
            netnses.append(netns)
            _sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            links.append(outer)
            _sh("ip", "link", "set", inner, "netns", netns)
            _sh("ip", "link", "set", outer, "master", bridge)
            _sh("ip", "link", "set", outer, "up")
            for cmd in (
                ["ip", "addr", "add", f"{address}/24", "dev", inner],
                ["ip", "link", "set", inner, "up"],
                ["ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", "default", "via", host_ip],
            ):
                _sh("ip", "netns", "exec", netns, *cmd)
            root = workdir / name
            _sh("cp", "-a", str(base), str(root))
            (root / "etc/hostname").write_text(f"{name}\n")
            (root / "etc/hosts").write_text(
                f"127.0.0.1 localhost\n127.0.1.1 {name}\n{nodes['node-1']} {DOMAIN}\n"
            )
            (root / "etc/apt/apt.conf.d/01proxy").write_text(
                f'Acquire::http::Proxy "http://{host_ip}:3128";\n'
                'Acquire::http::Pipeline-Depth "0";\n'
            )
            nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    f"--directory={root}",
                    "--register=no",
                    "--keep-unit",
                    f"--network-namespace-path=/run/netns/{netns}",
                    f"--machine={name}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=(workdir / f"{name}.console.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            procs.append(nspawn)
            pids[name] = _container_pid(nspawn)
        inventory = workdir / "hosts.yml"
        hosts = "".join(
            f"    {name}: {{ansible_nsenter_pid: {pids[name]}, "
            f"tipstream__private_address: {address}}}\n"
            for name, address in nodes.items()
        )
        groups = "".join(
            f"        {group}: {{hosts: {{{members}}}}}\n"
            for group, members in {
                "api": "node-1: ",
                "sfu": "node-1: ",
                "turn": "node-1: ",
                "workers": "node-1: ",
                "moderation": "node-1: ",
                "db": "node-1: , node-2: ",
                "kv": "node-1: , node-2: ",
            }.items()
        )
        inventory.write_text(
            "all:\n  vars:\n    ansible_python_interpreter: /usr/bin/python3\n"
            "    ansible_connection: community.docker.nsenter\n"
            f"    tipstream__domain: {DOMAIN}\n"
            f"    app__controller_wheelhouse: {workdir}/wheelhouse\n"
            f"    app__controller_wheelhouse_tar: {workdir}/wheelhouse.tar\n"
            "  children:\n    tipstream:\n      children:\n"
            f"{groups}  hosts:\n{hosts}"
        )
        yield Cluster(workdir=workdir, addresses=nodes, pids=pids, inventory=inventory)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for link in links:
            _sh("ip", "link", "del", link, check=False)
        for netns in netnses:
            _sh("ip", "netns", "del", netns, check=False)
        if os.environ.get("TIPSTREAM_KEEP_CONVERGE"):
            print(f"cluster roots and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def converged(cluster: Cluster) -> Cluster:
    first = cluster.playbook("run1")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    return cluster


def test_cluster_converges_and_a_second_run_changes_nothing(converged: Cluster) -> None:
    assert all(r["failed"] == 0 for r in _recaps(converged.runs["run1"]).values())
    second = converged.playbook("run2")
    assert second.returncode == 0, second.stdout[-4000:]
    recaps = _recaps(second)
    assert set(recaps) == {"node-1", "node-2"}
    for host, recap in recaps.items():
        assert recap["changed"] == 0, (host, recap)


def test_postgres_standby_streams_what_the_app_writes(converged: Cluster) -> None:
    psql = ("runuser", "-u", "postgres", "--", "psql", "-Atc")
    assert converged.run("node-2", *psql, "select pg_is_in_recovery()").stdout.strip() == "t"
    receiver = converged.run(
        "node-2", *psql, "select status, sender_host from pg_stat_wal_receiver"
    )
    assert receiver.stdout.strip() == f"streaming|{converged.addresses['node-1']}"
    with httpx.Client(verify=False, timeout=15) as client:
        response = client.post(
            f"https://{converged.addresses['node-1']}/api/auth/register",
            json={
                "email": "replicated@example.com",
                "password": "correct horse battery staple 42",
                "date_of_birth": "1990-01-01",
                "display_name": "Replicated",
            },
        )
    assert response.status_code == 201, response.text
    query = "select email from users where email = 'replicated@example.com'"
    for _ in range(50):
        seen = converged.run("node-2", *psql[:-1], "-d", "tipstream", "-Atc", query).stdout
        if seen.strip():
            break
    assert seen.strip() == "replicated@example.com"


def test_valkey_replica_follows_the_primary(converged: Cluster) -> None:
    password = converged.run("node-1", "cat", "/etc/tipstream/secrets/valkey_password").stdout
    info = _sh(
        "nsenter",
        "-t",
        str(converged.pids["node-2"]),
        "-a",
        "--",
        "redis-cli",
        "info",
        "replication",
        check=False,
        env={**CLEAN_ENV, "REDISCLI_AUTH": password.strip()},
    ).stdout
    assert "role:slave" in info
    assert f"master_host:{converged.addresses['node-1']}" in info
    assert "master_link_status:up" in info


def test_replica_listens_only_on_loopback_and_its_private_address(converged: Cluster) -> None:
    listening = converged.run("node-2", "ss", "-ltnH").stdout
    for port in ("5432", "6379"):
        addresses = {
            line.split()[3].rsplit(":", 1)[0]
            for line in listening.splitlines()
            if line.split()[3].endswith(f":{port}")
        }
        assert addresses <= {"127.0.0.1", "[::1]", converged.addresses["node-2"]}, addresses
    # Secrets the replica does not use never reach it.
    assert converged.run("node-2", "ls", "/etc/tipstream/secrets").stdout.strip() == ""
