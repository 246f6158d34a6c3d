"""The API does what its OpenAPI document says: strict JSON inputs, 422 naming the field for
anything it cannot store, bounded paging, every status documented, a right ``Allow``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from configurable_agents.serve import create_app
from configurable_agents.serve.openapi import MAX_LIMIT, MAX_OFFSET

# Every kind of state field; the Schemathesis test serves the same workflow.
TYPED = """\
schema_version: "1.0"
flow: {name: api_contract, version: "1.0.0", description: "Every input type."}
config:
  llm: {provider: test}
state:
  fields:
    topic: {type: str, required: true}
    count: {type: int, default: 0}
    ratio: {type: float, default: 0.5}
    flag: {type: bool, default: false}
    words: {type: "list[str]", default: []}
    scores: {type: "dict[str, int]", default: {}}
    meta:
      type: object
      fields:
        author: {type: str}
        year: {type: int}
    article: {type: str, default: ""}
nodes:
  - id: write
    prompt: "Write about {topic} ({count}, {ratio}, {flag}, {words}, {scores}, {meta})."
    outputs: [article]
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""
OPTIONAL_ONLY = TYPED.replace("{type: str, required: true}", '{type: str, default: "x"}')
JSON_HEADERS = {"Content-Type": "application/json"}


@contextmanager
def serving(path: Path, **options: Any) -> Iterator[TestClient]:
    options.setdefault("database_url", "sqlite:///:memory:")
    with TestClient(create_app(path, **options)) as client:
        yield client


def errors_of(response: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e for e in response.json()["detail"]}


@pytest.fixture
def typed(write_workflow: Any) -> Path:
    return Path(write_workflow(TYPED))


def test_empty_body_names_the_missing_inputs_when_the_workflow_requires_some(
    typed: Path, write_workflow: Any
) -> None:
    with serving(typed) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["RunRequest"]
        assert schema["required"] == ["inputs"]
        errors = errors_of(client.post("/runs", json={}))
        assert errors[("body", "inputs")]["type"] == "missing"
        assert '"topic"' in errors[("body", "inputs")]["hint"]
    with serving(Path(write_workflow(OPTIONAL_ONLY, "optional.yaml"))) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["RunRequest"]
        assert "required" not in schema  # then {} is a valid body, and accepted
        assert client.post("/runs", json={}).json()["status"] == "succeeded"


def test_inputs_are_json_values_of_their_types(typed: Path) -> None:
    with serving(typed) as client:
        good = {
            "topic": "tides",
            "count": 10**30,  # JSON integers have no size limit
            "ratio": 2,  # an integer is a number
            "flag": True,
            "words": ["a", "b"],
            "scores": {"x": 1},
            "meta": {"author": "ana", "year": 2024},
        }
        data = client.post("/runs", json={"inputs": good}).json()
        assert data["status"] == "succeeded" and data["inputs"] == {**good, "ratio": 2.0}
        bad = {
            "count": "3",  # strings are not converted over HTTP
            "ratio": True,  # a boolean is not a number
            "flag": 1,
            "words": ["a", 2],
            "scores": {"x": "1"},
            "meta": {"author": "ana"},
        }
        errors = errors_of(client.post("/runs", json={"inputs": {"topic": "t", **bad}}))
        assert set(errors) == {
            ("body", "inputs", "count"),
            ("body", "inputs", "ratio"),
            ("body", "inputs", "flag"),
            ("body", "inputs", "words", 1),
            ("body", "inputs", "scores", "x"),
            ("body", "inputs", "meta", "year"),
        }
        assert all(e["type"] == "invalid_input" and e["hint"] for e in errors.values())
        assert "send a JSON integer" in errors[("body", "inputs", "count")]["hint"]


@pytest.mark.parametrize("number", [b"Infinity", b"NaN", b"1e400", b"1" * 400])
def test_numbers_json_cannot_carry_are_422(typed: Path, number: bytes) -> None:
    body = b'{"inputs": {"topic": "t", "ratio": ' + number + b"}}"
    with serving(typed) as client:
        errors = errors_of(client.post("/runs", content=body, headers=JSON_HEADERS))
        assert set(errors) == {("body", "inputs", "ratio")}
        assert client.get("/runs").json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (rb'{"inputs": {"topic": "a\ud800b"}}', ("body", "inputs", "topic")),
        (rb'{"inputs": {"topic": "t", "words": ["ok", "\udfff"]}}', ("body", "inputs", "words", 1)),
        (rb'{"inputs": {"topic": "t", "scores": {"\ud800": 1}}}', ("body", "inputs", "scores")),
        (rb'{"inputs": {"topic": "t"}, "tags": {"user": "\ud800"}}', ("body", "tags", "user")),
        (rb'{"inputs": {"\ud800": 1, "topic": "t"}}', ("body", "inputs", "\ud800")),
    ],
)
def test_lone_surrogates_are_422_naming_the_field_and_nothing_is_recorded(
    typed: Path, body: bytes, loc: tuple[Any, ...]
) -> None:
    with serving(typed) as client:
        response = client.post("/runs", content=body, headers=JSON_HEADERS)
        errors = errors_of(response)  # the body is JSON even with the surrogate in it
        assert set(errors) == {loc}
        assert client.get("/runs").json()["total"] == 0


