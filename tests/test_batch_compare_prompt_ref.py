"""``batch compare --set NODE.prompt_ref=NAME@VERSION|NAME@ALIAS``: two registry versions
compared from one workflow file, on the ``test`` provider and a SQLite MLflow registry; and the
errors (bad syntax, unknown node, a version that does not exist) before either batch runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from configurable_agents.batch.worker import WorkflowSource, parse_overrides, parse_prompt_ref
from configurable_agents.exceptions import InputError
from configurable_agents.prompts import PromptRegistryError, clear_cache

from test_batch import cli, data, results

mlflow = pytest.importorskip("mlflow")

WORKFLOW = """\
schema_version: "1.0"
flow: {{name: compare_prompts}}
config:
  llm: {{provider: test, model: gemini-2.5-flash}}
  observability:
    mlflow: {{enabled: true, tracking_uri: "{uri}", experiment_name: cmp}}
state:
  fields:
    topic: {{type: str, required: true}}
    n: {{type: int, default: 1}}
    article: {{type: str, default: ""}}
nodes:
  - id: write
{prompt}    outputs: [article]
edges:
  - {{from: START, to: write}}
  - {{from: write, to: END}}
"""
V1 = "Write about {{ topic }}."
V2 = "Write {{ n }} careful, detailed and friendly words about {{ topic }} for a curious reader."


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


def registry(tmp_path: Path) -> str:
    """A SQLite store: write_prompt v1 and v2, production → 2."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.register_prompt(name="write_prompt", template=V1)
    client.register_prompt(name="write_prompt", template=V2)
    client.set_prompt_alias("write_prompt", "production", 2)
    return uri


def workflow(tmp_path: Path, uri: str, prompt: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.format(uri=uri, prompt=prompt), encoding="utf-8")
    return path


