"""The Litestar app factory: wires each domain's routes, the shared dependencies, problem+json
errors, OpenAPI, metrics and logging. granian serves ``tipstream.app:create_app`` (factory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import swagger_ui_bundle
from litestar import Litestar, Router
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import Message

from tipstream import apidoc, bodies, db, kv
from tipstream.accounts import guards
from tipstream.accounts import routes as accounts_routes
from tipstream.audit import routes as audit_routes
from tipstream.config import Settings, load_settings
from tipstream.deps import DEPENDENCIES
from tipstream.errors import EXCEPTION_HANDLERS
from tipstream.health import routes as health_routes
from tipstream.kyc import routes as kyc_routes
from tipstream.ledger import routes as ledger_routes
from tipstream.moderation import routes as moderation_routes
from tipstream.observability import RequestIdMiddleware, configure_logging, prometheus_config
from tipstream.payments import routes as payments_routes
from tipstream.rooms import routes as rooms_routes
from tipstream.web import routes as web_routes

API_DOCS_ASSETS = "/api/docs-assets"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def _lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = db.create_pool(settings)
        await pool.open(wait=False)
        client = kv.create_client(settings)
        app.state.pool = pool
        app.state.kv = client
        try:
            yield
        finally:
            await client.aclose()
            await pool.close()

    return lifespan


async def _security_headers(message: Message, scope: Any) -> None:
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)
        if scope["path"].startswith("/api/") and not scope["path"].startswith(API_DOCS_ASSETS):
            headers.setdefault("cache-control", "no-store")


def _openapi(settings: Settings) -> OpenAPIConfig:
    assets = API_DOCS_ASSETS
    return OpenAPIConfig(
        title="tipstream API",
        version="0.1.0",
        path="/api/schema",
        description=(
            "Browser clients authenticate with the session cookie and send X-CSRF-Token on "
            "state-changing requests; scripts send 'Authorization: Bearer <api token>'."
        ),
        render_plugins=[
            SwaggerRenderPlugin(
                path="/docs",
                js_url=f"{assets}/swagger-ui-bundle.js",
                css_url=f"{assets}/swagger-ui.css",
                standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
                favicon=f'<link rel="icon" href="{assets}/favicon-32x32.png">',
            )
        ],
        components=Components(
            security_schemes={
                "apiToken": SecurityScheme(type="http", scheme="bearer"),
                "session": SecurityScheme(
                    type="apiKey", name="tipstream_session", security_scheme_in="cookie"
                ),
            }
        ),
        security=[{"apiToken": []}, {"session": []}],
        use_handler_docstrings=True,
        # The document and its viewer are pages about the API, not operations of it.
        openapi_router=Router(
            path="/api/schema", route_handlers=[], guards=[guards.public], include_in_schema=False
        ),
    )


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings)
    docs_assets = create_static_files_router(
        path=API_DOCS_ASSETS,
        directories=[swagger_ui_bundle.swagger_ui_path],
        guards=[guards.public],
        include_in_schema=False,
        name="api-docs-assets",
    )
    metrics = prometheus_config()
    app = Litestar(
        route_handlers=[
            *health_routes.ROUTES,
            *accounts_routes.ROUTES,
            *audit_routes.ROUTES,
            *payments_routes.ROUTES,
            *ledger_routes.ROUTES,
            *rooms_routes.ROUTES,
            *kyc_routes.ROUTES,
            *moderation_routes.ROUTES,
            *web_routes.ROUTES,
            docs_assets,
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.middleware],
        openapi_config=_openapi(settings),
        template_config=web_routes.TEMPLATE_CONFIG,
        lifespan=[
            _lifespan(settings),
            accounts_routes.lifespan(settings),
            rooms_routes.lifespan(settings),
            moderation_routes.lifespan(settings),
            ledger_routes.lifespan(settings),
        ],
        before_send=[_security_headers],
        before_request=bodies.require_json_body,
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.settings = settings
    apidoc.document_responses(app.openapi_schema)
    # Litestar runs middleware only for matched routes; wrapping the whole handler gives every
    # response a request id, 404s and 405s included.
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app
