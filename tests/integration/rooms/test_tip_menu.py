"""Tip menus: a performer sets their own priced items, anyone reads them in order; bad menus,
other people's menus and non-performers are refused with problem+json and change nothing."""

from __future__ import annotations

from typing import Any

from tests.helpers import Browser, UserFactory, assert_problem, scalar
from tipstream.db import Conn

MENU = [
    {"label": "  Dance   50 ", "tokens": 50},
    {"label": "Song request", "tokens": 120},
    {"label": "Flash the 🌹", "tokens": 333},
]


def url(user: Browser | int) -> str:
    user_id = user if isinstance(user, int) else user.user_id
    return f"/api/performers/{user_id}/tip-menu"


async def menu_of(anon: Browser, performer: Browser) -> list[dict[str, Any]]:
    response = await anon.get(url(performer))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_performer_sets_the_menu_and_anyone_reads_it_in_order(
    make_user: UserFactory, anon: Browser, db: Conn
) -> None:
    performer = await make_user("menu", role="performer")
    assert await menu_of(anon, performer) == []

    saved = await performer.request("PUT", url(performer), json={"items": MENU})
    assert saved.status_code == 200, saved.text
    expected = [
        {"label": "Dance 50", "tokens": 50},
        {"label": "Song request", "tokens": 120},
        {"label": "Flash the 🌹", "tokens": 333},
    ]
    assert saved.json() == {"performer_id": performer.user_id, "items": expected}
    assert await menu_of(anon, performer) == expected

    # Reordered and shortened: the menu is replaced as a whole.
    reordered = [expected[2], expected[0]]
    again = await performer.request("PUT", url(performer), json={"items": reordered})
    assert again.status_code == 200, again.text
    assert await menu_of(anon, performer) == reordered

    cleared = await performer.request("PUT", url(performer), json={"items": []})
    assert cleared.status_code == 200
    assert await menu_of(anon, performer) == []

    changes = await scalar(
        db,
        "SELECT count(*) FROM audit_logs WHERE action = 'tip_menu.set' AND actor_id = %s",
        (performer.user_id,),
    )
    assert changes == 3


async def test_bad_menus_get_field_errors_and_change_nothing(
    make_user: UserFactory, anon: Browser
) -> None:
    performer = await make_user("menu-bad", role="performer")
    good = [{"label": "Dance", "tokens": 50}]
    assert (await performer.request("PUT", url(performer), json={"items": good})).status_code == 200

    too_many = [{"label": f"Item {n}", "tokens": n + 1} for n in range(21)]
    bad_bodies: list[tuple[Any, str | None]] = [
        ({"items": too_many}, "items"),
        ({"items": [{"label": "x" * 61, "tokens": 5}]}, "label"),
        ({"items": [{"label": "   ", "tokens": 5}]}, "label"),
        ({"items": [{"label": "bell\x07", "tokens": 5}]}, "label"),
        ({"items": [{"label": "Dance", "tokens": 0}]}, "tokens"),
        ({"items": [{"label": "Dance", "tokens": -5}]}, "tokens"),
        ({"items": [{"label": "Dance", "tokens": 10**12}]}, "tokens"),
        ({"items": [{"label": "Dance", "tokens": 1.5}]}, "tokens"),
        ({"items": [{"label": "Dance", "tokens": 5, "price": 1}]}, None),
        ({"items": "Dance"}, "items"),
        ({}, None),
    ]
    for body, field in bad_bodies:
        response = await performer.request("PUT", url(performer), json=body)
        assert response.status_code == 400, (body, response.text)
        problem = assert_problem(response, 400)
        if field is not None:
            keys = [e["key"] for e in problem.get("errors", [])]
            assert any(k.split(".")[-1].startswith(field) for k in keys), (body, problem)
    assert await menu_of(anon, performer) == good

    # The same label twice (case and spaces aside): the second item's label is marked.
    twice = [{"label": "Dance", "tokens": 50}, {"label": "Song", "tokens": 9}]
    twice.append({"label": " dance ", "tokens": 70})
    response = await performer.request("PUT", url(performer), json={"items": twice})
    problem = assert_problem(response, 422, "invalid-input")
    assert problem["errors"] == [
        {"key": "items[2].label", "message": "This label is already on the menu"}
    ]
    assert await menu_of(anon, performer) == good


async def test_only_the_performer_edits_their_menu(
    make_user: UserFactory, anon: Browser, make_admin: UserFactory
) -> None:
    owner = await make_user("menu-owner", role="performer")
    other = await make_user("menu-other", role="performer")
    viewer = await make_user("menu-viewer")
    admin = await make_admin("menu-admin")
    mine = [{"label": "Dance", "tokens": 50}]
    assert (await owner.request("PUT", url(owner), json={"items": mine})).status_code == 200

    grab = {"items": [{"label": "Free show", "tokens": 1}]}
    assert_problem(await other.request("PUT", url(owner), json=grab), 403, "not-your-menu")
    assert_problem(await admin.request("PUT", url(owner), json=grab), 403, "not-your-menu")
    assert_problem(await viewer.request("PUT", url(owner), json=grab), 403)
    assert_problem(await viewer.request("PUT", url(viewer), json=grab), 403)
    assert_problem(await anon.request("PUT", url(owner), json=grab), {401, 403})
    assert await menu_of(anon, owner) == mine

    # Only performers have menus to read.
    assert_problem(await anon.get(url(viewer)), 404, "performer-not-found")
    assert_problem(await anon.get(url(2**62)), 404, "performer-not-found")
    assert_problem(await anon.get(url(0)), 400)
