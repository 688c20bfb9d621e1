"""Bad input on every JSON route gets a clear 4xx problem+json and changes nothing."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.testing import AsyncTestClient
from valkey.asyncio import Valkey

from tests.helpers import (
    ADULT_DOB,
    PASSWORD,
    Browser,
    assert_problem,
    scalar,
    snapshot,
    unique_email,
)
from tests.integration.kyc.approved import approve_kyc
from tipstream.accounts import service as accounts
from tipstream.config import Settings
from tipstream.db import Conn

# A valid body for each accounts/admin route, to spoil one thing at a time.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/auth/register"): {
        "email": "someone@example.test",
        "password": PASSWORD,
        "date_of_birth": ADULT_DOB,
        "display_name": "Someone",
    },
    ("POST", "/api/auth/login"): {"email": "someone@example.test", "password": PASSWORD},
    ("POST", "/api/auth/password"): {"current_password": PASSWORD, "new_password": "x" * 12},
    ("POST", "/api/auth/2fa/confirm"): {"code": "123456"},
    ("POST", "/api/auth/2fa/disable"): {"code": "123456"},
    ("POST", "/api/auth/tokens"): {"name": "script"},
    ("POST", "/api/admin/users/{user_id:int}/role"): {"role": "performer"},
    ("POST", "/api/admin/users/{user_id:int}/disable"): {"reason": "spam"},
    ("POST", "/api/admin/users/{user_id:int}/permissions"): {"permissions": ["finance"]},
}
WRONG_TYPES: list[Any] = [None, 12345678901234567890, True, [], {}, 1.5]


def json_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every route handler that reads a request body."""
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            if "data" not in handler.parsed_fn_signature.parameters:
                continue
            found.extend((m, route.path) for m in sorted(handler.http_methods))
    return found


def int_routes(app: Litestar) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if ":int}" not in route.path:
            continue
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler):
                found.extend(
                    (m, route.path) for m in sorted(handler.http_methods) if m != "OPTIONS"
                )
    return found


def fill(path: str, value: str) -> str:
    return re.sub(r"\{\w+:int\}", value, path)


@pytest.fixture(scope="module")
async def power_admin(
    app_client: AsyncTestClient[Litestar], db: Conn, kv: Valkey, settings: Settings
) -> AsyncIterator[tuple[Browser, int]]:
    """An admin with 2FA and every permission, so guards let the bad bodies through to the
    body checks; and a plain user to aim admin routes at."""
    admin = Browser.on(app_client)
    assert (await admin.register(unique_email("fuzz-admin"))).status_code == 201
    assert (await admin.login()).status_code == 200
    await accounts.set_role(db, kv, settings, admin.user_id, "admin", actor_id=None)
    await accounts.set_permissions(db, admin.user_id, ["finance"], actor_id=None)
    await admin.enroll_totp()
    target = Browser.on(app_client)
    assert (await target.register(unique_email("target"))).status_code == 201
    yield admin, target.user_id
    await admin.aclose()
    await target.aclose()


async def send(
    browser: Browser, method: str, path: str, target: int, **kwargs: Any
) -> httpx.Response:
    return await browser.request(method, fill(path, str(target)), **kwargs)


def refusals(method: str, path: str, *statuses: int) -> set[int]:
    """The statuses a bad body may get. Routes of other domains are aimed at ids that need
    not exist there, so a 404 for the id is as good a refusal as a 400 for the body."""
    allowed = set(statuses)
    if (method, path) not in VALID_BODIES and ":int}" in path:
        allowed.add(404)
    return allowed


async def test_there_are_json_routes_to_check(app: Litestar) -> None:
    routes = json_routes(app)
    assert set(VALID_BODIES) <= set(routes), set(VALID_BODIES) - set(routes)


