"""CCBill's unsigned webhooks are hints; CCBill's Data Link confirms the sale before any token
is credited. Offline: a loopback HTTP server answers Data Link requests with CSV in CCBill's
documented column order and records the query each request carried."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.conftest import _to_toml
from tests.helpers import running_app, scalar
from tests.integration.ledger.conftest import NewUser
from tests.integration.payments.conftest import (
    CCBILL_NETWORK,
    SECRETS,
    StubHandler,
    loopback_server,
    payments_settings,
)
from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import service as ledger
from tipstream.payments import queries, reconcile, service
from tipstream.payments.processors import datalink
from tipstream.payments.processors.base import ProcessorEvent, WebhookRequest

DL_USER = SECRETS["ccbill_datalink_username"]
DL_PASS = SECRETS["ccbill_datalink_password"]
CCBILL_ZONE = timezone(timedelta(hours=-7))
CCBILL_HOST = "198.18.7.20"


@dataclass
class DatalinkStub:
    url: str = ""
    body: str = "1"
    status: int = 200
    delay: float = 0.0
    seen: list[dict[str, list[str]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def stub() -> Iterator[DatalinkStub]:
    state = DatalinkStub()

    class Handler(StubHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            state.seen.append(parse_qs(url.query, keep_blank_values=True))
            time.sleep(state.delay)
            if url.path == "/data/main.cgi":
                self.answer(state.status, state.body.encode(), "text/plain")
            else:
                self.answer(404, b"not found", "text/plain")

    with loopback_server(Handler) as url:
        state.url = f"{url}/data/main.cgi"
        yield state


@pytest.fixture(autouse=True)
def fresh_stub(stub: DatalinkStub) -> None:
    stub.body, stub.status, stub.delay = "1", 200, 0.0
    stub.seen.clear()


def ccbill_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "webhook_networks": [CCBILL_NETWORK],
        "flex_id": "flex-1",
        "client_accnum": "900100",
        "client_subacc": "0000",
        "datalink_url": url,
        # Tests ask Data Link many times a minute; CCBill allows once an hour.
        "datalink_min_interval_seconds": 0,
        **extra,
    }


@pytest.fixture
def dl_settings(pay_settings: Settings, tmp_path: Path, stub: DatalinkStub) -> Settings:
    return payments_settings(pay_settings, tmp_path, ccbill=ccbill_config(stub.url))


def new_subscription() -> str:
    return str(random.randrange(10**18, 10**19))


def ccbill_time(at: datetime) -> str:
    return at.astimezone(CCBILL_ZONE).strftime("%Y%m%d%H%M%S")


def new_line(sub: str, amount: str = "1.00", at: datetime | None = None) -> str:
    """A NEW record as Data Link documents it (16 columns, consumer details included)."""
    stamp = ccbill_time(at or datetime.now(UTC) - timedelta(minutes=5))
    return (
        f'"NEW","900100","0000","{sub}","{stamp}","Jane","Doe","jane@example.test","",'
        f'"ACTIVE","{amount}","2","0.00","0","N","VISA"'
    )


def reversal_line(kind: str, sub: str, amount: str = "1.00") -> str:
    stamp = ccbill_time(datetime.now(UTC) - timedelta(minutes=2))
    return f'"{kind}","900100","0000","{sub}","{stamp}","{amount}"'


async def announce_sale(
    conn: Conn, settings: Settings, purchase_id: int, sub: str, price: str = "1.00"
) -> list[str]:
    """CCBill's NewSaleSuccess webhook from its network (form encoded, unsigned)."""
    body = urlencode(
        {
            "subscriptionId": sub,
            "transactionId": f"0{sub}",
            "X-purchase_id": str(purchase_id),
            "billedInitialPrice": price,
        }
    ).encode()
    outcomes, _ack = await service.handle_webhook(
        conn,
        settings,
        "ccbill",
        WebhookRequest(
            headers={"content-type": "application/x-www-form-urlencoded"},
            query={"eventType": "NewSaleSuccess"},
            body=body,
            client_ip=CCBILL_HOST,
        ),
    )
    return [o.effect for o in outcomes]


async def hinted_purchase(conn: Conn, settings: Settings, user_id: int, sub: str) -> int:
    started = await service.start_checkout(
        conn, settings, user_id=user_id, package_id="tkn-100", processor_name="ccbill"
    )
    assert await announce_sale(conn, settings, started.purchase_id, sub) == ["pending"]
    return started.purchase_id


