"""HTTP routes of moderation: viewers report (signed in); moderators and admins with 2FA work
the review queue. Evidence is served only in a case's detail, never cached, and every opening
is audited."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Litestar, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.moderation import classifier, service
from tipstream.moderation.schemas import (
    ActionRequest,
    CaseDetail,
    CaseSummary,
    Notification,
    ReportCreated,
    ReportRequest,
)
from tipstream.rooms.sfu import Sfu

CaseId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]
NO_STORE = {"cache-control": "no-store, private", "pragma": "no-cache"}


def lifespan(settings: Settings) -> Any:
    """Load the chat classifier in a background thread as the app starts (about 2 s), so the
    first chat message does not wait for it; the first message waits only if it is early."""

    @asynccontextmanager
    async def warm(app: Litestar) -> AsyncIterator[None]:
        del app
        if settings.moderation.warm_classifier:
            threading.Thread(target=classifier.warm, name="warm-classifier", daemon=True).start()
        yield

    return warm


def provide_sfu(state: State) -> Sfu | None:
    sfu: Sfu | None = getattr(state, "sfu", None)
    return sfu


DEPENDENCIES = {
    "principal": Provide(guards.provide_principal),
    "sfu": Provide(provide_sfu, sync_to_thread=False),
}


class ReportController(Controller):
    path = "/api/moderation/reports"
    tags = ["moderation"]
    dependencies = DEPENDENCIES

    @post("", guards=[guards.signed_in], status_code=201)
    async def report(
        self,
        data: ReportRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        ip: str,
    ) -> ReportCreated:
        """Report a stream, a chat message or a user with a reason. The evidence (the stream,
        the room's recent chat, the message, who and when) is captured now and sealed."""
        return await service.report(conn, kv, settings, principal.user, data, ip=ip)


class QueueController(Controller):
    path = "/api/moderation"
    tags = ["moderation"]
    dependencies = DEPENDENCIES

    @get("/queue", guards=[guards.moderator])
    async def queue(
        self,
        conn: Conn,
        status: Annotated[str, Parameter(pattern="^(pending|open|escalated|closed)$")] = "pending",
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    ) -> list[CaseSummary]:
        """Flags and reports, most severe first, then oldest first (default: open and
        escalated)."""
        return await service.queue(conn, status=status, limit=limit)

    @get("/cases/{case_id:int}", guards=[guards.moderator])
    async def detail(
        self, case_id: CaseId, principal: Principal, conn: Conn, settings: Settings, ip: str
    ) -> Response[CaseDetail]:
        """One case, its actions and its decrypted evidence (audited, never cached)."""
        found = await service.detail(conn, settings, case_id, actor_id=principal.user.id, ip=ip)
        return Response(found, headers=NO_STORE)

    @post("/cases/{case_id:int}/actions", guards=[guards.moderator], status_code=200)
    async def act(
        self,
        case_id: CaseId,
        data: ActionRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
        sfu: Sfu | None,
        ip: str,
    ) -> CaseSummary:
        """dismiss, warn, release (a held chat message), delete_message, mute, ban (from the
        performer's room), suspend (the account), hide / unhide (the stream from the
        listings), end_stream, freeze_payouts / unfreeze_payouts, escalate (to an admin).
        Audited; the affected user gets a notification. unhide and unfreeze_payouts may
        follow on a closed case."""
        return await service.act(
            conn,
            kv,
            sfu,
            settings,
            case_id,
            data.action,
            actor=principal.user,
            note=data.note,
            seconds=data.seconds,
            ip=ip,
        )


class NotificationController(Controller):
    path = "/api/notifications"
    tags = ["notifications"]
    dependencies = DEPENDENCIES

    @get("", guards=[guards.signed_in])
    async def mine(self, principal: Principal, conn: Conn) -> list[Notification]:
        """What the platform told you (warnings, mutes, suspensions ...), newest first."""
        return await service.notifications(conn, principal.user.id)


ROUTES = [ReportController, QueueController, NotificationController]
