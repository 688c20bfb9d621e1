"""Reports with evidence, the review queue and moderators' actions, through a real app process:
evidence that stays byte-identical and decryptable, actions that take effect, are audited and
tell the affected user, and RBAC on every moderation route."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from tests.helpers import scalar
from tests.integration.moderation.conftest import MakeModerator, ModWorld, decode
from tests.integration.rooms.people import Person, live_stream, sign_up
from tipstream import db as tsdb


async def test_report_of_a_message_preserves_evidence_a_moderator_opens_and_acts_on(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    performer = await sign_up(mod_world.server, "performer", "reported")
    stream_id = await live_stream(performer, "report me")
    author = await sign_up(mod_world.server, tag="author")
    author_room = await author.room(stream_id)
    reporter = await sign_up(mod_world.server, tag="reporter")
    reporter_room = await reporter.room(stream_id)
    await author_room.send({"type": "chat", "text": "buy cheap followers at example.test"})
    message = await reporter_room.expect("chat")

    created = await reporter.post(
        "/api/moderation/reports",
        json={
            "target": "message",
            "stream_id": stream_id,
            "message_id": message["id"],
            "reason": "spam",
        },
    )
    assert created.status_code == 201, created.text
    case_id, digest = created.json()["id"], created.json()["evidence_sha256"]

    # The sealed evidence in the vault is byte-identical to what the moderator is shown, and
    # matches the hash taken at the moment of the report.
    evidence_id = await scalar(
        mod_db, "SELECT evidence_id FROM moderation_cases WHERE id = %s", (case_id,)
    )
    _, sealed = await mod_world.vault.get(mod_db, evidence_id)
    assert hashlib.sha256(sealed).hexdigest() == digest
    document = decode(sealed)
    assert document["message"]["text"] == "buy cheap followers at example.test"  # type: ignore[index]
    assert document["stream"]["id"] == stream_id  # type: ignore[index]
    assert document["reporter_id"] == reporter.id and document["subject_user_id"] == author.id
    assert any(line["id"] == message["id"] for line in document["chat"])  # type: ignore[attr-defined]

    # Later chat does not change it.
    await author_room.send({"type": "chat", "text": "more and more"})
    await reporter_room.expect("chat")
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    assert case_id in [c["id"] for c in queue]
    shown = await moderator.http.get(f"/api/moderation/cases/{case_id}")
    assert shown.status_code == 200 and "no-store" in shown.headers["cache-control"]
    assert shown.json()["evidence"].encode() == sealed
    viewed = await scalar(
        mod_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'moderation.evidence_view' "
        "AND target_id = %s AND actor_id = %s",
        (str(case_id), moderator.id),
    )
    assert viewed == 1

    acted = await moderator.post(
        f"/api/moderation/cases/{case_id}/actions",
        json={"action": "delete_message", "note": "spam"},
    )
    assert acted.status_code == 200, acted.text
    assert acted.json()["status"] == "closed" and acted.json()["resolution"] == "delete_message"
    assert (await reporter_room.expect("deleted"))["message_id"] == message["id"]
    told = (await author.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.delete_message" and told[0]["case_id"] == case_id
    audited = await scalar(
        mod_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'moderation.delete_message' "
        "AND target_id = %s",
        (str(case_id),),
    )
    assert audited == 1
    # A closed case takes no more actions.
    again = await moderator.post(
        f"/api/moderation/cases/{case_id}/actions", json={"action": "warn"}
    )
    assert again.status_code == 409


async def test_stream_report_end_stream_and_user_report_actions(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    performer = await sign_up(mod_world.server, "performer", "ended")
    stream_id = await live_stream(performer, "end me")
    viewer = await sign_up(mod_world.server, tag="viewer")
    room = await viewer.room(stream_id)
    stream_case = (
        await viewer.post(
            "/api/moderation/reports",
            json={
                "target": "stream",
                "stream_id": stream_id,
                "reason": "nudity in a non-adult room",
            },
        )
    ).json()["id"]
    troll = await sign_up(mod_world.server, tag="troll")
    user_case = (
        await viewer.post(
            "/api/moderation/reports",
            json={"target": "user", "user_id": troll.id, "stream_id": stream_id, "reason": "abuse"},
        )
    ).json()["id"]
    moderator = await make_moderator()
    queue = (await moderator.http.get("/api/moderation/queue")).json()
    order = [c["id"] for c in queue]
    assert order.index(stream_case) < order.index(user_case)  # same severity: oldest first
    # The moderator sees who was reported and by whom, not bare ids.
    reported = next(c for c in queue if c["id"] == user_case)
    for key, person in (("subject_name", troll), ("reporter_name", viewer)):
        name = await scalar(mod_db, "SELECT display_name FROM users WHERE id = %s", (person.id,))
        assert reported[key] == name, (key, reported)
    assert reported["subject_name"] != reported["reporter_name"]

    escalated = await moderator.post(
        f"/api/moderation/cases/{user_case}/actions", json={"action": "escalate"}
    )
    assert escalated.json()["status"] == "escalated"
    admin = await make_moderator("admin")
    for action in ("ban", "mute"):
        response = await admin.post(
            f"/api/moderation/cases/{user_case}/actions", json={"action": action}
        )
        if action == "ban":
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 409  # closed by the ban
    banned = await scalar(
        mod_db,
        "SELECT count(*) FROM room_bans WHERE performer_id = %s AND user_id = %s",
        (performer.id, troll.id),
    )
    assert banned == 1

    ended = await moderator.post(
        f"/api/moderation/cases/{stream_case}/actions",
        json={"action": "end_stream", "note": "policy"},
    )
    assert ended.status_code == 200, ended.text
    assert "moderation" in (await room.expect("stream_ended"))["reason"]
    status = await scalar(mod_db, "SELECT status::text FROM streams WHERE id = %s", (stream_id,))
    assert status == "ended"
    told = (await performer.http.get("/api/notifications")).json()
    assert told[0]["kind"] == "moderation.end_stream"


async def test_suspend_and_freeze_payouts(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    viewer = await sign_up(mod_world.server, tag="viewer")
    target = await sign_up(mod_world.server, "performer", "frozen")
    moderator = await make_moderator()
    cases = []
    for _ in range(2):
        created = await viewer.post(
            "/api/moderation/reports",
            json={"target": "user", "user_id": target.id, "reason": "fraud"},
        )
        assert created.status_code == 201, created.text
        cases.append(created.json()["id"])
    frozen = await moderator.post(
        f"/api/moderation/cases/{cases[0]}/actions", json={"action": "freeze_payouts"}
    )
    assert frozen.status_code == 200, frozen.text
    assert await scalar(
        mod_db,
        "SELECT count(*) FROM audit_logs WHERE action = 'ledger.earnings_freeze' "
        "AND target_id = %s",
        (str(target.id),),
    )
    suspended = await moderator.post(
        f"/api/moderation/cases/{cases[1]}/actions", json={"action": "suspend", "note": "fraud"}
    )
    assert suspended.status_code == 200, suspended.text
    disabled = await scalar(
        mod_db, "SELECT disabled_at IS NOT NULL FROM users WHERE id = %s", (target.id,)
    )
    assert disabled is True
    # Suspension ends the account's sessions.
    assert (await target.http.get("/api/notifications")).status_code == 401


async def test_bad_reports_and_actions_are_refused_and_change_nothing(
    mod_world: ModWorld, mod_db: tsdb.Conn, make_moderator: MakeModerator
) -> None:
    viewer = await sign_up(mod_world.server, tag="viewer")
    before = await scalar(mod_db, "SELECT count(*) FROM moderation_cases")
    for body, status in (
        ({"target": "message", "stream_id": 1, "reason": "x"}, 422),
        ({"target": "user", "reason": "x"}, 422),
        ({"target": "user", "user_id": viewer.id, "reason": "x"}, 422),
        ({"target": "user", "user_id": 2**62, "reason": "x"}, 404),
        ({"target": "stream", "stream_id": 2**62, "reason": "x"}, 404),
        ({"target": "stream", "stream_id": 1, "reason": ""}, 400),
        ({"target": "planet", "reason": "x"}, 400),
        ({"target": "user", "user_id": 1, "reason": "x", "extra": 1}, 400),
    ):
        response = await viewer.post("/api/moderation/reports", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await scalar(mod_db, "SELECT count(*) FROM moderation_cases") == before
    moderator = await make_moderator()
    unknown = await moderator.post(
        "/api/moderation/cases/999999999/actions", json={"action": "warn"}
    )
    assert unknown.status_code == 404
    bad = await moderator.post("/api/moderation/cases/1/actions", json={"action": "explode"})
    assert bad.status_code == 400


ROUTES = [
    ("GET", "/api/moderation/queue", None),
    ("GET", "/api/moderation/cases/{case}", None),
    ("POST", "/api/moderation/cases/{case}/actions", {"action": "escalate"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_rbac_on_every_moderator_route(
    mod_world: ModWorld, make_moderator: MakeModerator, method: str, path: str, body: object
) -> None:
    viewer = await sign_up(mod_world.server, tag="viewer")
    subject = await sign_up(mod_world.server, tag="subject")
    case = (
        await viewer.post(
            "/api/moderation/reports",
            json={"target": "user", "user_id": subject.id, "reason": f"rbac {uuid.uuid4()}"},
        )
    ).json()["id"]
    url = path.format(case=case)

    async def call(person: Person | None) -> int:
        if person is None:
            async with httpx.AsyncClient(base_url=mod_world.server.base_url) as anon:
                return (await anon.request(method, url, json=body)).status_code
        if method == "GET":
            return (await person.http.get(url)).status_code
        return (await person.post(url, json=body)).status_code

    performer = await sign_up(mod_world.server, "performer", "perf")
    no_2fa = await make_moderator(with_2fa=False)
    assert await call(None) == 401
    assert await call(viewer) == 403
    assert await call(performer) == 403
    assert await call(no_2fa) == 403
    assert await call(await make_moderator()) == 200


async def test_reports_and_notifications_need_a_signed_in_user(mod_world: ModWorld) -> None:
    async with httpx.AsyncClient(base_url=mod_world.server.base_url) as anon:
        report = await anon.post(
            "/api/moderation/reports", json={"target": "user", "user_id": 1, "reason": "x"}
        )
        assert report.status_code in (401, 403)
        assert (await anon.get("/api/notifications")).status_code == 401