def versions_by_variant(uri: str) -> dict[str, set[str]]:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("cmp").experiment_id
    out: dict[str, set[str]] = {}
    for trace in client.search_traces(locations=[experiment]):
        node = next(s for s in trace.data.spans if s.name == "write")
        version = node.attributes.get("node.prompt_version")
        out.setdefault(trace.info.tags["ca.variant"], set()).add(version)
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write_prompt@3", {"name": "write_prompt", "version": 3}),
        ("write_prompt/3", {"name": "write_prompt", "version": 3}),
        ("prompts:/write_prompt/3", {"name": "write_prompt", "version": 3}),
        ("write_prompt@production", {"name": "write_prompt", "alias": "production"}),
        (" my.prompt-2@champion ", {"name": "my.prompt-2", "alias": "champion"}),
        ("prompts:/write_prompt@latest", {"name": "write_prompt", "alias": "latest"}),
        ("{name: write_prompt, alias: b}", {"name": "write_prompt", "alias": "b"}),
    ],
)
def test_prompt_ref_syntax(text: str, expected: dict[str, Any]) -> None:
    assert parse_prompt_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["write_prompt", "write prompt@3", "write_prompt@", "@3", "write_prompt@0", "{oops"]
)
def test_bad_prompt_ref_syntax_is_an_error_naming_the_option(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_overrides([f"write.prompt_ref={text}"])
    (issue,) = err.value.issues
    assert issue.message.startswith(f"--set write.prompt_ref={text!r}")
    assert "NAME@VERSION" in (issue.hint or "") and "NAME@ALIAS" in (issue.hint or "")


def test_a_prompt_ref_override_replaces_the_inline_prompt_and_the_other_way_round(tmp_path):
    uri = registry(tmp_path)
    inline = workflow(tmp_path, uri, '    prompt: "Inline {topic}"\n')
    loaded = WorkflowSource.of(inline, {"write.prompt_ref": "write_prompt@2"}).load()
    node = loaded.spec.nodes[0]
    assert node.prompt is None  # no silent fallback: the version named must run
    assert (node.prompt_ref.name, node.prompt_ref.version) == ("write_prompt", 2)
    ref = workflow(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    node = WorkflowSource.of(ref, {"write.prompt": "Other {topic}"}).load().spec.nodes[0]
    assert (node.prompt, node.prompt_ref) == ("Other {topic}", None)
    both = {"write.prompt_ref": "write_prompt@production", "write.prompt": "Fallback {topic}"}
    node = WorkflowSource.of(ref, both).load().spec.nodes[0]
    assert node.prompt == "Fallback {topic}" and node.prompt_ref.alias == "production"


def test_compare_two_registry_versions_from_one_file(tmp_path: Path) -> None:
    uri = registry(tmp_path)
    base = workflow(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    proc = cli(
        "batch", "compare", base, "--data", data(tmp_path, 4), "-o", "cmp", "--json",
        "--set", "write.prompt_ref=write_prompt@2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    comp = json.loads(proc.stdout)
    assert comp["candidate"]["label"].endswith("--set write.prompt_ref='write_prompt@2'")
    assert comp["rows"]["compared"] == 4
    tokens = next(m for m in comp["metrics"] if m["name"] == "tokens per row")
    assert tokens["candidate"] > tokens["baseline"] and tokens["better"] == "baseline"
    assert cli("observability", "flush", "--workflow", base, cwd=tmp_path).returncode == 0
    assert versions_by_variant(uri) == {
        "baseline": {"write_prompt/1"},
        "candidate": {"write_prompt/2"},
    }


def test_compare_an_alias_against_an_inline_prompt(tmp_path: Path) -> None:
    uri = registry(tmp_path)
    base = workflow(tmp_path, uri, '    prompt: "Write about {topic}."\n')
    proc = cli(
        "batch", "compare", base, "--data", data(tmp_path, 3), "-o", "cmp", "--json",
        "--set", "write.prompt_ref=write_prompt@production", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert cli("observability", "flush", "--workflow", base, cwd=tmp_path).returncode == 0
    assert versions_by_variant(uri) == {"baseline": {None}, "candidate": {"write_prompt/2"}}


def test_candidate_errors_come_before_the_baseline_runs(tmp_path: Path) -> None:
    uri = registry(tmp_path)
    base = workflow(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    rows = data(tmp_path, 2)
    for value, message in (
        ("nope.prompt_ref=write_prompt@2", "--set nope.prompt_ref: the workflow has no node"),
        ("write.prompt_ref=write prompt", "is not a registry prompt reference"),
        ("write.prompt_ref=write_prompt@9", "prompt 'write_prompt' has no version 9"),
        ("write.prompt_ref=write_prompt@gone", "has no alias 'gone'"),
    ):
        proc = cli(
            "batch", "compare", base, "--data", rows, "-o", "cmp", "--set", value, cwd=tmp_path
        )  # fmt: skip
        assert proc.returncode == 2, (value, proc.stdout, proc.stderr)
        assert message in " ".join(proc.stderr.split()), (value, proc.stderr)
        assert not (tmp_path / "cmp" / "baseline.jsonl").exists(), value  # nothing ran


def test_a_missing_version_is_a_registry_error_in_process(tmp_path: Path) -> None:
    from configurable_agents.batch.compare import run_compare
    from configurable_agents.batch.runner import BatchOptions

    uri = registry(tmp_path)
    base = workflow(tmp_path, uri, "    prompt_ref: {name: write_prompt, version: 1}\n")
    opts = BatchOptions(
        workflow=base,
        data=str(data(tmp_path, 2)),
        overrides=parse_overrides(["write.prompt_ref=write_prompt@7"]),
        trace=False,
    )
    with pytest.raises(PromptRegistryError, match="no version 7"):
        run_compare(opts, None, tmp_path / "out")
    assert not (tmp_path / "out" / "baseline.jsonl").exists()
    opts.overrides = parse_overrides(["write.prompt_ref=write_prompt@2"])
    comp = run_compare(opts, None, tmp_path / "out2")
    assert comp.rows == 2 and comp.candidate.succeeded == 2
    assert len(results(tmp_path / "out2" / "candidate.jsonl")) == 2
