"""``run_batch``: a workflow over every row of a data file, into a results file.

The steps: load and compile the workflow, check the data file (``data.open_data``), check or
start the results file (``results``: a new batch id, or ``--resume`` of the batch the file
belongs to), then hand the rows not finished yet to the engine, writing each result line as
its row finishes. The summary is computed from the results file at the end, so a resumed
batch reports all its rows, not only this invocation's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..exceptions import InputError, Issue
from .data import DataSet, open_data, row_key
from .engine import Engine, EngineError, local_engine
from .results import BatchMeta, ResultsWriter, drop_failed, read_results
from .summary import BatchSummary, Tally, summarize
from .worker import RowJob, WorkflowSource, compiled_for


@dataclass
class BatchOptions:
    workflow: Path
    data: str
    output: Path = Path("results.jsonl")
    concurrency: int = 4
    resume: bool = False
    retry_failed: bool = False
    limit: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    id_field: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    max_cost: float | None = None
    trace: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    variant: str | None = None


class ProgressSink(Protocol):
    def start(self, total: int, tally: Tally) -> None: ...

    def advance(self, line: Mapping[str, Any], tally: Tally) -> None: ...

    def close(self) -> None: ...


def new_batch_id() -> str:
    return "b-" + time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()


def prepare_batch(opts: BatchOptions) -> tuple[WorkflowSource, DataSet, BatchMeta]:
    """Load everything a batch needs and check it; every problem is an ``InputError``."""
    if opts.concurrency < 1:
        raise InputError(Issue("--concurrency must be at least 1"))
    if opts.limit is not None and opts.limit < 1:
        raise InputError(Issue("--limit must be at least 1"))
    if opts.engine not in ("local", "ray"):
        raise InputError(Issue(f"unknown engine {opts.engine!r}", hint="use local or ray"))
    if opts.engine == "ray":
        from .ray_engine import import_ray

        import_ray(local=opts.ray_address is None)
    source = WorkflowSource.of(opts.workflow, opts.overrides)
    compiled = compiled_for(source)
    spec = compiled.workflow.spec
    required = [name for name, f in spec.state.fields.items() if f.required]
    data = open_data(
        opts.data,
        list(spec.state.fields),
        mapping=opts.mapping,
        id_field=opts.id_field,
        required=required,
    )
    meta = BatchMeta(
        batch_id=new_batch_id(),
        workflow=compiled.name,
        workflow_file=source.file,
        workflow_sha256=source.sha256,
        data_file=data.name if data.name == "<stdin>" else str(Path(data.name).resolve()),
        data_sha256=data.sha256,
        rows=data.count,
        id_field=opts.id_field,
        mapping=dict(opts.mapping),
        created=time.time(),
        variant=opts.variant,
    )
    return source, data, meta


def _start_results(opts: BatchOptions, meta: BatchMeta) -> tuple[BatchMeta, dict[str, str]]:
    """Check the results file against this batch; the rows it already has (key -> status)."""
    out = opts.output
    if out.is_dir():
        raise InputError(Issue("the results path is a directory", file=str(out)))
    exists = out.exists() and out.stat().st_size > 0
    if exists and not opts.resume:
        raise InputError(
            Issue(
                "the results file exists already",
                file=str(out),
                hint="pass --resume to finish that batch, or -o another file",
            )
        )
    if not exists:
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.write(out)
        return meta, {}
    old = BatchMeta.read(out)
    if old is None:
        raise InputError(
            Issue(
                "cannot resume: the results file has no batch identity next to it "
                f"({out.name}.batch.json)",
                file=str(out),
                hint="it was not written by configurable-agents batch; use -o another file",
            )
        )
    old.refuse_other(meta, out)
    if opts.retry_failed:
        read_results(out)  # repairs a torn last line first
        drop_failed(out)
    return old, read_results(out).status


def run_batch(opts: BatchOptions, progress: ProgressSink | None = None) -> BatchSummary:
    source, data, meta = prepare_batch(opts)
    try:
        return _run(opts, source, data, meta, progress)
    finally:
        data.close()


def _run(
    opts: BatchOptions,
    source: WorkflowSource,
    data: DataSet,
    meta: BatchMeta,
    progress: ProgressSink | None,
) -> BatchSummary:
    meta, finished = _start_results(opts, meta)
    from .mlflow_run import RUN_TAG, start_batch_run

    name = f"{opts.variant or 'batch'} {meta.batch_id}"
    mlflow_run = start_batch_run(compiled_for(source), opts.trace, meta.batch_id, name)
    tags = dict(opts.tags)
    if mlflow_run is not None:
        tags[RUN_TAG] = mlflow_run.run_id
    total = data.count if opts.limit is None else min(opts.limit, data.count)
    before = summarize(opts.output, total) if finished else None
    tally = Tally()
    if before is not None:
        tally.done, tally.failed = before.succeeded + before.failed, before.failed
        tally.cost_usd = before.cost_usd
    engine = _engine(opts, source)
    writer = ResultsWriter(opts.output)
    stop = threading.Event()
    lock = threading.Lock()
    stopped: str | None = None

    def done(line: dict[str, Any]) -> None:
        nonlocal stopped
        writer.write(line)
        with lock:
            tally.add(line)
            if opts.max_cost is not None and tally.cost_usd >= opts.max_cost and not stop.is_set():
                stopped = "max_cost"
                stop.set()
        if progress is not None:
            progress.advance(line, tally)

    def jobs() -> Iterator[RowJob]:
        for row in data.rows():
            if opts.limit is not None and row.index >= opts.limit:
                return
            status = finished.get(row_key(row.key))
            if status == "succeeded" or (status == "failed" and not opts.retry_failed):
                continue
            yield RowJob.of(row, meta.batch_id, tags, opts.trace)

    if opts.max_cost is not None and tally.cost_usd >= opts.max_cost:
        stopped = "max_cost"
    started = time.perf_counter()
    ran_before = tally.done
    if progress is not None:
        progress.start(total, tally)
    try:
        if stopped is None:
            engine.run(jobs(), done, stop)
    except KeyboardInterrupt:
        stop.set()
        stopped = "interrupted"
    except EngineError as exc:
        stopped = f"engine error: {exc}"
    finally:
        writer.close()
        if progress is not None:
            progress.close()
    summary = summarize(opts.output, total)
    summary.batch_id = meta.batch_id
    summary.workflow = meta.workflow
    summary.results = str(opts.output)
    summary.data = data.name
    summary.engine = engine.name
    summary.stopped = stopped
    summary.seconds = time.perf_counter() - started
    summary.ran = tally.done - ran_before
    if mlflow_run is not None:
        summary.mlflow_run_id = mlflow_run.run_id
        params = {
            "workflow": meta.workflow,
            "workflow_file": meta.workflow_file,
            "data_file": meta.data_file,
            "engine": engine.name,
            "concurrency": opts.concurrency,
            "variant": opts.variant,
            **{f"set.{k}": v for k, v in opts.overrides.items()},
        }
        mlflow_run.finish(summary, params)
    return summary


def _engine(opts: BatchOptions, source: WorkflowSource) -> Engine:
    if opts.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(
            source, opts.concurrency, workers=opts.ray_workers, address=opts.ray_address
        )
    return local_engine(source, opts.concurrency)
