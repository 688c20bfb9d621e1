"""Who may call a route. Every route handler declares one of these guards; a test walks the app
and fails on any handler without one.

- ``public``: anyone, signed in or not (the explicit marker for open routes).
- ``signed_in``: any active user.
- ``staff``-level guards (moderator, admin, finance) also require a 2FA-verified session.
Cookie-authenticated state-changing requests must carry the session's CSRF token in
``X-CSRF-Token``; bearer-token requests are not exposed to CSRF and need none.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from tipstream.accounts import service, sessions
from tipstream.accounts.service import MfaRequired, Principal
from tipstream.config import Settings
from tipstream.db import Pool
from tipstream.errors import Forbidden, Unauthorized

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GUARD_ATTR = "tipstream_access"


class CsrfFailed(Forbidden):
    slug, title = "csrf-failed", "Missing or wrong CSRF token"


_NOT_RESOLVED = object()


async def resolve_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The caller, from a bearer token or the session cookie; cached on the connection."""
    cached = connection.scope.get("state", {}).get("principal", _NOT_RESOLVED)
    if cached is not _NOT_RESOLVED:
        return cached  # type: ignore[no-any-return]
    settings: Settings = connection.app.state.settings
    pool: Pool = connection.app.state.pool
    principal: Principal | None = None
    authorization = connection.headers.get("authorization", "")
    # A connection is taken only when there is a credential to check, so anonymous calls of
    # open routes (health probes above all) do not depend on Postgres.
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <api token>'")
        async with pool.connection() as conn:
            principal = await service.authenticate_token(conn, token.strip())
        if principal is None:
            raise Unauthorized("unknown, revoked or expired API token")
    else:
        session_id = connection.cookies.get(sessions.cookie_name(settings))
        if session_id and len(session_id) < 100:
            async with pool.connection() as conn:
                principal = await service.authenticate_session(
                    conn, connection.app.state.kv, settings, session_id
                )
    if principal is not None and principal.session is not None:
        _check_csrf(connection, principal)
    connection.state.principal = principal
    return principal


def _check_csrf(connection: ASGIConnection[Any, Any, Any, Any], principal: Principal) -> None:
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    assert principal.session is not None
    sent = connection.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent.encode(), principal.session.csrf_token.encode()):
        raise CsrfFailed("send the X-CSRF-Token header given by GET /api/auth/me")


def _mark(guard: Guard, access: str) -> Guard:
    setattr(guard, GUARD_ATTR, access)
    return guard


async def _public(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    # Resolve anyway so an open route can still tell who is calling.
    await resolve_principal(connection)


async def _signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    await require_principal(connection)


async def require_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = await resolve_principal(connection)
    if principal is None:
        raise Unauthorized("sign in first")
    return principal


def role_guard(*roles: str, permission: str | None = None) -> Guard:
    """Allow these roles (admin always); staff must have a 2FA-verified session."""
    allowed = frozenset(roles) | {"admin"}

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await require_principal(connection)
        if principal.user.role not in allowed:
            raise Forbidden(f"this needs the role {' or '.join(sorted(allowed))}")
        if permission is not None and permission not in principal.user.permissions:
            raise Forbidden(f"this needs the {permission} permission")
        if principal.is_staff and not principal.mfa_verified:
            raise MfaRequired(
                "moderators and admins must enrol 2FA (POST /api/auth/2fa/enroll) and sign in "
                "with it before any privileged action"
            )

    label = "+".join(sorted(allowed)) + (f"[{permission}]" if permission else "")
    return _mark(guard, label)


public = _mark(_public, "public")
signed_in = _mark(_signed_in, "signed-in")
performer = role_guard("performer")
moderator = role_guard("moderator")
admin = role_guard("admin")
finance = role_guard("admin", permission="finance")


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return await require_principal(request)


async def provide_optional_principal(request: Request[Any, Any, Any]) -> Principal | None:
    return await resolve_principal(request)
