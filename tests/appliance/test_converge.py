"""A real converge: the playbook installs a single node on a fresh Debian 12 booted with systemd
(systemd-nspawn), a second run changes nothing, --check --diff changes nothing, the node answers
through nginx over TLS (readyz, register, login), the units run sandboxed under real systemd,
and an upgrade with --tags app migrates before it restarts.

The container has its own network namespace (a veth pair with 198.18.0.0/15 addresses); its one
way out is tests/appliance/aptproxy.py on the host side, which forwards to the Debian mirror
only. Ansible drives it with the community.docker.nsenter connection (from the `ansible`
package), under `env -i` because that connection leaks the controller's environment.
The debootstrapped base root is cached in /var/cache/tipstream-appliance (about 75 s, 340 MB).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aioice import turn

from tests.appliance.conftest import ANSIBLE_DIR, ROOT, apt_tool, venv_tool

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("TIPSTREAM_APPLIANCE_CACHE", "/var/cache/tipstream-appliance"))
BASE_PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,sudo"
MIRROR = "http://deb.debian.org/debian"
DOMAIN = "tipstream.test"
# TURN over TLS shares 443 with the site on this single node (nginx's split by server name).
TURN_NAME = "turn.tipstream.test"
# One operator hash list for the moderator worker (format: docs/moderation.md).
HASH_LIST = (
    "# converge test list\n"
    + "c847e28c9d20556d6073a4f0333fb2cc1dacd35684f52b75153291db09ef73ca  test\n"
)
SERVICES = (
    "postgresql",
    "redis-server",
    "janus",
    "coturn",
    "nginx",
    "tipstream-api",
    "tipstream-worker",
    "tipstream-moderator",
)
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "ANSIBLE_NOCOLOR": "1"}


def _sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kw)  # type: ignore[call-overload]


def _base_root(suite: str = "bookworm") -> Path:
    base = CACHE / f"{suite}-base"
    if (base / "usr/bin/python3").exists():
        return base
    apt_tool("debootstrap", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f"{suite}-base.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _sh(
        "debootstrap",
        "--variant=minbase",
        f"--include={BASE_PACKAGES}",
        suite,
        str(partial),
        MIRROR,
        timeout=900,
    )
    partial.rename(base)
    return base


@dataclass
class Node:
    root: Path
    workdir: Path
    address: str
    pid: int
    inventory: Path
    runs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    # The inventory the node's own one (connection, groups) is layered on; None: only its own.
    base_inventory: str | None = "inventories/single-node"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        # A clean environment: nsenter passes ours on, and tipctl reads TIPSTREAM_* as settings.
        return _sh("nsenter", "-t", str(self.pid), "-a", "--", *argv, check=False, env=CLEAN_ENV)

    def playbook(self, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        inventories = ["-i", self.base_inventory] if self.base_inventory else []
        result = subprocess.run(
            [
                venv_tool("ansible-playbook"),
                *inventories,
                "-i",
                str(self.inventory),
                "site.yml",
                "-e",
                f"tipstream__domain={DOMAIN}",
                "-e",
                f"tipstream__turns_name={TURN_NAME}",
                "-e",
                json.dumps({"moderation__hash_lists_src": [str(self.workdir / "known-bad.pdq")]}),
                # Build this checkout's wheelhouse in the scratch directory, not in dist/.
                "-e",
                f"app__controller_wheelhouse={self.workdir}/wheelhouse",
                "-e",
                f"app__controller_wheelhouse_tar={self.workdir}/wheelhouse.tar",
                *extra,
            ],
            cwd=ANSIBLE_DIR,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env=CLEAN_ENV,
        )
        (self.workdir / f"{name}.log").write_text(result.stdout + result.stderr)
        self.runs[name] = result
        return result


def _recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"tipstream-1\s*:\s*(.+)", result.stdout.split("PLAY RECAP")[-1])
    assert match, result.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _container_pid(nspawn: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = _sh("ps", "--ppid", str(nspawn.pid), "-o", "pid=", check=False).stdout.split()
        if children:
            pid = int(children[0])
            state = _sh(
                "nsenter", "-t", str(pid), "-a", "--", "systemctl", "is-system-running", check=False
            ).stdout.strip()
            if state in {"running", "degraded"}:
                return pid
        if nspawn.poll() is not None:
            pytest.fail(f"systemd-nspawn exited with {nspawn.returncode}")
        time.sleep(0.5)
    pytest.fail("the container's systemd did not finish booting in 60 s")


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with booted_node() as booted:
        yield booted


@contextmanager
def booted_node(suite: str = "bookworm", groups: str = "") -> Iterator[Node]:
    """A fresh Debian `suite` booted with systemd in its own network namespace, as host
    tipstream-1; `groups` (inventory YAML under all:) replaces the single-node layout."""
    if os.geteuid() != 0:
        pytest.fail("the converge test needs root (debootstrap, network namespaces, nspawn)")
    apt_tool("systemd-nspawn", "systemd-container")
    base = _base_root(suite)
    workdir = Path(tempfile.mkdtemp(prefix="tipstream-converge-", dir="/var/tmp"))
    root = workdir / "root"
    _sh("cp", "-a", str(base), str(root))

    tag = f"{os.getpid() % 10000:04d}{random.randint(0, 99):02d}"
    netns, host_if, node_if = f"tsconv{tag}", f"tsh{tag}", f"tsc{tag}"
    subnet = random.randint(1, 254)
    host_ip, node_ip = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    proxy = nspawn = None
    try:
        _sh("ip", "netns", "add", netns)
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _sh("ip", "link", "set", node_if, "netns", netns)
        _sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        for cmd in (
            ["ip", "addr", "add", f"{node_ip}/30", "dev", node_if],
            ["ip", "link", "set", node_if, "up"],
            ["ip", "link", "set", "lo", "up"],
            ["ip", "route", "add", "default", "via", host_ip],
        ):
            _sh("ip", "netns", "exec", netns, *cmd)

        (root / "etc/hostname").write_text("tipstream-1\n")
        # The site's name resolves to the node, as DNS would: the app checks its TURN URLs.
        (root / "etc/hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 tipstream-1\n{node_ip} {DOMAIN} {TURN_NAME}\n"
        )
        (root / "etc/resolv.conf").write_text(f"nameserver {host_ip}\n")
        (root / "etc/apt/apt.conf.d/01proxy").write_text(
            f'Acquire::http::Proxy "http://{host_ip}:3128";\nAcquire::http::Pipeline-Depth "0";\n'
        )
        for extra_ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(extra_ca, root / "usr/local/share/ca-certificates" / extra_ca.name)
        _sh("chroot", str(root), "update-ca-certificates")

        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.appliance.aptproxy", host_ip, "3128", "deb.debian.org"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "proxy.log").open("w"),
        )
        nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                f"--directory={root}",
                "--register=no",
                "--keep-unit",
                f"--network-namespace-path=/run/netns/{netns}",
                "--machine=tipstream-1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=(workdir / "console.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        pid = _container_pid(nspawn)
        inventory = workdir / "node.yml"
        inventory.write_text(
            "all:\n  hosts:\n    tipstream-1:\n"
            "      ansible_connection: community.docker.nsenter\n"
            f"      ansible_nsenter_pid: {pid}\n"
            "      ansible_python_interpreter: /usr/bin/python3\n" + groups
        )
        (workdir / "known-bad.pdq").write_text(HASH_LIST)
        yield Node(
            root=root,
            workdir=workdir,
            address=node_ip,
            pid=pid,
            inventory=inventory,
            base_inventory=None if groups else "inventories/single-node",
        )
    finally:
        if nspawn is not None and nspawn.poll() is None:
            # SIGTERM asks nspawn to shut the container down cleanly.
            nspawn.send_signal(signal.SIGTERM)
            try:
                nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait()
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        _sh("ip", "link", "del", host_if, check=False)
        _sh("ip", "netns", "del", netns, check=False)
        if os.environ.get("TIPSTREAM_KEEP_CONVERGE"):
            print(f"converge root kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def converged(node: Node) -> Node:
    first = node.playbook("run1")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    return node


def test_first_run_installs_everything(converged: Node) -> None:
    recap = _recap(converged.runs["run1"])
    assert recap["failed"] == 0
    assert recap["changed"] > 10
    for unit in SERVICES:
        assert converged.run("systemctl", "is-active", unit).stdout.strip() == "active", unit
    doctor = converged.run("/opt/tipstream/venv/bin/tipctl", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_second_run_changes_nothing(converged: Node) -> None:
    second = converged.playbook("run2")
    assert second.returncode == 0, second.stdout[-4000:]
    recap = _recap(second)
    changed = re.findall(r"^changed: .*$|^TASK \[(.+)\]", second.stdout, re.M)
    assert recap["changed"] == 0, changed
    assert recap["failed"] == 0


def test_check_diff_run_changes_nothing(converged: Node) -> None:
    check = converged.playbook("check", "--check", "--diff")
    assert check.returncode == 0, check.stdout[-4000:]
    assert _recap(check)["changed"] == 0


def test_served_through_nginx_over_tls(converged: Node) -> None:
    base = f"https://{converged.address}"
    with httpx.Client(verify=False, timeout=15, headers={"Host": DOMAIN}) as client:
        plain = httpx.get(f"http://{converged.address}/readyz", timeout=15)
        assert plain.status_code == 301
        ready = client.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": "ok", "valkey": "ok"}
        assert ready.headers["strict-transport-security"].startswith("max-age=")
        body = {
            "email": "smoke@example.com",
            "password": "correct horse battery staple 42",
            "date_of_birth": "1990-01-01",
            "display_name": "Smoke",
        }
        assert client.post(f"{base}/api/auth/register", json=body).status_code == 201
        login = client.post(
            f"{base}/api/auth/login", json={"email": body["email"], "password": body["password"]}
        )
        assert login.status_code == 200, login.text
        assert "secure" in login.headers["set-cookie"].lower()
        me = client.get(f"{base}/api/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["email"] == body["email"]
        assert client.get(f"{base}/metrics").status_code == 403


def test_units_are_sandboxed_under_real_systemd(converged: Node) -> None:
    # Ours, and Debian's Janus and coturn with the roles' drop-ins.
    for unit in (
        "tipstream-api.service",
        "tipstream-worker.service",
        "tipstream-moderator.service",
        "janus.service",
        "coturn.service",
    ):
        result = converged.run("systemd-analyze", "security", "--no-pager", unit)
        level = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
        assert level, result.stdout[-2000:]
        assert level.group(2) in {"OK", "SAFE"}, level.group(0)
        restarts = converged.run("systemctl", "show", "-p", "NRestarts", "--value", unit)
        assert restarts.stdout.strip() == "0", f"{unit} keeps crashing"
    verify = _sh(
        "systemd-analyze",
        "verify",
        f"--root={converged.root}",
        "/etc/systemd/system/tipstream-api.service",
        "/etc/systemd/system/tipstream-worker.service",
        "/etc/systemd/system/tipstream-moderator.service",
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_secrets_are_generated_on_the_host_and_private(converged: Node) -> None:
    listing = converged.run("stat", "-c", "%a %U %G %n", "/etc/tipstream/secrets").stdout
    assert listing.startswith("700 root root")
    names = (
        "session_key",
        "database_password",
        "valkey_password",
        "replication_password",
        "janus_api_secret",
        "janus_admin_secret",
        "janus_admin_key",
        "turn_secret",
        "vault_keys",
        "kyc_index_key",
    )
    for name in names:
        info = converged.run("stat", "-c", "%a %U", f"/etc/tipstream/secrets/{name}").stdout
        assert info.split() == ["600", "root"], name
        value = converged.run("cat", f"/etc/tipstream/secrets/{name}").stdout.strip()
        assert len(value) >= 44
        for run in converged.runs.values():
            assert value not in run.stdout + run.stderr, f"{name} leaked into Ansible's output"
    config = converged.run("stat", "-c", "%a %U %G", "/etc/tipstream/tipstream.toml").stdout
    assert config.split() == ["640", "root", "tipstream"]
    # The vault directory belongs to the service user alone.
    vault = converged.run("stat", "-c", "%a %U", "/var/lib/tipstream/vault").stdout
    assert vault.split() == ["700", "tipstream"]


JANUS_PROBE = """
import asyncio, json, sys
from websockets.asyncio.client import connect
async def ask(extra):
    async with connect("ws://127.0.0.1:8188", subprotocols=["janus-protocol"]) as ws:
        await ws.send(json.dumps({"janus": "create", "transaction": "t", **extra}))
        return json.loads(await ws.recv())["janus"]
