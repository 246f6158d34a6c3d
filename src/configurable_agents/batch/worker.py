"""One row of a batch: the workflow (as every engine's workers load it) and ``run_row``.

``WorkflowSource`` is what travels to worker processes and Ray actors: the file's path and
text (a Ray worker on another machine may not have the file) and the ``--set`` overrides of
``batch compare``. A worker loads and compiles it once (``compiled_for``), so a ``local``
model is loaded once per process or actor, never per row.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import InputError, Issue, UserError

if TYPE_CHECKING:
    from ..compile.plan import CompiledWorkflow
    from ..config.validate import LoadedWorkflow
    from .data import Row


@dataclass(frozen=True)
class WorkflowSource:
    file: str
    text: str
    overrides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, path: str | Path, overrides: Mapping[str, str] | None = None) -> WorkflowSource:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(Issue("workflow file not found", file=str(path))) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(Issue(f"cannot read the workflow: {exc}", file=str(path))) from None
        return cls(str(p.resolve()), text, tuple((overrides or {}).items()))

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.text.encode())
        for key, value in self.overrides:
            digest.update(f"\0{key}={value}".encode())
        return digest.hexdigest()

    def load(self) -> LoadedWorkflow:
        from ..config.loader import parse_yaml
        from ..config.validate import validate_document

        doc = parse_yaml(self.text, self.file)
        keys = {key for key, _ in self.overrides}
        for key, value in self.overrides:
            _override(doc.data, key, value, self.file, keys)
        return validate_document(doc)


PROMPT_REF_HINT = (
    "write --set NODE.prompt_ref=NAME@VERSION (e.g. write_prompt@3) or NAME@ALIAS "
    "(e.g. write_prompt@production); or a YAML mapping: '{name: write_prompt, version: 3}'"
)
_PROMPT_NAME = r"[A-Za-z0-9_.-]+"  # config.schema.PromptRef.name
_PROMPT_REF = re.compile(
    rf"(?:prompts:/)?(?P<name>{_PROMPT_NAME})(?:@(?P<at>[A-Za-z0-9_.-]+)|/(?P<version>\d+))"
)


def parse_prompt_ref(text: str, key: str = "prompt_ref") -> dict[str, Any]:
    """``name@3`` / ``name/3`` (a version), ``name@production`` (an alias; MLflow's
    ``prompts:/…`` form too), or a YAML flow mapping, as a ``prompt_ref`` mapping;
    ``InputError`` naming ``--set key`` otherwise."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    value = text.strip()
    if value.startswith("{"):
        try:
            found = YAML(typ="safe").load(value)
        except YAMLError:
            found = None
        if isinstance(found, dict):
            return found  # the schema checks its keys, as in the file
    match = _PROMPT_REF.fullmatch(value)
    if match is None:
        raise InputError(
            Issue(f"--set {key}={text!r} is not a registry prompt reference", hint=PROMPT_REF_HINT)
        )
    at, version = match.group("at"), match.group("version")
    if version is None and at is not None and at.isdigit():
        version, at = at, None  # name@3: a version number
    if version is not None:
        if int(version) < 1:
            raise InputError(
                Issue(f"--set {key}={text!r}: versions start at 1", hint=PROMPT_REF_HINT)
            )
        return {"name": match.group("name"), "version": int(version)}
    return {"name": match.group("name"), "alias": at}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["write.prompt=Be brief: {topic}"]`` → ``{"write.prompt": "Be brief: {topic}"}``
    (a ``NODE.prompt_ref`` value is checked here, before any batch starts)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        node, dot, attr = key.strip().partition(".")
        if not sep or not dot or not node or not attr:
            raise InputError(
                Issue(
                    f"--set {pair!r} is not node.key=value",
                    hint="e.g. --set write.prompt='Write two sentences about {topic}.', or "
                    "--set write.prompt_ref=write_prompt@3",
                )
            )
        if attr == "prompt_ref":
            parse_prompt_ref(value, key.strip())
        out[key.strip()] = value
    return out


