"""User administration over the API: list, show, roles, disable and enable."""

from __future__ import annotations

from tests.helpers import Browser, BrowserFactory, UserFactory, assert_problem, snapshot
from tipstream.db import Conn


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_list_and_show_users(make_admin: UserFactory, make_user: UserFactory) -> None:
    admin = await make_admin()
    user = await make_user("findme")
    listed = await admin.get("/api/admin/users/", params={"q": user.email})
    assert listed.status_code == 200
    assert [u["id"] for u in listed.json()] == [user.user_id]
    assert "password" not in listed.text and "totp_secret" not in listed.text
    admins = await admin.get("/api/admin/users/", params={"role": "admin", "limit": 500})
    assert admin.user_id in [u["id"] for u in admins.json()]
    assert all(u["role"] == "admin" for u in admins.json())
    shown = await admin.get(f"/api/admin/users/{user.user_id}")
    assert shown.status_code == 200
    assert shown.json()["email"] == user.email
    paged = await admin.get("/api/admin/users/", params={"limit": 1, "offset": 0})
    assert len(paged.json()) == 1


async def test_unknown_user_is_404_problem(make_admin: UserFactory, db: Conn) -> None:
    admin = await make_admin()
    missing = 9_000_000_000
    assert_problem(await admin.get(f"/api/admin/users/{missing}"), 404, "not-found")
    before = await snapshot(db)
    for path, body in (
        ("role", {"role": "performer"}),
        ("disable", {"reason": "spam"}),
        ("enable", None),
        ("permissions", {"permissions": ["finance"]}),
    ):
        response = await admin.post(f"/api/admin/users/{missing}/{path}", json=body)
        assert_problem(response, 404, "not-found")
    assert await snapshot(db) == before


async def test_set_role_is_audited_with_from_and_to(
    make_admin: UserFactory, make_user: UserFactory, db: Conn
) -> None:
    admin = await make_admin()
    user = await make_user()
    response = await admin.post(f"/api/admin/users/{user.user_id}/role", json={"role": "performer"})
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "performer"
    assert (await user.get("/api/auth/me")).json()["user"]["role"] == "performer"
    cur = await db.execute(
        "SELECT actor_id, details FROM audit_logs WHERE action = 'user.role_changed'"
        " AND target_id = %s ORDER BY id",
        (str(user.user_id),),
    )
    rows = await cur.fetchall()
    assert len(rows) == 1
    assert rows[0]["actor_id"] == admin.user_id
    assert rows[0]["details"] == {"from": "viewer", "to": "performer"}
    # Setting the same role again changes and records nothing.
    again = await admin.post(f"/api/admin/users/{user.user_id}/role", json={"role": "performer"})
    assert again.status_code == 200
    cur = await db.execute(
        "SELECT count(*) AS n FROM audit_logs WHERE action = 'user.role_changed'"
        " AND target_id = %s",
        (str(user.user_id),),
    )
    row = await cur.fetchone()
    assert row is not None and row["n"] == 1


async def test_cannot_change_own_role_or_disable_self(make_admin: UserFactory, db: Conn) -> None:
    admin = await make_admin()
    before = await snapshot(db)
    own = await admin.post(f"/api/admin/users/{admin.user_id}/role", json={"role": "viewer"})
    assert_problem(own, 403)
    disable = await admin.post(f"/api/admin/users/{admin.user_id}/disable", json={"reason": "x"})
    assert_problem(disable, 403)
    assert await snapshot(db) == before
    assert (await admin.get("/api/admin/users/")).status_code == 200


async def test_disable_ends_sessions_and_tokens_at_once_and_enable_restores_login(
    make_admin: UserFactory, make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    admin = await make_admin()
    user = await make_user()
    token = (await user.post("/api/auth/tokens", json={"name": "script"})).json()["token"]
    script = new_browser()
    assert (await script.get("/api/auth/me", headers=bearer(token))).status_code == 200

    response = await admin.post(
        f"/api/admin/users/{user.user_id}/disable", json={"reason": "chargeback fraud"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["disabled"] is True
    assert_problem(await user.get("/api/auth/me"), 401)
    assert_problem(await script.get("/api/auth/me", headers=bearer(token)), 401)
    again = new_browser()
    again.email, again.password = user.email, user.password
    assert_problem(await again.login(), 403, "account-disabled")
    assert again.session_cookie is None

    enabled = await admin.post(f"/api/admin/users/{user.user_id}/enable")
    assert enabled.status_code == 200
    assert enabled.json()["disabled"] is False
    assert (await again.login()).status_code == 200
    # What was cut off stays cut off: the old session and token do not come back.
    assert_problem(await user.get("/api/auth/me"), 401)
    assert_problem(await script.get("/api/auth/me", headers=bearer(token)), 401)


async def test_grant_finance_permission(
    make_admin: UserFactory, make_user: UserFactory, db: Conn
) -> None:
    admin = await make_admin()
    other = await make_user()
    response = await admin.post(
        f"/api/admin/users/{other.user_id}/permissions", json={"permissions": ["finance"]}
    )
    assert response.status_code == 200
    assert response.json()["permissions"] == ["finance"]
    bogus = await admin.post(
        f"/api/admin/users/{other.user_id}/permissions", json={"permissions": ["root"]}
    )
    assert_problem(bogus, 400)
    shown = await admin.get(f"/api/admin/users/{other.user_id}")
    assert shown.json()["permissions"] == ["finance"]


async def test_viewer_is_refused_admin_routes(make_user: UserFactory, anon: Browser) -> None:
    viewer = await make_user()
    for path in ("/api/admin/users/", f"/api/admin/users/{viewer.user_id}", "/api/admin/audit/"):
        assert_problem(await viewer.get(path), 403, "forbidden")
        assert_problem(await anon.get(path), 401)
    promote = await viewer.post(f"/api/admin/users/{viewer.user_id}/role", json={"role": "admin"})
    assert_problem(promote, 403)
    assert (await viewer.get("/api/auth/me")).json()["user"]["role"] == "viewer"
