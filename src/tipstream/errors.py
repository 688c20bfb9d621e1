"""Every error the API returns is RFC 9457 problem+json; this is the one place that maps them.

Domains raise ``Problem`` subclasses (or Litestar's HTTP exceptions); anything else is a bug,
logged with the request id and answered as a 500 problem that reveals nothing.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://tipstream.invalid/problems/"

log = structlog.get_logger("tipstream.errors")


class Problem(Exception):
    """A domain error with its HTTP status, a stable type slug and a human title."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"


class InvalidInput(Problem):
    status, slug, title = 422, "invalid-input", "Invalid input"


class TooManyRequests(Problem):
    status, slug, title = 429, "too-many-requests", "Too many requests"


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(
        request,
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        extra=exc.extra,
        headers=exc.headers,
    )


# msgspec's validation messages speak of types ("Expected `str` of length >= 10"); forms show
# them next to a field, so they are said in words a person filling the form understands.
_TYPE_WORDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "empty",
}
_READABLE: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"^Expected `str` of length >= 1$"),
        lambda m: "must not be empty",
    ),
    (
        re.compile(r"^Expected `str` of length >= (\d+)"),
        lambda m: f"must be at least {m[1]} characters",
    ),
    (
        re.compile(r"^Expected `str` of length <= (\d+)"),
        lambda m: f"must be at most {m[1]} characters",
    ),
    (
        re.compile(r"^Expected `array` of length >= 1$"),
        lambda m: "must not be empty",
    ),
    (
        re.compile(r"^Expected `array` of length >= (\d+)"),
        lambda m: f"must have at least {m[1]} items",
    ),
    (
        re.compile(r"^Expected `array` of length <= (\d+)"),
        lambda m: f"must have at most {m[1]} items",
    ),
    (re.compile(r"^Expected `(?:int|float)` >= (-?[\d.]+)"), lambda m: f"must be at least {m[1]}"),
    (re.compile(r"^Expected `(?:int|float)` <= (-?[\d.]+)"), lambda m: f"must be at most {m[1]}"),
    (re.compile(r"^Expected `(?:int|float)` > (-?[\d.]+)"), lambda m: f"must be more than {m[1]}"),
    (re.compile(r"^Expected `(?:int|float)` < (-?[\d.]+)"), lambda m: f"must be less than {m[1]}"),
    (re.compile(r"^Expected `str` matching regex"), lambda m: "is not in the expected format"),
    (re.compile(r"^Invalid RFC3339 encoded date"), lambda m: "must be a date (YYYY-MM-DD)"),
    (re.compile(r"^Invalid enum value"), lambda m: "is not one of the allowed choices"),
    (
        re.compile(r"^Expected `([a-z]+)(?: \| null)?`, got `[a-z]+`"),
        lambda m: f"must be {_TYPE_WORDS.get(m[1], m[1])}",
    ),
]


def readable_validation_message(message: str) -> str:
    """A field error in words; a message with no known pattern is returned as it is."""
    for pattern, say in _READABLE:
        match = pattern.match(message)
        if match:
            return str(say(match))
    return message


def _readable_errors(errors: Any) -> Any:
    if not isinstance(errors, list):
        return errors
    return [
        {**e, "message": readable_validation_message(e["message"])}
        if isinstance(e, dict) and isinstance(e.get("message"), str)
        else e
        for e in errors
    ]


_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


def handle_http_exception(
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[dict[str, Any]]:
    status = exc.status_code
    slug, title = _SLUGS.get(status, ("error", "Error"))
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException):
        # Litestar puts the field errors in .extra; keep them so forms can show them per field.
        slug, title = "invalid-input", "Invalid input"
        if exc.extra:
            extra["errors"] = _readable_errors(exc.extra)
    detail = exc.detail if exc.detail and exc.detail != title else title
    if status >= 500:
        log.error("http_error", status=status, detail=detail)
        detail = "Internal server error"
    return problem_response(
        request,
        status=status,
        slug=slug,
        title=title,
        detail=detail,
        extra=extra,
        headers=dict(exc.headers or {}),
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled_error", error_type=type(exc).__name__)
    return problem_response(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        slug="internal",
        title="Internal server error",
        detail="Internal server error; the request id identifies it in the logs",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
