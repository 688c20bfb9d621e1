"""The tip and wallet API over HTTP, as a browser uses it: session cookie, CSRF header,
Idempotency-Key; every refusal a problem+json 4xx with nothing changed."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.helpers import Browser, assert_problem, scalar
from tests.integration.ledger.conftest import Fund, NewStream
from tipstream.db import Conn

UserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def room(
    make_user: UserFactory, set_role: Any, new_stream: NewStream, fund: Fund
) -> tuple[Browser, Browser, int]:
    viewer = await make_user("viewer")
    performer = await make_user("performer")
    await set_role(performer, "performer")
    stream = await new_stream(performer.user_id)
    await fund(viewer.user_id, 500)
    return viewer, performer, stream


def key() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


async def tip_count(db: Conn) -> int:
    return int(await scalar(db, "SELECT count(*) FROM tips"))


async def test_tip_then_retry_then_conflicting_reuse(room: tuple[Browser, Browser, int]) -> None:
    viewer, performer, stream = room
    headers = key()
    body = {"tokens": 120, "message": "great show", "private": False}
    first = await viewer.post(f"/api/streams/{stream}/tips", json=body, headers=headers)
    assert first.status_code == 201, first.text
    tip = first.json()
    assert (tip["tokens"], tip["performer_id"], tip["viewer_id"]) == (
        120,
        performer.user_id,
        viewer.user_id,
    )
    assert (tip["gross"], tip["performer_share"], tip["platform_fee"]) == ("1.20", "0.84", "0.36")
    assert (tip["currency"], tip["tokens_per_currency_unit"], tip["fee_bps"]) == ("USD", 100, 3000)

    retry = await viewer.post(f"/api/streams/{stream}/tips", json=body, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == tip

    other = await viewer.post(
        f"/api/streams/{stream}/tips", json={**body, "tokens": 121}, headers=headers
    )
    assert_problem(other, 409, "idempotency-key-reused")
    wallet = (await viewer.get("/api/wallet")).json()
    assert wallet == {
        "asset": "TKN",
        "balance": 380,
        "available": 380,
        "reserved": 0,
        "frozen": False,
    }


async def test_bad_tips_are_problems_and_change_nothing(
    db: Conn, anon: Browser, room: tuple[Browser, Browser, int], new_stream: NewStream
) -> None:
    viewer, performer, stream = room
    url = f"/api/streams/{stream}/tips"
    ended = await new_stream(performer.user_id, "ended")
    before = await tip_count(db)
    cases: list[tuple[Any, int, str | None]] = [
        (viewer.post(url, json={"tokens": 5}), 400, "idempotency-key-missing"),
        (
            viewer.post(
                url, content=b"{not json", headers={**key(), "content-type": "application/json"}
            ),
            400,
            None,
        ),
        (viewer.post(url, json={"tokens": "five"}, headers=key()), 400, "invalid-input"),
        (viewer.post(url, json={"tokens": 5.5}, headers=key()), 400, "invalid-input"),
        (viewer.post(url, json={"tokens": 5, "extra": 1}, headers=key()), 400, "invalid-input"),
        (viewer.post(url, json={"tokens": 0}, headers=key()), 400, "invalid-input"),
        (viewer.post(url, json={"tokens": 100_001}, headers=key()), 422, "amount-out-of-bounds"),
        (viewer.post(url, json={"tokens": 5, "message": "x" * 201}, headers=key()), 422, None),
        (viewer.post(url, json={"tokens": 501}, headers=key()), 409, "insufficient-funds"),
        (
            viewer.post(f"/api/streams/{ended}/tips", json={"tokens": 5}, headers=key()),
            409,
            "stream-not-live",
        ),
        (
            viewer.post("/api/streams/999999999/tips", json={"tokens": 5}, headers=key()),
            404,
            "stream-not-found",
        ),
        (viewer.post("/api/streams/0/tips", json={"tokens": 5}, headers=key()), 400, None),
        (viewer.post(url, json={"tokens": 5}, headers={"idempotency-key": "x" * 201}), 422, None),
        (performer.post(url, json={"tokens": 5}, headers=key()), 422, "self-tip"),
        (anon.post(url, json={"tokens": 5}, headers=key()), 401, None),
        (viewer.post(url, json={"tokens": 5}, headers=key(), csrf=False), 403, "csrf-failed"),
    ]
    for request, status, slug in cases:
        assert_problem(await request, status, slug)
    assert await tip_count(db) == before
    assert (await viewer.get("/api/wallet")).json()["balance"] == 500


async def test_history_pages_with_a_cursor(room: tuple[Browser, Browser, int], fund: Fund) -> None:
    viewer, performer, stream = room
    for tokens in (1, 2, 3, 4, 5):
        response = await viewer.post(
            f"/api/streams/{stream}/tips", json={"tokens": tokens}, headers=key()
        )
        assert response.status_code == 201
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await viewer.get("/api/wallet/history", params=params)).json()
        pages += 1
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3  # 5 tips and the funding grant, 2 a page
    assert [e["amount"] for e in seen] == [-5, -4, -3, -2, -1, 500]
    assert [e["kind"] for e in seen] == ["tip"] * 5 + ["grant"]
    assert all(a["seq"] > b["seq"] for a, b in itertools.pairwise(seen))

    earnings = (await performer.get("/api/wallet/history", params={"account": "earnings"})).json()
    assert [e["amount_display"] for e in earnings["items"]] == [
        "0.035",
        "0.028",
        "0.021",
        "0.014",
        "0.007",
    ]
    bad = await viewer.get("/api/wallet/history", params={"cursor": "bm9wZQ"})
    assert_problem(bad, 422, "invalid-input")
    assert_problem(await viewer.get("/api/wallet/history", params={"limit": 0}), 400)


async def test_packages_are_public_and_wallets_are_not(anon: Browser) -> None:
    packages = (await anon.get("/api/wallet/packages")).json()
    assert packages[0] == {
        "id": "tkn-100",
        "tokens": 100,
        "price": "1.00",
        "currency": "USD",
        "label": "100 tokens",
    }
    assert_problem(await anon.get("/api/wallet"), 401)
    assert_problem(await anon.get("/api/wallet/history"), 401)
