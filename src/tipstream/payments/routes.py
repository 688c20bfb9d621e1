"""HTTP routes for purchases: start a checkout, list mine, the processors' webhooks, and the
dev processor's hosted checkout page (it stands in for a processor's site on one box)."""

from __future__ import annotations

import hmac
import html
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter
from litestar.response import Redirect

from tipstream.accounts import guards
from tipstream.accounts.service import Principal
from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.deps import client_ip
from tipstream.errors import Forbidden, Problem
from tipstream.ledger.money import Rates
from tipstream.payments import queries, service
from tipstream.payments.processors import dev
from tipstream.payments.processors.base import WebhookRequest
from tipstream.payments.schemas import CheckoutRequest, CheckoutResponse, Purchase

PRINCIPAL = {"principal": Provide(guards.provide_principal)}


async def _processor_side(
    _connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Open to anyone, and blind to the caller's session: webhooks and the dev processor's page
    stand for a processor's own site, which never sees the viewer's cookies (so CSRF does not
    apply). What authorizes them is the processor's signature or the signed page token."""


setattr(_processor_side, guards.GUARD_ATTR, "public")
processor_side = _processor_side
PurchaseId = Annotated[int, Parameter(gt=0, le=2**63 - 1)]
FORM = "application/x-www-form-urlencoded"


class NotAForm(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def to_schema(row: queries.PurchaseRow, rates: Rates) -> Purchase:
    return Purchase(
        id=row.id,
        processor=row.processor,
        package_id=row.package_id,
        tokens=row.tokens,
        price=rates.format_units(row.price_units),
        currency=row.currency,
        status=row.status,
        created_at=row.created_at,
        credited_at=row.credited_at,
    )


class PurchaseController(Controller):
    path = "/api/purchases"
    tags = ["purchases"]
    dependencies = PRINCIPAL

    @post("/", guards=[guards.signed_in], status_code=201)
    async def checkout(
        self, data: CheckoutRequest, principal: Principal, conn: Conn, settings: Settings
    ) -> CheckoutResponse:
        """Start buying a token package: answers the processor's hosted page to redirect the
        browser to. Tokens are credited when the processor's webhook confirms the sale."""
        started = await service.start_checkout(
            conn,
            settings,
            user_id=principal.user.id,
            package_id=data.package_id,
            processor_name=data.processor,
        )
        return CheckoutResponse(started.purchase_id, started.processor, started.redirect_url)

    @get("/", guards=[guards.signed_in])
    async def mine(
        self,
        principal: Principal,
        conn: Conn,
        settings: Settings,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[Purchase]:
        rates = Rates.from_settings(settings)
        rows = await queries.purchases_of(conn, principal.user.id, limit=limit)
        return [to_schema(r, rates) for r in rows]


async def _webhook(
    request: Request[Any, Any, Any], processor: str, conn: Conn, settings: Settings
) -> Response[str]:
    body = await request.body()
    _outcomes, (ack, media_type) = await service.handle_webhook(
        conn,
        settings,
        processor,
        WebhookRequest(
            headers={k.lower(): v for k, v in request.headers.items()},
            query={k: str(v) for k, v in request.query_params.items()},
            body=body,
            client_ip=client_ip(request),
        ),
    )
    return Response(ack, media_type=media_type, status_code=200)


class WebhookController(Controller):
    path = "/api/payments/webhooks"
    tags = ["purchases"]

    @post("/{processor:str}", guards=[processor_side], status_code=200)
    async def webhook(
        self, request: Request[Any, Any, Any], processor: str, conn: Conn, settings: Settings
    ) -> Response[str]:
        """Processors call this. Each adapter verifies its own scheme (signatures, source
        networks); a forged or stale call is a 4xx and changes nothing."""
        return await _webhook(request, processor, conn, settings)

    @get("/{processor:str}", guards=[processor_side])
    async def postback(
        self, request: Request[Any, Any, Any], processor: str, conn: Conn, settings: Settings
    ) -> Response[str]:
        """Processors that call back with GET (Verotel's FlexPay postback)."""
        return await _webhook(request, processor, conn, settings)


CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dev checkout</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 3rem auto">
<h1>Dev payment processor</h1>
<p>A stand-in for a processor's hosted page: no card is asked for and no money moves.</p>
<p>Purchase {purchase_id}: <strong>{tokens} tokens</strong> for <strong>{price} {currency}</strong>
({status}).</p>
<form method="post" action="/pay/dev/{purchase_id}">
<input type="hidden" name="token" value="{token}">
<button name="outcome" value="sale">Pay {price} {currency}</button>
<button name="outcome" value="failed">Decline</button>
</form></body></html>
"""


class DevCheckoutController(Controller):
    path = "/pay/dev"
    tags = ["purchases"]
    include_in_schema = False

    @get("/{purchase_id:int}", guards=[processor_side], media_type=MediaType.HTML)
    async def page(
        self,
        purchase_id: PurchaseId,
        conn: Conn,
        settings: Settings,
        token: Annotated[str, Parameter(max_length=64)] = "",
    ) -> str:
        row = await _checked_purchase(conn, settings, purchase_id, token)
        rates = Rates.from_settings(settings)
        return CHECKOUT_PAGE.format(
            purchase_id=row.id,
            tokens=row.tokens,
            price=rates.format_units(row.price_units),
            currency=html.escape(row.currency),
            status=html.escape(row.status),
            token=html.escape(token),
        )

    @post("/{purchase_id:int}", guards=[processor_side], status_code=303)
    async def pay(
        self,
        request: Request[Any, Any, Any],
        purchase_id: PurchaseId,
        conn: Conn,
        settings: Settings,
    ) -> Redirect:
        """The processor's side: signs its webhook and delivers it to the app, as a processor
        would over the network. Takes the page's form (not JSON)."""
        if request.headers.get("content-type", "").split(";")[0] != FORM:
            raise NotAForm(f"post the checkout page's form ({FORM})")
        form = await request.form()
        token, outcome = str(form.get("token", "")), str(form.get("outcome", ""))
        row = await _checked_purchase(conn, settings, purchase_id, token)
        await service.dev_complete_checkout(conn, settings, purchase_id=row.id, outcome=outcome)
        return Redirect(path=f"/wallet?purchase={row.id}", status_code=303)


async def _checked_purchase(
    conn: Conn, settings: Settings, purchase_id: int, token: str
) -> queries.PurchaseRow:
    # As bytes: the token comes from a form or a URL and may be any text; compare_digest takes
    # ASCII str only.
    if not hmac.compare_digest(token.encode(), dev.page_token(settings, purchase_id).encode()):
        raise Forbidden("this checkout link is not valid")
    row = await queries.purchase(conn, purchase_id)
    if row.processor != "dev":
        raise Forbidden("not a dev-processor purchase")
    return row


ROUTES = [PurchaseController, WebhookController, DevCheckoutController]
