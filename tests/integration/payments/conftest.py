"""Payments fixtures: settings with every processor enabled and their secrets in files, an app
running on them, and the ledger verified after every test of this folder."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import make_settings, running_app
from tests.integration.ledger.conftest import fund, new_stream, new_user  # noqa: F401
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import verify

SECRETS = {
    "ccbill_salt": "7d901dad245fd0ff6bc20d06",
    "verotel_signature_key": "verotel-test-signature-key",
    "stripe_api_key": "sk_test_offline",
    "stripe_webhook_secret": "whsec_test_offline",
    "ccbill_datalink_username": "dl-user-7f3a",
    "ccbill_datalink_password": "dl-pass-Q9v!x2Lm",
}
CCBILL_NETWORK = "198.18.7.0/24"


def payments_settings(
    settings: Settings, tmp: Path, *, prefix: str | None = None, **payments: Any
) -> Settings:
    secrets = tmp / f"secrets-{uuid.uuid4().hex[:6]}"
    secrets.mkdir()
    assert settings.secrets_dir is not None
    shutil.copy(Path(settings.secrets_dir) / "session_key", secrets / "session_key")
    for name, value in SECRETS.items():
        (secrets / name).write_text(value + "\n")
    tree: dict[str, Any] = {
        "processors": ["dev", "ccbill", "verotel", "stripe"],
        "ccbill": {
            "webhook_networks": [CCBILL_NETWORK],
            "flex_id": "flex-1",
            "client_accnum": "900100",
            "client_subacc": "0000",
        },
        "verotel": {"shop_id": "12345"},
        **payments,
    }
    return make_settings(
        settings.database.url,
        settings.valkey.url,
        secrets,
        prefix or settings.valkey.key_prefix,
        payments=tree,
    )


class StubHandler(BaseHTTPRequestHandler):
    """A stand-in API's request handler: answer() writes a whole response; no access log."""

    def answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A processor's API stood in for on loopback, in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def pay_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return payments_settings(settings, tmp_path_factory.mktemp("payments"))


@pytest.fixture(scope="session")
async def pay_client(pay_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with running_app(pay_settings) as client:
        yield client


@pytest.fixture(autouse=True)
async def books_balance(db: Conn) -> AsyncIterator[None]:
    yield
    report = await verify.verify(db)
    assert report.ok, [c for c in report.checks if not c.ok]
