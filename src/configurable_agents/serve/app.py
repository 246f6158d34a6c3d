"""The HTTP server of one workflow (FastAPI): ``create_app(workflow)``.

====================  ======================================================================
``POST /runs``        run it: body ``{"inputs": {...}, "tags": {...}}``; waits for the result
                      (200, also for a failed run: see ``status``), or with ``?wait=false``
                      returns 202 ``{id, status: "queued"}`` and a ``Location`` at once
``GET /runs/{id}``    one run record (404 if unknown)
``GET /runs``         run records, newest first: ``?limit=50&offset=0&status=failed``
``GET /health``       status, workflow, uptime, active and queued runs (never needs the key)
``GET /metrics``      Prometheus metrics (SPEC §5 names)
``GET /docs``         OpenAPI docs (``/openapi.json``; open, like ``/health``)
====================  ======================================================================

When an API key is set (``api_key=`` or ``CONFIGURABLE_AGENTS_API_KEY``) every other route
needs ``Authorization: Bearer <key>`` (401 with ``WWW-Authenticate: Bearer`` otherwise).
Errors are JSON ``{"detail": ...}``; bad inputs are 422 with one entry per problem
(``loc``, ``msg``, ``type``, ``hint``), a body over ``max_body_bytes`` is 413.
"""

import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..compile.plan import CompiledWorkflow
from ..config.types import type_adapter
from ..config.validate import LoadedWorkflow
from ..exceptions import InputError
from ..observe import metrics
from ..run.executor import prepare
from ..run.inputs import coerce_inputs
from . import models
from .records import COLUMNS, Record, RunStore
from .runner import Runner, ServerBusy, ServerStopping, default_concurrency

API_KEY_ENV = "CONFIGURABLE_AGENTS_API_KEY"
DEFAULT_GRACE_SECONDS = 30.0
DEFAULT_MAX_QUEUE = 10_000
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_QUOTED = re.compile(r"'([^']*)'")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return _JSON({"detail": detail}, status_code=status, headers=headers)


class _BodyTooLarge(HTTPException):
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
                    response = _error(413, _BodyTooLarge(limit).detail)
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
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def _inputs_schema(compiled: CompiledWorkflow) -> dict[str, Any]:
    """The workflow's state fields as the JSON Schema of ``inputs`` (for the docs)."""
    spec = compiled.workflow.spec
    properties: dict[str, Any] = {}
    for name, fdef in spec.state.fields.items():
        try:
            schema = dict(type_adapter(compiled.state_types[name]).json_schema())
        except Exception:  # noqa: BLE001 - documentation only
            schema = {}
        if "$defs" in json.dumps(schema):
            schema = {"type": "object"}
        schema.pop("title", None)
        if fdef.description:
            schema["description"] = fdef.description
        if fdef.default is not None:
            schema["default"] = fdef.default
        properties[name] = schema
    required = [n for n, f in spec.state.fields.items() if f.required]
    return {"properties": properties, "required": required, "additionalProperties": False}


def _request_model(compiled: CompiledWorkflow) -> type[BaseModel]:
    example: dict[str, Any] = {
        n: f"<{n}>" for n, f in compiled.workflow.spec.state.fields.items() if f.required
    }
    model: type[BaseModel] = create_model(
        "RunRequest",
        __config__=ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"inputs": example, "tags": {}}]}
        ),
        inputs=(
            dict[str, Any],
            Field(
                default_factory=dict,
                description="The run's inputs: state fields of the workflow (strings are "
                "converted by the field's type, as on the command line).",
                json_schema_extra=_inputs_schema(compiled),
            ),
        ),
        tags=(
            dict[str, str],
            Field(
                default_factory=dict,
                description="Kept with the run record and added to its trace "
                "(user and team are queryable in reports).",
            ),
        ),
    )
    return model


def _hint(error: dict[str, Any]) -> str | None:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden" and len(loc) == 2 and loc[0] == "body":
        return f'run inputs go under "inputs": {{"inputs": {{"{loc[1]}": ...}}}}'
    if kind == "json_invalid" or (loc == ("body",) and kind in ("missing", "dict_type")):
        return 'send a JSON object, e.g. {"inputs": {"topic": "..."}}'
    if len(loc) >= 2 and loc[:2] == ("body", "tags"):
        return 'tags are strings, e.g. {"tags": {"user": "ana"}}'
    return None


async def _validation_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"], "hint": _hint(e)}
        for e in exc.errors()
    ]
    return _JSON({"detail": detail}, status_code=422)


