"""Errors as problem details (RFC 9457): every failure of a JSON route is one small JSON object.

A router cannot install exception handlers (those belong to the host's application), so the
routes of :func:`tradelog.web.create_router` are :class:`ProblemRoute`\\ s: each wraps its own
handler and turns what it raises into a response with the right status:

=========================================================  ======
what was raised                                            status
=========================================================  ======
a request that does not validate, :class:`BadRequest`,     400
``ValueError``, :class:`~tradelog.exceptions.ConfigurationError`
:class:`~tradelog.exceptions.PermissionDenied`             403
:class:`~tradelog.exceptions.NotFound`                     404
:class:`~tradelog.exceptions.ConflictError`                409
:class:`~tradelog.exceptions.StorageError`, a database     503 (``Retry-After: 5``)
that cannot be reached or timed out
``HTTPException``                                          its own
anything else                                              500, recorded, never shown
=========================================================  ======

The body is ``{"type", "title", "status", "detail"}`` and, for a 400, ``errors``: one
``{"field", "message"}`` per invalid input, naming the query parameter, path parameter or body
field. A stack trace never leaves the server: an unexpected error is handed to ``on_error``
(the router records it in ``error_logs``) and the client reads "internal error".

:class:`PageRoute` does the same for the HTML pages, rendering the problem with ``render``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import Response

from tradelog.exceptions import (
    ConfigurationError,
    ConflictError,
    NotFound,
    PermissionDenied,
    StorageError,
)

__all__ = [
    "PROBLEM_RESPONSES",
    "BadRequest",
    "FieldError",
    "PageRoute",
    "Problem",
    "ProblemRoute",
    "problem_for",
]

MEDIA_TYPE: Final = "application/problem+json"
_log = logging.getLogger("tradelog.web")

_TITLES: Final = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    415: "Unsupported media type",
    422: "Bad request",
    500: "Internal error",
    503: "Storage unavailable",
}


class FieldError(BaseModel):
    """One invalid input: which field, and what is wrong with it."""

    field: str | None
    message: str


class Problem(BaseModel):
    """An error response (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": Problem, "description": _TITLES[status]}
    for status in (400, 401, 403, 404, 409, 503)
}
"""The ``responses=`` every JSON route declares in the OpenAPI description."""


class BadRequest(ValueError):
    """Invalid input in ``field`` (a query parameter, a path parameter or a body field)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


OnError = Callable[[Request, BaseException], None]


def _field_of(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header", "cookie")]
    return ".".join(parts) or None


def _validation(exc: RequestValidationError) -> tuple[str, list[FieldError]]:
    errors = [
        FieldError(field=_field_of(item.get("loc", ())), message=str(item.get("msg", "invalid")))
        for item in exc.errors()
    ]
    first = errors[0] if errors else FieldError(field=None, message="invalid request")
    detail = f"{first.field}: {first.message}" if first.field else first.message
    return detail, errors


def _naming(field: str | None, message: str) -> str:
    """``message``, prefixed with ``field:`` unless it names the field already."""
    if field is None or field in message or field.replace("_", " ") in message:
        return message
    return f"{field}: {message}"


_UNAVAILABLE = (StorageError, OperationalError, DisconnectionError, PoolTimeout)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def problem_for(exc: BaseException) -> tuple[Problem, dict[str, str]]:
    """The problem (and extra headers) that ``exc`` stands for; 500 for the unexpected."""
    headers: dict[str, str] = {}
    errors: list[FieldError] | None = None
    if isinstance(exc, RequestValidationError):
        status = 400
        detail, errors = _validation(exc)
    elif isinstance(exc, BadRequest | ConfigurationError):
        field = exc.field if isinstance(exc, BadRequest) else exc.variable
        status, detail = 400, _naming(field, str(exc))
        errors = [FieldError(field=field, message=str(exc))]
    elif isinstance(exc, PermissionDenied):
        status, detail = 403, str(exc)
    elif isinstance(exc, NotFound):
        status, detail = 404, str(exc)
    elif isinstance(exc, ConflictError):
        status, detail = 409, str(exc)
    elif _unavailable(exc):
        status = 503
        detail = "the database is unavailable; try again shortly"
        headers["Retry-After"] = "5"
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(status, "error")
        headers.update(exc.headers or {})
    elif isinstance(exc, ValueError):
        status, detail = 400, str(exc)
        errors = [FieldError(field=None, message=str(exc))]
    else:
        status, detail = 500, "internal error"
    title = _TITLES.get(status, "Error")
    return Problem(title=title, status=status, detail=detail, errors=errors), headers


def _json(problem: Problem, headers: dict[str, str]) -> Response:
    body = problem.model_dump()
    if body["errors"] is None:
        del body["errors"]
    return JSONResponse(
        body,
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


class ProblemRoute(APIRoute):
    """A JSON route whose failures are problem details (see the module docstring).

    ``on_error`` is called for every unexpected exception (status 500); the router sets it
    on the class it makes for itself.
    """

    on_error: OnError | None = None

    def render(self, request: Request, problem: Problem, headers: dict[str, str]) -> Response:
        """The response for ``problem``."""
        return _json(problem, headers)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The handler, wrapped so that whatever it raises becomes a problem response."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                problem, headers = problem_for(exc)
                if problem.status >= 500 and problem.status != 503:
                    self._unexpected(request, exc)
                return self.render(request, problem, headers)

        return guarded

    def _unexpected(self, request: Request, exc: BaseException) -> None:
        _log.error(
            "%s %s failed: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        if self.on_error is not None:
            try:
                self.on_error(request, exc)
            except Exception:  # pragma: no cover - recording must not hide the response
                _log.exception("recording a web error failed")


Renderer = Callable[[Request, Problem, dict[str, str]], Response]


class PageRoute(ProblemRoute):
    """An HTML route: problems are rendered as a page (or a fragment for htmx) by ``page``."""

    page: Renderer | None = None

    def render(self, request: Request, problem: Problem, headers: dict[str, str]) -> Response:
        """The page for ``problem`` (problem details when no renderer is set)."""
        if self.page is None:  # pragma: no cover - the router always sets one
            return _json(problem, headers)
        return self.page(request, problem, headers)