async def balance(conn: Conn, user_id: int) -> int:
    return (await ledger.wallet(conn, user_id)).balance


# --------------------------------------------------------------------------- the format


def test_documented_csv_layouts_parse(pay_settings: Settings) -> None:
    config = pay_settings.payments.ccbill
    body = "\r\n".join(
        [
            new_line("1000000001", "9.99", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
            # The older 22-column NEW layout (username, password, address columns).
            '"NEW","900100","0000","1000000002","20260301050000","J","D","u","p","1 Main",'
            '"Town","AZ","US","50115","j@example.test","","ACTIVE","5.00","2","0","0","0"',
            '"REBILL","900100","0000","1000000001","20260302050000","0312112601000035671","9.99"',
            '"REFUND","900100","0000","1000000001","2026-03-03 05:00:00","9.99"',
            '"CHARGEBACK","900100","0000","1000000002","20260304050000","5.00"',
            '"VOID","900100","0000","1000000003","2026-03-05","1.00"',
        ]
    )
    records = datalink.parse(body, config)
    assert [(r.type, r.subscription_id, r.amount) for r in records] == [
        ("NEW", "1000000001", "9.99"),
        ("NEW", "1000000002", "5.00"),
        ("REBILL", "1000000001", "9.99"),
        ("REFUND", "1000000001", "9.99"),
        ("CHARGEBACK", "1000000002", "5.00"),
        ("VOID", "1000000003", "1.00"),
    ]
    # CCBill's times are Arizona time (UTC-7): 05:00 there is 12:00 UTC.
    assert records[0].at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert records[1].at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert records[2].transaction_id == "0312112601000035671"
    assert datalink.parse("1\n", config) == [] and datalink.parse("", config) == []
    assert datalink.format_time(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), config) == (
        "20260301050000"
    )

    for bad, why in [
        ('"NEW","900100","0000","1000000001","20260301050000","J"', "columns"),
        (new_line("12ab"), "subscription id"),
        (new_line("1000000001", "lots"), "amount"),
        (new_line("1000000001").replace("2026", "20x6", 1), "timestamp"),
        ('"SIGNUP","900100","0000","1","20260301050000","1.00"', "type"),
        ('"NEW","900100","00"00","1"', "CSV"),
    ]:
        with pytest.raises(datalink.DatalinkError) as caught:
            datalink.parse(new_line("1000000009") + "\n" + bad, config)
        assert why in caught.value.detail, (bad, caught.value.detail)
        # Lines hold consumers' names and e-mail addresses: never in the error.
        assert "Jane" not in caught.value.detail and "example.test" not in caught.value.detail
    with pytest.raises(datalink.DatalinkError, match="refused the request: Authentication"):
        datalink.parse(f"Error: Authentication failed ({DL_PASS})", config, (DL_USER, DL_PASS))
    with pytest.raises(datalink.DatalinkError) as caught:
        datalink.parse(f"Error: bad login {DL_USER}:{DL_PASS}", config, (DL_USER, DL_PASS))
    assert DL_PASS not in caught.value.detail and DL_USER not in caught.value.detail


# --------------------------------------------------------------------------- crediting


