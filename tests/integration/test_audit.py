"""The audit log: append-only in the database, hash-chained, tampering found and named, and the
security events of the accounts API written to it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import CompletedProcess

import psycopg
import pyotp
import pytest
from psycopg.rows import dict_row

from tests.helpers import Browser, BrowserFactory, UserFactory, assert_problem
from tipstream import db as tsdb
from tipstream.audit import service as audit
from tipstream.audit.service import GENESIS_HASH


@pytest.fixture
async def chain(scratch_db: str) -> AsyncIterator[tsdb.Conn]:
    """A migrated database of its own, with five audit entries, for tests that tamper."""
    conn = await psycopg.AsyncConnection.connect(scratch_db, autocommit=True, row_factory=dict_row)
    await tsdb.migrate(conn)
    for n in range(5):
        await audit.record(
            conn,
            "test.event",
            actor_id=n,
            target_type="user",
            target_id=n,
            ip="192.0.2.1",
            details={"n": n, "note": "ünïcödé"},
        )
    yield conn
    await conn.close()


async def ids(conn: tsdb.Conn) -> list[int]:
    cur = await conn.execute("SELECT id FROM audit_logs ORDER BY id")
    return [int(r["id"]) for r in await cur.fetchall()]


async def as_superuser_bypassing_triggers(conn: tsdb.Conn, statement: str, *params: object) -> None:
    """What someone with the database superuser could do behind the app's back."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(statement, params or None)


async def rehash(conn: tsdb.Conn, entry_id: int) -> None:
    """The forger's next step after an edit: recompute the edited entry's own hash."""
    cur = await conn.execute("SELECT * FROM audit_logs WHERE id = %s", (entry_id,))
    row = await cur.fetchone()
    assert row is not None
    forged = audit.entry_hash(
        row["prev_hash"],
        at=row["at"],
        actor_id=row["actor_id"],
        action=row["action"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        ip=row["ip"],
        details=row["details"],
    )
    await as_superuser_bypassing_triggers(
        conn, "UPDATE audit_logs SET hash = %s WHERE id = %s", forged, entry_id
    )


async def test_entries_are_chained(chain: tsdb.Conn) -> None:
    cur = await chain.execute("SELECT * FROM audit_logs ORDER BY id")
    rows = await cur.fetchall()
    assert len(rows) == 5
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    result = await audit.verify(chain)
    assert result.ok is True
    assert result.checked == 5
    assert result.broken_id is None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_logs SET action = 'nothing.happened'",
        "UPDATE audit_logs SET details = '{}' WHERE id = (SELECT max(id) FROM audit_logs)",
        "DELETE FROM audit_logs WHERE id = (SELECT min(id) FROM audit_logs)",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ],
)
async def test_database_refuses_update_delete_truncate(chain: tsdb.Conn, statement: str) -> None:
    cur = await chain.execute("SELECT * FROM audit_logs ORDER BY id")
    before = await cur.fetchall()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        await chain.execute(statement)
    cur = await chain.execute("SELECT * FROM audit_logs ORDER BY id")
    assert await cur.fetchall() == before


