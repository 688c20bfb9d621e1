"""The audit log for admins over HTTP (tipctl audit tail|verify is the same service)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from tipstream.accounts import guards
from tipstream.audit import service
from tipstream.audit.schemas import AuditEntry, VerifyResult
from tipstream.db import Conn


class AuditController(Controller):
    path = "/api/admin/audit"
    tags = ["admin"]
    guards = [guards.admin]

    @get("/")
    async def tail(
        self,
        conn: Conn,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
        actor_id: Annotated[int | None, Parameter(gt=0, le=2**63 - 1)] = None,
        action: Annotated[str | None, Parameter(max_length=64, pattern=r"^[^\x00]*$")] = None,
    ) -> list[AuditEntry]:
        return await service.tail(conn, limit=limit, actor_id=actor_id, action=action)

    @get("/verify")
    async def verify(self, conn: Conn) -> VerifyResult:
        return await service.verify(conn)


ROUTES = [AuditController]