def _override(
    data: Any, key: str, value: str, file: str, keys: set[str] | frozenset[str] = frozenset()
) -> None:
    """Apply ``--set key=value`` to the workflow's parsed YAML ``data``. ``NODE.prompt`` /
    ``NODE.prompt_ref`` replace the node's prompt: the other one is dropped (a registry
    version wins over an inline prompt, which is only its fallback; and the version named
    must run, not the fallback), unless both are set."""
    from ruamel.yaml import YAML

    node_id, _, attr = key.partition(".")
    nodes = data.get("nodes") if isinstance(data, dict) else None
    for node in nodes or []:
        if isinstance(node, dict) and node.get("id") == node_id:
            break
    else:
        ids = [n.get("id") for n in nodes or [] if isinstance(n, dict)]
        raise InputError(
            Issue(
                f"--set {key}: the workflow has no node '{node_id}'",
                file=file,
                hint="nodes are: " + ", ".join(str(i) for i in ids),
            )
        )
    target = node
    *path, last = attr.split(".")
    for part in path:
        target = target.setdefault(part, {})
    parsed: Any = value
    if attr == "prompt_ref":
        parsed = parse_prompt_ref(value, key)
    elif attr != "prompt":  # a prompt is text; other keys take YAML values (numbers, lists)
        parsed = YAML(typ="safe").load(value) if value.strip() else value
    target[last] = parsed
    other = {"prompt": "prompt_ref", "prompt_ref": "prompt"}.get(attr)
    if other is not None and f"{node_id}.{other}" not in keys:
        node.pop(other, None)


_compiled: dict[WorkflowSource, CompiledWorkflow] = {}
_compiled_lock = threading.Lock()


def compiled_for(source: WorkflowSource) -> CompiledWorkflow:
    """The compiled workflow of ``source`` in this process (compiled once)."""
    with _compiled_lock:
        found = _compiled.get(source)
        if found is None:
            from ..run.executor import prepare

            found = _compiled[source] = prepare(source.load())
        return found


@dataclass
class RowJob:
    """A row, ready to run: its key and inputs, the trace tags and flag."""

    key: Any
    values: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    trace: bool | None = None

    @classmethod
    def of(cls, row: Row, batch_id: str, tags: Mapping[str, str], trace: bool | None) -> RowJob:
        return cls(
            row.key,
            row.values,
            {**tags, "ca.batch_id": batch_id, "ca.batch_row": str(row.key)},
            trace,
        )


def run_row(compiled: CompiledWorkflow, job: RowJob) -> dict[str, Any]:
    """Run one row and return its result line (never raises for the row's own problems)."""
    from ..run.cost import summarize_cost
    from ..run.executor import run_workflow

    started = time.perf_counter()
    try:
        result = run_workflow(compiled, job.values, trace=job.trace, tags=job.tags)
    except UserError as exc:  # the row's values do not fit the state types
        return failed_line(job.key, "InputError", _issues(exc), started)
    except Exception as exc:  # noqa: BLE001 - one row's internal error must not end the batch
        return failed_line(job.key, type(exc).__name__, str(exc), started)
    judged = _wait_for_judges(compiled, result)
    cost = summarize_cost(result, compiled.price_overrides())
    error = result.error
    line = {
        "row": job.key,
        "status": result.status,
        "outputs": result.outputs,
        "error": {"type": error.type, "message": error.message, "node": error.node}
        if error
        else None,
        "trace_id": result.trace_id,
        "cost_usd": cost.total_usd,
        "usage": result.usage.to_dict(),
        "duration_ms": round(result.duration_ms, 3),
    }
    if judged:
        line["judges"] = [
            {"name": j.name, "node": j.node, "score": j.score, "passed": j.passed}
            for j in result.judges or []
        ]
    return line


JUDGE_WAIT_SECONDS = 300.0


def _wait_for_judges(compiled: Any, result: Any) -> bool:
    """Wait for the row's warn judges (they run after the run, in the background) so that
    its line has every verdict; True when the workflow has judges."""
    if not compiled.judges:
        return False
    if any(not j.spec.in_run for j in compiled.judges):
        import threading

        from ..observe.judging import when_judged

        done = threading.Event()
        when_judged(result, lambda _: done.set())
        done.wait(JUDGE_WAIT_SECONDS)
    return True


def _issues(exc: UserError) -> str:
    return "; ".join(i.message for i in exc.issues)


def failed_line(key: Any, kind: str, message: str, started: float | None = None) -> dict[str, Any]:
    elapsed = 0.0 if started is None else (time.perf_counter() - started) * 1000
    return {
        "row": key,
        "status": "failed",
        "outputs": {},
        "error": {"type": kind, "message": message, "node": None},
        "trace_id": None,
        "cost_usd": 0.0,
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "duration_ms": round(elapsed, 3),
    }