async def test_malformed_json_is_400_and_changes_nothing(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn
) -> None:
    admin, target = power_admin
    before = await snapshot(db)
    for method, path in json_routes(app):
        for raw in (b"{", b'{"email": }', b"\xff\xfe", b"nul\x00l", b'{"a": 1} trailing'):
            response = await send(
                admin,
                method,
                path,
                target,
                content=raw,
                headers={"content-type": "application/json"},
            )
            body = assert_problem(response, refusals(method, path, 400))
            assert body["detail"], (method, path)
    assert await snapshot(db) == before


async def test_wrong_shapes_and_types_are_4xx_and_change_nothing(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn
) -> None:
    admin, target = power_admin
    before = await snapshot(db)
    for method, path in json_routes(app):
        for body in ([], "text", 42, None, [{"name": "x"}]):
            response = await send(admin, method, path, target, json=body)
            assert_problem(response, refusals(method, path, 400, 422))
        valid = VALID_BODIES.get((method, path))
        if valid is None:
            continue
        for name in valid:
            for wrong in WRONG_TYPES:
                if type(wrong) is type(valid[name]):
                    continue
                spoiled = {**valid, name: wrong}
                response = await send(admin, method, path, target, json=spoiled)
                problem = assert_problem(response, 400)
                assert problem["type"].endswith("/invalid-input"), (method, path, name)
            missing = {k: v for k, v in valid.items() if k != name}
            assert_problem(await send(admin, method, path, target, json=missing), 400)
    assert await snapshot(db) == before


async def test_unknown_fields_are_refused(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn
) -> None:
    admin, target = power_admin
    before = await snapshot(db)
    for (method, path), valid in VALID_BODIES.items():
        for extra in ({"is_admin": True}, {"role ": "admin"}, {"": 1}):
            response = await send(admin, method, path, target, json={**valid, **extra})
            problem = assert_problem(response, 400)
            assert "unknown" in str(problem).lower(), problem
    for method, path in json_routes(app):
        response = await send(admin, method, path, target, json={"zz_unknown_field": 1})
        assert_problem(response, refusals(method, path, 400, 422))
    assert await snapshot(db) == before


async def test_oversized_bodies_are_413(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn, settings: Settings
) -> None:
    admin, target = power_admin
    limit = settings.server.max_body_bytes
    before = await snapshot(db)
    padding = "x" * (limit + 1)
    for method, path in json_routes(app):
        response = await send(admin, method, path, target, json={"name": padding, "email": padding})
        assert_problem(response, refusals(method, path, 413))
    # Just under the limit is read (and refused for what it says, not its size).
    response = await admin.post("/api/auth/tokens", json={"name": "x" * (limit - 100)})
    assert_problem(response, 400)
    assert await snapshot(db) == before


async def test_text_the_database_cannot_store_is_refused_up_front(
    power_admin: tuple[Browser, int], db: Conn, anon: Browser
) -> None:
    """NUL characters, control characters and blank names are 400s, not database errors."""
    admin, target = power_admin
    before = await snapshot(db)
    valid = VALID_BODIES[("POST", "/api/auth/register")]
    for spoiled in (
        {"email": "nul\x00@example.test"},
        {"email": "tab\t@example.test"},
        {"display_name": "nul\x00name"},
        {"display_name": "   "},
        {"display_name": "\u3000\t"},
        {"display_name": "line\nbreak"},
    ):
        response = await anon.post("/api/auth/register", json={**valid, **spoiled})
        assert_problem(response, 400, "invalid-input")
    login = await anon.post(
        "/api/auth/login", json={"email": "nul\x00@example.test", "password": "whatever"}
    )
    assert_problem(login, 400)
    assert_problem(await admin.post("/api/auth/tokens", json={"name": "a\x00b"}), 400)
    assert_problem(await admin.post("/api/auth/tokens", json={"name": "  "}), 400)
    disable = await admin.post(f"/api/admin/users/{target}/disable", json={"reason": "x\x00"})
    assert_problem(disable, 400)
    assert await snapshot(db) == before


