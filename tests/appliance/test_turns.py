"""TURN over TLS on 443, as the roles set it up: the coturn role's own configuration (rendered by
Ansible, self-signed certificate included) run by a real turnserver, and the nginx role's split of
443 run by a real nginx in front of it and a stand-in app.

Two layouts are covered: a turn host where coturn's TLS listener is the public port itself (here
a free loopback port stands in for 443), and a single node where nginx owns 443 and hands
connections for the TURN name to coturn by TLS server name, while the site keeps HTTP/2 and the
client's address (PROXY protocol).
"""

from __future__ import annotations

import asyncio
import base64
import grp
import hashlib
import hmac
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aioice import turn

from tests.appliance.conftest import ROOT, apt_file, apt_tool, render_locally
from tests.appliance.test_nginx import _free_port, _render, echo_app, serve_nginx

SITE = "tipstream.test"
TURN_NAME = "turn.tipstream.test"


@dataclass
class Layout:
    secret: str
    config: Path
    tls_dir: Path
    coturn_tls_port: int
    shared_port: int


def _render_coturn(tmp: Path, secret: str, plain_port: int, tls_port: int) -> Path:
    config = tmp / "turnserver.conf"
    low = 50000 + (tls_port % 100) * 100
    extra = {
        "coturn__templates_dir": str(ROOT / "appliance" / "coturn"),
        "coturn__config_file": str(config),
        "coturn__pid_file": str(tmp / "turnserver.pid"),
        "coturn__tls_dir": str(tmp / "coturn-tls"),
        "coturn__listening_ip": "127.0.0.1",
        "coturn__listening_port": plain_port,
        "coturn__tls_listening_port": tls_port,
        "coturn__min_port": low,
        "coturn__max_port": low + 99,
        "coturn__realm": SITE,
        "tipstream__turns_name": TURN_NAME,
        "secrets__values": {"turn_secret": secret},
    }
    render_locally("render_coturn.yml", extra)
    return config


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"turnserver did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    turnserver = apt_tool("turnserver", "coturn")
    apt_tool("nginx", "nginx")
    apt_file("/usr/lib/nginx/modules/ngx_stream_module.so", "libnginx-mod-stream")
    tmp = tmp_path_factory.mktemp("turns")
    secret = secrets.token_urlsafe(48)
    plain_port, tls_port = _free_port(), _free_port()
    config = _render_coturn(tmp, secret, plain_port, tls_port)
    log = tmp / "turnserver.log"
    proc = subprocess.Popen(
        [turnserver, "-c", str(config), "--no-software-attribute"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(tls_port, proc, log)
        nginx_tmp = tmp / "nginx"
        nginx_tmp.mkdir()
        http_port, shared_port = _free_port(), _free_port()
        with echo_app() as app_port:
            main = _render(
                nginx_tmp,
                app_port,
                http_port,
                shared_port,
                tipstream__turns_name=TURN_NAME,
                nginx__turns_server_name=TURN_NAME,
                nginx__turns_upstream=f"127.0.0.1:{tls_port}",
                nginx__https_backend_port=_free_port(),
                nginx__turns_relay_port=_free_port(),
            )
            with serve_nginx(nginx_tmp, main, shared_port):
                yield Layout(
                    secret=secret,
                    config=config,
                    tls_dir=tmp / "coturn-tls",
                    coturn_tls_port=tls_port,
                    shared_port=shared_port,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _ServerNameContext(ssl.SSLContext):
    """A client context that sends a fixed TLS server name (SNI) whatever address it dials, as a
    browser does for turns:<name>: aioice connects to an address, which carries no SNI."""

    server_name = ""

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def _client_context(server_name: str, ca: Path) -> _ServerNameContext:
    context = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    # The role's self-signed certificate is the one to trust, for exactly this name.
    context.load_verify_locations(cafile=str(ca))
    return context


def _credentials(secret: str) -> tuple[str, str]:
    # The TURN REST API scheme the app uses (src/tipstream/rooms/turn.py).
    username = f"{int(time.time()) + 600}:turns-test"
    password = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    return username, password


async def _allocate(port: int, layout: Layout, password: str | None = None) -> tuple[str, int]:
    username, signed = _credentials(layout.secret)
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", port),
        username=username,
        password=signed if password is None else password,
        ssl=_client_context(TURN_NAME, layout.tls_dir / "turns.crt"),
        transport="tcp",
    )
    try:
        host, relayed_port = transport.get_extra_info("sockname")[:2]
        return str(host), int(relayed_port)
    finally:
        transport.close()


def _peer_certificate_name(port: int, server_name: str) -> tuple[str, str | None]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        alpn = tls.selected_alpn_protocol()
    assert der is not None
    pem = ssl.DER_cert_to_PEM_cert(der)
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return subject.strip(), alpn


def test_role_writes_a_tls_listener_with_a_key_only_coturn_reads(layout: Layout) -> None:
    lines = layout.config.read_text().splitlines()
    assert f"tls-listening-port={layout.coturn_tls_port}" in lines
    assert f"cert={layout.tls_dir}/turns.crt" in lines
    assert f"pkey={layout.tls_dir}/turns.key" in lines
    assert "no-tls" not in lines
    assert "no-tlsv1" in lines and "no-tlsv1_1" in lines
    key = (layout.tls_dir / "turns.key").stat()
    assert key.st_mode & 0o777 == 0o640
    assert key.st_gid == grp.getgrnam("turnserver").gr_gid


async def test_turn_over_tls_on_coturns_own_port(layout: Layout) -> None:
    # A turn host without nginx: coturn's TLS listener is the public port (443 there).
    host, port = await _allocate(layout.coturn_tls_port, layout)
    assert host == "127.0.0.1"
    assert port > 0


async def test_turn_over_tls_through_the_port_shared_with_the_site(layout: Layout) -> None:
    host, port = await _allocate(layout.shared_port, layout)
    assert host == "127.0.0.1"
    assert port > 0
    # coturn still checks the signature behind nginx.
    with pytest.raises(Exception, match="401"):
        await _allocate(layout.shared_port, layout, password="not-the-signature")


def test_the_shared_port_presents_each_name_its_own_certificate(layout: Layout) -> None:
    turn_subject, _ = _peer_certificate_name(layout.shared_port, TURN_NAME)
    site_subject, alpn = _peer_certificate_name(layout.shared_port, SITE)
    assert TURN_NAME in turn_subject
    assert TURN_NAME not in site_subject and SITE in site_subject
    # The site keeps HTTP/2 behind the split.
    assert alpn == "h2"


def test_the_site_behind_the_split_still_sees_the_client_address(layout: Layout) -> None:
    # The stream server connects from 127.0.0.1; the PROXY protocol carries the real client
    # (here 127.0.0.7), which rate limits and X-Forwarded-For must use.
    transport = httpx.HTTPTransport(local_address="127.0.0.7", verify=False)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{layout.shared_port}/api/streams")
    assert response.status_code == 200
    seen = response.json()["headers"]
    assert seen["x-forwarded-for"].split(",")[-1].strip() == "127.0.0.7"
    assert seen["x-forwarded-proto"] == "https"
    assert response.headers["strict-transport-security"].startswith("max-age=")
