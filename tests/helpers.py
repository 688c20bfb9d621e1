"""Helpers shared by the tests: a browser with its own cookie jar, problem+json checks, and
direct looks at the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp
from litestar import Litestar
from litestar.testing import AsyncTestClient
from litestar.testing.transport import TestClientTransport
from psycopg import sql

from tipstream.app import create_app
from tipstream.config import Settings
from tipstream.db import Conn

PASSWORD = "correct horse battery staple"
ADULT_DOB = "1990-05-17"
PROBLEM = "application/problem+json"
SESSION_COOKIES = ("tipstream_session", "__Host-tipstream")


class PeerTransport(TestClientTransport[AsyncTestClient[Litestar]]):
    """Litestar's test transport, with a chosen peer address (the stock one is 'testclient')."""

    def __init__(self, client: AsyncTestClient[Litestar], peer: str | None) -> None:
        super().__init__(client=client, raise_server_exceptions=True)
        self.peer = peer

    def parse_request(self, request: httpx.Request) -> dict[str, Any]:
        scope = super().parse_request(request)
        if self.peer is not None:
            scope["client"] = (self.peer, 50000)
        return scope

    async def aclose(self) -> None:
        """Nothing to close: the app and its portal belong to the test client."""


@dataclass
class Browser:
    """One browser (its own cookie jar) talking to a running app. Sends the CSRF token it got
    at login with state-changing requests unless told not to."""

    http: httpx.AsyncClient
    csrf: str | None = None
    user: dict[str, Any] = field(default_factory=dict)
    email: str = ""
    password: str = PASSWORD
    totp_secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)

    @classmethod
    def on(cls, client: AsyncTestClient[Litestar], *, peer: str | None = None) -> Browser:
        """A new browser on the app behind this test client, optionally from this address."""
        http = httpx.AsyncClient(
            transport=PeerTransport(client, peer),
            base_url=str(client.base_url),
            headers={"user-agent": "pytest-browser"},
        )
        return cls(http=http)

    @property
    def user_id(self) -> int:
        return int(self.user["id"])

    @property
    def session_cookie(self) -> str | None:
        for cookie in self.http.cookies.jar:
            if cookie.name in SESSION_COOKIES:
                return cookie.value
        return None

    async def request(
        self,
        method: str,
        url: str,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if csrf and self.csrf and method.upper() not in {"GET", "HEAD", "OPTIONS"}:
            all_headers.setdefault("x-csrf-token", self.csrf)
        return await self.http.request(method, url, headers=all_headers, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    async def register(self, email: str | None = None, **fields: Any) -> httpx.Response:
        self.email = email or unique_email()
        body = {
            "email": self.email,
            "password": self.password,
            "date_of_birth": ADULT_DOB,
            "display_name": "Tess Tester",
            **fields,
        }
        response = await self.post("/api/auth/register", json=body)
        if response.status_code == 201:
            self.user = response.json()
        return response

    async def login(self, **fields: Any) -> httpx.Response:
        body = {"email": self.email, "password": self.password, **fields}
        response = await self.post("/api/auth/login", json=body)
        if response.status_code == 200:
            me = response.json()
            self.csrf = me["csrf_token"]
            self.user = me["user"]
        return response

    async def login_with_totp(self) -> httpx.Response:
        """Sign in with a code no earlier sign-in can have used (see next_totp)."""
        assert self.totp_secret is not None
        return await self.login(totp_code=next_totp(self.totp_secret))

    async def enroll_totp(self) -> list[str]:
        """Enrol and confirm TOTP; the session becomes 2FA-verified."""
        response = await self.post("/api/auth/2fa/enroll")
        assert response.status_code == 200, response.text
        self.totp_secret = response.json()["secret"]
        confirm = await self.post(
            "/api/auth/2fa/confirm", json={"code": pyotp.TOTP(self.totp_secret).now()}
        )
        assert confirm.status_code == 200, confirm.text
        self.recovery_codes = confirm.json()["recovery_codes"]
        return self.recovery_codes

    async def aclose(self) -> None:
        await self.http.aclose()


BrowserFactory = Callable[..., Browser]
UserFactory = Callable[..., Awaitable[Browser]]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app (its own pool and Valkey client) behind a test client: one 'worker'."""
    app = create_app(settings)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        yield client


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.test"


def next_totp(secret: str) -> str:
    """The next time step's code. Codes are single-use per 30 s step; the server accepts one
    step of drift, so this is the code for a second sign-in within the step of the first."""
    return str(pyotp.TOTP(secret).at(time.time() + 30))


def wrong_totp(secret: str) -> str:
    """A six-digit code valid for none of the steps the server would accept."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def assert_problem(
    response: httpx.Response, status: int | set[int], slug: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with this status (or one of these) and, if given, this type slug."""
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    for key in ("type", "title", "status", "detail"):
        assert key in body, body
    assert body["status"] == response.status_code
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


async def scalar(conn: Conn, query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


SNAPSHOT_TABLES = ("users", "sessions", "api_tokens", "totp_recovery_codes", "audit_logs")


async def snapshot(conn: Conn) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of the accounts and audit tables."""
    result = {}
    for table in SNAPSHOT_TABLES:
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) AS n,"
                " md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS digest"
                " FROM {} t"
            ).format(sql.Identifier(table))
        )
        row = await cur.fetchone()
        assert row is not None
        result[table] = (int(row["n"]), str(row["digest"]))
    return result