async def test_field_errors_are_in_words_a_form_can_show(anon: Browser, db: Conn) -> None:
    """The sign-up form shows the API's field error under the field: not msgspec's wording."""
    before = await snapshot(db)
    valid = VALID_BODIES[("POST", "/api/auth/register")]
    response = await anon.post("/api/auth/register", json={**valid, "password": "short"})
    problem = assert_problem(response, 400, "invalid-input")
    assert problem["errors"] == [
        {"key": "password", "message": "must be at least 10 characters", "source": "body"}
    ]
    assert await snapshot(db) == before


NOT_JSON = (
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonx",
    "",
)


async def test_non_json_content_types_are_415_and_change_nothing(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn, anon: Browser
) -> None:
    """A JSON route reads nothing but JSON: a form post or a text/plain body (what a cross-site
    form can send) is refused before it is read, even when its bytes would parse as JSON."""
    admin, target = power_admin
    before = await snapshot(db)
    response = await anon.post(
        "/api/auth/register",
        data={"email": "form@example.test", "password": PASSWORD},
    )
    assert_problem(response, 415, "unsupported-media-type")
    for method, path in json_routes(app):
        valid = VALID_BODIES.get((method, path), {"name": "x"})
        for content_type in NOT_JSON:
            response = await send(
                admin,
                method,
                path,
                target,
                content=json.dumps(valid).encode(),
                headers={"content-type": content_type},
            )
            assert_problem(response, 415, "unsupported-media-type")
    assert await snapshot(db) == before
    # A JSON media type with parameters or a +json suffix is JSON.
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await admin.post(
            "/api/auth/tokens",
            content=b'{"name": ""}',
            headers={"content-type": content_type},
        )
        assert_problem(response, 400, "invalid-input")
    assert await snapshot(db) == before


async def test_ten_megabyte_bodies_are_413_and_change_nothing(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn, anon: Browser
) -> None:
    """Far past the limit, on every JSON route and on the payment webhook."""
    admin, target = power_admin
    before = await snapshot(db)
    huge = b'{"name": "' + b"x" * 10_000_000 + b'"}'
    json_headers = {"content-type": "application/json"}
    for method, path in json_routes(app):
        response = await send(admin, method, path, target, content=huge, headers=json_headers)
        assert_problem(response, 413, "body-too-large")
    response = await anon.post("/api/auth/register", content=huge, headers=json_headers)
    assert_problem(response, 413, "body-too-large")
    response = await anon.post("/api/payments/webhooks/dev", content=huge, headers=json_headers)
    assert_problem(response, 413, "body-too-large")
    assert await snapshot(db) == before


async def test_non_ascii_where_codes_and_signatures_are_compared_is_refused(
    power_admin: tuple[Browser, int], db: Conn, anon: Browser, make_user: Any
) -> None:
    """Codes, tokens and signatures are compared in constant time over ASCII: other text
    (digits of another script, latin-1 in a header, a form or a URL) is a refusal, not a 500."""
    admin, _ = power_admin
    buyer = await make_user("buyer")
    checkout = await buyer.post("/api/purchases", json={"package_id": "tkn-100"})
    assert checkout.status_code == 201, checkout.text
    page = urlsplit(checkout.json()["redirect_url"]).path
    before = await snapshot(db)
    arabic_indic = "\u0661\u0662\u0663\u0664\u0665\u0666"
    login = await anon.post(
        "/api/auth/login",
        json={"email": admin.email, "password": admin.password, "totp_code": arabic_indic},
    )
    assert_problem(login, 400, "invalid-input")
    assert anon.session_cookie is None
    for path in ("/api/auth/2fa/confirm", "/api/auth/2fa/disable"):
        assert_problem(await admin.post(path, json={"code": arabic_indic}), 400, "invalid-input")
    signature = f"t={int(time.time())},v1=\u00e9\u00e9".encode("latin-1")
    webhook = await anon.post(
        "/api/payments/webhooks/dev",
        content=b"{}",
        headers={"content-type": "application/json", "tipstream-dev-signature": signature},
    )
    assert_problem(webhook, 400, "bad-webhook")
    form = {"token": "\u00e9", "outcome": "sale"}
    assert_problem(await buyer.post(page, data=form, csrf=False), 403)
    raw = b"token=%ff%fe&outcome=sale"
    form_headers = {"content-type": "application/x-www-form-urlencoded"}
    assert_problem(await buyer.post(page, content=raw, headers=form_headers, csrf=False), 403)
    assert_problem(await buyer.get(page, params={"token": "\u00e9"}), 403)
    assert await snapshot(db) == before
    wallet = await buyer.get("/api/wallet")
    assert wallet.json()["balance"] == 0


