"""Request bodies: a route that reads a JSON body refuses a body of another media type.

Litestar decodes the body of a ``data`` parameter as JSON whatever Content-Type says, so a form
post or a text/plain body would be acted on. Refusing them with a 415 keeps the API to what it
documents and keeps "simple" cross-site requests (forms, text/plain) from ever being read.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE


class UnsupportedMediaType(HTTPException):
    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


def is_json(content_type: str) -> bool:
    """application/json or a structured-syntax +json type, parameters (charset) aside."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _has_body(request: Request[Any, Any, Any]) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def _reads_json(request: Request[Any, Any, Any]) -> bool:
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return False
    media_type = getattr(parameter.kwarg_definition, "media_type", None)
    return media_type in (None, RequestEncodingType.JSON)


async def require_json_body(request: Request[Any, Any, Any]) -> None:
    """before_request hook: 415 for a body that is not JSON on a route that reads JSON."""
    if not _has_body(request) or not _reads_json(request):
        return
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise UnsupportedMediaType(detail="send the body as application/json")
