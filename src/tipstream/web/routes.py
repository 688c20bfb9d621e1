"""Page routes of the bundled web UI. Pages are server-rendered shells (Jinja); the data and
every change go through the JSON API from small ES modules, so the UI can never do what the API
would refuse. Each page declares its guard like any API route; a page that needs a sign-in
sends the browser to /login instead of answering problem+json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import MfaRequired, Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Forbidden, NotFound, Unauthorized, handle_problem
from tipstream.ledger import service as ledger_service
from tipstream.rooms import service as rooms_service
from tipstream.web import assets

TEMPLATES = Path(__file__).parent / "templates"
StreamId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]

# No inline script or style anywhere: every script is a same-origin file. media-src allows the
# MediaStream the WebRTC code attaches; connect-src 'self' covers the same-origin room socket.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "permissions-policy": "camera=(self), microphone=(self), autoplay=(self)",
}


def _engine_callback(engine: JinjaTemplateEngine) -> None:
    engine.engine.globals["asset"] = lambda path: assets.current().url(path)


TEMPLATE_CONFIG = TemplateConfig(
    directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_engine_callback
)


def _page(name: str, principal: Principal | None, **context: Any) -> Template:
    user = principal.user if principal else None
    csrf = principal.session.csrf_token if principal and principal.session else ""
    return Template(
        template_name=name,
        context={"me": user, "csrf": csrf, **context},
        headers=PAGE_HEADERS,
        media_type=MediaType.HTML,
    )


OPTIONAL_PRINCIPAL = {"principal": Provide(guards.provide_optional_principal)}
PRINCIPAL = {"principal": Provide(guards.provide_principal)}


# --------------------------------------------------------------------------- viewer pages


@get("/", guards=[guards.public], dependencies=OPTIONAL_PRINCIPAL, include_in_schema=False)
async def home(principal: Principal | None) -> Template:
    return _page("home.html", principal)


@get(
    "/partials/rooms",
    guards=[guards.public],
    dependencies=OPTIONAL_PRINCIPAL,
    include_in_schema=False,
)
async def rooms_partial(
    principal: Principal | None, conn: Conn, kv: Valkey, settings: Settings
) -> Template:
    """The live rooms grid; htmx swaps it in and refreshes it."""
    streams = await rooms_service.public_live_streams(conn, kv, settings, limit=60)
    return _page("partials/rooms.html", principal, streams=streams)


@get("/login", guards=[guards.public], dependencies=OPTIONAL_PRINCIPAL, include_in_schema=False)
async def login(request: Request[Any, Any, State], principal: Principal | None) -> Template:
    target = request.query_params.get("next", "/")
    return _page("login.html", principal, next=_safe_next(target[:300]))


@get("/signup", guards=[guards.public], dependencies=OPTIONAL_PRINCIPAL, include_in_schema=False)
async def signup(principal: Principal | None, settings: Settings) -> Template:
    return _page("signup.html", principal, min_age=settings.security.min_age)


RECENT_TIPS = 20
TOP_TIPPERS = 5


@get(
    "/rooms/{stream_id:int}",
    guards=[guards.public],
    dependencies=OPTIONAL_PRINCIPAL,
    include_in_schema=False,
)
async def room(
    principal: Principal | None, stream_id: StreamId, conn: Conn, kv: Valkey, settings: Settings
) -> Template:
    stream = await rooms_service.show_stream(conn, kv, settings, stream_id)
    # The show so far (the room socket brings what comes next): read-only display rows.
    tips, top = await ledger_service.stream_tips_so_far(
        conn, stream_id, recent=RECENT_TIPS, top=TOP_TIPPERS
    )
    return _page("room.html", principal, stream=stream, tips=tips, top_tippers=top)


@get("/wallet", guards=[guards.signed_in], dependencies=PRINCIPAL, include_in_schema=False)
async def wallet(principal: Principal) -> Template:
    return _page("wallet.html", principal)


# --------------------------------------------------------------------------- performer studio


@get("/studio", guards=[guards.performer], dependencies=PRINCIPAL, include_in_schema=False)
async def studio(principal: Principal) -> Template:
    return _page("studio.html", principal)


@get("/studio/kyc", guards=[guards.performer], dependencies=PRINCIPAL, include_in_schema=False)
async def studio_kyc(principal: Principal) -> Template:
    return _page("kyc.html", principal)


@get("/studio/earnings", guards=[guards.performer], dependencies=PRINCIPAL, include_in_schema=False)
async def studio_earnings(principal: Principal) -> Template:
    return _page("earnings.html", principal)


# --------------------------------------------------------------------------- staff pages


@get(
    "/staff/moderation", guards=[guards.moderator], dependencies=PRINCIPAL, include_in_schema=False
)
async def staff_moderation(principal: Principal) -> Template:
    return _page("staff/moderation.html", principal)


@get("/staff/kyc", guards=[guards.moderator], dependencies=PRINCIPAL, include_in_schema=False)
async def staff_kyc(principal: Principal) -> Template:
    return _page("staff/kyc.html", principal)


@get("/staff/payouts", guards=[guards.finance], dependencies=PRINCIPAL, include_in_schema=False)
async def staff_payouts(principal: Principal) -> Template:
    return _page("staff/payouts.html", principal)


@get("/staff/users", guards=[guards.admin], dependencies=PRINCIPAL, include_in_schema=False)
async def staff_users(principal: Principal) -> Template:
    return _page("staff/users.html", principal)


# --------------------------------------------------------------------------- static files


@get(
    f"{assets.PREFIX}/{{version:str}}/{{path:path}}",
    guards=[guards.public],
    include_in_schema=False,
)
async def static_file(version: str, path: str) -> Response[bytes]:
    current = assets.current()
    asset = current.files.get(path.lstrip("/"))
    if asset is None:
        raise NotFoundException("no such file")
    # An old hash (a page rendered before a deploy) still gets the file, but must not cache it
    # for a year under a URL that now names other content.
    cache = "public, max-age=31536000, immutable" if version == current.version else "no-cache"
    return Response(
        asset.body,
        media_type=asset.media_type,
        headers={"cache-control": cache, "x-content-type-options": "nosniff"},
    )


# --------------------------------------------------------------------------- errors on pages


def _safe_next(target: str) -> str:
    """Only same-site paths: a login link must not bounce the browser to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _wants_html(request: Request[Any, Any, State]) -> bool:
    """A browser navigating asks for text/html; scripts and API clients get problem+json."""
    return "text/html" in request.headers.get("accept", "")