async def test_payout_requests_with_text_a_bank_file_cannot_carry_are_4xx(
    make_user: Any, db: Conn
) -> None:
    """A NUL in the Idempotency-Key or the account fields cannot be stored, digits of another
    script are no amount: refused up front (they were 500s), and no payout is written."""
    performer = await make_user("payee", role="performer")
    await approve_kyc(db, performer.user_id)
    valid = {"amount": "50.00", "account_holder": "Ada Lovelace", "iban": "DE89370400440532013000"}
    payouts_before = await scalar(db, "SELECT count(*) FROM payouts")
    key = {"idempotency-key": "payout-\x00-key"}
    response = await performer.post("/api/payouts", json=valid, headers=key)
    assert_problem(response, 400, "idempotency-key-missing")
    for spoiled in (
        {"amount": "\u0665\u0660.\u0660\u0660"},
        {"account_holder": "Ada\x00Lovelace"},
        {"account_holder": "Ada\nLovelace"},
        {"iban": "DE8937040044053201300\x00"},
        {"bic": "DEUTDEFF\x00"},
    ):
        response = await performer.post(
            "/api/payouts",
            json={**valid, **spoiled},
            headers={"idempotency-key": str(uuid.uuid4())},
        )
        assert_problem(response, 400, "invalid-input")
    assert await scalar(db, "SELECT count(*) FROM payouts") == payouts_before


async def test_stream_text_with_control_characters_is_400(make_user: Any, db: Conn) -> None:
    """A stream's title, its goal's title and the reason it ended: a NUL cannot be stored (they
    were 500s), and no control character belongs in text shown to every viewer."""
    performer = await make_user("streamer", role="performer")
    await approve_kyc(db, performer.user_id)
    created = await performer.post("/api/streams", json={"title": "Evening show"})
    assert created.status_code == 201, created.text
    stream = created.json()["id"]
    streams_before = await scalar(db, "SELECT md5(string_agg(s::text, '|')) FROM streams s")
    for title in ("a\x00b", "line\nbreak", "   "):
        response = await performer.post("/api/streams", json={"title": title})
        assert_problem(response, 400, "invalid-input")
        goal = await performer.post(
            f"/api/streams/{stream}/goal", json={"title": title, "tokens": 5}
        )
        assert_problem(goal, 400, "invalid-input")
        end = await performer.post(f"/api/streams/{stream}/end", json={"reason": title})
        assert_problem(end, 400, "invalid-input")
    streams_after = await scalar(db, "SELECT md5(string_agg(s::text, '|')) FROM streams s")
    assert streams_after == streams_before


async def test_huge_negative_and_zero_ids_in_paths_are_4xx(
    app: Litestar, power_admin: tuple[Browser, int], db: Conn
) -> None:
    admin, _ = power_admin
    before = await snapshot(db)
    routes = int_routes(app)
    assert routes
    for method, path in routes:
        for value in ("9223372036854775808", "1" + "0" * 40, "-1", "0", "1e3", "0x10"):
            kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
            response = await admin.request(method, fill(path, value), **kwargs)
            assert_problem(response, {400, 404, 422})
    assert await snapshot(db) == before


