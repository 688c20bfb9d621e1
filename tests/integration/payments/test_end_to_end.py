"""The issue's "done when", in one story: a viewer buys tokens through the dev processor and tips
over HTTP, the performer asks for a payout, and the payout batch runs through tipctl and the
finance API to a SEPA file and "paid"; tipctl ledger verify passes at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import running_app
from tests.helpers import Browser
from tests.integration.ledger.conftest import NewStream
from tests.integration.payments.conftest import payments_settings
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.db import Conn

UserFactory = Callable[..., Awaitable[Browser]]
TIPCTL = [sys.executable, "-c", "from tipctl.main import app; app()"]


@pytest.fixture(scope="module")
async def story_app(
    pay_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, AsyncTestClient[Litestar]]]:
    settings = payments_settings(
        pay_settings, tmp_path_factory.mktemp("story"), earnings_hold_days=0
    )
    async with running_app(settings) as client:
        yield settings, client


def tipctl(settings: Settings, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp / "tipctl.toml"
    config.write_text(
        f'secrets_dir = "{settings.secrets_dir}"\n[database]\nurl = "{settings.database.url}"\n'
        f'[valkey]\nurl = "{settings.valkey.url}"\nkey_prefix = "{settings.valkey.key_prefix}"\n'
        "[payments]\nearnings_hold_days = 0\n"
    )
    env = dict(os.environ, TIPSTREAM_CONFIG=str(config), COLUMNS="200")
    return subprocess.run(
        [*TIPCTL, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def test_buy_tip_and_pay_out_over_http_and_tipctl(
    db: Conn,
    story_app: tuple[Settings, AsyncTestClient[Litestar]],
    make_user: UserFactory,
    make_admin: UserFactory,
    set_role: Any,
    new_stream: NewStream,
    tmp_path: Path,
) -> None:
    settings, client = story_app
    viewer = await make_user("story-viewer", client=client)
    performer = await make_user("story-performer", client=client)
    await set_role(performer, "performer")
    await db.execute(
        "INSERT INTO kyc (user_id, status) VALUES (%s, 'approved')", (performer.user_id,)
    )
    stream = await new_stream(performer.user_id)

    # 1. Buy 6,500 tokens through the dev processor's hosted page.
    started = (
        await viewer.post("/api/purchases", json={"package_id": "tkn-6500", "processor": "dev"})
    ).json()
    url = urlsplit(started["redirect_url"])
    paid = await viewer.post(
        url.path, data={"token": url.query.removeprefix("token="), "outcome": "sale"}, csrf=False
    )
    assert paid.status_code == 303
    assert (await viewer.get("/api/wallet")).json()["balance"] == 6_500

    # 2. Tip 6,000 of them.
    tip = await viewer.post(
        f"/api/streams/{stream}/tips",
        json={"tokens": 6_000},
        headers={"idempotency-key": str(uuid.uuid4())},
    )
    assert tip.status_code == 201, tip.text
    assert tip.json()["performer_share"] == "42.00"

    # 3. Not enough for the 50.00 minimum yet; a second purchase and tip later it is.
    started = (
        await viewer.post("/api/purchases", json={"package_id": "tkn-1200", "processor": "dev"})
    ).json()
    url = urlsplit(started["redirect_url"])
    await viewer.post(
        url.path, data={"token": url.query.removeprefix("token="), "outcome": "sale"}, csrf=False
    )
    await viewer.post(
        f"/api/streams/{stream}/tips",
        json={"tokens": 1_700},
        headers={"idempotency-key": str(uuid.uuid4())},
    )
    earnings = (await performer.get("/api/payouts/earnings")).json()
    assert earnings["payable"] == "53.90"
    request = await performer.post(
        "/api/payouts",
        json={
            "amount": "53.90",
            "account_holder": "Story Performer",
            "iban": "DE89370400440532013000",
            "bic": "COBADEFFXXX",
        },
        headers={"idempotency-key": str(uuid.uuid4())},
    )
    assert request.status_code == 201, request.text
    payout_id = request.json()["id"]

    # 4. The weekly batch by hand, approval by finance over HTTP (2FA session).
    batched = tipctl(settings, tmp_path, "payouts", "batch")
    assert batched.returncode == 0, batched.stderr
    batch_id = int(batched.stdout.split("batch ")[1].split()[0])
    finance = await make_admin("story-finance", client=client)
    await accounts.set_permissions(db, finance.user_id, ["finance"], actor_id=None)
    approved = await finance.post(f"/api/admin/payouts/{payout_id}/approve")
    assert approved.json()["payout"]["status"] == "approved", approved.text

    # 5. The bank file, then paid.
    sepa = tipctl(settings, tmp_path, "payouts", "export", str(batch_id), "--format", "sepa")
    assert sepa.returncode == 0, sepa.stderr
    ns = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"
    doc = ET.fromstring(sepa.stdout)
    assert [e.text for e in doc.iter(f"{ns}InstdAmt")] == ["53.90"]
    done = tipctl(settings, tmp_path, "payouts", "mark-paid", str(payout_id), "--yes")
    assert done.returncode == 0, done.stderr
    listed = json.loads(tipctl(settings, tmp_path, "payouts", "list", "--json").stdout)
    assert {p["id"]: p["status"] for p in listed}[payout_id] == "paid"

    # 6. The books.
    verify = tipctl(settings, tmp_path, "ledger", "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout
