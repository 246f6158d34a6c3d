"""Reports over real traces written by our writer: ``report costs``, ``report profile`` and
``observability status``, from SQLite (in the database and through search_traces), PostgreSQL
and an MLflow server; periods and dates; the CLI's tables, files and exit codes."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import socket
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import configurable_agents as ca
from configurable_agents.cli.observability import observability_app
from configurable_agents.cli.report import report_app
from configurable_agents.exceptions import InputError
from configurable_agents.observe.report.reports import (
    cost_report,
    ensure_report_indexes,
    observability_status,
    profile_report,
    resolve_period,
)
from configurable_agents.observe.trace import spool as spool_module

from conftest import EXAMPLES, FAILING, MINIMAL, RETRY

mlflow = pytest.importorskip("mlflow")

ROOT = Path(__file__).resolve().parents[2]
# list prices per token: gemini-2.5-flash $0.30 / $2.50 per million, gpt-4o-mini $0.15 / $0.60
FLASH_IN, FLASH_OUT = 0.30e-6, 2.50e-6
MINI_IN, MINI_OUT = 0.15e-6, 0.60e-6
REVIEW_RUN = 62 * FLASH_IN + 19 * FLASH_OUT  # review_loop: write, review, write, review
WRITE_RUN = 34 * FLASH_IN + 6 * FLASH_OUT  # its two write visits: 14 + 20 in, 3 + 3 out
REVIEW_NODE_RUN = 28 * FLASH_IN + 13 * FLASH_OUT  # its two review visits: 14 + 14 in, 9 + 4 out
SOLVE_RUN = 47 * MINI_IN + 16 * MINI_OUT  # calculator_tools: 3 calls (tools, then the answer)


# two nodes; "slow" calls a tool that sleeps 60 ms, so it is the bottleneck
SLOW_FAST = """\
schema_version: "1.0"
flow: {name: slow_fast}
config:
  llm: {provider: test, model: gemini-2.5-flash}
state:
  fields:
    topic: {type: str, required: true}
    note: {type: str, default: ""}
    answer: {type: str, default: ""}
nodes:
  - id: fast
    prompt: "Note on {topic}."
    outputs: [note]
  - id: slow
    prompt: "Answer about {note}."
    tools: ["report_tools:pause"]
    outputs: [answer]
edges:
  - {from: START, to: fast}
  - {from: fast, to: slow}
  - {from: slow, to: END}
"""
TOOLS = '''\
import time


def pause(seconds: float = 0.06) -> str:
    """Wait a little."""
    time.sleep(seconds)
    return "done"
'''


def _bench() -> ModuleType:
    """``bench/report_costs.py``, for its bulk trace copier."""
    spec = importlib.util.spec_from_file_location("report_costs", ROOT / "bench/report_costs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def traced(path: Path, uri: str, experiment: str, inputs: dict[str, Any], **kwargs: Any) -> Any:
    workflow = ca.compile_workflow(ca.load_workflow(path))
    config = workflow.workflow.spec.config.observability.mlflow
    config.enabled = True
    config.tracking_uri = uri
    config.experiment_name = experiment
    config.log_artifacts = False
    return ca.run_workflow(workflow, inputs, trace=True, **kwargs)


def flushed(results: list[Any]) -> None:
    assert ca.flush(120)
    for result in results:
        assert result.trace_error is None, result.trace_error


def isolated(root: Path) -> pytest.MonkeyPatch:
    """A module fixture's own cwd and status dir (the autouse isolation is per test)."""
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv(spool_module.STATE_DIR_ENV, str(root / "state"))
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return mp


@dataclass
class Store:
    uri: str
    runs: dict[str, list[Any]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Real runs traced into one SQLite store: review_loop x2 (tagged), calculator_tools,
    retry_demo (one retry, then one failed run), slow_fast x2, and MINIMAL in another
    experiment."""
    root = tmp_path_factory.mktemp("reports")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = isolated(root)
    try:
        mp.syspath_prepend(str(root))
        (root / "report_tools.py").write_text(TOOLS, encoding="utf-8")
        for name, text in (("retry.yaml", RETRY), ("failing.yaml", FAILING)):
            (root / name).write_text(text, encoding="utf-8")
        (root / "slow_fast.yaml").write_text(SLOW_FAST, encoding="utf-8")
        (root / "minimal.yaml").write_text(MINIMAL, encoding="utf-8")
        tags = {"user": "ana", "team": "data"}
        runs = {
            "review_loop": [
                traced(EXAMPLES / "review_loop.yaml", uri, "reports", {"topic": "bees"}, tags=tags)
                for _ in range(2)
            ],
            "calculator_tools": [
                traced(
                    EXAMPLES / "calculator_tools.yaml", uri, "reports", {"question": "what is 2+2?"}
                )
            ],
            "retry_demo": [
                traced(root / "retry.yaml", uri, "reports", {"topic": "x"}),
                traced(root / "failing.yaml", uri, "reports", {"topic": "x"}),
            ],
            "slow_fast": [
                traced(root / "slow_fast.yaml", uri, "reports", {"topic": "t"}) for _ in range(2)
            ],
            "demo": [traced(root / "minimal.yaml", uri, "other", {"topic": "y"})],
        }
        flushed([r for results in runs.values() for r in results])
    finally:
        mp.undo()
    assert [r.succeeded for r in runs["retry_demo"]] == [True, False]
    return Store(uri, runs)


def local_ms(*args: int) -> int:
    return int(dt.datetime(*args).timestamp() * 1000)  # naive = local time


# when the bulk copies in the dated store start (local time), by label
DATED = {
    "A": local_ms(2024, 1, 5, 10, 0),
    "B": local_ms(2024, 1, 6, 23, 59, 59) + 500,
    "C": local_ms(2024, 1, 7, 0, 0),  # a Sunday: still ISO week 2024-W01
    "D": local_ms(2024, 1, 8, 0, 30),
    "E": local_ms(2024, 2, 29, 12, 0),
    "F": local_ms(2024, 1, 6, 8, 0),  # the failed run
    "foreign": local_ms(2024, 1, 5, 11, 0),  # not ours: its ca.workflow tag is removed
}


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store whose traces start when we say: bulk copies (bench/report_costs.py) of one
    review_loop run and one failed retry_demo run."""
    root = tmp_path_factory.mktemp("dated")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = isolated(root)
    try:
        (root / "failing.yaml").write_text(FAILING, encoding="utf-8")
        ok = traced(EXAMPLES / "review_loop.yaml", uri, "dated", {"topic": "bees"})
        failed = traced(root / "failing.yaml", uri, "dated", {"topic": "x"})
        flushed([ok, failed])
    finally:
        mp.undo()
    labels = list(DATED)
    sources = [failed.trace_id if label == "F" else ok.trace_id for label in labels]
    ids = dict(zip(labels, _bench().copy_traces(uri, sources, list(DATED.values())), strict=True))
    with sqlite3.connect(root / "mlflow.db") as db:
        db.execute(
            "DELETE FROM trace_tags WHERE key = 'ca.workflow' AND request_id = ?",
            (ids["foreign"],),
        )
    db.close()
    return uri


IN_2024 = {"start": local_ms(2024, 1, 1), "end": local_ms(2024, 12, 31)}


# --------------------------------------------------------------------------- cost report


def test_cost_report_totals_are_the_runs_totals(store):
    report = cost_report(store.uri, experiment="reports")
    results = [r for name, rs in store.runs.items() if name != "demo" for r in rs]
    assert (report.runs, report.succeeded, report.failed) == (7, 6, 1)
    assert report.input_tokens == sum(r.usage.input_tokens for r in results)
    assert report.output_tokens == sum(r.usage.output_tokens for r in results)
    assert report.total_tokens == report.input_tokens + report.output_tokens
    expected = sum(ca.summarize_cost(r).total_usd for r in results)
    assert report.total_cost == pytest.approx(expected, rel=1e-9)
    assert report.avg_cost_per_run == pytest.approx(expected / 7, rel=1e-6)
    assert report.avg_tokens_per_run == pytest.approx(report.total_tokens / 7, abs=1e-3)
    assert report.by_model is None and report.by_node is None and report.periods is None
    review = next(w for w in report.by_workflow if w.workflow == "review_loop")
    assert (review.runs, review.succeeded, review.failed) == (2, 2, 0)
    assert (review.input_tokens, review.output_tokens, review.total_tokens) == (124, 38, 162)
    assert review.cost == pytest.approx(2 * REVIEW_RUN)
    assert review.avg_cost_per_run == pytest.approx(REVIEW_RUN)
    calc = next(w for w in report.by_workflow if w.workflow == "calculator_tools")
    assert (calc.input_tokens, calc.output_tokens) == (47, 16)
    assert calc.cost == pytest.approx(SOLVE_RUN)
    costs = [w.cost for w in report.by_workflow]
    assert costs == sorted(costs, reverse=True)  # the most expensive first


def test_breakdown_by_model_and_node(store):
    report = cost_report(store.uri, experiment="reports", breakdown=True)
    models = {m.model: m for m in report.by_model or []}
    assert set(models) == {"gemini-2.5-flash", "gpt-4o-mini"}
    mini = models["gpt-4o-mini"]
    assert (mini.calls, mini.input_tokens, mini.output_tokens) == (3, 47, 16)
    assert mini.cost == pytest.approx(SOLVE_RUN)
    # review_loop 2 x 4 calls, retry_demo 2 + 1, slow_fast 2 x (1 + 3: tool calls, then answer)
    assert models["gemini-2.5-flash"].calls == 8 + 3 + 8
    flash_runs = [
        r for name in ("review_loop", "retry_demo", "slow_fast") for r in store.runs[name]
    ]
    assert models["gemini-2.5-flash"].calls == sum(n.llm_calls for r in flash_runs for n in r.nodes)
    assert sum(m.cost for m in models.values()) == pytest.approx(report.total_cost)
    assert sum(m.total_tokens for m in models.values()) == report.total_tokens
    nodes = {(n.workflow, n.node): n for n in report.by_node or []}
    write, review = nodes["review_loop", "write"], nodes["review_loop", "review"]
    assert (write.calls, write.input_tokens, write.output_tokens) == (4, 68, 12)
    assert (review.calls, review.input_tokens, review.output_tokens) == (4, 56, 26)
    assert write.cost == pytest.approx(2 * WRITE_RUN)
    assert review.cost == pytest.approx(2 * REVIEW_NODE_RUN)
    assert nodes["calculator_tools", "solve"].calls == 1
    assert nodes["retry_demo", "score"].calls == 2
    assert set(nodes) == {
        ("review_loop", "write"),
        ("review_loop", "review"),
        ("calculator_tools", "solve"),
        ("retry_demo", "score"),
        ("slow_fast", "fast"),
        ("slow_fast", "slow"),
    }
    assert sum(n.cost for n in nodes.values()) == pytest.approx(report.total_cost)
    assert sum(n.total_tokens for n in nodes.values()) == report.total_tokens


def test_filters_by_workflow_status_and_experiment(store):
    review = cost_report(store.uri, workflow="review_loop", breakdown=True)
    assert review.runs == 2 and review.total_cost == pytest.approx(2 * REVIEW_RUN)
    assert [m.model for m in review.by_model or []] == ["gemini-2.5-flash"]
    assert {n.node for n in review.by_node or []} == {"write", "review"}
    failed = cost_report(store.uri, status="failure", breakdown=True)
    assert (failed.runs, failed.failed, failed.succeeded) == (1, 1, 0)
    assert [w.workflow for w in failed.by_workflow] == ["retry_demo"]
    (score,) = failed.by_node or []
    assert (score.node, score.calls) == ("score", 1)
    assert failed.total_tokens == store.runs["retry_demo"][1].usage.total_tokens
    assert cost_report(store.uri, status="succeeded").runs == 7
    everything = cost_report(store.uri)
    assert everything.runs == 8  # both experiments
    other = cost_report(store.uri, experiment="other", breakdown=True)
    assert [w.workflow for w in other.by_workflow] == ["demo"] and other.runs == 1
    assert cost_report(store.uri, workflow="no_such_flow").runs == 0


def test_an_unknown_experiment_or_status_is_an_input_error(store):
    with pytest.raises(InputError, match="no experiment named 'nope'") as err:
        cost_report(store.uri, experiment="nope")
    assert "reports" in (err.value.issues[0].hint or "")
    with pytest.raises(InputError, match="unknown status"):
        cost_report(store.uri, status="maybe")
    with pytest.raises(InputError, match="unknown aggregation"):
        cost_report(store.uri, aggregate_by="hourly")


def test_dates_are_local_days_and_the_end_date_is_inclusive(dated):
    start, end = resolve_period(None, "2024-01-06", "2024-01-06")
    day = cost_report(dated, start=start, end=end, breakdown=True)
    assert (day.runs, day.succeeded, day.failed) == (2, 1, 1)  # B at 23:59:59.5 and F
    assert day.filters["start"].startswith("2024-01-06T00:00:00")
    assert cost_report(dated, start=start, end=end, status="failed").runs == 1
    start, end = resolve_period(None, "2024-01-05", "2024-01-05")
    only_a = cost_report(dated, start=start, end=end, breakdown=True)
    assert only_a.runs == 1  # the foreign trace at 11:00 is not ours
    assert only_a.total_tokens == 81
    assert {n.calls for n in only_a.by_node or []} == {2}
    assert sum(m.calls for m in only_a.by_model or []) == 4
    start, _ = resolve_period(None, "2024-01-07", None)
    _, end = resolve_period(None, None, "2024-02-28")
    assert cost_report(dated, start=start, end=end).runs == 2  # C and D, not E (02-29)


@pytest.mark.parametrize(
    ("period", "runs"),
    [
        ("today", 1),  # C
        ("yesterday", 2),  # B, F
        ("last_7_days", 4),  # A, F, B, C
        ("last_30_days", 4),
        ("this_month", 4),  # D (tomorrow, 00:30) not yet
    ],
)
def test_named_periods(dated, period, runs):
    now = dt.datetime(2024, 1, 7, 15, 0)
    start, end = resolve_period(period, now=now)
    assert cost_report(dated, start=start, end=end).runs == runs


@pytest.mark.parametrize(
    ("aggregate_by", "expected"),
    [
        (
            "daily",
            [
                ("2024-01-05", "2024-01-05", 1, 0),
                ("2024-01-06", "2024-01-06", 2, 1),
                ("2024-01-07", "2024-01-07", 1, 0),
                ("2024-01-08", "2024-01-08", 1, 0),
                ("2024-02-29", "2024-02-29", 1, 0),
            ],
        ),
        (
            "weekly",
            [
                ("2024-W01", "2024-01-01", 4, 1),
                ("2024-W02", "2024-01-08", 1, 0),
                ("2024-W09", "2024-02-26", 1, 0),
            ],
        ),
        ("monthly", [("2024-01", "2024-01-01", 5, 1), ("2024-02", "2024-02-01", 1, 0)]),
    ],
)
def test_aggregate_by_day_week_and_month(dated, aggregate_by, expected):
    report = cost_report(dated, aggregate_by=aggregate_by, **IN_2024)
    assert [(p.period, p.start, p.runs, p.failed) for p in report.periods or []] == expected
    assert sum(p.cost for p in report.periods or []) == pytest.approx(report.total_cost)
    assert report.aggregate_by == aggregate_by


def test_resolve_period():
    now = dt.datetime(2024, 3, 15, 9, 30)
    assert resolve_period("today", now=now) == (local_ms(2024, 3, 15), local_ms(2024, 3, 16))
    assert resolve_period("yesterday", now=now) == (local_ms(2024, 3, 14), local_ms(2024, 3, 15))
    assert resolve_period("last_7_days", now=now)[0] == local_ms(2024, 3, 9)
    assert resolve_period("last_30_days", now=now)[0] == local_ms(2024, 2, 15)
    assert resolve_period("this_month", now=now) == (local_ms(2024, 3, 1), local_ms(2024, 3, 16))
    assert resolve_period(None, "2024-03-01", "2024-03-31") == (
        local_ms(2024, 3, 1),
        local_ms(2024, 4, 1),
    )
    assert resolve_period(None) == (None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "2024-02-30", None), "start date '2024-02-30' is not a date"),
        ((None, None, "31/01/2024"), "end date '31/01/2024' is not a date"),
        ((None, "2024-02-01", "2024-01-01"), "before the start date"),
        (("today", "2024-01-01", None), "either a period or start/end dates"),
        (("fortnight", None, None), "unknown period 'fortnight'"),
    ],
)
def test_bad_periods_and_dates_are_input_errors(args, message):
    with pytest.raises(InputError, match=message) as err:
        resolve_period(*args)
    assert err.value.issues[0].hint


