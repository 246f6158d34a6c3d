"""No dead config: every field of the workflow schema is read by the code and exercised by a
test, or is rejected with a hint when set. Walks the pydantic models, then looks for each
field's reader under src/ (outside the schema) and for a test that names it."""

from __future__ import annotations

import re
import typing
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel

from configurable_agents.config import load_workflow_text
from configurable_agents.config.schema import Workflow
from configurable_agents.exceptions import WorkflowValidationError

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "configurable_agents"
TESTS = ROOT / "tests"
# Read under another name than the field's (aliases, properties).
READ_AS = {"Edge.from": "from_"}
# Set explicitly, these are validation errors with a hint (test_rejected_fields_say_why).
REJECTED = {"PrometheusConfig.port", "PrometheusConfig.path"}
# Documentation of the file for its readers; shown where the code names it.
DOCS = {"FlowMeta.description", "StateField.description", "OutputField.description"}


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def schema_fields() -> list[tuple[str, str]]:
    """(Model.field, the name used in files) of every field reachable from Workflow."""
    found: dict[str, str] = {}
    todo, seen = [Workflow], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            found[f"{model.__name__}.{info.alias or name}"] = name
            todo += _models(info.annotation)
    return sorted(found.items())


@cache
def _text(folder: Path, skip: str = "") -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in folder.rglob("*.py")
        if not skip or not str(p).endswith(skip)
    )


@pytest.mark.parametrize(("field", "name"), schema_fields())
def test_every_field_has_a_reader_and_a_test(field, name):
    if field in REJECTED:
        return
    attribute = READ_AS.get(field, name)
    src = _text(SRC, "config/schema.py")
    read = re.search(rf"\.{attribute}\b|\[\"{attribute}\"\]|\"{attribute}\":|'{attribute}'", src)
    assert read, f"{field}: nothing under src/ reads it (act on it, or reject it with a hint)"
    tests = _text(TESTS) + "\n".join(p.read_text() for p in (ROOT / "examples").glob("*.yaml"))
    key = field.split(".")[1]
    assert re.search(rf"\b{re.escape(key)}\b", tests), f"{field}: no test or example uses it"


MINIMAL = """\
schema_version: "1.0"
flow: {name: demo}
config:
  llm: {provider: openai, model: gpt-4o-mini}
  observability:
    prometheus: {enabled: true, SETTING}
state: {fields: {topic: {type: str}}}
nodes:
  - {id: write, prompt: "About {topic}.", outputs: [topic]}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
"""


NO_OBS = "  observability:\n    prometheus: {enabled: true, SETTING}\n"


@pytest.mark.parametrize("setting", ["port: 9000", "path: /m"])
def test_rejected_fields_say_why(setting):
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow_text(MINIMAL.replace("SETTING", setting))
    issue = info.value.issues[0]
    assert "not used" in issue.message and issue.hint and issue.line


@pytest.mark.parametrize(
    ("option", "provider"),
    [
        ("seed: 3", "anthropic"),
        ("base_url: 'http://127.0.0.1:1'", "google"),
        ("n_ctx: 512", "openai"),
        ("latency_ms: 5", "openai"),
        ("model_path: x.gguf", "ollama"),
    ],
)
def test_provider_options_a_provider_ignores_are_errors(option, provider):
    text = MINIMAL.replace(NO_OBS, "").replace(
        "llm: {provider: openai, model: gpt-4o-mini}", f"llm: {{provider: {provider}, {option}}}"
    )
    with pytest.raises(WorkflowValidationError) as info:
        load_workflow_text(text)
    issue = info.value.issues[0]
    assert "ignores" in issue.message and issue.hint and issue.line == 4


def test_the_test_provider_accepts_every_option():
    text = MINIMAL.replace(NO_OBS, "").replace(
        "llm: {provider: openai, model: gpt-4o-mini}",
        "llm: {provider: test, model: gpt-4o-mini, seed: 1, base_url: 'http://x', n_ctx: 9}",
    )
    load_workflow_text(text)


def test_docs_fields_are_documentation():
    """The descriptions: state/output field descriptions go into prompts and schemas, the
    flow's into the server's OpenAPI page, a node's onto its span (node.description)."""
    assert {f for f, _ in schema_fields()} >= DOCS


def test_cached_input_prices_are_used():
    from decimal import Decimal

    from configurable_agents.config.schema import ModelPriceSpec
    from configurable_agents.pricing import ModelPrice
    from configurable_agents.usage import TokenUsage

    spec = ModelPriceSpec(
        input_per_million=10,
        output_per_million=20,
        cache_read_per_million=1,
        cache_write_per_million=15,
    )
    price = ModelPrice.from_mapping(spec.model_dump())
    inputs, outputs = price.price(TokenUsage(1_000_000, 0, 400_000, 100_000))
    assert inputs == Decimal("5") + Decimal("0.4") + Decimal("1.5")
    assert outputs == 0


def test_local_threads_and_context_reach_the_model():
    from configurable_agents.providers.local import _KWARGS

    assert _KWARGS["n_threads"] == "n_threads" and _KWARGS["n_ctx"] == "n_ctx"


def test_prompt_ref_fields_are_acted_on():
    """``nodes[].prompt_ref``: name, version and alias make the URI the registry is read with
    (prompts.registry; tests/observe/test_prompt_registry.py runs each case)."""
    from configurable_agents.config.schema import PromptRef

    fields = {f for f, _ in schema_fields()}
    assert {"Node.prompt_ref", "PromptRef.name", "PromptRef.version", "PromptRef.alias"} <= fields
    assert PromptRef(name="p", version=3).uri == "prompts:/p/3"
    assert PromptRef(name="p", alias="production").uri == "prompts:/p@production"