def _input_errors(exc: InputError, raw: dict[str, Any], fields: set[str]) -> Response:
    detail = []
    for issue in exc.issues:
        names = [n for n in _QUOTED.findall(issue.message) if n in raw or n in fields]
        name = names[0] if names else None
        if name is None:
            loc: list[str | int] = ["body", "inputs"]
            kind = "invalid_input"
        else:
            loc = ["body", "inputs", name]
            kind = (
                "missing"
                if name not in raw
                else "unknown_input"
                if name not in fields
                else "invalid_input"
            )
        hint = issue.hint
        if kind == "missing" and hint and hint.startswith("pass --input"):
            hint = f'add "{name}" to "inputs"'
        detail.append({"loc": loc, "msg": issue.message, "type": kind, "hint": hint})
    return _JSON({"detail": detail}, status_code=422)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def to_api(record: Record) -> dict[str, Any]:
    """A record as the API returns it (ISO 8601 UTC times, ``nodes`` always a list)."""
    out = {name: record.get(name) for name in COLUMNS}
    out["created_at"] = _iso(out["created_at"])
    out["started_at"] = _iso(out["started_at"])
    out["finished_at"] = _iso(out["finished_at"])
    out["nodes"] = out["nodes"] or []
    return out


def _trace_headers(request: Request) -> dict[str, str] | None:
    """The caller's W3C trace context (``traceparent``, ``tracestate``), if it sent one."""
    found = {k: request.headers[k] for k in ("traceparent", "tracestate") if k in request.headers}
    return found or None


def _runner(request: Request) -> Runner:
    runner: Runner | None = getattr(request.app.state, "runner", None)
    if runner is None:
        raise HTTPException(503, "the server is not started (use it inside its lifespan)")
    return runner


def request_shutdown(app: FastAPI) -> None:
    """Begin a graceful shutdown now: take no new runs, fail the queued ones. Safe to call
    from a signal handler or another thread; the lifespan's end finishes the job."""
    runner: Runner | None = getattr(app.state, "runner", None)
    loop = runner._loop if runner else None
    if runner is not None and loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(runner.begin_shutdown)


