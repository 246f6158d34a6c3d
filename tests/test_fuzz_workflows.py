"""Fuzzing ``validate`` with mutated real workflow files: never an internal error.

A seeded, deterministic mutator takes every file in ``examples/`` and the workflow fixtures of
the tests and breaks them at the text level (delete, duplicate or swap lines, flip characters,
change indentation, insert YAML special tokens, truncate) and at the tree level (replace a value
with a list, mapping, number, null, huge or odd string; drop or duplicate keys and list items),
one to three mutations per case. Each case goes through ``configurable-agents validate``
(in-process, the real command; what its ``load_workflow`` / ``check_environment`` raised is
kept for the checks):

* the exit code is 0 or 2, never 1, and nothing says "internal error";
* a rejection carries issues, and when the file parsed as YAML at all every issue has a line
  inside the file (file-level problems, e.g. "file is empty", may have none);
* no case hangs: each takes at most ``CA_FUZZ_MAX_SECONDS`` (default 30 s, a guard against a
  pathological input such as a regular expression that backtracks without end, not a timing:
  ~10 ms is typical, and in the full suite a case once took 7 s behind other tests' background
  threads). The slowest case is printed.

CI runs ``CA_FUZZ_CASES`` cases (default 1000, 1-2 min); the nightly run (``make nightly``) runs
20,000. A failing case is reproducible from its number: ``CA_FUZZ_ONLY=<n>``.
"""

from __future__ import annotations

import io
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
from ruamel.yaml import YAML
from typer.testing import CliRunner

from configurable_agents import config, providers
from configurable_agents.cli.app import validate
from configurable_agents.exceptions import UserError, WorkflowFileError
from serve.test_api_contract import TYPED
from serve.test_server import FAILING, SLOW
from test_loader import VALID
from test_validation import BASE, TWO_NODES

from conftest import EXAMPLES, MINIMAL, RETRY

CASES = int(os.environ.get("CA_FUZZ_CASES", "1000"))
SEED = int(os.environ.get("CA_FUZZ_SEED", "20240601"))
MAX_SECONDS = float(os.environ.get("CA_FUZZ_MAX_SECONDS", "30.0"))
ONLY = os.environ.get("CA_FUZZ_ONLY")
ROOT = Path(__file__).resolve().parent.parent

SOURCES: dict[str, str] = {
    **{
        f"examples/{p.name}": p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.y*ml"))
    },
    "bench/two_node.yaml": (ROOT / "bench" / "two_node.yaml").read_text(encoding="utf-8"),
    "conftest.MINIMAL": MINIMAL,
    "conftest.RETRY": RETRY,
    "test_loader.VALID": VALID,
    "test_validation.BASE+TWO_NODES": BASE + TWO_NODES + "edges:\n  - {from: START, to: write}\n"
    "  - {from: write, to: review}\n  - {from: review, to: END}\n",
    "test_server.SLOW": SLOW.format(latency=10),
    "test_server.FAILING": FAILING,
    "test_api_contract.TYPED": TYPED,
}

TOKENS = [
    "&a ", "*a", "<<: *a", "!!python/object/apply:os.system ['true'] ", "!tag ", "? ", "--- ",
    "...", "%YAML 1.2\n", "{", "}", "[", "]", "'", '"', "|", ">-", "- ", ": ", "#", "~", "null",
    "yes", "no", "0x1F", ".inf", ".nan", "1e999", "-0", "2024-01-01", "12:30:00", "{{", "}}",
    "{topic}", "{a.b}", "{0}", "START", "END", "\t", "\\", "\r", "\ufeff", "\u2028", "é", "😀",
    '"\\ud800"', "@", "`", "%", ",", "!!binary aGVsbG8=", "!!set {a}", "&x [*x]",
]  # fmt: skip
ODD_VALUES: list[Any] = [
    [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, 0, -1, 10**30, 1.5, float("inf"), None,
    True, False, "", " ", "x" * 100_000, "{topic}", "{nope}", "START", "END", "score >= 7",
    "list[list[dict[str, int]]]", "object", "é😀", "a: b", "- x", ["write"], {"id": "write"},
]  # fmt: skip


@dataclass
class Case:
    number: int
    source: str
    text: str
    steps: list[str] = field(default_factory=list)


# -- text-level mutations -------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.split("\n")


def delete_line(rng: random.Random, text: str) -> tuple[str, str]:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    del lines[i]
    return "\n".join(lines), f"delete line {i + 1}"


def duplicate_line(rng: random.Random, text: str) -> tuple[str, str]:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "\n".join(lines), f"duplicate line {i + 1}"


def swap_lines(rng: random.Random, text: str) -> tuple[str, str]:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines), f"swap lines {i + 1} and {j + 1}"