# --------------------------------------------------------------------------- profile


def test_profile_names_the_bottleneck_and_counts_retries(store):
    report = profile_report(store.uri, workflow="slow_fast")
    assert report.runs == 2
    slow, fast = report.nodes
    assert (slow.node, fast.node) == ("slow", "fast")
    assert report.bottleneck is not None and report.bottleneck.node == "slow"
    durations = sorted(n.duration_ms for r in store.runs["slow_fast"] for n in r.nodes[1:])
    assert slow.calls == 2 and slow.max_ms == pytest.approx(durations[-1], abs=0.01)
    assert durations[0] - 0.01 <= slow.p50_ms <= slow.p95_ms <= slow.max_ms
    assert slow.p50_ms >= 60  # the tool sleeps 60 ms
    assert 0.5 < slow.share < 1 and slow.share + fast.share <= 1
    run_ms = sum(r.duration_ms for r in store.runs["slow_fast"])
    assert report.total_run_ms == pytest.approx(run_ms, abs=2)
    assert slow.total_tokens > 0 and slow.cost > 0
    assert report.to_dict()["bottleneck"] == {
        "workflow": "slow_fast",
        "node": "slow",
        "share": slow.share,
    }

    retried = profile_report(store.uri, workflow="retry_demo", status="succeeded")
    (score,) = retried.nodes
    assert (score.calls, score.retries) == (1, 1)
    # the failed run's rejected output is a validate_output error too
    assert profile_report(store.uri, workflow="retry_demo").nodes[0].retries == 2
    review = profile_report(store.uri, workflow="review_loop")
    assert {n.node: (n.calls, n.retries) for n in review.nodes} == {
        "write": (4, 0),
        "review": (4, 0),
    }
    assert sum(n.total_tokens for n in review.nodes) == 162


