"""TOTP secrets are sealed at rest with the vault's keys: a database dump holds no secret, logins
survive `tipctl keys rotate`, a sealed secret moved to another user's row does not open, and an
upgraded system's clear secrets are sealed once and keep working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pyotp
from litestar import Litestar
from litestar.testing import AsyncTestClient
from valkey.asyncio import Valkey

from tests.helpers import Browser, assert_problem, running_app, scalar, unique_email
from tests.integration.accounts.conftest import Box, users_row_text
from tests.integration.kyc.conftest import Tipctl
from tipstream import db as tsdb
from tipstream.accounts import service as accounts
from tipstream.db import Conn


@asynccontextmanager
async def app_started(box: Box) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app as it starts now: settings and the keyring read from their files."""
    async with running_app(box.settings()) as client:
        yield client


async def staff_with_2fa(client: AsyncTestClient[Litestar], box: Box, kv: Valkey) -> Browser:
    """An admin who enrolled TOTP through the API (the secret is in browser.totp_secret)."""
    browser = Browser.on(client)
    assert (await browser.register(unique_email("staff"))).status_code == 201
    assert (await browser.login()).status_code == 200
    async with box_conn(box) as conn:
        await accounts.set_role(conn, kv, box.settings(), browser.user_id, "admin", actor_id=None)
    await browser.enroll_totp()
    return browser


@asynccontextmanager
async def box_conn(box: Box) -> AsyncIterator[Conn]:
    async with tsdb.connect(box.settings()) as conn:
        yield conn


async def login_with_totp(
    client: AsyncTestClient[Litestar], conn: Conn, user: Browser, code: str | None = None
) -> Browser:
    """A new browser signing in as user with a current code. The last accepted step is reset
    first: these tests sign in several times within one 30 s step, and replays are refused."""
    await conn.execute("UPDATE users SET totp_last_step = 0 WHERE id = %s", (user.user_id,))
    assert user.totp_secret is not None
    other = Browser.on(client)
    other.email, other.password = user.email, user.password
    other.totp_secret = user.totp_secret
    await other.login(totp_code=code or pyotp.TOTP(user.totp_secret).now())
    return other


async def to_clear_secret(conn: Conn, user: Browser) -> None:
    """Put the user's row as a system before migration 0017 holds it: the secret in clear."""
    await conn.execute(
        """
        UPDATE users SET totp_secret = %s, totp_kek_id = NULL, totp_wrapped_key = NULL,
            totp_secret_sealed = NULL
        WHERE id = %s
        """,
        (user.totp_secret, user.user_id),
    )


async def sealed_audits(conn: Conn, user: Browser) -> int:
    """How often the user's clear secret was sealed (audited as 2fa.secret_sealed)."""
    query = "SELECT count(*) FROM audit_logs WHERE action = '2fa.secret_sealed' AND target_id = %s"
    return int(await scalar(conn, query, (str(user.user_id),)))


async def doctor_2fa(box: Box) -> dict[str, object]:
    """tipctl doctor's 2FA-secrets line, which must be ok."""
    _, out, err = await box.tipctl("doctor", "--json")
    line: dict[str, object] = next(c for c in json.loads(out) if c["check"] == "2fa secrets")
    assert line["ok"], (line, err)
    return line


