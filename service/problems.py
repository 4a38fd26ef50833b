"""Every error answered as RFC 9457 problem details, never a stack trace.

Handlers raise `ProblemError`; the framework's own exceptions (bad JSON,
validation, unknown routes, missing tokens, oversized bodies) are turned into
the same shape here, so an app developer meets one error format everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from schemas.base import MAX_BODY_BYTES, NO_NUL_PATTERN
from schemas.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem

log = structlog.get_logger(__name__)

PROBLEM_TYPE_BASE = "/problems/"

_SLUGS = {
    400: "malformed-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    426: "upgrade-required",
    429: "too-many-requests",
    500: "internal-error",
    503: "unavailable",
}
_FIELD_IN_MESSAGE = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]+)`")
# Litestar reports an absent body as the missing key of its `data` argument.
_MISSING_ARGUMENT = re.compile(r"^'(\w+)'$")
_CLEARER = {
    f"Expected `str` matching regex {NO_NUL_PATTERN!r}": "must not contain the NUL character (U+0000)",
}


class ProblemError(HTTPException):
    """An error answer: status, a stable type slug, and what went wrong."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        errors: Iterable[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=dict(headers or {}))
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors)


def invalid(path: str, message: str) -> ProblemError:
    """422 for one field that breaks a rule the schema cannot express."""
    return ProblemError(
        422, "invalid", f"{path}: {message}", title="Invalid request", errors=[FieldError(path=path, message=message)]
    )


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Problem]:
    problem = Problem(
        type=PROBLEM_TYPE_BASE + slug,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=errors or [],
    )
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return Response(problem, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=all_headers)


def field_errors(extra: Any) -> list[FieldError]:
    """Turn Litestar's validation details into `{path, message}` pairs.

    Litestar names the object that failed (`data` for the body itself);
    msgspec names a missing or unknown field only in its message, so the
    field is taken from there to give the full path.
    """
    errors = []
    for item in extra if isinstance(extra, list) else []:
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        path = "" if (key == "data" and item.get("source") == "body") else key
        if match := _FIELD_IN_MESSAGE.match(message):
            path = f"{path}.{match.group(1)}" if path else match.group(1)
        elif match := _MISSING_ARGUMENT.match(message):
            path, message = "", "a JSON body is required" if match.group(1) == "data" else "is required"
        message = _CLEARER.get(message, message)
        errors.append(FieldError(path=path, message=message))
    return errors


def _on_problem(_: Request[Any, Any, Any], exc: ProblemError) -> Response[Problem]:
    return problem_response(
        exc.status_code, exc.slug, exc.detail, title=exc.title, errors=exc.errors, headers=exc.headers
    )


def _on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = field_errors(exc.extra)
    detail = "; ".join(f"{e.path or 'body'}: {e.message}" for e in errors) or "The request is not valid"
    return problem_response(422, "invalid", detail, title="Invalid request", errors=errors)


def _on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        log.error("http_error", status=status, error=type(exc).__name__)
        return problem_response(status, _SLUGS.get(status, "internal-error"), HTTPStatus(status).phrase)
    detail = exc.detail
    if status == 413:  # raised by the framework's body-size check
        detail = f"The request body is over the limit of 2 MiB ({MAX_BODY_BYTES:,} bytes)."
    return problem_response(status, _SLUGS.get(status, "error"), detail, headers=exc.headers)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return problem_response(500, "internal-error", "Something went wrong on our side; nothing you sent is lost.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ProblemError: _on_problem,
    ValidationException: _on_validation,
    HTTPException: _on_http,
    Exception: _on_unexpected,
}


def problem_specs(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
        )
        for status in statuses
    }