async def test_webhook_hint_credited_once_by_datalink_then_refunded(
    db: Conn, dl_settings: Settings, new_browser: Any, new_user: NewUser, stub: DatalinkStub
) -> None:
    user = await new_user()
    sub = new_subscription()
    started = await service.start_checkout(
        db, dl_settings, user_id=user, package_id="tkn-100", processor_name="ccbill"
    )
    pid = started.purchase_id
    sale = {
        "subscriptionId": sub,
        "transactionId": f"0{sub}",
        "X-purchase_id": str(pid),
        "billedInitialPrice": "1.00",
    }
    async with running_app(dl_settings) as client:
        ccbill_host = new_browser(client, peer=CCBILL_HOST)
        for _ in range(3):  # CCBill retries its webhooks
            response = await ccbill_host.post(
                "/api/payments/webhooks/ccbill?eventType=NewSaleSuccess", data=sale
            )
            assert response.status_code == 200 and response.text == "OK"
    # A hint only: nothing credited, nothing asked of Data Link yet.
    assert (await queries.purchase(db, pid)).status == "created"
    assert await balance(db, user) == 0
    hint = await queries.hint(db, pid)
    assert hint is not None and (hint.status, hint.subscription_id) == ("pending", sub)
    assert stub.seen == []

    stub.body = new_line(sub) + "\r\n"
    first = await reconcile.reconcile(db, dl_settings, "ccbill", trigger="operator")
    assert first.status == "ok", first.error
    assert (first.counts.records, first.counts.credited) == (1, 1)
    assert await balance(db, user) == 100
    assert (await queries.purchase(db, pid)).status == "credited"
    assert (await queries.hint(db, pid)).status == "confirmed"  # type: ignore[union-attr]

    # The query Data Link documents, with the operator's credentials from the secrets dir.
    [query] = stub.seen
    assert {k: v[0] for k, v in query.items() if k not in ("startTime", "endTime")} == {
        "clientAccnum": "900100",
        "clientSubacc": "0000",
        "username": DL_USER,
        "password": DL_PASS,
        "transactionTypes": "NEW,REBILL,REFUND,CHARGEBACK,VOID",
    }
    start = datetime.strptime(query["startTime"][0], "%Y%m%d%H%M%S").replace(tzinfo=CCBILL_ZONE)
    end = datetime.strptime(query["endTime"][0], "%Y%m%d%H%M%S").replace(tzinfo=CCBILL_ZONE)
    assert start < end and abs(end - datetime.now(UTC)) < timedelta(minutes=1)
    assert first.window_start is not None and abs(start - first.window_start) < timedelta(seconds=1)

    # The webhook again, and the job again: still one credit.
    assert await announce_sale(db, dl_settings, pid, sub) == ["ignored"]
    second = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert (second.status, second.counts.credited, second.counts.duplicates) == ("ok", 0, 1)
    assert await balance(db, user) == 100
    credits = await scalar(
        db,
        "SELECT count(*) FROM processor_events WHERE purchase_id = %s AND effect = 'credit'",
        (pid,),
    )
    assert credits == 1

    # Data Link reports the refund: the existing refund path takes the tokens back, once.
    stub.body = new_line(sub) + "\n" + reversal_line("REFUND", sub)
    for expected in (1, 0):
        run = await reconcile.reconcile(db, dl_settings, "ccbill")
        assert (run.status, run.counts.reversed) == ("ok", expected)
    assert (await queries.purchase(db, pid)).status == "refunded"
    assert await balance(db, user) == 0


async def test_chargeback_and_void_from_datalink(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub
) -> None:
    user = await new_user()
    charged, voided = new_subscription(), new_subscription()
    charged_pid = await hinted_purchase(db, dl_settings, user, charged)
    voided_pid = await hinted_purchase(db, dl_settings, user, voided)
    # The voided sale never shows as NEW: the void closes it uncredited.
    stub.body = "\n".join(
        [new_line(charged), reversal_line("CHARGEBACK", charged), reversal_line("VOID", voided)]
    )
    run = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert (run.counts.credited, run.counts.reversed) == (1, 2)
    assert (await queries.purchase(db, charged_pid)).status == "charged_back"
    assert (await queries.purchase(db, voided_pid)).status == "refunded"
    assert await balance(db, user) == 0
    assert (await queries.hint(db, voided_pid)).status == "closed"  # type: ignore[union-attr]


