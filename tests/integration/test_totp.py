"""TOTP 2FA: enrolment with QR code, sign-in with codes, replays refused, recovery codes, and
2FA as a must for moderators and admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import pyotp

from tests.helpers import (
    Browser,
    BrowserFactory,
    UserFactory,
    assert_problem,
    next_totp,
    scalar,
    snapshot,
    wrong_totp,
)
from tipstream.db import Conn

SetRole = Callable[[Browser, str], Awaitable[None]]


def second_browser(new_browser: BrowserFactory, user: Browser) -> Browser:
    """The same account in another browser, signed out."""
    other = new_browser()
    other.email, other.password, other.totp_secret = user.email, user.password, user.totp_secret
    return other


async def test_enroll_gives_otpauth_uri_and_qr_then_confirm_gives_recovery_codes(
    make_user: UserFactory, db: Conn
) -> None:
    user = await make_user()
    response = await user.post("/api/auth/2fa/enroll")
    assert response.status_code == 200, response.text
    enrolment = response.json()
    uri = urlsplit(enrolment["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    query = parse_qs(uri.query)
    assert query["secret"] == [enrolment["secret"]]
    assert query["issuer"] == ["tipstream"]
    assert user.email in enrolment["otpauth_uri"].replace("%40", "@")
    assert enrolment["qr_svg"].lstrip().startswith("<?xml") or "<svg" in enrolment["qr_svg"]
    assert "<svg" in enrolment["qr_svg"]

    # Not on yet: a wrong code does not turn it on.
    bad = await user.post("/api/auth/2fa/confirm", json={"code": wrong_totp(enrolment["secret"])})
    assert_problem(bad, 401, "invalid-totp")
    me = await user.get("/api/auth/me")
    assert me.json()["user"]["totp_enabled"] is False

    code = pyotp.TOTP(enrolment["secret"]).now()
    confirmed = await user.post("/api/auth/2fa/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    stored = await scalar(
        db, "SELECT count(*) FROM totp_recovery_codes WHERE user_id = %s", (user.user_id,)
    )
    assert stored == 10
    cur = await db.execute(
        "SELECT code_hash FROM totp_recovery_codes WHERE user_id = %s", (user.user_id,)
    )
    hashes = {r["code_hash"] for r in await cur.fetchall()}
    assert not hashes & set(codes)  # stored hashed
    me = await user.get("/api/auth/me")
    assert me.json()["user"]["totp_enabled"] is True
    assert me.json()["mfa_verified"] is True

    again = await user.post("/api/auth/2fa/enroll")
    assert_problem(again, 409)


async def test_login_then_requires_a_code(
    make_user: UserFactory, new_browser: BrowserFactory, db: Conn
) -> None:
    user = await make_user()
    await user.enroll_totp()
    assert user.totp_secret is not None
    other = second_browser(new_browser, user)
    sessions_before = await snapshot(db)

    assert_problem(await other.login(), 401, "totp-required")
    assert_problem(await other.login(totp_code=wrong_totp(user.totp_secret)), 401, "invalid-totp")
    assert_problem(await other.login(totp_code="12345"), 400)  # not six digits
    assert other.session_cookie is None
    after = await snapshot(db)
    assert after["sessions"] == sessions_before["sessions"]

    ok = await other.login_with_totp()
    assert ok.status_code == 200, ok.text
    assert ok.json()["mfa_verified"] is True


async def test_a_replayed_code_is_refused_and_changes_nothing(
    make_user: UserFactory, new_browser: BrowserFactory, db: Conn
) -> None:
    user = await make_user()
    await user.enroll_totp()
    assert user.totp_secret is not None
    code = next_totp(user.totp_secret)
    first = second_browser(new_browser, user)
    assert (await first.login(totp_code=code)).status_code == 200

    before = await snapshot(db)
    last_step = await scalar(db, "SELECT totp_last_step FROM users WHERE id = %s", (user.user_id,))
    replay = second_browser(new_browser, user)
    response = await replay.login(totp_code=code)
    assert_problem(response, 401, "invalid-totp")
    assert replay.session_cookie is None
    after = await snapshot(db)
    assert after["sessions"] == before["sessions"]
    assert after["users"] == before["users"]
    assert (
        await scalar(db, "SELECT totp_last_step FROM users WHERE id = %s", (user.user_id,))
        == last_step
    )


async def test_the_enrolment_code_cannot_be_replayed_to_sign_in(
    make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    user = await make_user()
    enrolment = (await user.post("/api/auth/2fa/enroll")).json()
    code = pyotp.TOTP(enrolment["secret"]).now()
    assert (await user.post("/api/auth/2fa/confirm", json={"code": code})).status_code == 200
    user.totp_secret = enrolment["secret"]
    other = second_browser(new_browser, user)
    assert_problem(await other.login(totp_code=code), 401, "invalid-totp")


async def test_a_recovery_code_works_once(
    make_user: UserFactory, new_browser: BrowserFactory, db: Conn
) -> None:
    user = await make_user()
    codes = await user.enroll_totp()
    first = second_browser(new_browser, user)
    # Typed in upper case and without the dash still counts.
    typed = codes[3].upper().replace("-", "")
    response = await first.login(recovery_code=typed)
    assert response.status_code == 200, response.text
    assert response.json()["mfa_verified"] is True
    used = await scalar(
        db,
        "SELECT count(*) FROM totp_recovery_codes WHERE user_id = %s AND used_at IS NOT NULL",
        (user.user_id,),
    )
    assert used == 1
    again = second_browser(new_browser, user)
    assert_problem(await again.login(recovery_code=codes[3]), 401, "invalid-totp")
    assert_problem(await again.login(recovery_code="zzzzzzzz-zzzzzzzz"), 401, "invalid-totp")
    # Another, unused one still works.
    assert (await again.login(recovery_code=codes[4])).status_code == 200


async def test_viewer_may_turn_2fa_off_with_a_code(make_user: UserFactory) -> None:
    user = await make_user()
    await user.enroll_totp()
    assert user.totp_secret is not None
    bad = await user.post("/api/auth/2fa/disable", json={"code": wrong_totp(user.totp_secret)})
    assert_problem(bad, 401)
    assert (await user.get("/api/auth/me")).json()["user"]["totp_enabled"] is True
    ok = await user.post("/api/auth/2fa/disable", json={"code": next_totp(user.totp_secret)})
    assert ok.status_code == 204, ok.text
    assert (await user.get("/api/auth/me")).json()["user"]["totp_enabled"] is False


async def test_admin_without_2fa_gets_mfa_required_until_enrolled(
    make_user: UserFactory, set_role: SetRole
) -> None:
    admin = await make_user("admin")
    await set_role(admin, "admin")
    for path in ("/api/admin/users/", "/api/admin/audit/"):
        assert_problem(await admin.get(path), 403, "mfa-required")
    await admin.enroll_totp()
    for path in ("/api/admin/users/", "/api/admin/audit/"):
        response = await admin.get(path)
        assert response.status_code == 200, response.text


async def test_admin_with_2fa_signing_in_elsewhere_is_verified(
    make_admin: UserFactory, new_browser: BrowserFactory
) -> None:
    admin = await make_admin()
    other = second_browser(new_browser, admin)
    assert (await other.login_with_totp()).status_code == 200
    assert (await other.get("/api/admin/users/")).status_code == 200


async def test_moderator_without_2fa_is_refused_admin_routes_and_staff_cannot_drop_2fa(
    make_user: UserFactory, set_role: SetRole
) -> None:
    moderator = await make_user("mod")
    await set_role(moderator, "moderator")
    assert_problem(await moderator.get("/api/admin/users/"), 403)
    await moderator.enroll_totp()
    assert moderator.totp_secret is not None
    # 2FA is mandatory for staff: it cannot be switched off.
    response = await moderator.post(
        "/api/auth/2fa/disable", json={"code": next_totp(moderator.totp_secret)}
    )
    assert_problem(response, 403)
    assert (await moderator.get("/api/auth/me")).json()["user"]["totp_enabled"] is True


async def test_admin_api_token_needs_a_2fa_verified_session(
    make_user: UserFactory, set_role: SetRole, anon: Browser
) -> None:
    admin = await make_user("admin")
    await set_role(admin, "admin")
    refused = await admin.post("/api/auth/tokens", json={"name": "ops"})
    assert_problem(refused, 403, "mfa-required")
    await admin.enroll_totp()
    created = await admin.post("/api/auth/tokens", json={"name": "ops"})
    assert created.status_code == 201
    token = created.json()["token"]
    listed = await anon.get("/api/admin/users/", headers={"authorization": f"Bearer {token}"})
    assert listed.status_code == 200
