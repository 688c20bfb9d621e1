"""The web UI's pages: each renders for the people it is for, sends the strict CSP (no inline
script or style), links only assets that exist under the content-hashed prefix, and sends the
others to the login page or a refusal page instead of problem+json."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.helpers import Browser, BrowserFactory, UserFactory
from tests.integration.kyc.approved import approve_kyc
from tests.integration.ledger.conftest import insert_stream
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import service as ledger
from tipstream.web import assets

SetRole = Callable[[Browser, str], Awaitable[None]]
ASSET_URL = re.compile(r'(?:src|href)="(/static/[^"]+)"')
IMPORT = re.compile(r'^import .* from "\./([^"]+)";', re.M)


def assert_strict_page(response_text: str, csp: str) -> None:
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    # Every script element loads a file; no inline handlers or style attributes.
    for tag in re.findall(r"<script[^>]*>", response_text):
        assert 'src="/static/' in tag, tag
    assert re.search(r"\son[a-z]+=", response_text) is None
    assert " style=" not in response_text


HTML = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def check_page(browser: Browser, path: str) -> str:
    response = await browser.get(path, headers=HTML)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert_strict_page(response.text, response.headers["content-security-policy"])
    assert response.headers["cache-control"] == "no-store"
    for url in ASSET_URL.findall(response.text):
        asset = await browser.get(url)
        assert asset.status_code == 200, url
        assert "immutable" in asset.headers["cache-control"]
    return response.text


async def test_public_pages_render_with_a_strict_csp(anon: Browser) -> None:
    for path in ("/", "/login", "/signup", "/partials/rooms"):
        await check_page(anon, path)
    signup = (await anon.get("/signup")).text
    assert "at least 18 years old" in signup and 'name="date_of_birth"' in signup
    # Before forms.js runs, a click must not let the browser submit the form itself: the button
    # starts disabled, and the form is a POST, so a password never lands in a URL.
    for path in ("/login", "/signup"):
        page = (await anon.get(path)).text
        assert '<form method="post" data-api=' in page, path
        assert re.search(r'<button type="submit" disabled>', page), path


async def test_viewer_performer_and_staff_pages_render(
    make_user: UserFactory, make_admin: UserFactory
) -> None:
    viewer = await make_user("webviewer")
    wallet = await check_page(viewer, "/wallet")
    assert "Buy tokens" in wallet and 'content="' + str(viewer.csrf) + '"' in wallet

    performer = await make_user("webperformer", role="performer")
    for path in ("/studio", "/studio/kyc", "/studio/earnings"):
        await check_page(performer, path)
    studio = (await performer.get("/studio")).text
    assert "Go live" in studio and "data-camera" in studio

    admin = await make_admin("webadmin")
    for path in ("/staff/moderation", "/staff/kyc", "/staff/users"):
        await check_page(admin, path)


async def test_pages_send_strangers_to_login_and_refuse_the_wrong_role(
    anon: Browser, make_user: UserFactory, set_role: SetRole
) -> None:
    for path in ("/wallet", "/studio", "/staff/kyc"):
        response = await anon.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"

    viewer = await make_user("webnosy")
    refused = await viewer.get("/studio", headers=HTML)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "Not allowed" in refused.text
    assert "unsafe-inline" not in refused.headers["content-security-policy"]

    moderator = await make_user("webmod")
    await set_role(moderator, "moderator")
    no_mfa = await moderator.get("/staff/kyc", headers=HTML)
    assert no_mfa.status_code == 403 and "Two-factor authentication needed" in no_mfa.text
    # Finance pages need the permission as well as the role.
    assert (await moderator.get("/staff/payouts")).status_code == 403
    # Without text/html (scripts, API clients) the answer is the usual problem+json.
    plain = await anon.get("/wallet", follow_redirects=False)
    assert plain.status_code == 401
    assert plain.headers["content-type"].startswith("application/problem+json")


async def test_login_next_stays_on_this_site(anon: Browser) -> None:
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = (await anon.get("/login", params={"next": evil})).text
        assert 'data-next="/"' in page
    assert 'data-next="/wallet"' in (await anon.get("/login?next=/wallet")).text


async def test_unknown_room_is_an_html_404(anon: Browser) -> None:
    response = await anon.get("/rooms/987654321", headers=HTML)
    assert response.status_code == 404
    assert "Not found" in response.text and response.headers["content-type"].startswith("text/html")


async def test_api_docs_keep_their_own_headers(anon: Browser) -> None:
    docs = await anon.get("/api/schema/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers
    api = await anon.get("/api/wallet/packages")
    assert "content-security-policy" not in api.headers


async def test_static_files_are_served_by_content_hash(anon: Browser) -> None:
    current = assets.current()
    url = current.url("js/room.js")
    assert current.version in url
    response = await anon.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    # A page rendered before a deploy still gets the file, but not as immutable.
    stale = await anon.get(url.replace(current.version, "0" * 16))
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    for bad in ("js/nope.js", "../routes.py", "%2e%2e/routes.py"):
        assert (await anon.get(f"/static/{current.version}/{bad}")).status_code == 404


def test_the_hash_changes_when_any_file_changes(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "a.js").write_text("export const a = 1;\n")
    first = assets.load(tmp_path)
    (tmp_path / "js" / "a.js").write_text("export const a = 2;\n")
    second = assets.load(tmp_path)
    assert first.version != second.version
    with pytest.raises(KeyError):
        second.url("js/missing.js")


def test_every_module_import_and_vendored_file_exists() -> None:
    current = assets.current()
    for name, asset in current.files.items():
        if name.startswith("js/"):
            for target in IMPORT.findall(asset.body.decode()):
                assert f"js/{target}" in current.files, (name, target)
    assert "vendor/htmx-2.0.11.min.js" in current.files
    assert "vendor/htmx-LICENSE.txt" in current.files


async def test_pages_need_no_principal_cookie_for_assets(new_browser: BrowserFactory) -> None:
    browser = new_browser()
    response = await browser.get(assets.current().url("css/app.css"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")


async def test_room_page_for_strangers_and_viewers(
    anon: Browser, make_user: UserFactory, db: Conn
) -> None:
    performer = await make_user("webroom", role="performer")
    await approve_kyc(db, performer.user_id)
    created = await performer.post("/api/streams", json={"title": "Cosy <b>evening</b>"})
    assert created.status_code == 201, created.text
    stream_id = created.json()["id"]

    stranger = await anon.get(f"/rooms/{stream_id}", headers=HTML)
    assert stranger.status_code == 200
    assert_strict_page(stranger.text, stranger.headers["content-security-policy"])
    assert "<title>Cosy &lt;b&gt;evening&lt;/b&gt; · tipstream</title>" in stranger.text
    assert "This stream is not live." in stranger.text
    assert "data-tip-form" not in stranger.text and "<dialog" not in stranger.text

    viewer = await make_user("webroomviewer")
    page = await check_page(viewer, f"/rooms/{stream_id}")
    assert page.count("<dialog") == 1 and page.count("data-tip-form") == 1
    for preset in ("10", "25", "50", "100", "500"):
        assert f'data-preset="{preset}"' in page


async def test_room_page_shows_the_show_so_far(
    make_user: UserFactory, set_role: SetRole, db: Conn, settings: Settings
) -> None:
    """A viewer joining late sees the show's recent tips (newest first, private messages left
    out) and its top tippers, not empty lists until the next tip."""
    performer = await make_user("webtips")
    await set_role(performer, "performer")
    stream = await insert_stream(db, performer.user_id)
    quiet = await insert_stream(db, (await make_user("webquiet")).user_id)
    fans = [await make_user(f"webfan{i}", display_name=f"Fan {i}") for i in range(2)]
    for fan in fans:
        await ledger.grant_tokens(
            db, settings, user_id=fan.user_id, tokens=500, grant_id=uuid.uuid4().hex,
            reason="test funding", actor_id=None,
        )  # fmt: skip
    tip_ids = []
    for fan, tokens, message, private in (
        (fans[0], 30, "lovely", False),
        (fans[1], 50, "a secret note", True),
        (fans[0], 40, None, False),
    ):
        body = {"tokens": tokens, "message": message, "private": private}
        if message is None:
            del body["message"]
        response = await fan.post(
            f"/api/streams/{stream}/tips", json=body, headers={"idempotency-key": uuid.uuid4().hex}
        )
        assert response.status_code == 201, response.text
        tip_ids.append(response.json()["id"])

    page = await check_page(fans[1], f"/rooms/{stream}")
    shown = [int(i) for i in re.findall(r'data-tip-id="(\d+)"', page)]
    assert shown == tip_ids[::-1]
    assert "lovely" in page and "a secret note" not in page
    top = re.findall(r'data-tipper="([^"]+)" data-tokens="(\d+)"', page)
    assert top == [("Fan 0", "70"), ("Fan 1", "50")]
    assert "No tips yet" not in page

    empty = await check_page(fans[0], f"/rooms/{quiet}")
    assert "No tips yet this show." in empty and "data-tip-id" not in empty
