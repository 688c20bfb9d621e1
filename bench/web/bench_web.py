"""Web UI latency in real Chromium, printed as p50/p95 (not asserted):

- go live: the performer's "Resume broadcast" click in the studio (the stream is already open,
  so this is camera → publish → Janus → the waiting viewer) to the viewer's first decoded frame;
- tip: the viewer's tip click to the burst on the performer's page.

Both ends read Date.now() in the same browser process, so the clocks agree. Run:

    .venv/bin/python -m pytest -p tests.conftest bench/web/bench_web.py -q -s \
        [--runs 10] [--tips 5]
"""

from __future__ import annotations

import statistics
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from tests.e2e.conftest import Person
from tests.integration.rooms.conftest import AppServer
from tests.integration.rooms.people import PASSWORD, sign_up

FIRST_FRAME = """() => {
  const v = document.querySelector('video');
  return v.getVideoPlaybackQuality().totalVideoFrames > 0 ? Date.now() : false;
}"""
# Bursts leave the page when their animation ends; feed items (added in the same call) stay.
TIPS_SHOWN = "() => document.querySelectorAll('[data-tip-feed] li').length"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, values: list[float]) -> None:
    print(
        f"{name}: n={len(values)} p50={percentile(values, 0.5):.0f} ms "
        f"p95={percentile(values, 0.95):.0f} ms mean={statistics.fmean(values):.0f} ms "
        f"max={max(values):.0f} ms"
    )


async def buy_tokens(viewer: Any, package_id: str = "tkn-6500") -> None:
    checkout = await viewer.post("/api/purchases/", json={"package_id": package_id})
    if checkout.status_code != 201:
        checkout = await viewer.post("/api/purchases/", json={"package_id": "tkn-100"})
    assert checkout.status_code == 201, checkout.text
    url = urlparse(checkout.json()["redirect_url"])
    token = parse_qs(url.query)["token"][0]
    paid = await viewer.http.post(url.path, data={"token": token, "outcome": "sale"})
    assert paid.status_code == 303, paid.text


async def test_web_latency(
    web_server: AppServer, new_person: Any, request: pytest.FixtureRequest
) -> None:
    runs = int(request.config.getoption("--runs"))
    tips_per_run = int(request.config.getoption("--tips"))
    server = web_server
    performer_http = await sign_up(server, "performer", tag="benchstudio")
    viewer_http = await sign_up(server, "viewer", tag="benchfan")
    for _ in range(3):
        await buy_tokens(viewer_http)

    performer: Person = await new_person(server.base_url)
    viewer: Person = await new_person(server.base_url)
    await performer.log_in(performer_http.email, PASSWORD, "/studio")
    await viewer.log_in(viewer_http.email, PASSWORD, "/")

    go_live: list[float] = []
    tips: list[float] = []
    for run in range(runs):
        created = await performer_http.post("/api/streams", json={"title": f"bench {run}"})
        stream_id = created.json()["id"]
        assert (await performer_http.post(f"/api/streams/{stream_id}/live")).status_code == 200
        await performer.goto("/studio")
        resume = performer.page.get_by_role("button", name="Resume broadcast")
        await resume.wait_for()
        await performer.page.get_by_role("button", name="Start camera").click()
        await performer.page.wait_for_function(
            "() => document.querySelector('video').videoWidth > 0"
        )
        await viewer.goto(f"/rooms/{stream_id}")
        await viewer.page.locator("[data-video-status]").filter(has_text="Waiting").wait_for()

        clicked = await performer.page.evaluate("() => Date.now()")
        await resume.click()
        frame = await viewer.page.wait_for_function(FIRST_FRAME, polling="raf", timeout=20000)
        go_live.append(float(await frame.json_value()) - clicked)

        await viewer.page.wait_for_function(
            "() => document.querySelector('[data-balance]').textContent.trim() !== '…'"
        )
        for _ in range(tips_per_run):
            before = await performer.page.evaluate(TIPS_SHOWN)
            clicked = await viewer.page.evaluate("() => Date.now()")
            await viewer.page.get_by_role("button", name="10", exact=True).click()
            try:
                shown = await performer.page.wait_for_function(
                    f"() => document.querySelectorAll('[data-tip-feed] li').length > {before} "
                    "? Date.now() : false",
                    polling="raf",
                    timeout=10000,
                )
            except Exception:
                form = viewer.page.locator("[data-tip-form]")
                print("TIP FAILED:", len(tips), await form.inner_text(), viewer.errors[-3:])
                raise
            tips.append(float(await shown.json_value()) - clicked)
            await viewer.page.wait_for_function(
                "() => !document.querySelector('[data-tip-button]').disabled"
            )
        ended = await performer_http.post(f"/api/streams/{stream_id}/end", json={})
        assert ended.status_code == 200, ended.text

    print()
    report("go-live click -> viewer first frame", go_live)
    report("tip click -> animation on the performer's page", tips)