def test_nul_characters_are_stored_faithfully(typed: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    inputs = {"topic": "a\x00b", "words": ["\x00"], "meta": {"author": "\x00", "year": 1}}
    with serving(typed, database_url=url) as client:
        first = client.post("/runs", json={"inputs": inputs, "tags": {"u\x00": "\x00"}}).json()
        assert first["inputs"] == inputs and first["tags"] == {"u\x00": "\x00"}
    with serving(typed, database_url=url) as client:  # from the database, not from memory
        assert client.get(f"/runs/{first['id']}").json() == first


def test_nul_characters_are_stored_faithfully_on_postgresql(
    typed: Path, postgres_tracking_uri: str
) -> None:
    inputs = {"topic": "a\x00b\u2028\U0001f600"}
    with serving(typed, database_url=postgres_tracking_uri) as client:
        first = client.post("/runs", json={"inputs": inputs, "tags": {"t": "\x00"}}).json()
        assert first["status"] == "succeeded"
    with serving(typed, database_url=postgres_tracking_uri) as client:
        assert client.get(f"/runs/{first['id']}").json() == first


def test_paging_limits_are_422(typed: Path) -> None:
    with serving(typed) as client:
        assert client.get(f"/runs?limit={MAX_LIMIT}&offset={MAX_OFFSET}").status_code == 200
        for query, loc in (
            (f"offset={'9' * 28}", ("query", "offset")),
            (f"offset={MAX_OFFSET + 1}", ("query", "offset")),
            ("offset=-1", ("query", "offset")),
            (f"limit={MAX_LIMIT + 1}", ("query", "limit")),
            ("limit=0", ("query", "limit")),
        ):
            assert set(errors_of(client.get(f"/runs?{query}"))) == {loc}, query
        schema = client.get("/openapi.json").json()["paths"]["/runs"]["get"]["parameters"]
        bounds = {p["name"]: p["schema"] for p in schema}
        assert bounds["offset"]["maximum"] == MAX_OFFSET
        assert bounds["limit"]["maximum"] == MAX_LIMIT


def test_wait_is_true_or_false_only(typed: Path) -> None:
    with serving(typed) as client:
        for value in ("0", "1", "yes", "True", ""):
            errors = errors_of(client.post(f"/runs?wait={value}", json={"inputs": {"topic": "t"}}))
            assert set(errors) == {("query", "wait")}, value
        assert client.post("/runs?wait=false", json={"inputs": {"topic": "t"}}).status_code == 202


def test_a_body_nested_too_deeply_to_parse_is_400(typed: Path) -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with serving(typed) as client:
        response = client.post("/runs", content=body, headers=JSON_HEADERS)
        assert response.status_code == 400 and "detail" in response.json()
        spec = client.get("/openapi.json").json()
        assert "400" in spec["paths"]["/runs"]["post"]["responses"]


def test_unsupported_methods_are_405_with_every_allowed_method(typed: Path) -> None:
    with serving(typed) as client:
        for method, path, allow in (
            ("OPTIONS", "/runs", "GET, POST"),
            ("DELETE", "/runs", "GET, POST"),
            ("PUT", "/runs/abc", "GET"),
            ("POST", "/health", "GET"),
            ("PATCH", "/metrics", "GET"),
        ):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allow, (method, path)
            assert response.json() == {"detail": "Method Not Allowed"}


def test_every_status_the_server_sends_is_documented(typed: Path) -> None:
    with serving(typed, api_key="k") as client:
        paths = client.get("/openapi.json").json()["paths"]
    documented = {
        (method, path): set(op["responses"])
        for path, ops in paths.items()
        for method, op in ops.items()
    }
    assert documented[("post", "/runs")] == {"200", "202", "400", "401", "413", "422", "503"}
    assert documented[("get", "/runs")] == {"200", "401", "413", "422", "503"}
    assert documented[("get", "/runs/{run_id}")] == {"200", "401", "404", "413", "422", "503"}
    assert documented[("get", "/metrics")] == {"200", "401", "413", "503"}
    assert documented[("get", "/health")] == {"200", "413", "503"}  # open: no 401
    post = paths["/runs"]["post"]["responses"]
    assert post["202"]["headers"]["Location"]["schema"] == {"type": "string"}
    for status in ("200", "202"):  # the stateful phase of Schemathesis follows these
        link = post[status]["links"]["GetRun"]
        assert link == {**link, "operationId": "get_run"}
        assert link["parameters"] == {"run_id": "$response.body#/id"}
    assert paths["/runs/{run_id}"]["get"]["operationId"] == "get_run"


def test_health_names_the_replica(typed: Path) -> None:
    with serving(typed) as client:
        health = client.get("/health").json()
        assert health["replica"] == client.app.state.runner.store.replica  # type: ignore[attr-defined]