def flip_char(rng: random.Random, text: str) -> tuple[str, str]:
    if not text:
        return text, "flip nothing"
    i = rng.randrange(len(text))
    new = rng.choice(":-[]{}'\"#&*!|>%@` \t\n,?~0aZ_.é\x7f")
    return text[:i] + new + text[i + 1 :], f"char {i} -> {new!r}"


def indent(rng: random.Random, text: str) -> tuple[str, str]:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    change = rng.choice([-4, -2, -1, 1, 2, 4, 0])
    if change == 0:
        lines[i] = "\t" + lines[i]
    elif change < 0:
        lines[i] = lines[i][min(-change, len(lines[i]) - len(lines[i].lstrip(" "))) :]
    else:
        lines[i] = " " * change + lines[i]
    return "\n".join(lines), f"indent line {i + 1} by {change or 'tab'}"


def insert_token(rng: random.Random, text: str) -> tuple[str, str]:
    i = rng.randrange(len(text) + 1)
    token = rng.choice(TOKENS)
    return text[:i] + token + text[i:], f"insert {token!r} at {i}"


def truncate(rng: random.Random, text: str) -> tuple[str, str]:
    i = rng.randrange(len(text) + 1)
    return text[:i], f"truncate at {i}"


def repeat_nesting(rng: random.Random, text: str) -> tuple[str, str]:
    depth = rng.choice([10, 70, 500, 5000])
    style = rng.choice(["flow", "block"])
    if style == "flow":
        deep = "deep: " + "[" * depth + "]" * depth
    else:
        deep = "deep:\n" + "".join(" " * (2 * k) + "- a:\n" for k in range(1, min(depth, 400)))
    return text + "\n" + deep + "\n", f"append {style} nesting {depth}"


TEXT_MUTATIONS = [
    delete_line, duplicate_line, swap_lines, flip_char, flip_char, indent, insert_token,
    insert_token, truncate, repeat_nesting,
]  # fmt: skip


# -- tree-level mutations -------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.width = 120
    return yaml


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def tree_mutation(rng: random.Random, text: str) -> tuple[str, str]:
    yaml = _yaml()
    try:
        data = yaml.load(text)
    except Exception:  # noqa: BLE001 - text mutations broke it already: mutate the text instead
        return insert_token(rng, text)
    if not isinstance(data, (dict, list)):
        return flip_char(rng, text)
    paths = [p for p in _paths(data) if p]
    if not paths:
        return text, "no tree paths"
    path = rng.choice(paths)
    parent = _parent(data, path)
    key = path[-1]
    op = rng.choice(["replace", "replace", "replace", "drop", "duplicate", "rename", "retype_key"])
    if op == "replace":
        value = rng.choice(ODD_VALUES)
        if isinstance(value, float) and value == float("inf"):
            value = rng.choice([float("inf"), float("-inf")])
        parent[key] = value
        what = f"replace {'.'.join(map(str, path))} with {str(value)[:30]!r}"
    elif op == "drop":
        del parent[key]
        what = f"drop {'.'.join(map(str, path))}"
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(key, parent[key])
        else:
            parent[f"{key}_copy" if rng.random() < 0.5 else str(key)[:-1] or "x"] = parent[key]
        what = f"duplicate {'.'.join(map(str, path))}"
    elif op == "rename" and isinstance(parent, dict):
        value = parent.pop(key)
        new = rng.choice([str(key).upper(), f"{key}s", str(key)[1:] or "k", "unknown_key"])
        parent[new] = value
        what = f"rename {'.'.join(map(str, path))} to {new}"
    elif op == "retype_key" and isinstance(parent, dict):
        value = parent.pop(key)
        parent[rng.choice([1, 2.5, True, None])] = value
        what = f"key {'.'.join(map(str, path))} made a non-string"
    else:
        return flip_char(rng, text)
    out = io.StringIO()
    try:
        yaml.dump(data, out)
    except Exception as exc:  # noqa: BLE001 - a value the dumper refuses: keep the text
        return text, f"tree dump failed ({type(exc).__name__})"
    return out.getvalue(), what


