"""Personal API tokens for scripts: shown once, stored hashed, used as Bearer, revocable."""

from __future__ import annotations

import hashlib

from tests.helpers import Browser, BrowserFactory, UserFactory, assert_problem, scalar, snapshot
from tipstream.db import Conn


async def create_token(user: Browser, name: str = "backup script", **extra: object) -> dict:
    response = await user.post("/api/auth/tokens", json={"name": name, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_token_is_shown_once_and_stored_hashed(make_user: UserFactory, db: Conn) -> None:
    user = await make_user()
    created = await create_token(user, expires_in_days=30)
    token = created["token"]
    assert token.startswith("tsk_")
    assert created["expires_at"] is not None
    cur = await db.execute("SELECT * FROM api_tokens WHERE id = %s", (created["id"],))
    row = await cur.fetchone()
    assert row is not None
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row)
    listed = await user.get("/api/auth/tokens")
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["backup script"]
    assert token not in listed.text
    assert "token" not in listed.json()[0]


async def test_bearer_token_authenticates_without_cookie_or_csrf(
    make_user: UserFactory, anon: Browser
) -> None:
    user = await make_user()
    token = (await create_token(user))["token"]
    me = await anon.get("/api/auth/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user.user_id
    assert me.json()["csrf_token"] is None
    # A state-changing request with a token needs no CSRF header: revoke a second token.
    second = await create_token(user, "second")
    revoked = await anon.delete(f"/api/auth/tokens/{second['id']}", headers=bearer(token))
    assert revoked.status_code == 204, revoked.text
    used = await user.get("/api/auth/tokens")
    by_name = {t["name"]: t for t in used.json()}
    assert by_name["second"]["revoked_at"] is not None
    assert by_name["backup script"]["last_used_at"] is not None


async def test_revoked_token_stops_working(make_user: UserFactory, anon: Browser) -> None:
    user = await make_user()
    created = await create_token(user)
    assert (await anon.get("/api/auth/me", headers=bearer(created["token"]))).status_code == 200
    response = await user.delete(f"/api/auth/tokens/{created['id']}")
    assert response.status_code == 204
    assert_problem(await anon.get("/api/auth/me", headers=bearer(created["token"])), 401)
    # Revoking again: nothing active by that id.
    assert_problem(await user.delete(f"/api/auth/tokens/{created['id']}"), 404)


async def test_expired_token_stops_working(make_user: UserFactory, anon: Browser, db: Conn) -> None:
    user = await make_user()
    created = await create_token(user, expires_in_days=1)
    await db.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
        (created["id"],),
    )
    assert_problem(await anon.get("/api/auth/me", headers=bearer(created["token"])), 401)


async def test_another_users_token_id_is_404_and_unchanged(
    make_user: UserFactory, anon: Browser, db: Conn
) -> None:
    owner = await make_user()
    intruder = await make_user()
    created = await create_token(owner)
    before = await snapshot(db)
    response = await intruder.delete(f"/api/auth/tokens/{created['id']}")
    assert_problem(response, 404)
    assert await snapshot(db) == before
    assert (await anon.get("/api/auth/me", headers=bearer(created["token"]))).status_code == 200


async def test_bad_credentials_in_authorization_header_are_401(anon: Browser) -> None:
    for value in (
        "Bearer tsk_not-a-real-token",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 5000,
        "tsk_without_scheme",
    ):
        assert_problem(await anon.get("/api/auth/me", headers={"authorization": value}), 401)


async def test_tokens_cannot_mint_tokens(
    make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    user = await make_user()
    token = (await create_token(user))["token"]
    script = new_browser()
    response = await script.post("/api/auth/tokens", json={"name": "x"}, headers=bearer(token))
    assert_problem(response, 403)


async def test_token_names_and_lifetimes_are_validated(make_user: UserFactory, db: Conn) -> None:
    user = await make_user()
    before = await scalar(db, "SELECT count(*) FROM api_tokens")
    for body in (
        {"name": ""},
        {"name": "x" * 65},
        {"name": "ok", "expires_in_days": 0},
        {"name": "ok", "expires_in_days": 10**30},
        {"name": "ok", "expires_in_days": [7]},
        {"name": ["ok"]},
    ):
        assert_problem(await user.post("/api/auth/tokens", json=body), 400)
    assert await scalar(db, "SELECT count(*) FROM api_tokens") == before