def _auth(api_key: str) -> Callable[..., Awaitable[None]]:
    scheme = HTTPBearer(
        auto_error=False,
        description=f"The server's API key ({API_KEY_ENV}), as Authorization: Bearer <key>.",
    )
    expected = api_key.encode()

    async def require_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)],
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not (credentials and hmac.compare_digest(given, expected)):
            raise HTTPException(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def create_app(
    workflow: str | Path | LoadedWorkflow | CompiledWorkflow,
    *,
    database_url: str | None = None,
    max_concurrency: int | None = None,
    max_body_bytes: int = 1_000_000,
    api_key: str | None = None,
    trace: bool | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> FastAPI:
    """The FastAPI app serving ``workflow`` (a path, ``load_workflow`` or ``compile_workflow``
    result; a path is validated and compiled here, raising ``UserError`` if it is bad).

    ``database_url``: where run records go (SQLAlchemy URL; default SQLite file
    ``configurable_agents_runs.db`` in the current directory). ``max_concurrency``: runs at
    once (default 1 for a workflow on the local model, else 16); more wait, queued, up to
    ``max_queue`` (then 503). ``api_key``: bearer token (default ``$CONFIGURABLE_AGENTS_API_KEY``;
    none: open). ``trace``: as ``run_workflow``'s (default: the workflow's
    ``observability.mlflow.enabled``). ``grace_seconds``: on shutdown, how long running runs may
    take before they are recorded as failed.
    """
    compiled = prepare(workflow)
    concurrency = max_concurrency or default_concurrency(compiled)
    if concurrency < 1 or max_body_bytes < 1 or max_queue < 0 or grace_seconds < 0:
        raise ValueError("max_concurrency and max_body_bytes must be >= 1, the others >= 0")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    metrics.enable()
    spec = compiled.workflow.spec
    fields = set(spec.state.fields)
    run_request = _request_model(compiled)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = RunStore(database_url, compiled.name)
        runner = Runner(
            compiled,
            store,
            max_concurrency=concurrency,
            grace_seconds=grace_seconds,
            max_queue=max_queue,
            trace=trace,
        )
        try:
            await runner.start()
        except BaseException:
            store.engine.dispose()
            raise
        app.state.runner = runner
        try:
            yield
        finally:
            await runner.shutdown()
            app.state.runner = None

    app = FastAPI(
        title=f"{compiled.name} (configurable-agents)",
        version=spec.flow.version,
        description=(spec.flow.description or f"The '{compiled.name}' workflow over HTTP.")
        + f"\n\nServed by configurable-agents {__version__}. Bad inputs are 422 with one entry "
        "per problem (loc, msg, type, hint).",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    secured = [Depends(_auth(key))] if key else []
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": models.ErrorBody, "description": "The body is too large."},
        422: {"model": models.ValidationErrorBody, "description": "Bad inputs."},
        503: {"model": models.ErrorBody, "description": "Shutting down, or too many queued."},
    }
    if key:
        errors[401] = {"model": models.ErrorBody, "description": "Missing or wrong API key."}

    async def create_run(
        request: Request,
        body: run_request,  # type: ignore[valid-type]
        wait: Annotated[
            bool, Query(description="Wait for the result (true) or return 202 at once (false).")
        ] = True,
        traceparent: Annotated[  # read with tracestate by _trace_headers; here for the docs
            str | None,
            Header(
                description="W3C trace context: the run's OpenTelemetry spans continue this "
                "trace, its root a child of this span (tracestate is passed on)."
            ),
        ] = None,
    ) -> Response:
        runner = _runner(request)
        raw: dict[str, Any] = body.inputs  # type: ignore[attr-defined]
        try:
            inputs = coerce_inputs(raw, spec, compiled.state_types)
        except InputError as exc:
            return _input_errors(exc, raw, fields)
        try:
            record = await runner.submit(
                inputs,
                body.tags,  # type: ignore[attr-defined]
                wait=wait,
                trace_context=_trace_headers(request),
            )
        except ServerStopping:
            return _error(503, "the server is shutting down")
        except ServerBusy:
            return _error(503, "too many runs are queued; retry later", {"Retry-After": "1"})
        if wait:
            await runner.wait(record)
            return _JSON(to_api(record))
        location = f"{request.scope.get('root_path', '')}/runs/{record['id']}"
        accepted = {"id": record["id"], "status": "queued"}
        return _JSON(accepted, status_code=202, headers={"Location": location})

    app.add_api_route(
        "/runs",
        create_run,
        methods=["POST"],
        dependencies=secured,
        summary="Run the workflow",
        response_model=None,
        responses={
            200: {"model": models.RunRecord, "description": "The finished run (wait=true)."},
            202: {"model": models.RunAccepted, "description": "Queued (wait=false)."},
            **errors,
        },
        tags=["runs"],
    )

    @app.get(
        "/runs/{run_id}",
        dependencies=secured,
        summary="One run",
        response_model=None,
        responses={200: {"model": models.RunRecord}, 404: {"model": models.ErrorBody}, **errors},
        tags=["runs"],
    )
    async def get_run(request: Request, run_id: str) -> Response:
        runner = _runner(request)
        record = runner.live(run_id)
        if record is None and _RUN_ID.fullmatch(run_id):
            record = await run_in_threadpool(runner.store.get, run_id)
        if record is None:
            return _error(404, f"no run with id {run_id!r}")
        return _JSON(to_api(record))

    @app.get(
        "/runs",
        dependencies=secured,
        summary="Run records, newest first",
        response_model=None,
        responses={200: {"model": models.RunPage}, **errors},
        tags=["runs"],
    )
    async def list_runs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500, description="Records per page.")] = 50,
        offset: Annotated[int, Query(ge=0, description="Records to skip.")] = 0,
        status: Annotated[
            models.RunStatus | None, Query(description="Only runs in this status.")
        ] = None,
    ) -> Response:
        runner = _runner(request)
        items, total = await run_in_threadpool(
            runner.store.page, limit=limit, offset=offset, status=status
        )
        items = [runner.live(r["id"]) or r for r in items]
        nxt = None
        if offset + len(items) < total:
            nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
        page = {"items": [to_api(r) for r in items], "total": total, "limit": limit}
        return _JSON({**page, "offset": offset, "next": nxt})

    @app.get("/health", summary="Liveness and load", response_model=models.Health, tags=["server"])
    async def health(request: Request) -> Response:
        runner = _runner(request)
        data = {
            "status": "stopping" if runner.stopping else "ok",
            "workflow": runner.workflow,
            "version": runner.version,
            "uptime_seconds": round(runner.uptime(), 3),
            "active_runs": runner.running,
            "queued_runs": runner.queued,
            "max_concurrency": runner.max_concurrency,
        }
        return _JSON(data, status_code=503 if runner.stopping else 200)

    @app.get(
        "/metrics",
        dependencies=secured,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
        tags=["server"],
    )
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    return app
