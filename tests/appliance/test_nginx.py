"""The nginx role's configuration, rendered by Ansible itself and served by a real nginx.

The role's own TLS and config tasks write into a scratch directory (a self-signed certificate
included); nginx must accept it (`nginx -t`) and then, running on loopback ports in front of a
small stand-in app, behave as the issue asks: HTTPS only, HTTP/2, HSTS and security headers,
body limit equal to the app's, rate limits on login and tips, WebSocket upgrade forwarded,
long-lived static caching, /metrics closed to the public.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.appliance.conftest import ROOT, apt_tool, render_locally

MAX_BODY = 1_048_576


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _EchoApp(BaseHTTPRequestHandler):
    """Stands in for granian: answers 200 with the request line and headers it received."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        # The real app sets some security headers itself; nginx must send each once.
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Site:
    http: str
    https: str
    cert: Path
    static_root: Path
    conf_dir: Path


def _render(tmp: Path, app_port: int, http_port: int, https_port: int, **overrides: object) -> Path:
    """The role's files in tmp, and an nginx.conf like Debian's that includes them; overrides
    are more extra vars (the stream module is loaded when the role writes a stream server)."""
    conf_dir, tls_dir, static_root = tmp / "etc-nginx", tmp / "tls", tmp / "static"
    static_root.mkdir()
    extra: dict[str, object] = {
        "tipstream__domain": "tipstream.test",
        "nginx__templates_dir": str(ROOT / "nginx"),
        "nginx__conf_dir": str(conf_dir),
        "nginx__tls_dir": str(tls_dir),
        "nginx__static_root": str(static_root),
        "nginx__http_port": http_port,
        "nginx__https_port": https_port,
        "nginx__listen_ipv6": False,
        "nginx__app_upstream": f"127.0.0.1:{app_port}",
        # The test connects from loopback: with an empty allow list /metrics must be refused.
        "nginx__metrics_allow": [],
        **overrides,
    }
    render_locally("render_nginx.yml", extra)
    main = tmp / "nginx.conf"
    stream = list((conf_dir / "modules-enabled").glob("*.conf"))
    modules = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n" if stream else ""
    main.write_text(
        f"""
{modules}include {conf_dir}/modules-enabled/*.conf;
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {conf_dir}/conf.d/*.conf;
    include {conf_dir}/sites-enabled/*;
}}
"""
    )
    return main