def make_case(number: int) -> Case:
    rng = random.Random(f"{SEED}-{number}")
    source = rng.choice(sorted(SOURCES))
    case = Case(number, source, SOURCES[source])
    for _ in range(rng.choice([1, 1, 2, 3])):
        mutate: Callable[[random.Random, str], tuple[str, str]] = (
            tree_mutation if rng.random() < 0.4 else rng.choice(TEXT_MUTATIONS)
        )
        case.text, step = mutate(rng, case.text)
        case.steps.append(f"{mutate.__name__}: {step}")
    return case


# -- the checks -----------------------------------------------------------------------------

FILE_LEVEL = (
    "file is empty",
    "file is binary",
    "file is larger",
    "file is not UTF-8",
    "expands to",
)
_ERROR_LINE = re.compile(r"^(?P<file>\S.*?)(?::(?P<line>\d+))?: error: ", re.M)


class Recorder:
    """Wraps ``load_workflow`` and ``check_environment`` as ``validate`` calls them, keeping what
    they raised: one parse per case gives both the exit code and the issues."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.raised: BaseException | None = None
        monkeypatch.setattr(config, "load_workflow", self._wrap(config.load_workflow))
        monkeypatch.setattr(providers, "check_environment", self._wrap(providers.check_environment))

    def _wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except BaseException as exc:
                self.raised = exc
                raise

        return recorded


def validate_cli() -> typer.Typer:
    """The real ``validate`` command (a two-command app: built per call in microseconds, not the
    whole CLI's ~40 ms)."""
    cli = typer.Typer()
    cli.command("validate")(validate)
    cli.command("other")(lambda: None)
    return cli


def check_case(
    case: Case, path: Path, runner: CliRunner, cli: typer.Typer, recorder: Recorder
) -> tuple[list[str], float, int]:
    """The problems with this case (empty: fine), the seconds it took, validate's exit code."""
    problems: list[str] = []
    path.write_text(case.text, encoding="utf-8")
    n_lines = case.text.count("\n") + 1
    recorder.raised = None
    started = time.perf_counter()
    result = runner.invoke(cli, ["validate", str(path)])
    elapsed = time.perf_counter() - started
    output = result.output
    if "internal error" in output or result.exit_code not in (0, 2):
        problems.append(f"exit {result.exit_code}: {output[-2000:]}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
    err = recorder.raised
    if isinstance(err, UserError):
        if result.exit_code != 2:
            problems.append(f"rejected, but validate exited {result.exit_code}")
        if not err.issues:
            problems.append("a rejection without issues")
        parsed = not isinstance(err, WorkflowFileError)
        for issue in err.issues:
            if issue.line is None:
                if parsed or not issue.message.startswith(FILE_LEVEL):
                    problems.append(f"no line: {issue}")
            elif not 1 <= issue.line <= n_lines:
                problems.append(f"line {issue.line} outside the file ({n_lines} lines): {issue}")
            if not issue.hint:
                problems.append(f"no hint: {issue}")
        shown = [m["line"] for m in _ERROR_LINE.finditer(output)]
        if len(shown) != len(err.issues) or (parsed and None in shown):
            problems.append(f"validate printed other errors than it found:\n{output[-2000:]}")
    elif err is not None:
        problems.append(f"internal error {type(err).__name__}: {err}")
    elif result.exit_code != 0:
        problems.append(f"nothing raised, but validate exited {result.exit_code}")
    return problems, elapsed, result.exit_code


def test_mutated_workflow_files_never_cause_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    numbers = [int(ONLY)] if ONLY else range(CASES)
    runner, cli, recorder = CliRunner(), validate_cli(), Recorder(monkeypatch)
    path = tmp_path / "mutated.yaml"
    failures: list[str] = []
    slowest = (0.0, -1)
    exits = {0: 0, 2: 0}
    for number in numbers:
        case = make_case(number)
        problems, elapsed, code = check_case(case, path, runner, cli, recorder)
        exits[code] = exits.get(code, 0) + 1
        slowest = max(slowest, (elapsed, number))
        if elapsed > MAX_SECONDS:
            problems.append(f"took {elapsed:.2f} s (limit {MAX_SECONDS:g} s)")
        if problems:
            failures.append(
                f"case {number} ({case.source}; {' / '.join(case.steps)}):\n  "
                + "\n  ".join(problems)
                + f"\n--- file ---\n{case.text[:3000]}"
            )
            if len(failures) >= 5:
                break
    print(
        f"\nfuzz: {len(numbers)} cases (seed {SEED}): {exits.get(0, 0)} valid, "
        f"{exits.get(2, 0)} rejected, {len(failures)} failing; slowest "
        f"{slowest[0] * 1000:.0f} ms (case {slowest[1]})"
    )
    assert not failures, "\n\n".join(failures)
