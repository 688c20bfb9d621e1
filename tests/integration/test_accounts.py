"""Registration, sign-in, sessions, password changes and CSRF, through the HTTP API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from tests.helpers import (
    PASSWORD,
    Browser,
    BrowserFactory,
    UserFactory,
    assert_problem,
    running_app,
    scalar,
    snapshot,
    unique_email,
)
from tipstream.config import Settings
from tipstream.db import Conn


def years_ago(years: int, *, days: int = 0) -> date:
    today = datetime.now(UTC).date()
    try:
        then = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        then = today.replace(year=today.year - years, day=28)
    return then + timedelta(days=days)


async def count_users(db: Conn, email: str) -> int:
    return int(await scalar(db, "SELECT count(*) FROM users WHERE email = %s", (email,)))


# --------------------------------------------------------------------------- register


async def test_register_creates_a_viewer(anon: Browser, db: Conn) -> None:
    email = unique_email()
    response = await anon.register(email, display_name="  Ada  ")
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == email
    assert user["display_name"] == "Ada"
    assert user["role"] == "viewer"
    assert user["totp_enabled"] is False
    assert "password" not in response.text and "argon2" not in response.text
    assert await count_users(db, email) == 1


async def test_password_is_stored_as_argon2id(anon: Browser, db: Conn) -> None:
    await anon.register()
    stored = await scalar(db, "SELECT password_hash FROM users WHERE email = %s", (anon.email,))
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_performer_may_self_register_but_not_staff(anon: Browser, db: Conn) -> None:
    performer = await anon.register(role="performer")
    assert performer.status_code == 201
    assert performer.json()["role"] == "performer"
    for role in ("admin", "moderator"):
        email = unique_email()
        response = await anon.register(email, role=role)
        assert_problem(response, 400)
        assert await count_users(db, email) == 0


async def test_duplicate_email_is_409_whatever_the_case(anon: Browser, db: Conn) -> None:
    email = unique_email()
    assert (await anon.register(email)).status_code == 201
    again = await anon.register(email.upper(), password="another password 123")
    assert_problem(again, 409, "email-taken")
    assert await count_users(db, email) == 1


async def test_under_18_is_refused_and_nothing_is_created(anon: Browser, db: Conn) -> None:
    before = await snapshot(db)
    email = unique_email()
    one_day_short = years_ago(18, days=1)
    response = await anon.register(email, date_of_birth=one_day_short.isoformat())
    body = assert_problem(response, 422, "underage")
    assert "18" in body["detail"]
    assert await snapshot(db) == before


async def test_exactly_18_today_may_register(anon: Browser) -> None:
    response = await anon.register(date_of_birth=years_ago(18).isoformat())
    assert response.status_code == 201, response.text


async def test_birth_date_in_the_future_is_refused(anon: Browser, db: Conn) -> None:
    before = await snapshot(db)
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    response = await anon.register(date_of_birth=tomorrow.isoformat())
    assert_problem(response, 422)
    assert await snapshot(db) == before


async def test_weak_or_malformed_fields_are_refused(anon: Browser, db: Conn) -> None:
    before = await snapshot(db)
    for fields in (
        {"password": "short"},
        {"email": "not-an-email"},
        {"date_of_birth": "17/05/1990"},
        {"display_name": ""},
        {"display_name": "x" * 65},
    ):
        response = await anon.register(**fields)
        assert_problem(response, 400)
    assert await snapshot(db) == before


# --------------------------------------------------------------------------- login, me, logout


async def test_login_sets_an_httponly_samesite_session_cookie(anon: Browser) -> None:
    await anon.register()
    response = await anon.login()
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == "tipstream_session"
    attributes = {a.strip().split("=")[0].lower() for a in rest.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=lax" in cookie.lower()
    assert "path=/" in cookie.lower()
    me = response.json()
    assert me["user"]["email"] == anon.email
    assert me["csrf_token"]
    assert me["mfa_verified"] is False


async def test_session_is_secure_host_cookie_when_configured(
    settings_factory: Callable[..., Settings], new_browser: BrowserFactory
) -> None:
    secure = settings_factory(security={"cookie_secure": True})
    async with running_app(secure) as client:
        browser = new_browser(client)
        await browser.register()
        response = await browser.login()
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-tipstream=")
        assert "secure" in cookie.lower()


async def test_me_shows_the_signed_in_user(make_user: UserFactory, anon: Browser) -> None:
    user = await make_user()
    me = await user.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user.user_id
    assert me.json()["csrf_token"] == user.csrf
    assert_problem(await anon.get("/api/auth/me"), 401, "unauthorized")


async def test_wrong_password_or_unknown_email_is_401_alike(anon: Browser, db: Conn) -> None:
    await anon.register()
    sessions_before = await scalar(db, "SELECT count(*) FROM sessions")
    wrong = await anon.login(password="not the password")
    assert_problem(wrong, 401, "invalid-credentials")
    unknown = await anon.post(
        "/api/auth/login", json={"email": unique_email(), "password": "whatever it is"}
    )
    body = assert_problem(unknown, 401, "invalid-credentials")
    # The same answer either way: nothing says whether the email exists.
    assert body["detail"] == wrong.json()["detail"]
    assert anon.session_cookie is None
    assert await scalar(db, "SELECT count(*) FROM sessions") == sessions_before


async def test_logout_ends_the_session_on_the_server(
    make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    user = await make_user()
    cookie = user.session_cookie
    assert cookie
    response = await user.post("/api/auth/logout")
    assert response.status_code == 204
    assert "max-age=0" in response.headers["set-cookie"].lower()
    # Someone who kept a copy of the cookie cannot use it.
    replay = new_browser()
    replay.http.cookies.set("tipstream_session", cookie)
    assert_problem(await replay.get("/api/auth/me"), 401)


async def test_forged_session_cookie_is_just_anonymous(anon: Browser) -> None:
    anon.http.cookies.set("tipstream_session", "x" * 500)
    assert_problem(await anon.get("/api/auth/me"), 401)
    anon.http.cookies.set("tipstream_session", "forged-session-id")
    assert_problem(await anon.get("/api/auth/me"), 401)


# --------------------------------------------------------------------------- password change


async def test_change_password_ends_other_sessions_keeps_this_one(
    make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    laptop = await make_user()
    phone = new_browser()
    phone.email = laptop.email
    assert (await phone.login()).status_code == 200

    new_password = "a brand new passphrase"
    response = await laptop.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert response.status_code == 204, response.text
    assert (await laptop.get("/api/auth/me")).status_code == 200
    assert_problem(await phone.get("/api/auth/me"), 401)

    fresh = new_browser()
    fresh.email = laptop.email
    assert_problem(await fresh.login(), 401, "invalid-credentials")
    fresh.password = new_password
    assert (await fresh.login()).status_code == 200


async def test_change_password_with_wrong_current_password_changes_nothing(
    make_user: UserFactory, db: Conn
) -> None:
    user = await make_user()
    before = await scalar(db, "SELECT password_hash FROM users WHERE id = %s", (user.user_id,))
    response = await user.post(
        "/api/auth/password",
        json={"current_password": "not my password", "new_password": "whatever new one"},
    )
    assert_problem(response, 401)
    after = await scalar(db, "SELECT password_hash FROM users WHERE id = %s", (user.user_id,))
    assert after == before
    assert (await user.get("/api/auth/me")).status_code == 200


async def test_new_password_must_differ_and_be_long_enough(make_user: UserFactory) -> None:
    user = await make_user()
    same = await user.post(
        "/api/auth/password", json={"current_password": PASSWORD, "new_password": PASSWORD}
    )
    assert_problem(same, 422)
    short = await user.post(
        "/api/auth/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert_problem(short, 400)


# --------------------------------------------------------------------------- CSRF


async def test_state_change_without_or_with_wrong_csrf_token_is_403(
    make_user: UserFactory, db: Conn
) -> None:
    user = await make_user()
    other = await make_user()
    before = await snapshot(db)
    body = {"current_password": PASSWORD, "new_password": "attacker chosen password"}
    for headers in (
        {},
        {"x-csrf-token": "wrong"},
        {"x-csrf-token": ""},
        {"x-csrf-token": str(other.csrf)},  # a real token, but of another session
    ):
        response = await user.post("/api/auth/password", json=body, csrf=False, headers=headers)
        assert_problem(response, 403, "csrf-failed")
    for path in ("/api/auth/logout", "/api/auth/2fa/enroll", "/api/auth/tokens"):
        response = await user.post(path, json={"name": "x"}, csrf=False)
        assert_problem(response, 403, "csrf-failed")
    assert await snapshot(db) == before
    # Still signed in: the refused logout did nothing either.
    assert (await user.get("/api/auth/me")).status_code == 200


async def test_reads_need_no_csrf_token(make_user: UserFactory) -> None:
    user = await make_user()
    assert (await user.get("/api/auth/me", csrf=False)).status_code == 200
    assert (await user.get("/api/auth/tokens", csrf=False)).status_code == 200
