"""HTTP routes of the token economy: tips, the wallet, its history, token packages."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import Provide
from litestar.params import Parameter
from valkey.asyncio import Valkey

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import Problem
from tipstream.ledger import tips, wallets
from tipstream.ledger.schemas import HistoryPage, Tip, TipRequest, TokenPackage, Wallet

PRINCIPAL = {"principal": Provide(guards.provide_principal)}
StreamId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]
IDEMPOTENCY_HEADER = "idempotency-key"


class IdempotencyKeyMissing(Problem):
    status, slug, title = 400, "idempotency-key-missing", "Idempotency-Key header required"


class TipController(Controller):
    path = "/api/streams"
    tags = ["tips"]
    dependencies = PRINCIPAL

    @post("/{stream_id:int}/tips", guards=[guards.signed_in], status_code=201)
    async def tip(
        self,
        request: Request[Any, Any, Any],
        stream_id: StreamId,
        data: TipRequest,
        principal: Principal,
        conn: Conn,
        kv: Valkey,
        settings: Settings,
    ) -> Response[Tip]:
        """Tip the stream's performer. Send a fresh Idempotency-Key per tip (a UUID) and the
        same key when retrying: the retry answers the original tip; the same key with another
        body is a 409. Private messages reach the performer only."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            raise IdempotencyKeyMissing("send an Idempotency-Key header (a fresh UUID per tip)")
        tip, replayed = await tips.tip(
            conn,
            kv,
            settings,
            viewer_id=principal.user.id,
            stream_id=stream_id,
            tokens=data.tokens,
            message=data.message,
            private=data.private,
            idempotency_key=key,
        )
        headers = {"idempotent-replayed": "true"} if replayed else {}
        return Response(tip, status_code=201, headers=headers)


class WalletController(Controller):
    path = "/api/wallet"
    tags = ["wallet"]
    dependencies = PRINCIPAL

    @get("/", guards=[guards.signed_in])
    async def wallet(self, principal: Principal, conn: Conn) -> Wallet:
        """Your tokens: balance, available (balance less reserved) and reserved."""
        return await wallets.wallet(conn, principal.user.id)

    @get("/history", guards=[guards.signed_in])
    async def history(
        self,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        cursor: Annotated[str | None, Parameter(max_length=64)] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        account: Annotated[str, Parameter(pattern="^(wallet|earnings)$")] = "wallet",
    ) -> HistoryPage:
        """Your transfers, newest first; pass next_cursor as ?cursor= for the next page."""
        return await wallets.history_page(
            conn, settings, principal.user.id, kinds=(account,), cursor=cursor, limit=limit
        )

    @get("/packages", guards=[guards.public])
    async def packages(self, settings: Settings) -> list[TokenPackage]:
        """The token packages on sale."""
        return wallets.packages(settings)


ROUTES = [TipController, WalletController]
