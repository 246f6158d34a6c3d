"""HTTP plumbing of the server: JSON responses, the body size limit, and the error bodies
(``{"detail": "..."}``; 422: one entry per problem, ``{loc, msg, type, hint}``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..exceptions import Issue


class JSON(JSONResponse):
    """Compact UTF-8 JSON; text that UTF-8 cannot encode (lone surrogates) is sent escaped."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":"), default=str).encode()


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSON({"detail": detail}, status_code=status, headers=headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """413 for a request body over ``max_bytes``: at once when ``Content-Length`` says so,
    else as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    response = error(413, BodyTooLarge(limit).detail)
                    response.headers["Connection"] = "close"
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods of every route whose path matches (for ``Allow``)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's handler for ``HTTPException``, except that a 405 lists every method of the
    path in ``Allow`` (Starlette names only those of the first route that matched)."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _hint(error: dict[str, Any], example: str) -> str | None:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden" and len(loc) == 2 and loc[0] == "body":
        return f'run inputs go under "inputs": {{"inputs": {{"{loc[1]}": ...}}}}'
    if kind == "json_invalid" or (
        loc == ("body",) and kind in ("missing", "dict_type", "model_attributes_type")
    ):
        return f"send a JSON object, e.g. {example}"
    if loc == ("body", "inputs") and kind == "missing":
        return f"this workflow has required inputs: send {example}"
    if len(loc) >= 2 and loc[:2] == ("body", "tags"):
        return 'tags are strings, e.g. {"tags": {"user": "ana"}}'
    if loc == ("query", "wait"):
        return "use wait=true or wait=false"
    return None


def validation_handler(example: str) -> Any:
    """The 422 handler for request validation errors (``example``: a valid body, for hints)."""

    async def validation_failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {
                "loc": list(e["loc"]),
                "msg": e["msg"],
                "type": e["type"],
                "hint": _hint(e, example),
            }
            for e in exc.errors()
        ]
        return JSON({"detail": detail}, status_code=422)

    return validation_failed


def field_errors(inputs: Sequence[Issue], tags: Sequence[Issue] = ()) -> Response:
    """422 for problems ``coerce_inputs`` (and the tag check) found: ``loc`` is
    ``["body", "inputs"]`` (or ``"tags"``) plus each issue's path, ``type`` its code."""
    detail = [_field_error(i, "inputs") for i in inputs] + [_field_error(i, "tags") for i in tags]
    return JSON({"detail": detail}, status_code=422)


def _field_error(issue: Issue, section: str) -> dict[str, Any]:
    kind = issue.code or "invalid_input"
    hint = issue.hint
    if kind == "missing" and issue.path:
        hint = f'add "{issue.path[0]}" to "{section}"'
    return {"loc": ["body", section, *issue.path], "msg": issue.message, "type": kind, "hint": hint}