async def test_edited_row_is_named_by_verify(chain: tsdb.Conn) -> None:
    third = (await ids(chain))[2]
    await as_superuser_bypassing_triggers(
        chain, "UPDATE audit_logs SET details = '{\"n\": 99}' WHERE id = %s", third
    )
    result = await audit.verify(chain)
    assert result.ok is False
    assert result.broken_id == third
    assert result.checked == 2
    assert result.reason and "edited" in result.reason
    # Stopping at the break ended verify's transaction: the connection is free for reuse.
    assert chain.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_edit_with_triggers_disabled_is_found_too(chain: tsdb.Conn) -> None:
    last = (await ids(chain))[-1]
    await chain.execute("ALTER TABLE audit_logs DISABLE TRIGGER USER")
    try:
        await chain.execute("UPDATE audit_logs SET actor_id = 4242 WHERE id = %s", (last,))
    finally:
        await chain.execute("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    result = await audit.verify(chain)
    assert (result.ok, result.broken_id) == (False, last)


async def test_rehashing_an_edited_row_breaks_the_next_link(chain: tsdb.Conn) -> None:
    """A forger who also recomputes the edited row's hash is caught at the row after it."""
    rows = await ids(chain)
    second, third = rows[1], rows[2]
    await as_superuser_bypassing_triggers(
        chain, "UPDATE audit_logs SET ip = '203.0.113.9' WHERE id = %s", second
    )
    await rehash(chain, second)
    result = await audit.verify(chain)
    assert (result.ok, result.broken_id) == (False, third)


async def test_deleted_row_is_reported_at_the_row_after_it(chain: tsdb.Conn) -> None:
    rows = await ids(chain)
    await as_superuser_bypassing_triggers(chain, "DELETE FROM audit_logs WHERE id = %s", rows[1])
    result = await audit.verify(chain)
    assert result.ok is False
    assert result.broken_id == rows[2]
    assert result.reason and "removed" in result.reason


async def test_concurrent_writers_keep_one_unbroken_chain(scratch_db: str) -> None:
    """Several workers append at once; the advisory lock keeps every link right."""
    conns = [
        await psycopg.AsyncConnection.connect(scratch_db, autocommit=True, row_factory=dict_row)
        for _ in range(6)
    ]
    try:
        await tsdb.migrate(conns[0])

        async def write(conn: tsdb.Conn, worker: int) -> None:
            for n in range(5):
                async with conn.transaction():
                    await audit.record(conn, "test.concurrent", details={"w": worker, "n": n})

        await asyncio.gather(*(write(c, i) for i, c in enumerate(conns)))
        result = await audit.verify(conns[0])
        assert result.ok is True, result
        assert result.checked == 30
    finally:
        for conn in conns:
            await conn.close()


async def test_security_events_show_in_the_tail(
    make_admin: UserFactory, new_browser: BrowserFactory, anon: Browser
) -> None:
    admin = await make_admin()
    newcomer = new_browser()
    assert (await newcomer.register()).status_code == 201
    newcomer.password, real = "wrong password!", newcomer.password
    assert_problem(await newcomer.login(), 401)
    newcomer.password = real
    assert (await newcomer.login()).status_code == 200
    role = await admin.post(f"/api/admin/users/{newcomer.user_id}/role", json={"role": "performer"})
    assert role.status_code == 200
    enrolment = (await newcomer.post("/api/auth/2fa/enroll")).json()
    code = pyotp.TOTP(enrolment["secret"]).now()
    assert (await newcomer.post("/api/auth/2fa/confirm", json={"code": code})).status_code == 200

    response = await admin.get("/api/admin/audit/", params={"limit": 1000})
    assert response.status_code == 200
    about_newcomer = [e for e in response.json() if e["target_id"] == str(newcomer.user_id)]
    actions = [e["action"] for e in about_newcomer]
    assert actions == [
        "user.created",
        "login.failure",
        "login.success",
        "user.role_changed",
        "2fa.enabled",
    ]
    by_action = {e["action"]: e for e in about_newcomer}
    assert by_action["user.role_changed"]["actor_id"] == admin.user_id
    assert by_action["user.role_changed"]["details"] == {"from": "viewer", "to": "performer"}
    assert by_action["login.failure"]["details"]["reason"] == "password"
    assert by_action["login.success"]["ip"]
    # The same through the filters tipctl uses.
    failures = await admin.get(
        "/api/admin/audit/", params={"action": "login.failure", "actor_id": newcomer.user_id}
    )
    assert [e["action"] for e in failures.json()] == ["login.failure"]
    # Nothing secret is logged.
    assert enrolment["secret"] not in response.text
    assert real not in response.text


async def test_verify_over_the_api_is_ok_on_an_untampered_log(make_admin: UserFactory) -> None:
    admin = await make_admin()
    response = await admin.get("/api/admin/audit/verify")
    assert response.status_code == 200
    result = response.json()
    assert result["ok"] is True, result
    assert result["checked"] > 0


def _tipctl_on(
    database_url: str, secrets_dir: Path, tmp: Path, *args: str
) -> CompletedProcess[str]:
    config = tmp / "tipctl.toml"
    config.write_text(f'secrets_dir = "{secrets_dir}"\n[database]\nurl = "{database_url}"\n')
    return subprocess.run(
        [sys.executable, "-c", "from tipctl.main import app; app()", *args],
        env=dict(os.environ, TIPSTREAM_CONFIG=str(config), COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def test_tipctl_audit_verify_names_the_edited_row(
    chain: tsdb.Conn, scratch_db: str, secrets_dir: Path, tmp_path: Path
) -> None:
    """What the operator sees: exit 0 on an intact log, exit 1 naming the row after an edit."""
    intact = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "5 entries verified" in intact.stdout
    fourth = (await ids(chain))[3]
    await as_superuser_bypassing_triggers(
        chain, "UPDATE audit_logs SET actor_id = 42 WHERE id = %s", fourth
    )
    broken = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify")
    assert broken.returncode == 1
    assert f"BROKEN at entry {fourth}" in broken.stderr
    as_json = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["broken_id"] == fourth
    tail = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "tail", "-n", "2", "--json")
    assert [e["id"] for e in json.loads(tail.stdout)] == (await ids(chain))[-2:]


async def test_anchor_catches_a_rewritten_tail_that_plain_verify_cannot(
    chain: tsdb.Conn, scratch_db: str, secrets_dir: Path, tmp_path: Path
) -> None:
    """Editing the newest entry and recomputing its hash leaves a self-consistent chain; the
    head the operator recorded from an earlier verify is what exposes it."""
    before = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify")
    assert before.returncode == 0, before.stderr
    head = next(line for line in before.stdout.splitlines() if line.startswith("head: "))
    anchor = head.split()[1]
    last = (await ids(chain))[-1]
    assert anchor.startswith(f"{last}:")
    still = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify", "--anchor", anchor)
    assert still.returncode == 0, still.stderr
    # The forger rewrites the last entry and its hash.
    await as_superuser_bypassing_triggers(
        chain, "UPDATE audit_logs SET actor_id = 42 WHERE id = %s", last
    )
    await rehash(chain, last)
    plain = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify")
    assert plain.returncode == 0, "without an anchor the rewrite is undetectable"
    anchored = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify", "--anchor", anchor)
    assert anchored.returncode == 1
    assert f"BROKEN at entry {last}" in anchored.stderr
    assert "anchor" in anchored.stderr
    # An anchor whose entry was deleted outright fails too; a malformed one is a usage error.
    await as_superuser_bypassing_triggers(chain, "DELETE FROM audit_logs WHERE id = %s", last)
    gone = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify", "--anchor", anchor)
    assert gone.returncode == 1
    assert "no longer in the log" in gone.stderr
    bad = _tipctl_on(scratch_db, secrets_dir, tmp_path, "audit", "verify", "--anchor", "7:zz")
    assert bad.returncode == 2
    assert "ID:HASH" in bad.stderr
