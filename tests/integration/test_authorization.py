"""Authorization by rule: every route of the app declares who may call it, and each role is
refused where it should be, with 401/403 problem+json, never a 500."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
from litestar import Litestar
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from tests.helpers import PROBLEM, Browser, UserFactory, assert_problem
from tipstream.accounts.guards import GUARD_ATTR

SetRole = Callable[[Browser, str], Awaitable[None]]
SAMPLE_PARAMS = {
    "int": "1",
    "str": "x",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "path": "x",
    "float": "1.0",
    "decimal": "1.0",
    "date": "2024-01-01",
    "datetime": "2024-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    access: str

    @property
    def url(self) -> str:
        def sample(match: re.Match[str]) -> str:
            kind = match.group(2) or "str"
            return SAMPLE_PARAMS.get(kind, "x")

        return re.sub(r"\{(\w+)(?::(\w+))?\}", sample, self.path)

    @property
    def roles(self) -> set[str] | None:
        """Roles the rule admits, or None when any caller (signed in or not) may come."""
        if self.access in ("public", "signed-in"):
            return None
        return set(self.access.split("[")[0].split("+"))

    @property
    def permission(self) -> str | None:
        found = re.search(r"\[(\w+)\]", self.access)
        return found.group(1) if found else None


def access_rules(handler: BaseRouteHandler) -> list[str]:
    return [getattr(g, GUARD_ATTR) for g in handler.resolve_guards() if hasattr(g, GUARD_ATTR)]


def is_automatic_options(handler: BaseRouteHandler) -> bool:
    """Litestar adds an OPTIONS handler to each path (CORS preflight); it answers the allowed
    methods, touches no data and runs none of our code."""
    return (
        isinstance(handler, HTTPRouteHandler)
        and handler.http_methods == {"OPTIONS"}
        and handler.handler_name == "options_handler"
        and handler.fn.__module__.startswith("litestar.")
    )


def all_handlers(app: Litestar) -> Iterator[tuple[str, BaseRouteHandler]]:
    for route in app.routes:
        handlers = getattr(route, "route_handlers", None) or [route.route_handler]
        for handler in handlers:
            if not is_automatic_options(handler):
                yield route.path, handler


def http_endpoints(app: Litestar) -> list[Endpoint]:
    found = []
    for path, handler in all_handlers(app):
        if not isinstance(handler, HTTPRouteHandler):
            continue
        rules = access_rules(handler)
        for method in sorted(handler.http_methods):
            if method in ("HEAD", "OPTIONS"):
                continue
            found.append(Endpoint(method, path, rules[0] if rules else "NONE"))
    return found


def test_every_route_handler_declares_an_access_rule(app: Litestar) -> None:
    handlers = list(all_handlers(app))
    assert len(handlers) > 15
    missing = [
        f"{path} ({handler.handler_name})"
        for path, handler in handlers
        if not access_rules(handler)
    ]
    assert not missing, f"route handlers without an access rule: {missing}"


def test_the_rule_set_is_what_the_design_says(app: Litestar) -> None:
    """Spot checks that the walk sees real rules: admin pages are admin-only, sign-in open."""
    rules = {(e.method, e.path.rstrip("/")): e.access for e in http_endpoints(app)}
    assert rules[("POST", "/api/auth/login")] == "public"
    assert rules[("POST", "/api/auth/register")] == "public"
    assert rules[("GET", "/api/auth/me")] == "signed-in"
    assert rules[("GET", "/api/admin/users")] == "admin"
    assert rules[("POST", "/api/admin/users/{user_id:int}/role")] == "admin"
    assert rules[("GET", "/api/admin/audit")] == "admin"
    assert rules[("GET", "/healthz")] == "public"


async def call(browser: Browser, endpoint: Endpoint) -> httpx.Response:
    kwargs = {"json": {}} if endpoint.method in ("POST", "PUT", "PATCH") else {}
    return await browser.request(endpoint.method, endpoint.url, **kwargs)


def assert_not_a_crash(endpoint: Endpoint, response: httpx.Response) -> None:
    assert response.status_code < 500, (endpoint, response.status_code, response.text)
    if response.status_code >= 400 and endpoint.access != "public":
        assert response.headers["content-type"].startswith(PROBLEM), (endpoint, response.text)


async def test_anonymous_callers_get_401_on_every_protected_route(
    app: Litestar, anon: Browser
) -> None:
    checked = 0
    for endpoint in http_endpoints(app):
        response = await call(anon, endpoint)
        if endpoint.access == "public":
            # Litestar's API docs answer unknown page names with an HTML 404 page, so open
            # routes are only held to "no crash".
            assert response.status_code < 500, (endpoint, response.text)
            continue
        body = assert_problem(response, 401)
        assert body["instance"], endpoint
        checked += 1
    assert checked >= 10


async def test_each_role_is_refused_where_it_should_be(
    app: Litestar, make_user: UserFactory, set_role: SetRole
) -> None:
    viewer = await make_user("viewer")
    performer = await make_user("performer", role="performer")
    moderator = await make_user("moderator")
    await set_role(moderator, "moderator")
    await moderator.enroll_totp()
    finance_less_admin = await make_user("admin")
    await set_role(finance_less_admin, "admin")
    await finance_less_admin.enroll_totp()

    endpoints = http_endpoints(app)
    # Logging out ends the session the later calls need: leave it for last.
    endpoints.sort(key=lambda e: e.path.endswith("/logout"))
    refused = 0
    for endpoint in endpoints:
        callers = [("viewer", viewer), ("performer", performer), ("moderator", moderator)]
        for role, browser in callers:
            response = await call(browser, endpoint)
            roles = endpoint.roles
            if roles is not None and role not in roles:
                assert_problem(response, 403)
                refused += 1
            else:
                assert_not_a_crash(endpoint, response)
        if endpoint.permission is not None:
            response = await call(finance_less_admin, endpoint)
            assert_problem(response, 403)
    assert refused >= 3 * 6  # the admin routes, at least, refuse all three


async def test_a_role_lost_takes_effect_on_the_next_request(
    make_admin: UserFactory, make_user: UserFactory, set_role: SetRole
) -> None:
    admin = await make_admin()
    boss = await make_admin("boss")
    assert (await admin.get("/api/admin/users/")).status_code == 200
    demoted = await boss.post(f"/api/admin/users/{admin.user_id}/role", json={"role": "viewer"})
    assert demoted.status_code == 200
    assert_problem(await admin.get("/api/admin/users/"), 403)
