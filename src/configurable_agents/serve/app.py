"""The HTTP server of one workflow (FastAPI): ``create_app(workflow)``.

====================  ======================================================================
``POST /runs``        run it: body ``{"inputs": {...}, "tags": {...}}`` (``X-User``, ``X-Team``,
                      ``X-Tenant``, ``X-Cost-Center`` headers add those tags); waits for the result
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
(``loc``, ``msg``, ``type``, ``hint``; ``loc`` from the problem's ``Issue.path``), a body over
``max_body_bytes`` is 413. Every status a route can send is in the OpenAPI document.
"""

import hmac
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..compile.plan import CompiledWorkflow
from ..config.validate import LoadedWorkflow
from ..exceptions import InputError, Issue, UserError
from ..observe import metrics
from ..run.executor import prepare
from ..run.inputs import coerce_inputs, lone_surrogate
from . import models, openapi
from .http import JSON, BodyLimit, error, field_errors, http_error, validation_handler
from .records import API_COLUMNS, DEFAULT_LEASE_SECONDS, Record, RunStore
from .runner import Runner, ServerBusy, ServerStopping, default_concurrency
from .spooled import records_spool_path
from .tables import MAX_WORKFLOW_NAME, MAX_WORKFLOW_VERSION

API_KEY_ENV = "CONFIGURABLE_AGENTS_API_KEY"
DEFAULT_GRACE_SECONDS = 30.0
DEFAULT_MAX_QUEUE = 10_000
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _strict_bool(value: Any) -> Any:
    """Only ``true`` and ``false`` (what the schema's boolean means in a query string)."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("must be true or false")


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def to_api(record: Record) -> dict[str, Any]:
    """A record as the API returns it (ISO 8601 UTC times, ``nodes`` always a list)."""
    out = {name: record.get(name) for name in API_COLUMNS}
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
        given = credentials.credentials.encode("utf-8", "replace") if credentials else b""
        if not (credentials and hmac.compare_digest(given, expected)):
            raise HTTPException(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def _check_storable(compiled: CompiledWorkflow) -> None:
    """The workflow's name and version fit the run table's columns."""
    flow = compiled.workflow.spec.flow
    for what, value, limit in (
        ("name", flow.name, MAX_WORKFLOW_NAME),
        ("version", flow.version, MAX_WORKFLOW_VERSION),
    ):
        if len(value) > limit or lone_surrogate(value) is not None:
            raise UserError(
                Issue(
                    f"flow.{what} is too long for the run database ({len(value)} characters; "
                    f"the server stores up to {limit}) or is not Unicode text",
                    file=compiled.workflow.file,
                    line=compiled.workflow.document.line_of(("flow", what)),
                    hint=f"shorten flow.{what}",
                    path=("flow", what),
                )
            )


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
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> FastAPI:
    """The FastAPI app serving ``workflow`` (a path, ``load_workflow`` or ``compile_workflow``
    result; a path is validated and compiled here, raising ``UserError`` if it is bad).

    ``database_url``: where run records go (SQLAlchemy URL; default SQLite file
    ``configurable_agents_runs.db`` in the current directory). ``max_concurrency``: runs at
    once (default 1 for a workflow on the local model, else 16); more wait, queued, up to
    ``max_queue`` (then 503). ``api_key``: bearer token (default ``$CONFIGURABLE_AGENTS_API_KEY``;
    none: open). ``trace``: as ``run_workflow``'s (default: the workflow's
    ``observability.mlflow.enabled``). ``grace_seconds``: on shutdown, how long running runs may
    take before they are recorded as failed. ``lease_seconds``: how long after this server
    stops renewing them other replicas on the same database fail its in-flight runs.
    """
    compiled = prepare(workflow)
    concurrency = max_concurrency or default_concurrency(compiled)
    if concurrency < 1 or max_body_bytes < 1 or max_queue < 0 or grace_seconds < 0:
        raise ValueError("max_concurrency and max_body_bytes must be >= 1, the others >= 0")
    if not lease_seconds > 0:
        raise ValueError("lease_seconds must be > 0")
    _check_storable(compiled)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    metrics.enable()
    spec = compiled.workflow.spec
    run_request = openapi.request_model(compiled)
    example = openapi.example_body(compiled)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = RunStore(
            database_url,
            compiled.name,
            lease_seconds=lease_seconds,
            spool_path=records_spool_path(compiled),
        )
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
        retention = None
        if spec.config.observability.mlflow.retention_days is not None:
            from .retention import RetentionThread

            retention = RetentionThread(compiled.workflow, store)
            retention.start()
        app.state.retention = retention
        try:
            yield
        finally:
            if retention is not None:
                retention.stop()
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
    app.add_exception_handler(RequestValidationError, validation_handler(_compact(example)))
    app.add_exception_handler(StarletteHTTPException, http_error)
    secured = [Depends(_auth(key))] if key else []
    keyed = bool(key)

    async def create_run(
        request: Request,
        body: run_request,  # type: ignore[valid-type]
        wait: Annotated[
            bool,
            BeforeValidator(_strict_bool),
            Query(description="Wait for the result (true) or return 202 at once (false)."),
        ] = True,
    ) -> Response:
        # The headers (traceparent, tracestate, X-User, ...) are read from the request by
        # _trace_headers and attribution_headers; openapi.create_run_headers documents them.
        runner = _runner(request)
        raw: dict[str, Any] = body.inputs  # type: ignore[attr-defined]
        tags: dict[str, str] = {
            **attribution_headers(request.headers),
            **body.tags,  # type: ignore[attr-defined]
        }
        bad_tags = _tag_issues(tags)
        try:
            inputs = coerce_inputs(raw, spec, compiled.state_types, json_values=True)
        except InputError as exc:
            return field_errors(exc.issues, bad_tags)
        if bad_tags:
            return field_errors([], bad_tags)
        try:
            record = await runner.submit(
                inputs, tags, wait=wait, trace_context=_trace_headers(request)
            )
        except ServerStopping:
            return error(503, "the server is shutting down")
        except ServerBusy:
            return error(503, "too many runs are queued; retry later", {"Retry-After": "1"})
        if wait:
            await runner.wait(record)
            return JSON(to_api(record))
        location = f"{request.scope.get('root_path', '')}/runs/{record['id']}"
        accepted = {"id": record["id"], "status": "queued"}
        return JSON(accepted, status_code=202, headers={"Location": location})

    app.add_api_route(
        "/runs",
        create_run,
        methods=["POST"],
        dependencies=secured,
        summary="Run the workflow",
        operation_id="create_run",
        response_model=None,
        responses=openapi.create_run_responses(keyed),
        openapi_extra={"parameters": openapi.create_run_headers(ATTRIBUTION_HEADERS)},
        tags=["runs"],
    )

    @app.get(
        "/runs/{run_id}",
        dependencies=secured,
        summary="One run",
        operation_id="get_run",
        response_model=None,
        responses={
            200: {"model": models.RunRecord, "description": "The run record."},
            404: {"model": models.ErrorBody, "description": "No run with this id."},
            **openapi.error_responses(keyed=keyed, validated=True),
        },
        tags=["runs"],
    )
    async def get_run(request: Request, run_id: str) -> Response:
        runner = _runner(request)
        record = runner.live(run_id)
        if record is None and _RUN_ID.fullmatch(run_id):
            record = await run_in_threadpool(runner.store.get, run_id)
        if record is None:
            return error(404, f"no run with id {run_id!r}")
        return JSON(to_api(record))

    @app.get(
        "/runs",
        dependencies=secured,
        summary="Run records, newest first",
        operation_id="list_runs",
        response_model=None,
        responses={
            200: {"model": models.RunPage, "description": "One page of run records."},
            **openapi.error_responses(keyed=keyed, validated=True),
        },
        tags=["runs"],
    )
    async def list_runs(
        request: Request,
        limit: Annotated[
            int, Query(ge=1, le=openapi.MAX_LIMIT, description="Records per page.")
        ] = 50,
        offset: Annotated[
            int, Query(ge=0, le=openapi.MAX_OFFSET, description="Records to skip.")
        ] = 0,
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
        if offset + len(items) < total and offset + limit <= openapi.MAX_OFFSET:
            nxt = str(request.url.include_query_params(offset=offset + limit, limit=limit))
        page = {"items": [to_api(r) for r in items], "total": total, "limit": limit}
        return JSON({**page, "offset": offset, "next": nxt})

    @app.get(
        "/health",
        summary="Liveness and load",
        operation_id="health",
        response_model=None,
        responses={
            200: {"model": models.Health, "description": "Serving."},
            **openapi.error_responses(keyed=False, validated=False),
            503: {"model": models.Health, "description": "Shutting down (status: stopping)."},
        },
        tags=["server"],
    )
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
            "replica": runner.store.replica,
        }
        return JSON(data, status_code=503 if runner.stopping else 200)

    @app.get(
        "/metrics",
        dependencies=secured,
        summary="Prometheus metrics",
        operation_id="metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **openapi.error_responses(keyed=keyed, validated=False),
        },
        tags=["server"],
    )
    async def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    return app


# Attribution headers: each becomes the run's tag (a tag in the body wins).
ATTRIBUTION_HEADERS = {
    "x-user": "user",
    "x-team": "team",
    "x-tenant": "tenant",
    "x-cost-center": "cost_center",
}


def attribution_headers(headers: Any) -> dict[str, str]:
    """Tags from ``X-User``, ``X-Team``, ``X-Tenant`` and ``X-Cost-Center``."""
    return {
        tag: str(headers[name]).strip()
        for name, tag in ATTRIBUTION_HEADERS.items()
        if headers.get(name) and str(headers[name]).strip()
    }


def _tag_issues(tags: dict[str, str]) -> list[Issue]:
    issues = []
    for name, value in tags.items():
        if lone_surrogate(name) is not None or lone_surrogate(value) is not None:
            issues.append(
                Issue(
                    f"tag {name!r} holds a lone surrogate, which is not Unicode text and "
                    "cannot be stored",
                    hint="send valid UTF-8 text",
                    path=(name,),
                    code="invalid_input",
                )
            )
    return issues


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(", ", ": "))
