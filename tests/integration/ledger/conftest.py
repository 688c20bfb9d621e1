"""Ledger test fixtures: users and live streams made directly in the run's database, wallets
funded through the ledger service, and `ledger verify` after every test of this folder."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import service, verify

NewUser = Callable[..., Awaitable[int]]
NewStream = Callable[..., Awaitable[int]]
Fund = Callable[..., Awaitable[None]]


async def insert_user(conn: Conn, role: str = "viewer", name: str = "Ledger Tester") -> int:
    # No password needed: these users never sign in (the API tests register real ones).
    cur = await conn.execute(
        """
        INSERT INTO users (email, display_name, password_hash, date_of_birth, role)
        VALUES (%s, %s, 'x', '1990-01-01', %s) RETURNING id
        """,
        (f"ledger-{uuid.uuid4().hex[:12]}@example.test", name, role),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def insert_stream(conn: Conn, performer_id: int, status: str = "live") -> int:
    """A stream row in this state, as the Live rooms domain leaves it (a live stream has its
    Janus room; these tests never talk to Janus)."""
    cur = await conn.execute(
        """
        INSERT INTO streams (performer_id, title, status, started_at, ended_at, end_reason,
                             janus_room_id, janus_room_secret, janus_room_pin)
        VALUES (%(performer)s, 'test stream', %(status)s::text::stream_status,
                CASE WHEN %(status)s::text <> 'scheduled' THEN now() END,
                CASE WHEN %(status)s::text = 'ended' THEN now() END,
                CASE WHEN %(status)s::text = 'ended' THEN 'test' END,
                CASE WHEN %(status)s::text = 'live'
                     THEN (random() * 9e15)::bigint + nextval('streams_id_seq') END,
                CASE WHEN %(status)s::text = 'live' THEN md5(random()::text) END,
                CASE WHEN %(status)s::text = 'live' THEN md5(random()::text) END)
        RETURNING id
        """,
        {"performer": performer_id, "status": status},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


@pytest.fixture
def new_user(db: Conn) -> NewUser:
    async def make(role: str = "viewer", name: str = "Ledger Tester") -> int:
        return await insert_user(db, role, name)

    return make


@pytest.fixture
def new_stream(db: Conn) -> NewStream:
    async def make(performer_id: int, status: str = "live") -> int:
        return await insert_stream(db, performer_id, status)

    return make


@pytest.fixture
def fund(db: Conn, settings: Settings) -> Fund:
    async def grant(user_id: int, tokens: int) -> None:
        await service.grant_tokens(
            db,
            settings,
            user_id=user_id,
            tokens=tokens,
            grant_id=uuid.uuid4().hex,
            reason="test funding",
            actor_id=None,
        )

    return grant


@pytest.fixture(autouse=True)
async def books_balance(db: Conn) -> AsyncIterator[None]:
    """Every ledger test ends with the whole ledger verified."""
    yield
    report = await verify.verify(db)
    assert report.ok, [c for c in report.checks if not c.ok]