def _to_login(request: Request[Any, Any, State], exc: Unauthorized) -> Response[Any]:
    if not _wants_html(request):
        return handle_problem(request, exc)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(path=f"/login?next={quote(target, safe='/')}", status_code=303)


def _refused(request: Request[Any, Any, State], exc: Forbidden) -> Response[Any]:
    if not _wants_html(request):
        return handle_problem(request, exc)
    status = 403
    template = "mfa.html" if isinstance(exc, MfaRequired) else "forbidden.html"
    return Template(
        template_name=template,
        context={"me": None, "csrf": "", "detail": exc.detail},
        headers=PAGE_HEADERS,
        media_type=MediaType.HTML,
        status_code=status,
    )


def _not_found(request: Request[Any, Any, State], exc: NotFound) -> Response[Any]:
    if not _wants_html(request):
        return handle_problem(request, exc)
    return Template(
        template_name="not_found.html",
        context={"me": None, "csrf": ""},
        headers=PAGE_HEADERS,
        media_type=MediaType.HTML,
        status_code=404,
    )


PAGES = Router(
    path="/",
    route_handlers=[
        home,
        rooms_partial,
        login,
        signup,
        room,
        wallet,
        studio,
        studio_kyc,
        studio_earnings,
        staff_moderation,
        staff_kyc,
        staff_payouts,
        staff_users,
    ],
    exception_handlers={
        Unauthorized: _to_login,
        Forbidden: _refused,
        NotFound: _not_found,
    },
    include_in_schema=False,
)

ROUTES: list[Router | HTTPRouteHandler] = [PAGES, static_file]
