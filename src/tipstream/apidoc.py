"""The OpenAPI document describes the answers the API really sends.

Litestar documents a 400 of its own shape (``status_code``, ``detail``, ``extra``) as
``application/json`` on every route with parameters, and nothing for the other refusals. Every
4xx the app sends is an RFC 9457 problem (errors.py), so each operation documents one ``4XX``
answer with the Problem schema instead. A handler that answers 204 through a Response object
(to clear a cookie) is documented with a JSON body it never has; a 204 has none.
"""

from __future__ import annotations

from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
)

from tipstream.errors import PROBLEM_MEDIA_TYPE

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="An RFC 9457 problem; more members may follow (e.g. errors, per field).",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="URI naming the kind of problem"),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
        "detail": Schema(type=OpenAPIType.STRING),
        "instance": Schema(type=OpenAPIType.STRING),
        "request_id": Schema(type=OpenAPIType.STRING),
        "errors": Schema(description="field errors of an invalid-input problem"),
    },
)


def document_responses(openapi: OpenAPI) -> None:
    """Each operation's 4xx answers become one ``4XX`` problem+json answer; 204s lose the body
    they never have."""
    openapi.components.schemas["Problem"] = PROBLEM_SCHEMA
    problem = OpenAPIResponse(
        description="Refused: an RFC 9457 problem saying why",
        content={
            PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))
        },
    )
    for path_item in (openapi.paths or {}).values():
        for method in METHODS:
            operation = getattr(path_item, method, None)
            if operation is None:
                continue
            responses = {
                status: response
                for status, response in (operation.responses or {}).items()
                if not status.startswith("4")
            }
            responses["4XX"] = problem
            no_content = responses.get("204")
            if isinstance(no_content, OpenAPIResponse):
                no_content.content = None
            operation.responses = responses