async def test_unknown_ids_are_404(power_admin: tuple[Browser, int], db: Conn) -> None:
    admin, _ = power_admin
    before = await snapshot(db)
    unknown = "9223372036854775807"
    assert_problem(await admin.get(f"/api/admin/users/{unknown}"), 404, "not-found")
    assert_problem(
        await admin.post(f"/api/admin/users/{unknown}/role", json={"role": "viewer"}), 404
    )
    assert_problem(await admin.delete(f"/api/auth/tokens/{unknown}"), 404)
    assert await snapshot(db) == before


async def test_bad_query_parameters_are_400(power_admin: tuple[Browser, int], db: Conn) -> None:
    admin, _ = power_admin
    before = await snapshot(db)
    for params in (
        {"limit": "0"},
        {"limit": "100000"},
        {"limit": "lots"},
        {"offset": "-1"},
        {"offset": "1" + "0" * 30},
        {"role": "emperor"},
        {"q": "x" * 101},
        {"q": "nul\x00byte"},
    ):
        assert_problem(await admin.get("/api/admin/users/", params=params), 400)
    for params in ({"limit": "0"}, {"actor_id": "-5"}, {"action": "a\x00b"}):
        assert_problem(await admin.get("/api/admin/audit/", params=params), 400)
    assert await snapshot(db) == before


# --------------------------------------------------------------------------- fuzzing

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)
EMAILS = st.one_of(
    st.emails().map(str),
    st.text(max_size=300),
    st.builds(lambda a, b: f"{a}@{b}.test", st.text(min_size=1, max_size=20), st.text(max_size=20)),
)
DATES = st.one_of(st.dates().map(lambda d: d.isoformat()), st.text(max_size=20), JSON_LEAF)
FIELD = st.one_of(st.text(max_size=300), JSON_LEAF)


def fuzzed(valid: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Bodies that are valid-ish field by field, with junk mixed in, extra keys, or any JSON."""
    fields = st.fixed_dictionaries(
        {},
        optional={name: st.one_of(strategy, FIELD) for name, strategy in valid.items()},
    )
    extra = st.dictionaries(st.text(max_size=12), JSON, max_size=2)
    return st.one_of(
        fields,
        st.builds(lambda a, b: {**a, **b}, fields, extra),
        JSON,
    )


REGISTER_BODIES = fuzzed(
    {
        "email": EMAILS,
        "password": st.text(max_size=300),
        "date_of_birth": DATES,
        "display_name": st.text(max_size=80),
        "role": st.sampled_from(["viewer", "performer", "admin", "", "VIEWER"]),
    }
)
LOGIN_BODIES = fuzzed(
    {
        "email": EMAILS,
        "password": st.text(max_size=300),
        "totp_code": st.text(alphabet="0123456789", max_size=8),
        "recovery_code": st.text(max_size=40),
    }
)
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=REGISTER_BODIES)
async def test_register_never_crashes_and_refusals_change_nothing(
    app_client: AsyncTestClient[Litestar], db: Conn, body: Any
) -> None:
    browser = Browser.on(app_client)
    try:
        before = await snapshot(db)
        response = await browser.post("/api/auth/register", json=body)
        assert response.status_code in {201, 400, 409, 422}, (body, response.text)
        if response.status_code == 201:
            created = response.json()
            assert created["role"] in ("viewer", "performer")
            after = await snapshot(db)
            assert after["users"][0] == before["users"][0] + 1
        else:
            assert_problem(response, response.status_code)
            assert await snapshot(db) == before
    finally:
        await browser.aclose()


@FUZZ
@given(body=LOGIN_BODIES)
async def test_login_never_crashes_and_never_signs_in_junk(
    app_client: AsyncTestClient[Litestar], db: Conn, body: Any
) -> None:
    browser = Browser.on(app_client)
    try:
        before = await snapshot(db)
        response = await browser.post("/api/auth/login", json=body)
        assert_problem(response, {400, 401, 422})
        assert browser.session_cookie is None
        after = await snapshot(db)
        # Failures may be audited; nothing else moves.
        assert {k: v for k, v in after.items() if k != "audit_logs"} == {
            k: v for k, v in before.items() if k != "audit_logs"
        }
    finally:
        await browser.aclose()
