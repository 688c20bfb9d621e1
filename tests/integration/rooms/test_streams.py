"""Streams over the HTTP API: lifecycle, who may do what, and the Janus room behind it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import Browser, UserFactory, assert_problem
from tests.integration.kyc.approved import approve_kyc
from tipstream.db import Conn
from tipstream.rooms.sfu import Sfu

SetRole = Callable[[Browser, str], Awaitable[None]]


@pytest.fixture
async def performer(
    make_user: UserFactory, rooms_client: AsyncTestClient[Litestar], db: Conn
) -> Browser:
    person = await make_user("performer", client=rooms_client, role="performer")
    await approve_kyc(db, person.user_id)  # publishing needs approved KYC
    return person


@pytest.fixture
async def viewer(make_user: UserFactory, rooms_client: AsyncTestClient[Litestar]) -> Browser:
    return await make_user("viewer", client=rooms_client)


def sfu_of(client: AsyncTestClient[Litestar]) -> Sfu:
    sfu: Sfu = client.app.state.sfu
    return sfu


async def room_row(db: Conn, stream_id: int) -> dict[str, Any]:
    cur = await db.execute(
        "SELECT status::text, janus_room_id, janus_room_secret, end_reason FROM streams"
        " WHERE id = %s",
        (stream_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def test_performer_schedules_goes_live_and_ends(
    performer: Browser, viewer: Browser, rooms_client: AsyncTestClient[Litestar], db: Conn
) -> None:
    created = await performer.post(
        "/api/streams", json={"title": "Evening show", "tags": ["Music", "music", "chat"]}
    )
    assert created.status_code == 201, created.text
    stream = created.json()
    assert stream["status"] == "scheduled"
    assert stream["tags"] == ["music", "chat"]
    assert "janus_room_id" not in stream and "janus_room_secret" not in stream

    live = await performer.post(f"/api/streams/{stream['id']}/live")
    assert live.status_code == 200, live.text
    assert live.json()["status"] == "live"
    row = await room_row(db, stream["id"])
    assert await sfu_of(rooms_client).room_exists(row["janus_room_id"])

    listing = await viewer.get("/api/streams")
    assert listing.status_code == 200
    assert stream["id"] in [s["id"] for s in listing.json()]
    shown = await viewer.get(f"/api/streams/{stream['id']}")
    assert shown.json()["status"] == "live"
    assert "secret" not in shown.text

    again = await performer.post(f"/api/streams/{stream['id']}/live")
    assert_problem(again, 409)

    ended = await performer.post(f"/api/streams/{stream['id']}/end", json={"reason": "bye"})
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended"
    assert ended.json()["end_reason"] == "bye"
    assert not await sfu_of(rooms_client).room_exists(row["janus_room_id"])
    listing = await viewer.get("/api/streams")
    assert stream["id"] not in [s["id"] for s in listing.json()]
    assert_problem(await performer.post(f"/api/streams/{stream['id']}/end"), 409)


async def test_only_the_own_performer_may_go_live_or_end(
    performer: Browser,
    viewer: Browser,
    make_user: UserFactory,
    rooms_client: AsyncTestClient[Litestar],
    db: Conn,
) -> None:
    stream = (await performer.post("/api/streams", json={"title": "Mine"})).json()
    other = await make_user("performer2", client=rooms_client, role="performer")
    await approve_kyc(db, other.user_id)

    assert_problem(await viewer.post("/api/streams", json={"title": "nope"}), 403)
    assert_problem(await viewer.post(f"/api/streams/{stream['id']}/live"), 403)
    assert_problem(await other.post(f"/api/streams/{stream['id']}/live"), 403, "not-your-stream")
    assert (await room_row(db, stream["id"]))["status"] == "scheduled"

    assert (await performer.post(f"/api/streams/{stream['id']}/live")).status_code == 200
    assert_problem(await viewer.post(f"/api/streams/{stream['id']}/end"), 403)
    assert_problem(await other.post(f"/api/streams/{stream['id']}/end"), 403, "not-your-stream")
    assert (await room_row(db, stream["id"]))["status"] == "live"

    # One live stream per performer.
    second = (await performer.post("/api/streams", json={"title": "Second"})).json()
    assert_problem(await performer.post(f"/api/streams/{second['id']}/live"), 409)
    await performer.post(f"/api/streams/{stream['id']}/end")


async def test_moderator_ends_any_stream_and_the_room_is_gone(
    performer: Browser,
    make_user: UserFactory,
    set_role: SetRole,
    rooms_client: AsyncTestClient[Litestar],
    db: Conn,
) -> None:
    stream = (await performer.post("/api/streams", json={"title": "Moderated"})).json()
    assert (await performer.post(f"/api/streams/{stream['id']}/live")).status_code == 200
    room_id = (await room_row(db, stream["id"]))["janus_room_id"]

    moderator = await make_user("mod", client=rooms_client)
    await set_role(moderator, "moderator")
    # Staff must have a 2FA-verified session first.
    assert_problem(await moderator.post(f"/api/streams/{stream['id']}/end"), 403)
    await moderator.enroll_totp()
    await moderator.login_with_totp()
    ended = await moderator.post(f"/api/streams/{stream['id']}/end")
    assert ended.status_code == 200, ended.text
    assert ended.json()["end_reason"] == "ended by moderator"
    assert not await sfu_of(rooms_client).room_exists(room_id)
    cur = await db.execute(
        "SELECT count(*) AS n FROM audit_logs WHERE action = 'stream.end' AND target_id = %s",
        (str(stream["id"]),),
    )
    row = await cur.fetchone()
    assert row is not None and row["n"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "x" * 141},
        {"title": "ok", "tags": ["bad tag!"]},
        {"title": "ok", "tags": ["t"] * 11},
        {"title": "ok", "surprise": 1},
        {"title": 5},
    ],
)
async def test_bad_stream_requests_are_problems(performer: Browser, body: dict[str, Any]) -> None:
    assert_problem(await performer.post("/api/streams", json=body), 400)


async def test_unknown_and_malformed_ids(performer: Browser, anon: Browser) -> None:
    assert_problem(await anon.get("/api/streams/999999999"), 404)
    assert_problem(await anon.get("/api/streams/0"), 400)
    assert_problem(await anon.get("/api/streams/abc"), 404)
    assert_problem(await performer.post("/api/streams/999999999/live"), 404)
    assert_problem(await anon.post("/api/streams", json={"title": "x"}), 401)