async def test_a_dump_holds_no_totp_secret_and_login_works(
    box: Box, box_db: Conn, kv: Valkey
) -> None:
    async with app_started(box) as client:
        staff = await staff_with_2fa(client, box, kv)
        assert staff.totp_secret is not None
        row = await users_row_text(box_db, staff.user_id)
        assert staff.totp_secret not in row and staff.totp_secret.lower() not in row.lower()
        assert (
            await scalar(box_db, "SELECT totp_kek_id FROM users WHERE id = %s", (staff.user_id,))
            == box.keyring().active_id
        )
        dump = await box.pg_dump("users", "totp_recovery_codes", "audit_logs")
        assert str(staff.user_id) in dump
        assert staff.totp_secret not in dump
        # Recovery codes are stored as SHA-256 hashes, never as themselves.
        assert staff.recovery_codes and not any(c in dump for c in staff.recovery_codes)

        signed_in = await login_with_totp(client, box_db, staff)
        assert signed_in.user["id"] == staff.user_id and signed_in.csrf
        wrong = await login_with_totp(client, box_db, staff, code="000000")
        assert wrong.csrf is None
        # tipctl approvals check codes through the service with the box's settings.
        await box_db.execute("UPDATE users SET totp_last_step = 0 WHERE id = %s", (staff.user_id,))
        await accounts.check_second_factor(
            box_db, box.settings(), staff.user_id, pyotp.TOTP(staff.totp_secret).now()
        )

        # A viewer turning 2FA off proves it with a code from the sealed secret; the sealed
        # columns go with it.
        viewer = Browser.on(client)
        assert (await viewer.register(unique_email("viewer"))).status_code == 201
        assert (await viewer.login()).status_code == 200
        await viewer.enroll_totp()
        assert viewer.totp_secret is not None
        await box_db.execute("UPDATE users SET totp_last_step = 0 WHERE id = %s", (viewer.user_id,))
        off = await viewer.post(
            "/api/auth/2fa/disable", json={"code": pyotp.TOTP(viewer.totp_secret).now()}
        )
        assert off.status_code == 204, off.text
        assert (
            await scalar(
                box_db,
                "SELECT num_nonnulls(totp_secret, totp_kek_id, totp_wrapped_key,"
                " totp_secret_sealed) FROM users WHERE id = %s",
                (viewer.user_id,),
            )
            == 0
        )

    # `tipctl user create --enable-2fa` seals the secret it hands out, too.
    password_file = box.secrets.parent / "operator-password"
    password_file.write_text("a long enough password\n")
    code, out, err = await box.tipctl(
        "user", "create", unique_email("op"), "--role", "moderator", "--enable-2fa", "--json",
        "--display-name", "Op", "--date-of-birth", "1980-01-02",
        "--password-file", str(password_file),
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    assert made["totp_secret"] not in await users_row_text(box_db, int(made["user"]["id"]))


async def test_login_with_totp_before_and_after_tipctl_keys_rotate(
    box: Box, box_db: Conn, kv: Valkey
) -> None:
    old_key = box.keyring().active_id
    async with app_started(box) as before:
        staff = await staff_with_2fa(client=before, box=box, kv=kv)
        upgraded = await staff_with_2fa(client=before, box=box, kv=kv)
        await to_clear_secret(box_db, upgraded)
        assert (await login_with_totp(before, box_db, staff)).csrf

        code, out, err = await box.tipctl("keys", "status", "--json")
        assert code == 0, err
        assert {"key_id": old_key, "active": True}.items() <= next(
            r for r in json.loads(out) if r["key_id"] == old_key
        ).items()

        code, out, err = await box.tipctl("keys", "rotate", "--yes")
        assert code == 0, (out, err)
        assert "failed 0" in out and "2FA secrets" in err  # the progress bars
        new_key = box.keyring().active_id
        assert new_key != old_key
        for user in (staff, upgraded):
            assert (
                await scalar(
                    box_db,
                    "SELECT totp_kek_id || ':' || (totp_secret IS NULL) FROM users WHERE id = %s",
                    (user.user_id,),
                )
                == f"{new_key}:true"
            )
        assert upgraded.totp_secret not in await box.pg_dump("users")
        rotated = await scalar(
            box_db,
            "SELECT details FROM audit_logs WHERE action = 'vault.keys_rotated' "
            "ORDER BY id DESC LIMIT 1",
        )
        assert rotated["totp_secrets_sealed"] >= 1 and rotated["totp_secrets_rewrapped"] >= 1
        assert await sealed_audits(box_db, upgraded) == 1

        # This process still holds only the old key: a clear 503 problem, not a 500, until the
        # services are restarted as `tipctl keys rotate` says.
        stale = Browser.on(before)
        stale.email, stale.password = staff.email, staff.password
        assert staff.totp_secret is not None
        assert_problem(
            await stale.login(totp_code=pyotp.TOTP(staff.totp_secret).now()), 503, "2fa-unavailable"
        )

    async with app_started(box) as restarted:
        for user in (staff, upgraded):
            assert (await login_with_totp(restarted, box_db, user)).csrf, user.email

    code, out, err = await box.tipctl("keys", "prune", "--yes")
    assert code == 0 and old_key in out, err
    code, out, err = await box.tipctl("keys", "status", "--json")
    assert code == 0, err
    [status] = json.loads(out)
    assert status["key_id"] == new_key and status["totp_secrets"] >= 2

    # An interrupted rotation: the new key is in the keyring, nothing re-wrapped yet. The next
    # run resumes under that key instead of adding another one.
    interrupted = box.keyring().with_new_key()
    (box.secrets / "vault_keys").write_text(interrupted.format())
    code, out, err = await box.tipctl("keys", "rotate", "--dry-run")
    assert code == 0 and "resume: re-wrap" in out and interrupted.active_id in out, (out, err)
    code, out, err = await box.tipctl("keys", "rotate", "--yes")
    assert code == 0, (out, err)
    assert box.keyring().active_id == interrupted.active_id
    assert (
        await scalar(
            box_db,
            "SELECT count(*) FROM users WHERE totp_kek_id IS NOT NULL AND totp_kek_id <> %s",
            (interrupted.active_id,),
        )
        == 0
    )

    async with app_started(box) as after:
        for user in (staff, upgraded):
            assert (await login_with_totp(after, box_db, user)).csrf, user.email


async def test_a_sealed_secret_moved_to_another_user_is_refused(
    box: Box, box_db: Conn, kv: Valkey
) -> None:
    async with app_started(box) as client:
        victim = await staff_with_2fa(client, box, kv)
        attacker = await staff_with_2fa(client, box, kv)
        # Someone with write access to the database copies the victim's sealed secret onto the
        # attacker's row, hoping the attacker's account then opens with codes they can mint.
        await box_db.execute(
            """
            UPDATE users AS target
            SET totp_kek_id = source.totp_kek_id, totp_wrapped_key = source.totp_wrapped_key,
                totp_secret_sealed = source.totp_secret_sealed
            FROM users AS source
            WHERE source.id = %s AND target.id = %s
            """,
            (victim.user_id, attacker.user_id),
        )
        assert victim.totp_secret is not None and attacker.totp_secret is not None
        failures_before = await scalar(
            box_db,
            "SELECT count(*) FROM audit_logs WHERE action = 'login.failure' AND target_id = %s",
            (str(attacker.user_id),),
        )
        for secret in (victim.totp_secret, attacker.totp_secret):
            await box_db.execute(
                "UPDATE users SET totp_last_step = 0 WHERE id = %s", (attacker.user_id,)
            )
            other = Browser.on(client)
            other.email, other.password = attacker.email, attacker.password
            response = await other.login(totp_code=pyotp.TOTP(secret).now())
            assert_problem(response, 401, "invalid-totp")
            assert other.session_cookie is None
        assert (
            await scalar(
                box_db,
                "SELECT count(*) FROM audit_logs WHERE action = 'login.failure' AND target_id = %s",
                (str(attacker.user_id),),
            )
            == failures_before + 2
        )
        # The victim's own row is untouched and still signs in.
        assert (await login_with_totp(client, box_db, victim)).csrf


async def test_an_upgraded_system_seals_its_clear_secrets_once_and_still_signs_in(
    box: Box, box_db: Conn, kv: Valkey
) -> None:
    async with app_started(box) as client:
        staff = await staff_with_2fa(client, box, kv)
        # The row as the system held it before the upgrade; this app started before, so it
        # signs in from the clear column.
        await to_clear_secret(box_db, staff)
        assert staff.totp_secret is not None
        assert staff.totp_secret in await users_row_text(box_db, staff.user_id)
        assert (await login_with_totp(client, box_db, staff)).csrf
    assert "still in clear" in (await doctor_2fa(box))["detail"]

    # The upgraded app starts: it seals the clear secret in the background, and signing in
    # works whether or not that has happened yet.
    async with app_started(box) as upgraded:
        assert (await login_with_totp(upgraded, box_db, staff)).csrf
        for _ in range(100):
            if await sealed_audits(box_db, staff):
                break
            await asyncio.sleep(0.1)
        row = await users_row_text(box_db, staff.user_id)
        assert staff.totp_secret not in row
        assert await sealed_audits(box_db, staff) == 1
        assert (await login_with_totp(upgraded, box_db, staff)).csrf
    assert staff.totp_secret not in await box.pg_dump("users")

    # Starting again finds nothing to seal: no second audit entry.
    async with app_started(box) as again:
        assert (await login_with_totp(again, box_db, staff)).csrf
        await asyncio.sleep(0.5)
    assert await sealed_audits(box_db, staff) == 1
    assert "clear" not in (await doctor_2fa(box))["detail"]
    code, out, err = await box.tipctl("audit", "verify")
    assert code == 0, (out, err)


async def test_tipctl_approvals_open_the_sealed_secret_and_name_a_missing_keyring(
    box: Box, box_db: Conn, kv: Valkey, tmp_path: Path
) -> None:
    async with app_started(box) as client:
        staff = await staff_with_2fa(client, box, kv)
    assert staff.totp_secret is not None
    code_file = tmp_path / "code"
    unknown = "00000000-0000-4000-8000-000000000000"

    # With the keyring the code checks out; what fails is the unknown adjustment.
    await box_db.execute("UPDATE users SET totp_last_step = 0 WHERE id = %s", (staff.user_id,))
    code_file.write_text(pyotp.TOTP(staff.totp_secret).now() + "\n")
    args = ("ledger", "adjust", "approve", unknown, "--admin", staff.email)
    code, out, err = await box.tipctl(*args, "--totp-file", str(code_file))
    assert code == 1 and "2FA" not in err and unknown in err, (out, err)

    # A tipctl that cannot read the keyring says so, instead of calling the code wrong.
    bare = tmp_path / "bare-secrets"
    bare.mkdir(mode=0o700)
    (bare / "session_key").write_text((box.secrets / "session_key").read_text())
    config = tmp_path / "bare.toml"
    config.write_text(
        box.tipctl.config.read_text().replace(str(box.secrets), str(bare)), encoding="utf-8"
    )
    await box_db.execute("UPDATE users SET totp_last_step = 0 WHERE id = %s", (staff.user_id,))
    code, out, err = await Tipctl(config, bare)(*args, "--totp-file", str(code_file))
    assert code == 1 and "no vault keyring" in err and "wrong" not in err, (out, err)
