"""The HTTP server: the API through FastAPI's TestClient, run records in SQLite and PostgreSQL,
and once end to end: the real server in a subprocess, stopped by SIGTERM and restarted."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import configurable_agents as ca
from configurable_agents.cli.serve import serve_command
from configurable_agents.serve import RunStore, create_app
from configurable_agents.serve.records import COLUMNS, STOPPED_REASON, metadata, utcnow
from configurable_agents.serve.runner import default_concurrency

from .procs import serve_process, wait_until
from conftest import EXAMPLES, MINIMAL

REVIEW = EXAMPLES / "review_loop.yaml"
# gemini-2.5-flash list price: $0.30 per million input tokens, $2.50 per million output tokens.
REVIEW_COST = 62 * 0.30e-6 + 19 * 2.50e-6
HEX32 = re.compile(r"[0-9a-f]{32}")
ARGS = ("--max-concurrency", "1", "--grace-seconds", "1", "--lease-seconds", "2")

SLOW = """\
schema_version: "1.0"
flow: {{name: slow, version: "2.0.0"}}
config:
  llm: {{provider: test, latency_ms: {latency}}}
state:
  fields:
    topic: {{type: str, required: true}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
    prompt: "Write about {{topic}}."
    outputs: [article]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""

FAILING = """\
schema_version: "1.0"
flow: {name: failing}
config:
  llm:
    provider: test
    responses: {score: [{value: "nope"}]}
  execution: {max_retries: 0}
state:
  fields:
    topic: {type: str, required: true}
    value: {type: int, default: 0}
    count: {type: int, default: 0}
nodes:
  - id: score
    prompt: "Score {topic}."
    outputs: [value]
edges:
  - {from: START, to: score}
  - {from: score, to: END}
"""


@contextmanager
def serving(workflow: Any = REVIEW, **options: Any) -> Iterator[TestClient]:
    with TestClient(create_app(workflow, **options)) as client:
        yield client


def run(client: TestClient, **inputs: Any) -> dict[str, Any]:
    response = client.post("/runs", json={"inputs": inputs or {"topic": "bees"}})
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- POST /runs and GET /runs/{id} ----------------------------------------------------------


def test_run_returns_outputs_cost_usage_and_per_node_timings():
    with serving() as client:
        response = client.post("/runs", json={"inputs": {"topic": "bees"}, "tags": {"user": "ana"}})
        assert response.status_code == 200
        data = response.json()
        assert HEX32.fullmatch(data["id"]) and HEX32.fullmatch(data["run_id"])
        assert data["status"] == "succeeded" and data["error"] is None
        assert data["workflow"] == "review_loop" and data["workflow_version"] == "1.0.0"
        assert data["outputs"] == {"draft": "test draft", "score": 8, "feedback": "Good."}
        assert data["inputs"] == {"topic": "bees"} and data["tags"] == {"user": "ana"}
        assert data["usage"] == {"input_tokens": 62, "output_tokens": 19, "total_tokens": 81}
        assert data["cost_usd"] == pytest.approx(REVIEW_COST)
        assert data["trace_id"] is None  # review_loop does not trace
        nodes = data["nodes"]
        assert [(n["node"], n["visit"]) for n in nodes] == [
            ("write", 0),
            ("review", 0),
            ("write", 1),
            ("review", 1),
        ]
        assert all(n["duration_ms"] > 0 and n["status"] == "succeeded" for n in nodes)
        assert sum(n["cost_usd"] for n in nodes) == pytest.approx(REVIEW_COST)
        assert data["duration_ms"] >= max(n["duration_ms"] for n in nodes)
        assert data["created_at"] <= data["started_at"] <= data["finished_at"]
        assert data["finished_at"].endswith("Z")
        # the stored record is what the POST returned
        assert client.get(f"/runs/{data['id']}").json() == data


def test_a_failed_run_is_200_with_its_error(write_workflow):
    with serving(write_workflow(FAILING)) as client:
        data = run(client, topic="x")
    assert data["status"] == "failed"
    assert data["error"]["type"] == "OutputValidationError"
    assert data["error"]["node"] == "score"
    assert data["nodes"][0]["status"] == "failed"


def test_wait_false_returns_202_with_location_then_poll(write_workflow):
    with serving(write_workflow(SLOW.format(latency=300))) as client:
        response = client.post("/runs?wait=false", json={"inputs": {"topic": "tide"}})
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "queued" and HEX32.fullmatch(body["id"])
        location = response.headers["location"]
        assert location == f"/runs/{body['id']}"
        first = client.get(location).json()
        assert first["status"] in ("queued", "running")
        assert first["outputs"] is None and first["nodes"] == []
        done = wait_until(lambda: (r := client.get(location).json())["status"] == "succeeded" and r)
        assert done["outputs"] == {"article": "test article"}
        assert done["duration_ms"] >= 300
        assert [n["node"] for n in done["nodes"]] == ["write"]


def test_unknown_run_is_404():
    with serving() as client:
        for run_id in ("0" * 32, "nope", "A" * 32):
            response = client.get(f"/runs/{run_id}")
            assert response.status_code == 404
            assert "no run with id" in response.json()["detail"]


# -- GET /runs ------------------------------------------------------------------------------


def test_runs_are_paged_newest_first_and_filtered_by_status():
    with serving() as client:
        ids = [run(client, topic=f"t{i}")["id"] for i in range(5)]
        page = client.get("/runs?limit=2").json()
        assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
        assert [r["id"] for r in page["items"]] == ids[::-1][:2]
        seen = []
        url: str | None = "/runs?limit=2"
        while url:
            page = client.get(url).json()
            seen += [r["id"] for r in page["items"]]
            url = page["next"]
        assert seen == ids[::-1]
        last = client.get("/runs?limit=2&offset=4").json()
        assert len(last["items"]) == 1 and last["next"] is None
        assert client.get("/runs?status=failed").json()["total"] == 0
        assert client.get("/runs?status=succeeded").json()["total"] == 5
        bad = client.get("/runs?limit=0&status=done")
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {
            ("query", "limit"),
            ("query", "status"),
        }


# -- limits, auth, errors -------------------------------------------------------------------


def test_api_key_is_required_except_for_health_and_docs():
    with serving(api_key="s3cret") as client:
        for method, path in (("post", "/runs"), ("get", "/runs"), ("get", "/metrics")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = client.request(method, path, json={"inputs": {}}, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["detail"]
        assert client.get(f"/runs/{'0' * 32}").status_code == 401
        assert client.get("/health").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        auth = {"Authorization": "Bearer s3cret"}
        response = client.post("/runs", json={"inputs": {"topic": "bees"}}, headers=auth)
        assert response.status_code == 200
        assert client.get("/metrics", headers=auth).status_code == 200
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONFIGURABLE_AGENTS_API_KEY", "from-env")
    with serving() as client:
        assert client.get("/runs").status_code == 401
        assert client.get("/runs", headers={"Authorization": "Bearer from-env"}).status_code == 200
    with serving(api_key="") as client:  # an explicit empty key turns auth off
        assert client.get("/runs").status_code == 200


def test_bad_inputs_are_422_with_field_errors_and_hints_and_run_nothing():
    with serving() as client:
        response = client.post("/runs", json={"inputs": {"topc": "bees", "score": "high"}})
        assert response.status_code == 422
        errors = {tuple(e["loc"]): e for e in response.json()["detail"]}
        assert set(errors) == {
            ("body", "inputs", "topc"),
            ("body", "inputs", "score"),
            ("body", "inputs", "topic"),
        }
        assert errors[("body", "inputs", "topc")]["type"] == "unknown_input"
        assert errors[("body", "inputs", "topc")]["hint"] == "did you mean 'topic'?"
        assert errors[("body", "inputs", "score")]["type"] == "invalid_input"
        assert "'high' is not an int" in errors[("body", "inputs", "score")]["msg"]
        assert "JSON integer" in errors[("body", "inputs", "score")]["hint"]
        assert errors[("body", "inputs", "topic")]["type"] == "missing"
        assert errors[("body", "inputs", "topic")]["hint"] == 'add "topic" to "inputs"'

        unwrapped = {
            tuple(e["loc"]): e
            for e in client.post("/runs", json={"topic": "bees"}).json()["detail"]
        }
        assert unwrapped[("body", "topic")]["hint"].startswith('run inputs go under "inputs"')
        assert unwrapped[("body", "inputs")]["type"] == "missing"  # required: topic is required
        assert unwrapped[("body", "inputs")]["hint"].startswith("this workflow has required")

        broken = client.post("/runs", content=b"{", headers={"Content-Type": "application/json"})
        assert broken.status_code == 422
        assert broken.json()["detail"][0]["type"] == "json_invalid"

        tags = client.post("/runs", json={"inputs": {"topic": "x"}, "tags": {"n": 1}}).json()
        assert tags["detail"][0]["loc"] == ["body", "tags", "n"]
        assert "input" not in tags["detail"][0]  # the user's value is not echoed back

        assert client.get("/runs").json()["total"] == 0


def test_body_over_the_limit_is_413():
    with serving(max_body_bytes=2_000) as client:
        big = {"inputs": {"topic": "x" * 5_000}}
        response = client.post("/runs", json=big)
        assert response.status_code == 413
        assert response.json() == {"detail": "the request body is larger than 2000 bytes"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"inputs": {"topic": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}}'

        streamed = client.post(
            "/runs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert run(client, topic="small")["status"] == "succeeded"
        assert client.get("/runs").json()["total"] == 1


def test_concurrency_limit_is_respected(write_workflow):
    with serving(write_workflow(SLOW.format(latency=150)), max_concurrency=2) as client:
        ids = [
            client.post("/runs?wait=false", json={"inputs": {"topic": str(i)}}).json()["id"]
            for i in range(6)
        ]
        health = client.get("/health").json()
        assert health["max_concurrency"] == 2
        assert health["active_runs"] <= 2

        def all_done() -> list[dict[str, Any]] | None:
            records = [_get(client, i) for i in ids]
            return records if all(r["status"] == "succeeded" for r in records) else None

        records = wait_until(all_done)
        runner = client.app.state.runner  # finished runs leave memory once stored
        wait_until(lambda: not runner._live and not runner._tasks)
    events = sorted(
        [(r["started_at"], 1) for r in records] + [(r["finished_at"], -1) for r in records]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2


def test_default_concurrency_is_one_on_the_local_model():
    local = ca.compile_workflow(ca.load_workflow(EXAMPLES / "article_writer.yaml"))
    assert default_concurrency(local) == 1
    assert default_concurrency(ca.compile_workflow(ca.load_workflow(REVIEW))) == 16


def test_bad_workflow_is_a_user_error(write_workflow):
    with pytest.raises(ca.WorkflowValidationError):
        create_app(write_workflow(MINIMAL.replace("{topic}", "{topc}")))


# -- health, metrics, docs ------------------------------------------------------------------


def test_health_metrics_and_openapi():
    with serving() as client:
        run(client)
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["workflow"] == "review_loop"
        assert health["version"] == "1.0.0" and health["uptime_seconds"] > 0
        assert health["active_runs"] == 0 and health["queued_runs"] == 0

        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'workflow_runs_total{status="succeeded",workflow="review_loop"} 1.0' in text
        assert 'llm_tokens_total{model="gemini-2.5-flash",type="input"} 62.0' in text
        assert 'node_duration_seconds_count{node="review",workflow="review_loop"} 2.0' in text
        assert 'active_workflows{workflow="review_loop"} 0.0' in text

        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = client.get("/openapi.json").json()
        assert spec["info"]["version"] == "1.0.0"
        assert {"/runs", "/runs/{run_id}", "/health", "/metrics"} <= set(spec["paths"])
        post = spec["paths"]["/runs"]["post"]
        assert {"200", "202", "413", "422"} <= set(post["responses"])
        request = spec["components"]["schemas"]["RunRequest"]
        inputs = request["properties"]["inputs"]
        assert inputs["required"] == ["topic"]
        assert inputs["properties"]["score"]["type"] == "integer"
        assert "RunRecord" in spec["components"]["schemas"]


# -- run records ----------------------------------------------------------------------------


def test_records_persist_across_restarts_in_the_default_sqlite_file():
    with serving() as client:
        first = run(client)
    assert Path("configurable_agents_runs.db").is_file()  # in the current directory
    with serving() as client:
        assert client.get(f"/runs/{first['id']}").json() == first
        second = run(client)
        assert [r["id"] for r in client.get("/runs").json()["items"]] == [
            second["id"],
            first["id"],
        ]


def test_unfinished_records_of_a_stopped_server_are_marked_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    _leave_unfinished(url, "review_loop")
    with serving(database_url=url) as client:
        page = client.get("/runs").json()
    assert page["total"] == 2
    for record in page["items"]:
        assert record["status"] == "failed"
        assert record["error"] == {"type": "ServerStopped", "message": STOPPED_REASON, "node": None}
        assert record["finished_at"] is not None


def test_records_on_postgresql(postgres_tracking_uri):
    _leave_unfinished(postgres_tracking_uri, "review_loop")
    _leave_unfinished(postgres_tracking_uri, "another_workflow")
    with serving(database_url=postgres_tracking_uri) as client:
        first = run(client)
        assert client.get("/runs?status=failed").json()["total"] == 2
    with serving(database_url=postgres_tracking_uri) as client:
        assert client.get(f"/runs/{first['id']}").json() == first
        assert client.get("/runs").json()["total"] == 3  # scoped to this workflow
    store = RunStore(postgres_tracking_uri, "another_workflow")
    try:
        items, total = store.page(limit=10)
    finally:
        store.engine.dispose()
    assert total == 2 and {r["status"] for r in items} == {"queued", "running"}


def test_in_flight_states_are_written_deferred_and_finished_ones_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(RunStore, "defer_seconds", 0.3)
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}", "demo")
    store.open()
    try:
        short, long = _record("demo", "running"), _record("demo", "queued")
        store.save(short, defer=True)
        store.save(long, defer=True)
        committed = threading.Event()
        store.save({**short, "status": "succeeded"}, lambda error: committed.set())
        assert committed.wait(10)
        assert store.get(short["id"])["status"] == "succeeded"
        assert store.get(long["id"]) is None  # not yet: it may finish within defer_seconds
        store.save({**long, "status": "running"}, defer=True)  # still due at the first time
        wait_until(lambda: store.get(long["id"]))
        assert store.get(long["id"])["status"] == "running"
        time.sleep(0.4)  # the superseded deferred snapshot of the short run is never written
        assert store.get(short["id"])["status"] == "succeeded"
    finally:
        assert store.close()
    errors: list[BaseException | None] = []
    store.save(short, errors.append)  # after close: refused at once
    assert isinstance(errors[0], RuntimeError)


def _saved(store: RunStore, record: dict[str, Any]) -> None:
    done = threading.Event()
    store.save(record, lambda error: done.set())
    assert done.wait(10)


@pytest.mark.parametrize(
    ("running", "change", "expected"),
    [
        (0, "arrives", 1),  # a run saved meanwhile: in the items and the total, or in neither
        (1, "leaves", 0),  # the only running run finishes: no items, total 0 (CI: total 1)
        (2, "leaves", 1),  # one of two finishes: one item, total 1
    ],
)
def test_a_page_total_follows_its_items(tmp_path, running, change, expected):
    """A run saved, or finishing and so leaving ``?status=running``, between the page's two
    statements (the count, then the items) never makes the page contradict itself."""
    from sqlalchemy import event

    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}", "demo")
    store.open()
    records = [_record("demo", "running") for _ in range(running)]
    for record in records:
        _saved(store, record)
    between = threading.Event()
    try:

        def change_between(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("SELECT") and not between.is_set():
                between.set()
                if change == "arrives":
                    _saved(store, _record("demo", "running"))
                else:
                    _saved(store, {**records[0], "status": "succeeded"})

        event.listen(store.engine, "after_cursor_execute", change_between)
        items, total = store.page(limit=10, status="running")
        assert between.is_set()
        assert total == len(items) == expected
    finally:
        assert store.close()


def test_a_waiting_run_is_listed_while_it_runs(write_workflow, monkeypatch):
    monkeypatch.setattr(RunStore, "defer_seconds", 0.2)
    with serving(write_workflow(SLOW.format(latency=1500))) as client:
        waiting = threading.Thread(target=run, args=(client,))
        waiting.start()
        try:
            page = wait_until(lambda: (p := client.get("/runs").json())["total"] and p)
            assert page["items"][0]["status"] == "running"
        finally:
            waiting.join(30)
        assert client.get("/runs").json()["items"][0]["status"] == "succeeded"


def test_shutdown_fails_queued_and_overdue_runs(write_workflow, tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    workflow = write_workflow(SLOW.format(latency=2000))
    with serving(workflow, database_url=url, max_concurrency=1, grace_seconds=0.2) as client:
        ids = [
            client.post("/runs?wait=false", json={"inputs": {"topic": str(i)}}).json()["id"]
            for i in range(3)
        ]
        wait_until(lambda: _get(client, ids[0])["status"] == "running")
    with serving(workflow, database_url=url) as client:
        records = [_get(client, i) for i in ids]
    assert [r["status"] for r in records] == ["failed"] * 3
    assert records[0]["error"]["message"] == (
        f"{STOPPED_REASON} (the shutdown grace period of 0.2 s ran out)"
    )
    assert records[0]["started_at"] is not None
    assert [r["error"]["message"] for r in records[1:]] == [
        "server stopped before the run started"
    ] * 2


def test_shutdown_flushes_traces(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workflow = ca.compile_workflow(ca.load_workflow(REVIEW))
    config = workflow.workflow.spec.config.observability.mlflow
    config.enabled, config.tracking_uri, config.experiment_name = True, store, "serve_test"
    with serving(workflow) as client:
        data = run(client)
    assert data["trace_id"] == f"tr-{data['run_id']}"
    trace = mlflow.MlflowClient(store).get_trace(data["trace_id"])
    assert trace.info.state.value == "OK"


# -- the command --------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("serve")(serve_command)
    app.command("other")(lambda: None)
    return app


def test_serve_command_rejects_a_bad_workflow_with_exit_2(write_workflow):
    bad = write_workflow(MINIMAL.replace("{topic}", "{topc}"))
    result = CliRunner().invoke(_cli(), ["serve", str(bad)])
    assert result.exit_code == 2
    assert "reads {topc}, which is not a state field" in result.output
    assert "did you mean 'topic'?" in result.output
    missing = CliRunner().invoke(_cli(), ["serve", "missing.yaml"])
    assert missing.exit_code == 2 and "file not found" in missing.output
    loud = CliRunner().invoke(_cli(), ["serve", str(REVIEW), "--log-level", "loud"])
    assert loud.exit_code == 2 and "--log-level 'loud' is unknown" in loud.output


def test_serve_command_rejects_a_foreign_runs_table(tmp_path):
    import sqlite3

    db = tmp_path / "mlflow-like.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs (run_uuid text primary key)")
    conn.close()
    result = CliRunner().invoke(_cli(), ["serve", str(REVIEW), "--database-url", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert "not a configurable-agents run table" in result.output


def test_end_to_end_sigterm_then_restart(write_workflow, tmp_path):
    """The real server over HTTP: a run, SIGTERM with runs in flight, restart, records kept;
    then SIGKILL with a run in flight, and the next server marks it failed when its lease
    has expired."""
    workflow = write_workflow(SLOW.format(latency=1500))
    database = f"sqlite:///{tmp_path / 'runs.db'}"
    with serve_process(workflow, database, tmp_path / "first.log", args=ARGS) as (base, proc):
        with httpx.Client(base_url=base, timeout=30) as http:
            done = http.post("/runs", json={"inputs": {"topic": "kept"}}).json()
            assert done["status"] == "succeeded" and done["nodes"][0]["duration_ms"] >= 1500
            ids = [
                http.post("/runs?wait=false", json={"inputs": {"topic": str(i)}}).json()["id"]
                for i in range(2)
            ]
            wait_until(lambda: http.get(f"/runs/{ids[0]}").json()["status"] == "running")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log = (tmp_path / "first.log").read_text()
    assert "Serving workflow slow 2.0.0 on " + base in log
    assert f"API docs:     {base}/docs" in log
    assert "1 run(s) did not finish in time and were marked failed" in log

    with serve_process(workflow, database, tmp_path / "second.log", args=ARGS) as (base, proc):
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get(f"/runs/{done['id']}").json() == done
            first, second = (http.get(f"/runs/{i}").json() for i in ids)
            assert first["status"] == second["status"] == "failed"
            assert first["error"]["message"].startswith(STOPPED_REASON + " (the shutdown grace")
            assert second["error"]["message"] == "server stopped before the run started"
            cut = http.post("/runs?wait=false", json={"inputs": {"topic": "cut"}}).json()["id"]
            wait_until(lambda: http.get(f"/runs/{cut}").json()["status"] == "running")
        proc.kill()  # no graceful shutdown: the record stays "running" in the database
        proc.wait(30)

    with serve_process(workflow, database, tmp_path / "third.log", args=ARGS) as (base, proc):
        with httpx.Client(base_url=base, timeout=30) as http:
            # failed once the killed server's lease (2 s) has run out, not at once
            record = wait_until(
                lambda: (r := http.get(f"/runs/{cut}").json())["status"] == "failed" and r
            )
            assert record["error"]["message"].startswith(STOPPED_REASON + ": server replica ")
            assert "stopped renewing its lease" in record["error"]["message"]
            assert http.get("/runs").json()["total"] == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)
    third = (tmp_path / "third.log").read_text()
    assert "marked 1 run(s) of server replica(s) " in third
    assert "as failed: their lease expired" in third


# -- helpers --------------------------------------------------------------------------------


def _get(client: TestClient, run_id: str) -> dict[str, Any]:
    return dict(client.get(f"/runs/{run_id}").json())


def _record(workflow: str, status: str) -> dict[str, Any]:
    return {
        "id": os.urandom(16).hex(),
        "workflow": workflow,
        "workflow_version": "1.0.0",
        "status": status,
        "inputs": {"topic": "lost"},
        "tags": {},
        "created_at": utcnow(),
        "started_at": utcnow() if status == "running" else None,
    }


def _leave_unfinished(url: str, workflow: str) -> None:
    """Two records as a server that died would leave them: one queued, one running."""
    store = RunStore(url, workflow)
    try:
        metadata.create_all(store.engine)
        rows = [_record(workflow, status) for status in ("queued", "running")]
        with store.engine.begin() as conn:
            store._upsert(conn, [{name: row.get(name) for name in COLUMNS} for row in rows])
    finally:
        store.engine.dispose()