# --------------------------------------------------------------------------- both paths


@pytest.mark.parametrize(
    "kwargs",
    [
        {"breakdown": True},
        {"breakdown": True, "aggregate_by": "daily", "experiment": "reports"},
        {"breakdown": True, "status": "failed"},
        {"breakdown": True, "workflow": "review_loop", "status": "success"},
    ],
)
def test_the_sql_and_search_traces_paths_agree(store, kwargs):
    sql = cost_report(store.uri, backend="sql", **kwargs)
    python = cost_report(store.uri, backend="rest", **kwargs)
    assert sql.runs > 0
    assert sql.to_dict() == python.to_dict()


def test_the_sql_and_search_traces_paths_agree_on_dates_and_profiles(store, dated):
    for kwargs in ({"aggregate_by": "weekly", **IN_2024}, {"start": DATED["A"], "breakdown": True}):
        sql = cost_report(dated, **kwargs)
        assert sql.runs > 0
        assert sql.to_dict() == cost_report(dated, backend="rest", **kwargs).to_dict()
    for uri in (store.uri, dated):
        sql_profile = profile_report(uri)
        assert sql_profile.nodes
        assert sql_profile.to_dict() == profile_report(uri, backend="rest").to_dict()


def copy_store(uri: str, path: Path) -> str:
    """A throwaway copy of the SQLite store at ``uri``."""
    source = sqlite3.connect(uri.removeprefix("sqlite:///"))
    copy = sqlite3.connect(path)
    source.backup(copy)
    source.close()
    copy.close()
    return f"sqlite:///{path}"


def sql(uri: str, *statements: str) -> list[Any]:
    db = sqlite3.connect(uri.removeprefix("sqlite:///"))
    try:
        with db:
            rows = [db.execute(s).fetchall() for s in statements]
    finally:
        db.close()
    return rows[-1]


def test_report_indexes_are_used_and_change_nothing(store, tmp_path):
    uri = copy_store(store.uri, tmp_path / "copy.db")
    sql(
        uri,
        "DROP INDEX ca_report_chat_spans",
        "DROP INDEX ca_report_agent_spans",
        "DROP INDEX ca_report_node_models",
        "DROP INDEX ca_report_prompt_spans",
        "DROP INDEX ca_report_judges",
        "DROP TABLE ca_report_rollup",
    )
    before = [cost_report(uri, breakdown=True), profile_report(uri)]
    assert [r.source for r in before] == ["spans-uncovered", "spans"]
    created = ensure_report_indexes(uri)
    assert created == [
        "ca_report_chat_spans",
        "ca_report_agent_spans",
        "ca_report_node_models",
        "ca_report_prompt_spans",
        "ca_report_judges",
        "ca_report_rollup",
    ]
    assert ensure_report_indexes(uri) == []
    result = invoke("report", "index", "--tracking-uri", uri)
    assert result.exit_code == 0 and "nothing to do" in result.stderr
    after = [cost_report(uri, breakdown=True), profile_report(uri)]
    assert [r.source for r in after] == ["rollup", "spans"]
    assert [r.to_dict() | {"tracking_uri": ""} for r in before] == [
        r.to_dict() | {"tracking_uri": ""} for r in after
    ]
    from configurable_agents.observe.report.sql import SQLITE_CHAT_TOKENS, SQLITE_NODE_TOKENS

    with sqlite3.connect(tmp_path / "copy.db") as db:
        for table, group, exprs, index in (
            ("CHAT_MODEL", "model_name", SQLITE_CHAT_TOKENS, "ca_report_chat_spans"),
            ("AGENT", "name", SQLITE_NODE_TOKENS, "ca_report_agent_spans"),
        ):
            sums = ", ".join(f"sum({e})" for e in exprs)
            query = f"SELECT {group}, {sums} FROM spans WHERE type = '{table}' GROUP BY {group}"
            plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + query))
            # streamed in index order, so the token values come from the index, not the JSON
            assert index in plan and "TEMP B-TREE" not in plan, plan
        # report prompts / costs --recommend: the node's prompt version, provider and model
        from configurable_agents.observe.report.store import SQLITE_NODE_DIMS

        version, provider, model = SQLITE_NODE_DIMS
        tokens = SQLITE_NODE_TOKENS[0]
        for query, index in (
            (
                f"SELECT {version}, name, count(*), sum({tokens}) FROM spans "
                f"WHERE type = 'AGENT' AND {version} IS NOT NULL GROUP BY {version}, name",
                "ca_report_prompt_spans",
            ),
            (
                f"SELECT name, {provider}, {model}, count(*), sum({tokens}) FROM spans "
                f"WHERE type = 'AGENT' GROUP BY {provider}, {model}, name",
                "ca_report_node_models",
            ),
        ):
            plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + query))
            assert index in plan and "TEMP B-TREE" not in plan, plan
    db.close()


