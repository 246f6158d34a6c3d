"""A detached drainer started soon after the last one exited lingers, holding its sink locks,
so a trickle of traced runs (a batch on a slow model, a quiet server) pays for one drainer and
one MLflow import, not one per run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from configurable_agents.observe.trace import drain
from configurable_agents.observe.trace.drain import EXITED_AT, LINGER, Drainer, linger_for
from configurable_agents.observe.trace.spool import FORMAT, SinkRef, SpoolRecord, open_spool

SINK = SinkRef("otlp", '{"endpoint": "http://127.0.0.1:9/v1/traces"}')


def test_a_drainer_lingers_only_after_a_recent_exit(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    assert linger_for(spool, 3.0) == 3.0  # no drainer ever exited here
    spool.set_counter(EXITED_AT, int(time.time()) - 120)
    assert linger_for(spool, 3.0) == 3.0  # long ago
    spool.set_counter(EXITED_AT, int(time.time()) - 5)
    assert linger_for(spool, 3.0) == LINGER


def test_an_exiting_drainer_leaves_the_hint(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    Drainer(spool).run_detached(idle_exit=0.1)
    assert time.time() - spool.counter(EXITED_AT) < 5


def test_a_lingering_drainer_keeps_its_sink_locks_while_idle(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool.db")
    sink = spool.sink_id(SINK)
    spool.append(SpoolRecord(FORMAT, "run", {}), [SINK])

    class Accepting:
        def write(self, batch: Any) -> drain.WriteResult:  # a sink that takes everything
            return drain.WriteResult(delivered=[record_id for record_id, _ in batch])

        def close(self) -> None:
            pass

    for hold in (False, True):
        drainer = Drainer(spool, factories={"otlp": lambda target, path: Accepting()})
        drainer.hold = hold
        if hold:
            spool.append(SpoolRecord(FORMAT, "run", {}), [SINK])
        assert drainer.step() == 1 and spool.pending() == 0
        drainer.step()  # nothing due now
        assert drain.sink_is_free(spool, sink) is not hold  # a new run sees it served
        drainer.close()
    assert drain.sink_is_free(spool, sink)
