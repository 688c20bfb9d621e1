"""Login throttling per account and per address, held in Valkey so that every worker agrees.

Two apps built from the same settings stand for two granian workers: each has its own pool,
Valkey client and event loop, and shares nothing with the other but the servers."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import (
    Browser,
    BrowserFactory,
    UserFactory,
    assert_problem,
    running_app,
    scalar,
    wrong_totp,
)
from tipstream.config import Settings
from tipstream.db import Conn

ACCOUNT_LIMIT = 3
IP_LIMIT = 5
_addresses = (f"198.18.7.{n}" for n in itertools.count(1))


def fresh_ip() -> str:
    """A peer address no other test used, so per-address counts start at zero."""
    return next(_addresses)


Workers = tuple[AsyncTestClient[Litestar], AsyncTestClient[Litestar]]


@pytest.fixture(scope="module")
def throttle_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(
        security={
            "login_failures_per_account": ACCOUNT_LIMIT,
            "login_failures_per_ip": IP_LIMIT,
            "login_failure_window_seconds": 600,
            "lockout_seconds": 300,
        }
    )


@pytest.fixture(scope="module")
async def workers(throttle_settings: Settings) -> AsyncIterator[Workers]:
    async with running_app(throttle_settings) as one, running_app(throttle_settings) as two:
        assert one.app is not two.app
        yield one, two


async def registered(
    make_user: UserFactory, client: AsyncTestClient[Litestar], peer: str
) -> Browser:
    user = await make_user("throttled", client=client, peer=peer)
    await user.post("/api/auth/logout")
    return user


def on(
    new_browser: BrowserFactory, client: AsyncTestClient[Litestar], user: Browser, peer: str
) -> Browser:
    browser = new_browser(client, peer)
    browser.email, browser.password = user.email, user.password
    return browser


async def test_failures_across_two_workers_lock_the_account(
    workers: Workers, make_user: UserFactory, new_browser: BrowserFactory, db: Conn
) -> None:
    one, two = workers
    user = await registered(make_user, one, fresh_ip())
    wrong_one = on(new_browser, one, user, fresh_ip())
    wrong_one.password = "not the password"
    wrong_two = on(new_browser, two, user, fresh_ip())
    wrong_two.password = "not the password"

    # The failures are spread over both workers and several addresses.
    assert_problem(await wrong_one.login(), 401)
    assert_problem(await wrong_two.login(), 401)
    assert_problem(await wrong_one.login(), 401)  # the third: now locked

    # Even the right password, on either worker, from a new address, is refused for now.
    sessions_before = await scalar(
        db, "SELECT count(*) FROM sessions WHERE user_id = %s", (user.user_id,)
    )
    for client in (one, two):
        right = on(new_browser, client, user, fresh_ip())
        response = await right.login()
        body = assert_problem(response, 429, "login-locked")
        retry_after = int(response.headers["retry-after"])
        assert 0 < retry_after <= 300
        assert str(retry_after) in body["detail"]
        assert right.session_cookie is None
    assert (
        await scalar(db, "SELECT count(*) FROM sessions WHERE user_id = %s", (user.user_id,))
        == sessions_before
    )
    locked = await scalar(
        db,
        "SELECT count(*) FROM audit_logs WHERE action = 'login.locked' AND actor_id = %s",
        (user.user_id,),
    )
    assert locked == 1


async def test_a_success_resets_the_account_count(
    workers: Workers, make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    one, two = workers
    user = await registered(make_user, one, fresh_ip())
    wrong = on(new_browser, one, user, fresh_ip())
    wrong.password = "not the password"
    for _ in range(ACCOUNT_LIMIT - 1):
        assert_problem(await wrong.login(), 401)
    assert (await on(new_browser, two, user, fresh_ip()).login()).status_code == 200
    for _ in range(ACCOUNT_LIMIT - 1):
        assert_problem(await wrong.login(), 401)
    assert (await on(new_browser, one, user, fresh_ip()).login()).status_code == 200


async def test_failures_from_one_address_lock_that_address(
    workers: Workers, make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    one, two = workers
    attacker_ip = fresh_ip()
    victim = await registered(make_user, one, fresh_ip())
    # Spraying many accounts from one address, each below the account limit.
    for n in range(IP_LIMIT):
        sprayer = new_browser(one if n % 2 else two, attacker_ip)
        sprayer.email, sprayer.password = f"nobody-{n}-{attacker_ip}@example.test", "guess guess"
        assert_problem(await sprayer.login(), 401)

    # The address is locked, even for a correct password of an untouched account...
    from_attacker = on(new_browser, two, victim, attacker_ip)
    response = await from_attacker.login()
    assert_problem(response, 429, "login-locked")
    assert int(response.headers["retry-after"]) > 0
    # ...while the same account signs in fine from elsewhere.
    assert (await on(new_browser, one, victim, fresh_ip()).login()).status_code == 200


async def test_trusted_proxy_forwarded_address_is_the_one_counted(
    settings_factory: Callable[..., Settings], make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    """Behind nginx every request comes from the proxy; the client's address is the last
    X-Forwarded-For entry, and only from a trusted proxy."""
    proxied = settings_factory(
        server={"trusted_proxies": ["198.18.0.1"]},
        security={"login_failures_per_account": 100, "login_failures_per_ip": 2},
    )
    async with running_app(proxied) as client:
        user = await registered(make_user, client, fresh_ip())
        spray = new_browser(client, "198.18.0.1")
        spray.password = "wrong wrong"
        for n in range(2):
            spray.email = f"spray-{n}@example.test"
            response = await spray.post(
                "/api/auth/login",
                json={"email": spray.email, "password": spray.password},
                headers={"x-forwarded-for": "203.0.113.66, 198.18.9.9"},
            )
            assert_problem(response, 401)
        proxy = on(new_browser, client, user, "198.18.0.1")
        locked = await proxy.post(
            "/api/auth/login",
            json={"email": user.email, "password": user.password},
            headers={"x-forwarded-for": "198.18.9.9"},
        )
        assert_problem(locked, 429, "login-locked")
        # A forged first entry does not escape the lock; another real client is not locked.
        forged = await proxy.post(
            "/api/auth/login",
            json={"email": user.email, "password": user.password},
            headers={"x-forwarded-for": "198.18.5.5, 198.18.9.9"},
        )
        assert_problem(forged, 429)
        other = await proxy.post(
            "/api/auth/login",
            json={"email": user.email, "password": user.password},
            headers={"x-forwarded-for": "198.18.9.10"},
        )
        assert other.status_code == 200, other.text


async def test_wrong_2fa_codes_count_towards_the_lock(
    workers: Workers, make_user: UserFactory, new_browser: BrowserFactory
) -> None:
    """Someone who has the password cannot try 2FA codes without end."""
    one, two = workers
    user = await make_user("throttled-2fa", client=one, peer=fresh_ip())
    await user.enroll_totp()
    assert user.totp_secret is not None
    for n in range(ACCOUNT_LIMIT):
        guesser = on(new_browser, one if n % 2 else two, user, fresh_ip())
        assert_problem(await guesser.login(totp_code=wrong_totp(user.totp_secret)), 401)
    owner = on(new_browser, two, user, fresh_ip())
    owner.totp_secret = user.totp_secret
    assert_problem(await owner.login_with_totp(), 429, "login-locked")