def test_ensure_report_indexes_needs_a_store(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ensure_report_indexes(f"sqlite:///{tmp_path / 'none.db'}")
    assert ensure_report_indexes("mysql://u@127.0.0.1:1/db") == []  # neither index nor rollup
    with pytest.raises(InputError, match="cannot open"):  # the store, or its driver
        ensure_report_indexes(f"postgresql://u@127.0.0.1:{_closed_port()}/db")


# --------------------------------------------------------------------------- the rollup


def _combinations(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**f, "status": status, "breakdown": breakdown, "aggregate_by": aggregate_by}
        for f in filters
        for status in (None, "succeeded", "failed")
        for breakdown in (False, True)
        for aggregate_by in (None, "daily", "weekly", "monthly")
    ]


def assert_rollup_matches_spans(
    uri: str, combinations: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> int:
    """Every combination gives the same report from the rollup (read with sqlite3 alone, and
    through SQLAlchemy) and from the span tables; returns how many the rollup answered."""
    from configurable_agents.observe.report import fast

    answered = 0
    for kwargs in combinations:
        rolled = cost_report(uri, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(fast, "collect", lambda *args, **kw: None)
            through_sqlalchemy = cost_report(uri, **kwargs)
        spans = cost_report(uri, backend="spans", **kwargs)
        assert spans.source.startswith("spans"), kwargs
        assert through_sqlalchemy.source == rolled.source, kwargs
        assert rolled.to_dict() == spans.to_dict() == through_sqlalchemy.to_dict(), kwargs
        assert rolled.to_csv() == spans.to_csv(), kwargs
        answered += rolled.source == "rollup"
    return answered


def test_the_rollup_and_the_span_tables_agree_on_every_flag_combination(store, monkeypatch):
    today = resolve_period("today")
    week = resolve_period("last_7_days")
    filters: list[dict[str, Any]] = [
        {},
        {"experiment": "reports"},
        {"experiment": "other"},
        {"workflow": "review_loop"},
        {"workflow": "no_such_flow"},
        {"start": today[0], "end": today[1]},
        {"start": week[0], "end": week[1], "experiment": "reports", "workflow": "retry_demo"},
        {"start": today[0] + 1},  # not on a 15-minute boundary: answered from the spans
    ]
    combinations = _combinations(filters)
    # the writer kept the rollup: all but the unaligned range come from it
    answered = assert_rollup_matches_spans(store.uri, combinations, monkeypatch)
    assert answered == len(combinations) - 24
    assert cost_report(store.uri, breakdown=True).runs == 8


def test_the_rollup_backfilled_by_report_index_agrees_with_the_spans(dated, tmp_path, monkeypatch):
    uri = copy_store(dated, tmp_path / "dated.db")
    # bulk copies bypass the writer: the rollup does not cover them yet
    assert cost_report(uri, **IN_2024).source == "spans-uncovered"
    result = invoke("report", "index", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert "ca_report_rollup (rebuilt for 1 experiment(s))" in result.stderr
    day = resolve_period(None, "2024-01-06", "2024-01-06")
    filters: list[dict[str, Any]] = [
        IN_2024,
        {"start": day[0], "end": day[1]},
        {"start": local_ms(2024, 1, 7), "workflow": "review_loop"},
        {"end": local_ms(2024, 2, 28), "experiment": "dated"},
        {"start": DATED["A"] + 1},
    ]
    combinations = _combinations(filters)
    answered = assert_rollup_matches_spans(uri, combinations, monkeypatch)
    assert answered == len(combinations) - 24
    only_a = cost_report(uri, start=DATED["A"], end=DATED["A"] + 3_600_000)
    assert only_a.runs == 1 and only_a.source == "rollup"  # the foreign trace is not ours


def test_the_writer_and_report_index_build_the_same_rollup(store, tmp_path):
    uri = copy_store(store.uri, tmp_path / "copy.db")
    query = "SELECT * FROM ca_report_rollup ORDER BY 1, 2, 3, 4, 5, 6, 7"
    written = sql(uri, query)
    assert {row[2] for row in written} == {"trace", "model", "node"}
    assert ensure_report_indexes(uri, rollup_mode="all") == ["ca_report_rollup (rebuilt)"]
    assert sql(uri, query) == written
    sql(uri, "DROP TABLE ca_report_rollup")
    assert ensure_report_indexes(uri) == ["ca_report_rollup"]
    assert sql(uri, query) == written


def test_the_writer_leaves_filling_the_rollup_of_a_big_store_to_report_index(
    store, tmp_path, monkeypatch
):
    from configurable_agents.observe.report import sql as report_sql

    uri = copy_store(store.uri, tmp_path / "copy.db")
    sql(uri, "DROP TABLE ca_report_rollup")
    monkeypatch.setattr(report_sql, "WRITER_BACKFILL_LIMIT", 7)  # the store has 8 traces
    assert ensure_report_indexes(uri) == []  # what the writer calls on its first open
    assert cost_report(uri).source == "spans-uncovered"
    assert ensure_report_indexes(uri, rollup_mode="stale") == ["ca_report_rollup"]
    assert cost_report(uri).source == "rollup"


def test_traces_the_rollup_does_not_know_are_read_from_the_spans(store, tmp_path):
    uri = copy_store(store.uri, tmp_path / "copy.db")
    before = cost_report(uri, breakdown=True)
    assert before.source == "rollup"
    # a trace written behind the writer's back (bulk copy: an older version, MLflow's client)
    source = store.runs["review_loop"][0].trace_id
    (added,) = _bench().copy_traces(uri, [source], [local_ms(2024, 3, 1, 12)])
    grown = cost_report(uri, breakdown=True)
    assert grown.source == "spans-uncovered" and grown.runs == before.runs + 1
    assert grown.to_dict() == cost_report(uri, breakdown=True, backend="spans").to_dict()
    # and one deleted
    sql(
        uri,
        *(
            f"DELETE FROM {table} WHERE {column} = '{added}'"
            for table, column in (
                ("spans", "trace_id"),
                ("trace_tags", "request_id"),
                ("trace_request_metadata", "request_id"),
                ("assessments", "trace_id"),
                ("trace_info", "request_id"),
            )
        ),
    )
    assert cost_report(uri, breakdown=True).source == "rollup"  # counts match again
    victim = store.runs["calculator_tools"][0].trace_id
    sql(
        uri,
        f"DELETE FROM spans WHERE trace_id = '{victim}'",
        f"DELETE FROM trace_info WHERE request_id = '{victim}'",
    )
    shrunk = cost_report(uri, breakdown=True)
    assert shrunk.source == "spans-uncovered" and shrunk.runs == before.runs - 1
    assert shrunk.to_dict() == cost_report(uri, breakdown=True, backend="spans").to_dict()
    result = invoke("report", "index", "--tracking-uri", uri)
    assert result.exit_code == 0 and "rebuilt for 1 experiment(s)" in result.stderr
    rebuilt = cost_report(uri, breakdown=True)
    assert rebuilt.source == "rollup" and rebuilt.to_dict() == shrunk.to_dict()
    # coverage is per experiment: a trace added to one leaves the others on the rollup
    _bench().copy_traces(uri, [store.runs["demo"][0].trace_id], [local_ms(2024, 3, 2)])
    assert cost_report(uri, experiment="reports").source == "rollup"
    assert cost_report(uri, experiment="other").source == "spans-uncovered"
    assert cost_report(uri).source == "spans-uncovered"


def test_the_cli_suggests_report_index_when_the_rollup_does_not_cover_the_store(
    store, tmp_path, monkeypatch
):
    from configurable_agents.cli import report as cli_report

    uri = copy_store(store.uri, tmp_path / "copy.db")
    monkeypatch.setattr(cli_report, "INDEX_TIP_RUNS", 1)
    result = invoke("report", "costs", "--tracking-uri", uri)
    assert result.exit_code == 0 and "tip:" not in result.stderr  # the rollup answered
    _bench().copy_traces(uri, [store.runs["demo"][0].trace_id], [local_ms(2024, 3, 1)])
    result = invoke("report", "costs", "--tracking-uri", uri)
    assert result.exit_code == 0
    assert "tip: `configurable-agents report index" in result.stderr


# --------------------------------------------------------------------------- schema revisions


def test_an_unknown_schema_revision_falls_back_to_search_traces_with_one_warning(
    store, monkeypatch, caplog
):
    from configurable_agents.observe.report import reports
    from configurable_agents.observe.trace import mlflow_sink

    expected = [cost_report(store.uri, breakdown=True), profile_report(store.uri)]
    # as if MLflow had moved on: the store's revision is not one the report SQL knows
    monkeypatch.setattr(mlflow_sink, "KNOWN_REVISIONS", frozenset({"0123456789ab"}))
    monkeypatch.setattr(reports, "_warned", set())
    with caplog.at_level("WARNING", logger="configurable_agents.observe"):
        got = [cost_report(store.uri, breakdown=True), profile_report(store.uri)]
        assert observability_status(store.uri)["traces_last_24h"] == 8
    assert [r.source for r in got] == ["search_traces", "search_traces"]
    assert [r.to_dict() for r in got] == [r.to_dict() for r in expected]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "MLflow schema revision 'dc11669786a5' is not one these reports" in warning
    assert "search_traces" in warning
    with pytest.raises(InputError, match="is not one these reports were written for"):
        cost_report(store.uri, backend="sql")
    with pytest.raises(InputError, match="nothing created"):
        ensure_report_indexes(store.uri)


def test_a_store_at_a_revision_no_one_here_knows_is_an_input_error(store, tmp_path):
    uri = copy_store(store.uri, tmp_path / "copy.db")
    sql(uri, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    result = invoke("report", "costs", "--tracking-uri", uri, "--breakdown")
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    assert result.stderr.count("warning:") == 1
    assert "'f00dfeedbeef' is not one these reports were written for" in result.stderr
    assert "MLflow cannot read" in result.stderr and "f00dfeedbeef" in result.stderr
    result = invoke("report", "index", "--tracking-uri", uri)
    assert result.exit_code == 2 and "nothing created" in result.stderr


def test_the_writer_and_the_reports_share_one_schema_revision():
    import tomllib

    from mlflow.store.db.utils import _get_latest_schema_revision

    from configurable_agents.observe.report.store import known_revisions
    from configurable_agents.observe.trace.mlflow_sink import KNOWN_REVISIONS

    assert known_revisions() is KNOWN_REVISIONS
    # the pin and the revision agree: the installed MLflow (within the pin) has this head
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for group in deps["project"]["optional-dependencies"].values() for d in group]
    assert any(d.replace(" ", "").startswith("mlflow>=3.17,<3.18") for d in pins), pins
    assert _get_latest_schema_revision() in KNOWN_REVISIONS


# --------------------------------------------------------------------------- errors


def test_a_missing_store_says_how_to_create_traces(tmp_path):
    with pytest.raises(InputError, match=r"no traces in .* yet") as err:
        cost_report(f"sqlite:///{tmp_path / 'missing.db'}")
    assert "--trace" in (err.value.issues[0].hint or "")
    assert not (tmp_path / "missing.db").exists()  # reports never create a store
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(InputError, match="not an MLflow tracking store"):
        cost_report(f"sqlite:///{empty}")


def test_a_relative_sqlite_uri_is_relative_to_the_current_directory(store, monkeypatch):
    path = Path(store.uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(path.parent)
    report = cost_report("sqlite:///mlflow.db", experiment="reports")
    assert report.runs == 7 and report.tracking_uri == store.uri


# --------------------------------------------------------------------------- CLI


def app() -> typer.Typer:
    main = typer.Typer()
    main.add_typer(report_app, name="report")
    main.add_typer(observability_app, name="observability")
    return main


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(app(), list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_cli_costs_prints_the_guide_layout(store):
    result = invoke("report", "costs", "--tracking-uri", store.uri, "--breakdown")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for heading in ("Cost Summary:", "Cost by Workflow:", "Cost by Model:", "Cost by Node:"):
        assert heading in out
    assert out.index("Cost by Workflow:") < out.index("Cost by Model:") < out.index("Cost by Node:")
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
    assert "Total Runs:" in lines["Total Runs"] and lines["Total Runs"].split()[-1] == "8"
    assert lines["Failed"].split()[-1] == "1"
    assert "review_loop/write" in out and "gpt-4o-mini" in out
    assert f"${2 * REVIEW_RUN:.6f}" in out
    assert result.stderr == ""


def test_cli_writes_json_and_csv_files(store, tmp_path):
    out = tmp_path / "costs.json"
    result = invoke("report", "costs", "--tracking-uri", store.uri, "--breakdown", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data == cost_report(store.uri, breakdown=True).to_dict()
    assert f"wrote {out}" in result.stderr

    table = tmp_path / "costs.csv"  # csv from the suffix
    result = invoke("report", "costs", "--tracking-uri", store.uri, "--breakdown", "-o", str(table))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))))
    assert list(rows[0]) == [
        "dimension",
        "name",
        "cost_usd",
        "runs",
        "input_tokens",
        "output_tokens",
        "total_tokens",
    ]
    assert rows[0]["dimension"] == "total" and rows[0]["runs"] == "8"
    by = {(r["dimension"], r["name"]): r for r in rows}
    assert float(by["workflow", "review_loop"]["cost_usd"]) == pytest.approx(2 * REVIEW_RUN)
    assert by["node", "review_loop/write"]["runs"] == "4"  # visits
    assert by["model", "gpt-4o-mini"]["runs"] == "3"  # calls
    assert float(rows[0]["cost_usd"]) == pytest.approx(
        sum(float(r["cost_usd"]) for r in rows if r["dimension"] == "workflow")
    )

    result = invoke(
        "report",
        "costs",
        "--tracking-uri",
        store.uri,
        "--aggregate-by",
        "monthly",
        "--format",
        "csv",
    )
    assert result.exit_code == 0
    (month,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert month["runs"] == "8" and month["period"] == dt.date.today().strftime("%Y-%m")


def test_cli_profile(store, tmp_path):
    result = invoke("report", "profile", "--tracking-uri", store.uri, "--workflow", "slow_fast")
    assert result.exit_code == 0, result.output
    assert "Time by Node" in result.stdout
    assert "Bottleneck: slow (slow_fast)" in result.stdout
    out = tmp_path / "profile.csv"
    result = invoke("report", "profile", "--tracking-uri", store.uri, "-o", str(out))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0]["node"] == "slow"
    retries = {(r["workflow"], r["node"]): r["retries"] for r in rows}
    assert retries["retry_demo", "score"] == "2"
    result = invoke("report", "profile", "--tracking-uri", store.uri, "--format", "json")
    assert json.loads(result.stdout)["bottleneck"]["node"] == "slow"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start-date", "2024-13-01"], "start date '2024-13-01' is not a date"),
        (["--period", "today", "--end-date", "2024-01-01"], "either a period or start/end"),
        (["--experiment", "nope"], "no experiment named 'nope'"),
    ],
)
def test_cli_bad_input_exits_2(store, args, message):
    result = invoke("report", "costs", "--tracking-uri", store.uri, *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


def test_cli_missing_store_and_missing_mlflow_exit_2(tmp_path, monkeypatch):
    result = invoke("report", "costs", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 2 and "no traces in" in result.stderr
    assert "hint: run a workflow with tracing on" in result.stderr
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "profile")  # default: sqlite:///mlflow.db here
    assert result.exit_code == 2 and str(tmp_path / "mlflow.db") in result.stderr
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # as if MLflow were not installed
    result = invoke("report", "costs", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 2
    assert 'pip install "configurable-agents[mlflow]"' in result.stderr


# --------------------------------------------------------------------------- status


def test_status_shows_where_traces_go_the_last_24h_and_the_last_error(store):
    from configurable_agents.observe.trace.spool import open_spool
    from configurable_agents.observe.trace.targets import MlflowTarget

    spool = open_spool()
    sink = spool.sink_id(MlflowTarget(store.uri, "reports").sink())
    spool.delivered(sink, [1])
    spool.note_error(sink, "OperationalError: database is locked")
    info = observability_status(store.uri, "reports")
    assert info["tracking_uri"] == store.uri and info["reachable"] is True
    assert info["traces_last_24h"] == 7 and info["experiments"] == ["reports"]
    assert info["last_error"] == "OperationalError: database is locked"
    assert info["last_error_at"] and info["last_success_at"]
    assert observability_status(store.uri)["traces_last_24h"] == 8
    result = invoke("observability", "status", "--tracking-uri", store.uri)
    assert result.exit_code == 0
    assert "Traces (24 h):  8" in result.stdout
    assert "database is locked" in result.stdout


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_of_an_unreachable_or_missing_store_is_reported(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    info = observability_status(uri)
    assert info["reachable"] is False and "cannot reach" in info["error"]
    result = invoke("observability", "status", "--tracking-uri", uri, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["reachable"] is False
    missing = observability_status(f"sqlite:///{tmp_path / 'none.db'}")
    assert missing["reachable"] is False and "does not exist" in missing["error"]
    assert "--trace" in missing["hint"]
    result = invoke("observability", "status", "--tracking-uri", uri)
    assert result.exit_code == 0 and "not readable" in result.stdout


def test_status_reads_the_tracking_uri_and_experiment_from_a_workflow(store, write_workflow):
    text = MINIMAL.replace(
        "config:\n",
        "config:\n  observability:\n    mlflow:\n"
        f"      enabled: true\n      tracking_uri: '{store.uri}'\n      experiment_name: other\n",
    )
    path = write_workflow(text)
    result = invoke("observability", "status", "--workflow", str(path), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["tracking_uri"], info["experiment"]) == (store.uri, "other")
    assert info["traces_last_24h"] == 1 and info["tracing_enabled"] is True


# --------------------------------------------------------------------------- other stores


def test_cost_report_on_postgresql(postgres_tracking_uri, tmp_path):
    mp = isolated(tmp_path)
    try:
        results = [
            traced(EXAMPLES / "review_loop.yaml", postgres_tracking_uri, "pg", {"topic": "b"})
        ]
        flushed(results)
    finally:
        mp.undo()
    report = cost_report(postgres_tracking_uri, breakdown=True)
    assert report.source == "rollup"  # kept by the writer, in the trace rows' transaction
    assert (report.runs, report.input_tokens, report.output_tokens) == (1, 62, 19)
    assert report.total_cost == pytest.approx(REVIEW_RUN)
    nodes = {n.node: n for n in report.by_node or []}
    assert (nodes["write"].input_tokens, nodes["review"].output_tokens) == (34, 13)
    assert [(m.model, m.calls, m.total_tokens) for m in report.by_model or []] == [
        ("gemini-2.5-flash", 4, 81)
    ]
    assert (
        report.to_dict()
        == cost_report(postgres_tracking_uri, breakdown=True, backend="rest").to_dict()
    )
    assert (
        profile_report(postgres_tracking_uri).to_dict()
        == profile_report(postgres_tracking_uri, backend="rest").to_dict()
    )
    for kwargs in _combinations([{}, {"workflow": "review_loop"}, {"start": local_ms(2024, 1, 1)}]):
        spans = cost_report(postgres_tracking_uri, backend="spans", **kwargs)
        assert cost_report(postgres_tracking_uri, **kwargs).to_dict() == spans.to_dict(), kwargs
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_tracking_uri, poolclass=sa.pool.NullPool)
    query = "SELECT * FROM ca_report_rollup ORDER BY 1, 2, 3, 4, 5, 6, 7"
    try:
        with engine.connect() as conn:
            written = conn.exec_driver_sql(query).all()
        assert ensure_report_indexes(postgres_tracking_uri, rollup_mode="all") == [
            "ca_report_rollup (rebuilt)"
        ]
        with engine.connect() as conn:
            assert conn.exec_driver_sql(query).all() == written
    finally:
        engine.dispose()


def test_cost_report_over_an_mlflow_server(mlflow_server, tmp_path):
    mp = isolated(tmp_path)
    try:
        flushed(
            [traced(EXAMPLES / "review_loop.yaml", mlflow_server.url, "server", {"topic": "b"})]
        )
    finally:
        mp.undo()
    over_http = cost_report(mlflow_server.url, experiment="server", breakdown=True)
    assert (over_http.runs, over_http.total_tokens) == (1, 81)
    assert over_http.total_cost == pytest.approx(REVIEW_RUN)
    in_db = cost_report(mlflow_server.backend_uri, experiment="server", breakdown=True)
    assert over_http.to_dict() | {"tracking_uri": ""} == in_db.to_dict() | {"tracking_uri": ""}
    info = observability_status(mlflow_server.url, "server")
    assert info["reachable"] is True and info["traces_last_24h"] == 1


def test_passwords_in_tracking_uris_are_never_shown(store, tmp_path):
    from configurable_agents.observe.report.store import UnknownSchema, database_error

    uri = f"postgresql://ana:s3cret@127.0.0.1:{_closed_port()}/traces"
    info = observability_status(uri)
    assert info["reachable"] is False and info["error"]
    assert "s3cret" not in json.dumps(info) and "ana:***@" in info["tracking_uri"]
    for command in ("costs", "profile", "index"):
        result = invoke("report", command, "--tracking-uri", uri)
        assert result.exit_code == 2 and "s3cret" not in result.output, command
        assert "ana:***@" in result.output
    assert "s3cret" not in str(UnknownSchema(uri, "x"))
    error = database_error(uri, RuntimeError(f"could not connect to {uri}: s3cret rejected"))
    assert "s3cret" not in str(error.issues[0].message)
