"""Liveness, readiness, metrics, request ids and the API schema."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from tests.helpers import Browser, BrowserFactory, assert_problem, running_app
from tipstream.config import Settings


async def test_healthz_answers_ok(anon: Browser) -> None:
    response = await anon.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_with_real_services(anon: Browser) -> None:
    response = await anon.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"postgres": "ok", "valkey": "ok"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_is_503_when_valkey_is_unreachable(
    settings_factory: Callable[..., Settings], new_browser: BrowserFactory
) -> None:
    broken = settings_factory(valkey={"url": f"redis://127.0.0.1:{closed_port()}/0"})
    async with running_app(broken) as client:
        response = await new_browser(client).get("/readyz")
        body = assert_problem(response, 503, "unavailable")
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["valkey"].startswith("fail")
        assert "valkey" in body["detail"]
        # Liveness does not depend on the services.
        assert (await new_browser(client).get("/healthz")).status_code == 200


async def test_readyz_is_503_when_postgres_is_unreachable(
    settings_factory: Callable[..., Settings], new_browser: BrowserFactory
) -> None:
    broken = settings_factory(
        database={"url": f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"}
    )
    async with running_app(broken) as client:
        response = await new_browser(client).get("/readyz")
        body = assert_problem(response, 503, "unavailable")
        assert body["checks"]["postgres"].startswith("fail")
        assert body["checks"]["valkey"] == "ok"
        # Liveness does not depend on the database either.
        assert (await new_browser(client).get("/healthz")).status_code == 200


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        sample = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(sample.get(k) == v for k, v in labels.items()):
            total += float(value)
            found = True
    assert found, f"no {name} sample with {labels}"
    return total


async def test_metrics_count_requests_and_time_them(anon: Browser) -> None:
    await anon.get("/readyz")
    before = (await anon.get("/metrics")).text
    count_before = metric(before, "tipstream_requests_total", path="/readyz")
    for _ in range(3):
        assert (await anon.get("/readyz")).status_code == 200
    response = await anon.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert metric(after, "tipstream_requests_total", path="/readyz") == count_before + 3
    assert metric(after, "tipstream_request_duration_seconds_count", path="/readyz") >= 4
    assert "# TYPE tipstream_request_duration_seconds histogram" in after
    assert metric(after, "tipstream_request_duration_seconds_bucket", path="/readyz", le="+Inf")


async def test_every_response_has_a_request_id(anon: Browser) -> None:
    responses = [
        await anon.get("/healthz"),
        await anon.get("/api/auth/me"),  # 401
        await anon.get("/no/such/page"),  # 404 before any route
        await anon.request("PATCH", "/healthz"),  # 405
        await anon.post(
            "/api/auth/login", content=b"{", headers={"content-type": "application/json"}
        ),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.status_code, r.headers) for r in responses]
    assert len(set(ids)) == len(ids)
    for response in responses[1:]:
        body = assert_problem(response, {400, 401, 404, 405})
        assert body["request_id"] == response.headers["x-request-id"]


async def test_a_sane_client_request_id_is_kept_and_a_bad_one_replaced(anon: Browser) -> None:
    kept = await anon.get("/healthz", headers={"x-request-id": "abc123-trace.id_9"})
    assert kept.headers["x-request-id"] == "abc123-trace.id_9"
    replaced = await anon.get("/healthz", headers={"x-request-id": "bad id\r\nwith junk"})
    assert replaced.headers["x-request-id"] != "bad id\r\nwith junk"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


async def test_openapi_schema_is_3_1_and_lists_the_api(anon: Browser) -> None:
    response = await anon.get("/api/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1")
    for path in ("/api/auth/register", "/api/auth/login", "/api/admin/users", "/readyz"):
        assert any(p.rstrip("/") == path for p in schema["paths"]), path
    assert {"apiToken", "session"} <= set(schema["components"]["securitySchemes"])


async def test_api_docs_page_and_its_assets_are_served_locally(anon: Browser) -> None:
    page = await anon.get("/api/schema/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    local = [a for a in assets if a.startswith("/api/docs-assets/")]
    assert local, page.text
    # Nothing from a CDN: the appliance may have no internet.
    assert not [a for a in assets if a.startswith(("http://", "https://", "//"))]
    for asset in local:
        response = await anon.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100