async def test_concurrent_runs_and_lookups_credit_once(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub
) -> None:
    users = [await new_user() for _ in range(3)]
    subs = [new_subscription() for _ in users]
    pids = [await hinted_purchase(db, dl_settings, u, s) for u, s in zip(users, subs, strict=True)]
    stub.body = "\n".join(new_line(s) for s in subs)
    stub.delay = 0.3  # every run is in flight at once

    async def one_run() -> reconcile.ReconcileSummary:
        async with tsdb.connect(dl_settings) as conn:
            return await reconcile.reconcile(conn, dl_settings, "ccbill", force=True)

    runs = await asyncio.gather(*(one_run() for _ in range(4)))
    assert sum(r.counts.credited for r in runs) == 3
    assert {r.status for r in runs} <= {"ok", "busy"} and "ok" in {r.status for r in runs}
    assert [await balance(db, u) for u in users] == [100, 100, 100]

    # The credit path itself, raced from separate connections for one more announced sale.
    user, sub = await new_user(), new_subscription()
    pid = await hinted_purchase(db, dl_settings, user, sub)
    sale = ProcessorEvent(
        event_id=reconcile.sale_event_id(sub),
        kind="sale",
        event_type="datalink:NEW",
        payload={"source": "test"},
        purchase_id=pid,
        amount="1.00",
    )

    async def apply() -> str:
        async with tsdb.connect(dl_settings) as conn:
            return (await service.apply_event(conn, dl_settings, "ccbill", sale)).effect

    effects = await asyncio.gather(*(apply() for _ in range(5)))
    assert sorted(effects) == ["credit", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert await balance(db, user) == 100
    statuses = [(await queries.purchase(db, p)).status for p in [*pids, pid]]
    assert statuses == ["credited"] * 4


async def test_webhook_lookup_credits_at_once_when_turned_on(
    db: Conn, pay_settings: Settings, tmp_path: Path, new_user: NewUser, stub: DatalinkStub
) -> None:
    settings = payments_settings(
        pay_settings, tmp_path, ccbill=ccbill_config(stub.url, confirm_on_webhook=True)
    )
    user, sub = await new_user(), new_subscription()
    started = await service.start_checkout(
        db, settings, user_id=user, package_id="tkn-100", processor_name="ccbill"
    )
    stub.body = new_line(sub)
    assert await announce_sale(db, settings, started.purchase_id, sub) == ["credit"]
    assert await announce_sale(db, settings, started.purchase_id, sub) == ["ignored"]
    assert await balance(db, user) == 100
    run = await reconcile.reconcile(db, settings, "ccbill")
    assert (run.counts.credited, run.counts.duplicates) == (0, 1)
    assert await balance(db, user) == 100

    # Within Data Link's interval the webhook does not ask; the sale waits for the job.
    slow = payments_settings(
        pay_settings,
        tmp_path,
        ccbill=ccbill_config(stub.url, confirm_on_webhook=True, datalink_min_interval_seconds=3600),
    )
    other_user, other_sub = await new_user(), new_subscription()
    asked = len(stub.seen)
    pid = await hinted_purchase(db, slow, other_user, other_sub)
    assert len(stub.seen) == asked
    assert (await queries.purchase(db, pid)).status == "created"
    assert (await reconcile.reconcile(db, slow, "ccbill")).status == "too-soon"


# --------------------------------------------------------------------------- failures


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_datalink_failures_change_nothing_and_never_leak_credentials(
    db: Conn,
    dl_settings: Settings,
    pay_settings: Settings,
    tmp_path: Path,
    new_user: NewUser,
    stub: DatalinkStub,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    user, sub = await new_user(), new_subscription()
    pid = await hinted_purchase(db, dl_settings, user, sub)
    unreachable = payments_settings(
        pay_settings,
        tmp_path,
        ccbill=ccbill_config(f"http://127.0.0.1:{closed_port()}/data/main.cgi"),
    )
    cases: list[tuple[Settings, str, int, str]] = [
        (dl_settings, f"Error: Authentication failed for {DL_USER} / {DL_PASS}", 200, "refused"),
        (dl_settings, "Internal error", 500, "HTTP 500"),
        # A good line for the announced sale, then a broken one: the good one is not used.
        (dl_settings, new_line(sub) + '\n"NEW","900100","0000"', 200, "line 2"),
        (dl_settings, new_line(sub) + '\n"NEW","900100","0000","1","x', 200, "malformed CSV"),
        (unreachable, "", 200, "unreachable (ConnectError)"),
    ]
    for settings, body, status, reported in cases:
        stub.body, stub.status = body, status
        run = await reconcile.reconcile(db, settings, "ccbill")
        assert run.status == "failed" and run.error is not None and reported in run.error, run
        stored = await scalar(
            db, "SELECT error FROM reconciliation_runs WHERE id = %s", (run.run_id,)
        )
        assert stored == run.error
        assert DL_PASS not in run.error and DL_USER not in run.error
        assert (await queries.purchase(db, pid)).status == "created"
        assert await balance(db, user) == 0
        assert (await queries.hint(db, pid)).status == "pending"  # type: ignore[union-attr]

    # A good answer afterwards confirms the sale; its request line is logged without the query.
    stub.body, stub.status = new_line(sub), 200
    assert (await reconcile.reconcile(db, dl_settings, "ccbill")).counts.credited == 1
    assert await balance(db, user) == 100
    assert "HTTP Request: GET" in caplog.text and "/data/main.cgi" in caplog.text
    printed = capfd.readouterr()
    for text in (caplog.text, printed.out, printed.err):
        assert DL_PASS not in text and DL_USER not in text
    errors = await scalar(
        db, "SELECT string_agg(coalesce(error, ''), ' ') FROM reconciliation_runs", None
    )
    assert DL_PASS not in errors


async def test_unconfirmed_sales_are_flagged_and_wrong_amounts_not_credited(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub
) -> None:
    user = await new_user()
    late, cheap = new_subscription(), new_subscription()
    late_pid = await hinted_purchase(db, dl_settings, user, late)
    cheap_pid = await hinted_purchase(db, dl_settings, user, cheap)
    await db.execute(
        "UPDATE sale_hints SET hinted_at = now() - interval '3 days' WHERE purchase_id = ANY(%s)",
        ([late_pid, cheap_pid],),
    )
    # Data Link has not (yet) seen one sale, and reports the other at half its price: neither
    # is credited, both are flagged for review (audited).
    stub.body = new_line(cheap, amount="0.50")
    run = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert run.status == "ok" and run.counts.credited == 0 and run.counts.flagged >= 2
    for pid in (late_pid, cheap_pid):
        assert (await queries.hint(db, pid)).status == "flagged"  # type: ignore[union-attr]
        assert (await queries.purchase(db, pid)).status == "created"
        audited = await scalar(
            db,
            "SELECT count(*) FROM audit_logs WHERE action = 'payments.sale_unconfirmed' "
            "AND target_type = 'purchase' AND target_id = %s",
            (str(pid),),
        )
        assert audited == 1
    assert await balance(db, user) == 0

    # The late one is confirmed after all: credited, the flag resolved. The wrong amount stays
    # what it was (the sale's event is recorded as ignored) for a person to look at.
    stub.body = new_line(late) + "\n" + new_line(cheap, amount="0.50")
    run = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert (run.counts.credited, run.counts.duplicates) == (1, 1)
    assert (await queries.hint(db, late_pid)).status == "confirmed"  # type: ignore[union-attr]
    assert (await queries.hint(db, cheap_pid)).status == "flagged"  # type: ignore[union-attr]
    assert (await queries.purchase(db, cheap_pid)).status == "created"
    assert await balance(db, user) == 100


async def test_a_webhook_later_than_datalink_still_credits(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub
) -> None:
    user, sub = await new_user(), new_subscription()
    started = await service.start_checkout(
        db, dl_settings, user_id=user, package_id="tkn-100", processor_name="ccbill"
    )
    stub.body = new_line(sub, at=datetime.now(UTC) - timedelta(hours=5))
    early = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert (early.counts.unmatched, early.counts.credited) == (1, 0)
    assert await announce_sale(db, dl_settings, started.purchase_id, sub) == ["pending"]
    await db.execute(
        "UPDATE sale_hints SET hinted_at = now() - interval '5 hours' WHERE purchase_id = %s",
        (started.purchase_id,),
    )
    # The next run reaches back to the pending hint (less the overlap), not just to the last run.
    late = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert late.counts.credited == 1 and late.window_start is not None
    assert datetime.now(UTC) - late.window_start > timedelta(hours=5, minutes=59)
    start = datetime.strptime(stub.seen[-1]["startTime"][0], "%Y%m%d%H%M%S")
    assert abs(start.replace(tzinfo=CCBILL_ZONE) - late.window_start) < timedelta(seconds=1)
    assert await balance(db, user) == 100


async def test_a_long_window_is_asked_one_day_at_a_time(
    db: Conn, dl_settings: Settings, stub: DatalinkStub
) -> None:
    since = datetime.now(UTC) - timedelta(days=3)
    run = await reconcile.reconcile(db, dl_settings, "ccbill", since=since)
    assert run.status == "ok" and len(stub.seen) == 1
    assert run.window_end == since + timedelta(hours=24)
    assert run.remaining_until is not None
    assert datetime.now(UTC) - run.remaining_until < timedelta(minutes=1)
    [query] = stub.seen
    assert query["startTime"] == [ccbill_time(since)]
    assert query["endTime"] == [ccbill_time(since + timedelta(hours=24))]


async def test_a_sale_no_webhook_announced_credits_nobody(
    db: Conn, dl_settings: Settings, stub: DatalinkStub
) -> None:
    stub.body = "\n".join(
        [
            new_line(new_subscription()),
            new_line(new_subscription()).replace('"900100"', '"900999"', 1),
            '"REBILL","900100","0000","1000000001","20260302050000","0312112601000035671","9.99"',
        ]
    )
    run = await reconcile.reconcile(db, dl_settings, "ccbill")
    assert (run.counts.unmatched, run.counts.skipped, run.counts.credited) == (1, 2, 0)


# --------------------------------------------------------------------------- tipctl


def tipctl_env(settings: Settings, stub: DatalinkStub, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "tipctl.toml"
    config.write_text(
        _to_toml(
            {
                "secrets_dir": str(settings.secrets_dir),
                "database": {"url": settings.database.url},
                "valkey": {"url": settings.valkey.url, "key_prefix": settings.valkey.key_prefix},
                "payments": {"processors": ["dev", "ccbill"], "ccbill": ccbill_config(stub.url)},
            }
        )
    )
    return dict(os.environ, TIPSTREAM_CONFIG=str(config), COLUMNS="200")


def tipctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tipctl.main import app; app()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def test_tipctl_payments_reconcile(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub, tmp_path: Path
) -> None:
    env = tipctl_env(dl_settings, stub, tmp_path)
    user, sub = await new_user(), new_subscription()
    pid = await hinted_purchase(db, dl_settings, user, sub)
    stub.body = new_line(sub)

    done = await asyncio.to_thread(
        tipctl, env, "payments", "reconcile", "--processor", "ccbill", "--since", "2h", "--json"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["credited"], summary["records"]) == ("ok", 1, 1)
    started = datetime.strptime(stub.seen[-1]["startTime"][0], "%Y%m%d%H%M%S")
    expected = (datetime.now(UTC) - timedelta(hours=2)).astimezone(CCBILL_ZONE)
    assert abs(started.replace(tzinfo=CCBILL_ZONE) - expected) < timedelta(minutes=1)
    assert await balance(db, user) == 100

    again = await asyncio.to_thread(tipctl, env, "payments", "reconcile")
    assert again.returncode == 0, again.stderr
    assert "0 credited" in again.stdout and "1 already applied" in again.stdout

    stub.body = f"Error: Authentication failed for {DL_USER}:{DL_PASS}"
    failed = await asyncio.to_thread(tipctl, env, "payments", "reconcile", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["status"] == "failed"
    for text in (failed.stdout, failed.stderr, done.stdout, done.stderr):
        assert DL_PASS not in text and DL_USER not in text

    bad = await asyncio.to_thread(tipctl, env, "payments", "reconcile", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr

    hints = await asyncio.to_thread(
        tipctl, env, "payments", "hints", "--status", "confirmed", "--json"
    )
    assert hints.returncode == 0, hints.stderr
    assert any(h["purchase_id"] == pid for h in json.loads(hints.stdout))

    verified = await asyncio.to_thread(tipctl, env, "ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_doctor_reports_the_reconciliation(
    db: Conn, dl_settings: Settings, stub: DatalinkStub, tmp_path: Path
) -> None:
    env = tipctl_env(dl_settings, stub, tmp_path)

    async def ccbill_check() -> dict[str, Any]:
        doctor = await asyncio.to_thread(tipctl, env, "doctor", "--json")
        checks = {c["check"]: c for c in json.loads(doctor.stdout)}
        return dict(checks["ccbill"])

    stub.body = "Error: Authentication failed"
    assert (await reconcile.reconcile(db, dl_settings, "ccbill")).status == "failed"
    check = await ccbill_check()
    assert not check["ok"] and "failed: CCBill Data Link refused" in check["detail"], check
    stub.body = "1"
    assert (await reconcile.reconcile(db, dl_settings, "ccbill")).status == "ok"
    check = await ccbill_check()
    assert check["ok"] and "reconciled up to" in check["detail"], check


async def test_the_worker_runs_the_reconciliation(
    db: Conn, dl_settings: Settings, new_user: NewUser, stub: DatalinkStub, tmp_path: Path
) -> None:
    from tipstream.workers import broker

    user, sub = await new_user(), new_subscription()
    pid = await hinted_purchase(db, dl_settings, user, sub)
    stub.body = new_line(sub)
    env = tipctl_env(dl_settings, stub, tmp_path)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tipctl.main import app; app()",
        "run",
        "worker",
        "--threads",
        "2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # The scheduler enqueues the hourly job for the slot it finds current; sent here too,
        # as a second delivery: still one credit.
        broker.setup(dl_settings)
        from tipstream.payments import actors

        actors.reconcile_ccbill.send()
        for _ in range(150):
            if (await queries.purchase(db, pid)).status == "credited":
                break
            await asyncio.sleep(0.2)
        assert (await queries.purchase(db, pid)).status == "credited"
        runs = await scalar(
            db,
            "SELECT count(*) FROM reconciliation_runs WHERE trigger = 'schedule' AND status = 'ok'",
        )
        assert runs >= 1
    finally:
        if worker.returncode is None:
            worker.terminate()
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=60)
    assert await balance(db, user) == 100
    assert b"reconciled" in output, output.decode()[-2000:]