@contextmanager
def serve_nginx(tmp: Path, main: Path, port: int) -> Iterator[None]:
    """A real nginx with main (after `nginx -t` accepts it), until it listens on port."""
    nginx = apt_tool("nginx", "nginx")
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp), "-c", str(main)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp), "-c", str(main), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"nginx did not start: {(tmp / 'error.log').read_text()}")
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def echo_app() -> Iterator[int]:
    """The stand-in app on a loopback port."""
    app = ThreadingHTTPServer(("127.0.0.1", 0), _EchoApp)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        yield int(app.server_address[1])
    finally:
        app.shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    apt_tool("nginx", "nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    http_port, https_port = _free_port(), _free_port()
    with echo_app() as app_port:
        main = _render(tmp, app_port, http_port, https_port)
        with serve_nginx(tmp, main, https_port):
            yield Site(
                http=f"http://127.0.0.1:{http_port}",
                https=f"https://127.0.0.1:{https_port}",
                cert=tmp / "tls" / "tipstream.crt",
                static_root=tmp / "static",
                conf_dir=tmp / "etc-nginx",
            )


def _client() -> httpx.Client:
    # The certificate is self-signed for tipstream.test; we connect to 127.0.0.1.
    return httpx.Client(verify=False, timeout=10)


def test_role_generates_a_self_signed_certificate_for_the_domain(site: Site) -> None:
    text = subprocess.run(
        ["openssl", "x509", "-in", str(site.cert), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tipstream.test" in text
    assert (site.cert.parent / "tipstream.key").stat().st_mode & 0o077 == 0


def test_plain_http_redirects_to_https(site: Site) -> None:
    with _client() as client:
        response = client.get(f"{site.http}/login?next=/x")
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://127.0.0.1:")
    assert response.headers["location"].endswith("/login?next=/x")


def test_https_proxies_to_the_app_with_security_headers(site: Site) -> None:
    with _client() as client:
        response = client.get(f"{site.https}/api/streams", headers={"X-Forwarded-For": "6.6.6.6"})
    assert response.status_code == 200
    seen = response.json()["headers"]
    assert seen["x-forwarded-proto"] == "https"
    assert seen["host"] == "127.0.0.1"
    # nginx appends the real peer; the app trusts X-Forwarded-For only from its proxy.
    assert seen["x-forwarded-for"].endswith("127.0.0.1")
    assert len(seen["x-request-id"]) == 32
    headers = response.headers
    for name in ("x-frame-options", "referrer-policy", "x-content-type-options"):
        assert len(headers.get_list(name)) == 1, (name, headers.get_list(name))
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["strict-transport-security"].startswith("max-age=63072000")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "camera=(self)" in headers["permissions-policy"]
    assert "server" not in headers or headers["server"] == "nginx"


def _tls(port: int, **options: object) -> tuple[str | None, str | None, str | None]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in options.items():
        setattr(context, name, value)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="tipstream.test") as tls,
    ):
        cipher = tls.cipher()
        return tls.selected_alpn_protocol(), tls.version(), cipher[0] if cipher else None


def test_tls_offers_http2_and_forward_secret_aead_ciphers(site: Site) -> None:
    port = int(site.https.rsplit(":", 1)[1])
    alpn, version, _ = _tls(port)
    assert alpn == "h2"
    assert version == "TLSv1.3"
    # A TLS 1.2 client gets an ECDHE + AEAD suite from the Mozilla intermediate list.
    alpn, version, cipher = _tls(port, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"
    assert cipher is not None
    assert cipher.startswith("ECDHE-")
    assert "GCM" in cipher or "CHACHA20" in cipher


def test_request_body_limit_matches_the_app(site: Site) -> None:
    with _client() as client:
        ok = client.post(f"{site.https}/api/things", content=b"x" * MAX_BODY)
        too_big = client.post(f"{site.https}/api/things", content=b"x" * (MAX_BODY + 1))
    assert ok.status_code == 200
    assert too_big.status_code == 413


def test_kyc_submissions_may_be_larger(site: Site) -> None:
    with _client() as client:
        document = client.post(f"{site.https}/api/kyc/submission", content=b"x" * (8 * MAX_BODY))
        huge = client.post(f"{site.https}/api/kyc/submission", content=b"x" * (33 * MAX_BODY))
    assert document.status_code == 200
    assert huge.status_code == 413


def test_login_is_rate_limited(site: Site) -> None:
    with _client() as client:
        codes = [
            client.post(f"{site.https}/api/auth/login", json={"email": "a@b.c"}).status_code
            for _ in range(10)
        ]
    # One request plus a burst of 5 pass at once; the rest wait for the 10/minute rate.
    assert codes[:6] == [200] * 6
    assert set(codes[6:]) == {429}


def test_tips_are_rate_limited_but_allow_a_burst(site: Site) -> None:
    url = f"{site.https}/api/streams/42/tips"
    with _client() as client, ThreadPoolExecutor(max_workers=20) as pool:
        started = time.monotonic()
        codes = list(
            pool.map(lambda _: client.post(url, json={"tokens": 1}).status_code, range(60))
        )
        elapsed = time.monotonic() - started
        other_route = client.post(f"{site.https}/api/streams/42/chat", json={}).status_code
    passed = codes.count(200)
    # One request plus a burst of 20 go through at once, then 10 per second.
    assert passed >= 21
    assert passed <= 21 + int(10 * elapsed) + 1
    assert set(codes) == {200, 429}
    # Only the tip route is limited this way.
    assert other_route == 200


def test_websocket_upgrade_is_forwarded(site: Site) -> None:
    with _client() as client:
        response = client.get(
            f"{site.https}/ws/rooms/42",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
    seen = response.json()["headers"]
    assert seen["upgrade"] == "websocket"
    assert seen["connection"].lower() == "upgrade"
    assert seen["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="


def test_plain_requests_do_not_ask_the_app_to_upgrade(site: Site) -> None:
    with _client() as client:
        seen = client.get(f"{site.https}/api/streams").json()["headers"]
    assert "upgrade" not in seen
    assert seen.get("connection", "") == ""


def test_static_files_are_cached_for_a_year_with_headers_kept(site: Site) -> None:
    (site.static_root / "app.3f2a.js").write_text("console.log('hi')\n")
    with _client() as client:
        response = client.get(f"{site.https}/static/app.3f2a.js")
        missing = client.get(f"{site.https}/static/nope.js")
    assert response.status_code == 200
    assert response.text == "console.log('hi')\n"
    assert "max-age=31536000" in response.headers["cache-control"]
    assert "immutable" in response.headers["cache-control"]
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert missing.status_code == 404


def test_metrics_are_not_public(site: Site) -> None:
    with _client() as client:
        response = client.get(f"{site.https}/metrics")
    assert response.status_code == 403
