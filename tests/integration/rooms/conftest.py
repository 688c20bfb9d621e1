"""Janus and coturn for the rooms tests: real Debian binaries with the repo's configs.

Janus and aiortc both skip loopback for ICE, so Janus runs in a network namespace of its own,
joined to the test's namespace by a veth pair with addresses from 198.18.0.0/15 (the
benchmarking range; no other address is ever used). Janus's WebSocket listens on its end of the
veth, its ICE candidates are restricted to that interface. coturn listens on loopback in the
test's namespace and relays from the test's end of the veth; its test config allows exactly this
veth's /30 as a relay peer (plus loopback peers), on top of the production deny list.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import connect

from tests.helpers import running_app
from tipstream.config import Settings
from tipstream.rooms import mediaservers
from tipstream.rooms.janus import SUBPROTOCOL


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class MediaNet:
    """A namespace for Janus, linked to ours by veth: host_ip here, sfu_ip there."""

    name: str
    host_if: str
    sfu_if: str
    host_ip: str
    sfu_ip: str
    cidr: str

    def exec(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    del kind
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port")


@pytest.fixture(scope="session")
def media_net() -> Iterator[MediaNet]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the media tests need root and iproute2 to make a network namespace")
    tag = uuid.uuid4().hex[:6]
    # A random /30 inside 198.18.0.0/15, so parallel runs do not collide.
    base = random.randrange(0, 2**17 // 4) * 4
    third, fourth = divmod(base, 256)
    second = 18 + third // 256
    prefix = f"198.{second}.{third % 256}"
    net = MediaNet(
        name=f"tsj{tag}",
        host_if=f"tsj{tag}h",
        sfu_if=f"tsj{tag}s",
        host_ip=f"{prefix}.{fourth + 1}",
        sfu_ip=f"{prefix}.{fourth + 2}",
        cidr=f"{prefix}.{fourth}-{prefix}.{fourth + 3}",
    )
    _run("ip", "netns", "add", net.name)
    try:
        _run("ip", "link", "add", net.host_if, "type", "veth", "peer", "name", net.sfu_if)
        _run("ip", "link", "set", net.sfu_if, "netns", net.name)
        _run("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
        _run("ip", "link", "set", net.host_if, "up")
        _run(*net.exec("ip", "addr", "add", f"{net.sfu_ip}/30", "dev", net.sfu_if))
        _run(*net.exec("ip", "link", "set", net.sfu_if, "up"))
        _run(*net.exec("ip", "link", "set", "lo", "up"))
        yield net
    finally:
        subprocess.run(["ip", "link", "del", net.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", net.name], capture_output=True, check=False)


@dataclass
class MediaSecrets:
    janus_api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    janus_admin_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    janus_admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    turn_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))


@pytest.fixture(scope="session")
def media_secrets(secrets_dir: Path) -> MediaSecrets:
    """The Janus and TURN secrets, as files in the run's secrets dir (as installs have them)."""
    values = MediaSecrets()
    for name, value in values.__dict__.items():
        path = secrets_dir / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    return values


