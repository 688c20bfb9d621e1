"""HTTP routes for accounts: thin wrappers over accounts.service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Litestar, Request, Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from valkey.asyncio import Valkey

from tipstream.accounts import guards, service, sessions
from tipstream.accounts.schemas import (
    NO_NUL,
    ApiToken,
    ApiTokenRequest,
    ChangePasswordRequest,
    DisableRequest,
    LoginRequest,
    Me,
    NewApiToken,
    PermissionsRequest,
    RecoveryCodes,
    RegisterRequest,
    Role,
    SetRoleRequest,
    TotpConfirmRequest,
    TotpEnrollment,
    User,
)
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn

PRINCIPAL = {"principal": Provide(guards.provide_principal)}
UserId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]


def _session_cookie(settings: Settings, value: str, *, max_age: int) -> Cookie:
    return Cookie(
        key=sessions.cookie_name(settings),
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=settings.security.cookie_secure,
        samesite="lax",
    )


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]
    dependencies = PRINCIPAL

    @post("/register", guards=[guards.public], status_code=201)
    async def register(
        self, data: RegisterRequest, conn: Conn, settings: Settings, ip: str
    ) -> User:
        """Create an account. Nobody under the minimum age (18 by default) may register."""
        return await service.create_user(
            conn,
            settings,
            email=data.email,
            password=data.password,
            date_of_birth=data.date_of_birth,
            display_name=data.display_name,
            role=data.role,
            self_registered=True,
            ip=ip,
        )

    @post("/login", guards=[guards.public], status_code=HTTP_200_OK)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: LoginRequest,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> Response[Me]:
        """Sign in; sets the session cookie. Accounts with 2FA also send totp_code (or a
        recovery_code). Repeated failures lock the account and the address for a while."""
        session_id, state, user = await service.login(
            conn,
            kv,
            settings,
            email=data.email,
            password=data.password,
            totp_code=data.totp_code,
            recovery_code=data.recovery_code,
            ip=ip,
            user_agent=request.headers.get("user-agent"),
        )
        body = Me(user=user, csrf_token=state.csrf_token, mfa_verified=state.mfa_verified)
        cookie = _session_cookie(
            settings, session_id, max_age=settings.security.session_ttl_seconds
        )
        return Response(body, cookies=[cookie])

    @post("/logout", guards=[guards.signed_in], status_code=HTTP_204_NO_CONTENT)
    async def logout(
        self, principal: Principal, conn: Conn, kv: Valkey, settings: Settings
    ) -> Response[None]:
        await service.logout(conn, kv, settings, principal)
        return Response(
            None,
            status_code=HTTP_204_NO_CONTENT,
            cookies=[_session_cookie(settings, "", max_age=0)],
        )

    @get("/me", guards=[guards.signed_in])
    async def me(self, principal: Principal) -> Me:
        """The signed-in user, with the CSRF token browsers send as X-CSRF-Token."""
        return Me(
            user=service.public_user(principal.user),
            csrf_token=principal.session.csrf_token if principal.session else None,
            mfa_verified=principal.mfa_verified,
        )

    @post("/password", guards=[guards.signed_in], status_code=HTTP_204_NO_CONTENT)
    async def change_password(
        self,
        data: ChangePasswordRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> None:
        """Change the password; every other session of the account is signed out."""
        await service.change_password(
            conn,
            kv,
            settings,
            principal,
            current_password=data.current_password,
            new_password=data.new_password,
            ip=ip,
        )

    @post("/2fa/enroll", guards=[guards.signed_in], status_code=HTTP_200_OK)
    async def enroll_totp(
        self, principal: Principal, conn: Conn, settings: Settings
    ) -> TotpEnrollment:
        """Start TOTP enrolment: the secret, an otpauth:// URI and its QR code as SVG."""
        return await service.begin_totp(conn, settings, principal)

    @post("/2fa/confirm", guards=[guards.signed_in], status_code=HTTP_200_OK)
    async def confirm_totp(
        self,
        data: TotpConfirmRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> RecoveryCodes:
        """Finish enrolment with a first code; answers the one-time recovery codes."""
        return await service.confirm_totp(conn, kv, settings, principal, code=data.code, ip=ip)

    @post("/2fa/disable", guards=[guards.signed_in], status_code=HTTP_204_NO_CONTENT)
    async def disable_totp(
        self,
        data: TotpConfirmRequest,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        ip: str,
    ) -> None:
        """Turn 2FA off (not allowed for moderators and admins)."""
        await service.disable_totp(conn, settings, principal, code=data.code, ip=ip)

    @get("/tokens", guards=[guards.signed_in])
    async def list_tokens(self, principal: Principal, conn: Conn) -> list[ApiToken]:
        return await service.list_api_tokens(conn, principal)

    @post("/tokens", guards=[guards.signed_in], status_code=201)
    async def create_token(
        self, data: ApiTokenRequest, principal: Principal, conn: Conn, ip: str
    ) -> NewApiToken:
        """Create a personal API token for scripts; the token is shown in this answer only."""
        return await service.create_api_token(
            conn, principal, name=data.name, expires_in_days=data.expires_in_days, ip=ip
        )

    @delete("/tokens/{token_id:int}", guards=[guards.signed_in])
    async def revoke_token(
        self,
        token_id: Annotated[int, Parameter(gt=0, le=2**63 - 1)],
        principal: Principal,
        conn: Conn,
        ip: str,
    ) -> None:
        await service.revoke_api_token(conn, principal, token_id, ip=ip)


class UserAdminController(Controller):
    path = "/api/admin/users"
    tags = ["admin"]
    guards = [guards.admin]
    dependencies = PRINCIPAL

    @get("/")
    async def list_users(
        self,
        conn: Conn,
        role: Role | None = None,
        q: Annotated[str | None, Parameter(max_length=100, pattern=NO_NUL)] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=2**63 - 1)] = 0,
    ) -> list[User]:
        return await service.list_users(conn, role=role, search=q, limit=limit, offset=offset)

    @get("/{user_id:int}")
    async def show_user(self, user_id: UserId, conn: Conn) -> User:
        return await service.get_user(conn, user_id)

    @post("/{user_id:int}/role", status_code=HTTP_200_OK)
    async def set_role(
        self,
        user_id: UserId,
        data: SetRoleRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> User:
        return await service.set_role(
            conn, kv, settings, user_id, data.role, actor_id=principal.user.id, ip=ip
        )

    @post("/{user_id:int}/permissions", status_code=HTTP_200_OK)
    async def set_permissions(
        self,
        user_id: UserId,
        data: PermissionsRequest,
        principal: Principal,
        conn: Conn,
        ip: str,
    ) -> User:
        return await service.set_permissions(
            conn, user_id, list(data.permissions), actor_id=principal.user.id, ip=ip
        )

    @post("/{user_id:int}/disable", status_code=HTTP_200_OK)
    async def disable(
        self,
        user_id: UserId,
        data: DisableRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> User:
        """Disable an account: it can no longer sign in; its sessions and tokens end now."""
        return await service.set_disabled(
            conn, kv, settings, user_id, reason=data.reason, actor_id=principal.user.id, ip=ip
        )

    @post("/{user_id:int}/enable", status_code=HTTP_200_OK)
    async def enable(
        self,
        user_id: UserId,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> User:
        return await service.set_disabled(
            conn, kv, settings, user_id, reason=None, actor_id=principal.user.id, ip=ip
        )


def lifespan(settings: Settings) -> Any:
    """Seal TOTP secrets an upgraded system still holds in clear, in the background: start-up
    does not wait for the database, and logins read clear secrets until they are sealed."""

    @asynccontextmanager
    async def accounts_lifespan(app: Litestar) -> AsyncIterator[None]:
        sealing = asyncio.create_task(
            service.seal_clear_totp_secrets_at_start(app.state.pool, settings)
        )
        try:
            yield
        finally:
            sealing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sealing

    return accounts_lifespan


ROUTES = [AuthController, UserAdminController]
