"""``batch --engine ray`` on a local Ray (2 workers, bound to 127.0.0.1): every row once, with
a worker killed in the middle of the batch; the install hint when Ray is missing."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from configurable_agents.batch.data import open_data
from configurable_agents.batch.worker import RowJob, WorkflowSource
from configurable_agents.exceptions import MissingExtraError

from test_batch import data, workflow


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from configurable_agents.batch.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError) as exc:
        import_ray()
    assert exc.value.issues[0].hint == 'pip install "configurable-agents[ray]"'


def test_no_row_is_lost_when_a_ray_worker_is_killed(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from configurable_agents.batch.ray_engine import RayEngine

    source = WorkflowSource.of(workflow(tmp_path, latency=50))
    rows = open_data(str(data(tmp_path, 40)), ["topic", "n", "article"]).rows()
    engine = RayEngine(source, 4, workers=2)
    lines: list[dict] = []
    killed: list[int] = []

    def done(line: dict) -> None:
        lines.append(line)
        if len(lines) == 10:  # rows of both workers are in flight now
            killed.append(engine.worker_pids[0])
            os.kill(engine.worker_pids[0], signal.SIGKILL)

    engine.run((RowJob.of(r, "b-ray", {}, False) for r in rows), done, threading.Event())
    assert killed and engine.restarts >= 1
    assert Counter(line["row"] for line in lines) == Counter(range(40))
    assert all(line["status"] == "succeeded" for line in lines)
    import ray

    assert not ray.is_initialized()  # the local Ray it started is shut down


def test_local_ray_actors_share_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer actors than cores on a local Ray: each asks Ray for its share of the cores (and
    gives its local model that many threads); on a cluster, one CPU each."""
    pytest.importorskip("ray")
    from configurable_agents.batch import ray_engine

    monkeypatch.setattr(ray_engine, "usable_cores", lambda: 4)
    source = WorkflowSource.of(workflow(tmp_path, latency=0))
    assert ray_engine.RayEngine(source, 1).actor_cpus == 4
    assert ray_engine.RayEngine(source, 8, workers=2).actor_cpus == 2
    assert ray_engine.RayEngine(source, 8).actor_cpus == 1  # four workers, one core each
    assert ray_engine.RayEngine(source, 1, address="ray://10.0.0.1:10001").actor_cpus == 1