secret = open("/etc/tipstream/secrets/janus_api_secret").read().strip()
print(asyncio.run(ask({"apisecret": secret})), asyncio.run(ask({})))
"""


def test_janus_serves_the_app_with_the_generated_api_secret_only(converged: Node) -> None:
    # Run with the app's venv (its websockets), as root on the node: the app's side of it.
    result = converged.run("/opt/tipstream/venv/bin/python", "-c", JANUS_PROBE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["success", "error"]
    listening = converged.run("ss", "-ltnH").stdout
    assert "127.0.0.1:8188" in listening
    assert "0.0.0.0:8188" not in listening and "*:8188" not in listening


async def test_turn_relays_for_credentials_signed_with_the_turn_secret(converged: Node) -> None:
    import base64
    import hashlib
    import hmac

    secret = converged.run("cat", "/etc/tipstream/secrets/turn_secret").stdout.strip()
    # The TURN REST API scheme the app uses: "expiry:user", HMAC-SHA1 of it, base64.
    username = f"{int(time.time()) + 600}:converge"
    password = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=(converged.address, 3478),
        username=username,
        password=password,
    )
    try:
        relayed_host, relayed_port = transport.get_extra_info("sockname")[:2]
        assert relayed_host == converged.address
        assert 49152 <= relayed_port <= 65535
    finally:
        transport.close()
    with pytest.raises(Exception, match="401"):
        await turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=(converged.address, 3478),
            username=username,
            password="not-the-signature",
        )


def test_moderator_worker_runs_with_the_operators_hash_list(converged: Node) -> None:
    environment = converged.run(
        "systemctl", "show", "-p", "Environment", "--value", "tipstream-moderator"
    ).stdout
    assert "TIPSTREAM_MODERATION__HASH_LISTS=['/etc/tipstream/hash-lists/known-bad.pdq']" in (
        environment
    )
    listing = converged.run("stat", "-c", "%a %U %G", "/etc/tipstream/hash-lists/known-bad.pdq")
    assert listing.stdout.split() == ["640", "root", "tipstream"]
    metrics = converged.run(
        "/opt/tipstream/venv/bin/python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/').read())",
    )
    assert "tipstream_moderator_frames_total" in metrics.stdout, metrics.stderr[-2000:]


PERFORMER = "performer@example.com"
VIEWER = "viewer@example.com"
PASSWORD = "correct horse battery staple 43"
UNIT_CREDENTIALS = ("session_key", "database_password", "valkey_password", "vault_keys")


def _verified_performer(node: Node) -> None:
    """A performer whose identity is verified as a real one is (demo_kyc.py: a submission with
    document images, then an approval), run as the service user with the units' credentials so
    the vault stays the service user's."""
    (node.root / "var/tmp/performer-password").write_text(PASSWORD + "\n")
    created = node.run(
        "/opt/tipstream/venv/bin/tipctl",
        "user",
        "create",
        PERFORMER,
        "--role",
        "performer",
        "--display-name",
        "Converge Performer",
        "--date-of-birth",
        "1990-01-01",
        "--password-file",
        "/var/tmp/performer-password",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    shutil.copy(ROOT / "appliance/lib/demo_kyc.py", node.root / "var/tmp/demo_kyc.py")
    credentials = [
        f"--property=LoadCredential={name}:/etc/tipstream/secrets/{name}"
        for name in (*UNIT_CREDENTIALS, "kyc_index_key")
    ]
    verified = node.run(
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--property=User=tipstream",
        "--property=Group=tipstream",
        "--setenv=TIPSTREAM_CONFIG=/etc/tipstream/tipstream.toml",
        *credentials,
        "/opt/tipstream/venv/bin/python",
        "/var/tmp/demo_kyc.py",
        PERFORMER,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _sign_in(client: httpx.Client, base: str, email: str) -> str:
    login = client.post(f"{base}/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["csrf_token"])


async def _welcome(node: Node, stream_id: int, cookies: httpx.Cookies) -> dict[str, object]:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with connect(
        f"wss://{node.address}/ws/rooms/{stream_id}",
        ssl=context,
        origin=Origin(f"https://{DOMAIN}"),
        additional_headers={"Cookie": cookie},
    ) as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert message["type"] != "error", message
            if message["type"] == "welcome":
                return dict(message)


async def test_room_join_hands_out_turn_credentials_that_relay(converged: Node) -> None:
    from tests.appliance.test_turns import _client_context

    _verified_performer(converged)
    base = f"https://{converged.address}"
    with httpx.Client(verify=False, timeout=20, headers={"Host": DOMAIN}) as performer:
        csrf = _sign_in(performer, base, PERFORMER)
        headers = {"x-csrf-token": csrf}
        created = performer.post(f"{base}/api/streams", json={"title": "Converge"}, headers=headers)
        assert created.status_code == 201, created.text
        stream_id = int(created.json()["id"])
        live = performer.post(f"{base}/api/streams/{stream_id}/live", headers=headers)
        assert live.status_code == 200, live.text
    with httpx.Client(verify=False, timeout=20, headers={"Host": DOMAIN}) as viewer:
        body = {
            "email": VIEWER,
            "password": PASSWORD,
            "date_of_birth": "1990-01-01",
            "display_name": "Converge Viewer",
        }
        assert viewer.post(f"{base}/api/auth/register", json=body).status_code == 201
        _sign_in(viewer, base, VIEWER)
        welcome = await _welcome(converged, stream_id, viewer.cookies)

    servers = welcome["ice_servers"]
    assert isinstance(servers, list)
    relays = [s for s in servers if s.get("username")]
    assert len(relays) == 1
    relay = relays[0]
    assert f"turn:{DOMAIN}:3478?transport=udp" in relay["urls"]
    assert f"turns:{TURN_NAME}:443?transport=tcp" in relay["urls"]
    # Both names resolve to the node; the credential the app signed works on both paths.
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=(converged.address, 3478),
        username=relay["username"],
        password=relay["credential"],
    )
    transport.close()
    # TURN over TLS through 443, which nginx shares with the site: coturn's own (self-signed)
    # certificate for the TURN name answers there.
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=(converged.address, 443),
        username=relay["username"],
        password=relay["credential"],
        ssl=_client_context(TURN_NAME, converged.root / "etc/coturn/tls/turns.crt"),
        transport="tcp",
    )
    try:
        assert transport.get_extra_info("sockname")[0] == converged.address
    finally:
        transport.close()
    # The moderator worker polls the live rooms meanwhile; nothing it does may fail.
    time.sleep(3)
    journal = converged.run("journalctl", "-u", "tipstream-moderator", "--no-pager").stdout
    for failure in ("Traceback", "moderator_sync_failed", "room_watch_failed"):
        assert failure not in journal, journal[-3000:]


def test_upgrade_with_tags_app_migrates_before_restarting(converged: Node) -> None:
    upgrade = converged.playbook("upgrade", "--tags", "app", "-e", "app__force_reinstall=true")
    assert upgrade.returncode == 0, upgrade.stdout[-4000:]
    out = upgrade.stdout
    migrate = out.index("TASK [app : Apply database migrations before the services (re)start]")
    restart = out.index("RUNNING HANDLER [app : Restart tipstream]")
    doctor = out.index("TASK [app : Check the node with tipctl doctor]")
    assert migrate < restart < doctor
    # The workers and the moderator worker restart on the new code too, after the migrations.
    for task in (
        "TASK [workers : Run the workers, now and at boot]",
        "TASK [moderation : Run the moderator worker, now and at boot]",
    ):
        at = out.index(task)
        assert at > migrate
        result = re.search(r"^(changed|ok|skipping|fatal):", out[at:], re.M)
        assert result and result.group(1) == "changed", out[at : at + 300]
    assert "postgres :" not in out  # only the app's tasks ran
    with httpx.Client(verify=False, timeout=15) as client:
        assert client.get(f"https://{converged.address}/readyz").status_code == 200


def test_nightly_backup_unit_archives_and_restore_verifies_on_the_node(converged: Node) -> None:
    import json

    # The operator's key pair is made off the box; only the public key goes into the inventory.
    identity = converged.workdir / "backup-identity.txt"
    keygen = subprocess.run(
        [venv_tool("tipctl"), "backup", "keygen", "--output", str(identity)],
        capture_output=True,
        text=True,
        check=False,
        env=CLEAN_ENV,
    )
    assert keygen.returncode == 0, keygen.stderr
    recipient = next(w for w in keygen.stdout.split() if w.startswith("age1"))
    run = converged.playbook(
        "backup", "--tags", "app", "-e", json.dumps({"app__backup_recipients": [recipient]})
    )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "AGE-SECRET-KEY" not in run.stdout + run.stderr
    timer = converged.run("systemctl", "is-active", "tipstream-backup.timer")
    assert timer.stdout.strip() == "active", timer.stdout + timer.stderr

    # What the timer starts, under the unit's real sandbox (a oneshot: start waits for it).
    started = converged.run("systemctl", "start", "tipstream-backup.service")
    journal = converged.run("journalctl", "-u", "tipstream-backup", "--no-pager").stdout
    assert started.returncode == 0, started.stderr + journal[-3000:]
    [archive] = (converged.root / "var/backups/tipstream").glob("*.tar.age")
    owner = converged.run("stat", "-c", "%U %a", f"/var/backups/tipstream/{archive.name}")
    assert owner.stdout.split() == ["tipstream", "600"]
    verify = subprocess.run(
        [venv_tool("tipctl"), "backup", "verify", str(archive), "-i", str(identity), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=CLEAN_ENV,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    manifest = json.loads(verify.stdout)["manifest"]
    assert manifest["database"]["name"] == "tipstream"
    assert {"database.dump", "secrets/vault_keys"} <= {f["path"] for f in manifest["files"]}

    # Restore on the node itself, as the tipstream role the playbook made: refused while it holds
    # data, then --force with the services stopped; the checks are green and the API serves.
    shutil.copy(identity, converged.root / "root/backup-identity.txt")
    tipctl = "/opt/tipstream/venv/bin/tipctl"
    restore = [tipctl, "restore", f"/var/backups/tipstream/{archive.name}"]
    restore += ["--identity", "/root/backup-identity.txt", "--yes"]
    refused = converged.run(*restore)
    assert refused.returncode == 2 and "holds data" in refused.stderr, refused.stderr
    units = ("tipstream-api", "tipstream-worker", "tipstream-moderator")
    converged.run("systemctl", "stop", *units)
    try:
        restored = converged.run(*restore, "--force")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "ok   ledger verify" in restored.stdout and "ok   audit verify" in restored.stdout
    finally:
        converged.run("systemctl", "start", *units)
    for command in (("ledger", "verify"), ("audit", "verify")):
        checked = converged.run(tipctl, *command)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    deadline = time.monotonic() + 60
    with httpx.Client(verify=False, timeout=15) as client:
        while True:
            try:
                if client.get(f"https://{converged.address}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not come back after the restore"
            time.sleep(1)