class ManagedProcess:
    """A server we started; its output goes to a log file shown when it fails."""

    def __init__(
        self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited; its log ends:\n{self.log_tail()}")


@dataclass
class JanusServer:
    process: ManagedProcess
    ws_url: str
    admin_ws_url: str
    net: MediaNet

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.process.check_alive()
            try:
                async with connect(self.ws_url, subprotocols=[SUBPROTOCOL], open_timeout=2) as ws:
                    await ws.send('{"janus": "ping", "transaction": "ready"}')
                    reply = await asyncio.wait_for(ws.recv(), 2)
                    if "pong" in str(reply):
                        return
            except (OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
        pytest.fail(f"Janus not ready at {self.ws_url} ({last}); log:\n{self.process.log_tail()}")

    async def restart(self) -> None:
        self.process.stop()
        self.process.start()
        await self.wait_ready()


@pytest.fixture(scope="session")
async def janus_server(
    media_net: MediaNet, media_secrets: MediaSecrets, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JanusServer]:
    if shutil.which("janus") is None:
        pytest.fail("janus is not installed: apt-get install janus (appliance/lib does it)")
    workdir = tmp_path_factory.mktemp("janus")
    mediaservers.render_janus(
        mediaservers.JanusConfig(
            api_secret=media_secrets.janus_api_secret,
            admin_secret=media_secrets.janus_admin_secret,
            admin_key=media_secrets.janus_admin_key,
            ws_ip=media_net.sfu_ip,
            rtp_port_range="20000-21999",
            ice_enforce_list=media_net.sfu_if,
            debug_level=4,
        ),
        workdir / "etc",
    )
    command = media_net.exec(*mediaservers.janus_command(workdir / "etc"))
    process = ManagedProcess("janus", command, workdir / "janus.log")
    server = JanusServer(
        process, f"ws://{media_net.sfu_ip}:8188", f"ws://{media_net.sfu_ip}:7188", media_net
    )
    process.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        process.stop()


def stun_binding_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send a STUN Binding request; True when a Binding success response comes back."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, (host, port))
        try:
            reply, _ = sock.recvfrom(2048)
        except TimeoutError:
            return False
    return len(reply) >= 20 and reply[:2] == b"\x01\x01" and reply[8:20] == transaction


@dataclass
class TurnServer:
    process: ManagedProcess
    host: str
    port: int
    relay_ip: str

    @property
    def urls(self) -> list[str]:
        return [f"stun:{self.host}:{self.port}", f"turn:{self.host}:{self.port}?transport=udp"]


@pytest.fixture(scope="session")
def turn_server(
    media_net: MediaNet, media_secrets: MediaSecrets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TurnServer]:
    if shutil.which("turnserver") is None:
        pytest.fail("coturn is not installed: apt-get install coturn (appliance/lib does it)")
    workdir = tmp_path_factory.mktemp("coturn")
    port = _free_port()
    conf = mediaservers.render_coturn(
        mediaservers.CoturnConfig(
            secret=media_secrets.turn_secret,
            listening_ip="127.0.0.1",
            listening_port=port,
            relay_ip=media_net.host_ip,
            min_port=40000,
            max_port=40999,
            pid_file=str(workdir / "turnserver.pid"),
            log_file=str(workdir / "turn.log"),
            # Test only: Janus's end of the veth, and loopback, may be relayed to.
            allowed_peer_ips=[media_net.cidr],
            allow_loopback_peers=True,
        ),
        workdir / "turnserver.conf",
    )
    process = ManagedProcess(
        "coturn", mediaservers.coturn_command(conf), workdir / "turn-stdout.log"
    )
    process.log_path = workdir / "turn.log"
    process.start()
    try:
        deadline = time.monotonic() + 15
        while not stun_binding_ok("127.0.0.1", port, 0.3):
            process.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"coturn did not answer STUN on 127.0.0.1:{port}:\n{process.log_tail()}"
                )
        yield TurnServer(process, "127.0.0.1", port, media_net.host_ip)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def rooms_settings_factory(
    settings: Settings,
    settings_factory: Callable[..., Settings],
    janus_server: JanusServer,
    turn_server: TurnServer,
    media_secrets: MediaSecrets,
    key_prefix: str,
) -> Callable[..., Settings]:
    """Settings pointing at this run's Janus and coturn (the run's database, migrated)."""

    def build(**sections: dict[str, object]) -> Settings:
        janus = {
            "ws_url": janus_server.ws_url,
            "admin_ws_url": janus_server.admin_ws_url,
            "keepalive_seconds": 5,
        }
        turn = {"urls": turn_server.urls, "credential_ttl_seconds": 600}
        janus.update(sections.pop("janus", {}))
        turn.update(sections.pop("turn", {}))
        return settings_factory(prefix=key_prefix, janus=janus, turn=turn, **sections)

    return build


@pytest.fixture(scope="session")
def rooms_settings(rooms_settings_factory: Callable[..., Settings]) -> Settings:
    return rooms_settings_factory()


@pytest.fixture(scope="session")
async def rooms_client(rooms_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app, configured with this run's Janus and coturn."""
    async with running_app(rooms_settings) as client:
        yield client


# --------------------------------------------------------------------------- real app servers


def settings_toml(settings: Settings, public_url: str) -> str:
    """The few settings an app process needs to join this run (the rest are defaults)."""

    def q(value: object) -> str:
        return json.dumps(value)

    return "\n".join(
        [
            f"secrets_dir = {q(settings.secrets_dir)}",
            "[server]",
            f"public_url = {q(public_url)}",
            "[database]",
            f"url = {q(settings.database.url)}",
            "pool_min = 1",
            "pool_max = 4",
            "[valkey]",
            f"url = {q(settings.valkey.url)}",
            f"key_prefix = {q(settings.valkey.key_prefix)}",
            "[security]",
            "cookie_secure = false",
            "login_failures_per_ip = 1000000",
            "[logging]",
            'level = "WARNING"',
            "[janus]",
            f"ws_url = {q(settings.janus.ws_url)}",
            f"keepalive_seconds = {settings.janus.keepalive_seconds}",
            "[turn]",
            f"urls = {q(settings.turn.urls)}",
            "[rooms]",
            f"client_queue_size = {settings.rooms.client_queue_size}",
            f"publisher_grace_seconds = {settings.rooms.publisher_grace_seconds}",
            f"slowlink_window_seconds = {settings.rooms.slowlink_window_seconds}",
            "",
        ]
    )


@dataclass
class AppServer:
    """One app process (granian, one worker) on loopback: what production runs."""

    process: ManagedProcess
    base_url: str
    settings: Settings | None = None

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1)


AppServerFactory = Callable[..., Awaitable[AppServer]]


@pytest.fixture(scope="session")
async def app_server_factory(
    rooms_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AppServerFactory]:
    started: list[AppServer] = []
    workdir = tmp_path_factory.mktemp("apps")

    async def start(settings: Settings | None = None) -> AppServer:
        settings = settings or rooms_settings
        port = _free_port(socket.SOCK_STREAM)
        base_url = f"http://127.0.0.1:{port}"
        config = workdir / f"app-{port}.toml"
        config.write_text(settings_toml(settings, base_url))
        granian = str(Path(sys.executable).parent / "granian")
        command = [
            granian,
            "--interface", "asgi",
            "--factory",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", "1",
            "--ws",
            "tipstream.app:create_app",
        ]  # fmt: skip
        env = {**os.environ, "TIPSTREAM_CONFIG": str(config)}
        process = ManagedProcess("app", command, workdir / f"app-{port}.log", env)
        process.start()
        server = AppServer(process, base_url, settings)
        started.append(server)
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while True:
                process.check_alive()
                try:
                    if (await http.get(f"{base_url}/healthz", timeout=1)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"app did not start on {base_url}:\n{process.log_tail()}")
                await asyncio.sleep(0.2)
        return server

    yield start
    for server in started:
        server.process.stop()


@pytest.fixture(scope="session")
async def app_server(app_server_factory: AppServerFactory) -> AppServer:
    return await app_server_factory()
