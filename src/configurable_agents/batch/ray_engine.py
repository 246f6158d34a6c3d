"""The Ray engine: rows as calls to Ray actors, each holding the compiled workflow (and its
``local`` model) once.

Without ``--ray-address`` it starts a local Ray bound to 127.0.0.1 only (no dashboard) that
shares the usable cores among the workers (each actor's local model gets that many threads) and
shuts it down at the end; with an address it joins that cluster and leaves it
running. The driver keeps ``concurrency`` rows in flight at most, spread over the actors
(each actor runs up to ``ceil(concurrency / workers)`` rows at once in threads, one for the
``local`` provider), and writes every result line itself, as rows finish.

Traces: each actor process has the observer, so it spools its rows' traces to the workflow's
spool on its machine and a drainer there writes them to the workflow's MLflow store (which a
cluster's workers must be able to reach; a ``sqlite:`` store works for a local Ray only).
Before shutting down, the driver asks every actor to flush. The driver never holds traces: no
shipping of span trees through Ray's object store, and a dead driver loses none.

A worker that dies (killed, out of memory, segfault) fails the calls it had in flight with
``RayActorError``: the driver starts a new actor in its place and runs those rows again
(``MAX_ATTEMPTS`` times at most; a row that keeps killing its worker is a failed row,
``WorkerDied``). No row is lost, and each is written once.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterable
from typing import Any

from ..exceptions import MissingExtraError
from ..providers.local import set_default_threads, usable_cores
from .engine import Done
from .worker import RowJob, WorkflowSource, compiled_for, failed_line, run_row

MAX_ATTEMPTS = 3
ACTOR_CPUS = 1  # Ray CPUs per actor on a cluster, and so its local model's llama.cpp threads
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # a local Ray's object store (rows are small)


# Ray resolves 127.0.0.1 to the machine's address and listens on every interface unless it
# runs "without clusters" (its setting for laptops, read when ``ray`` is imported): a local Ray
# started for one batch then binds its GCS, raylet and workers to 127.0.0.1 only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(local: bool = True) -> Any:
    """``ray``, or the install hint; ``local``: a Ray started here binds to 127.0.0.1."""
    if local:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray", "--engine ray") from None
    return ray


class BatchWorker:
    """The actor: one compiled workflow per Ray worker process."""

    def __init__(self, source: WorkflowSource, cpus: int = ACTOR_CPUS) -> None:
        import configurable_agents  # noqa: F401 - installs the observer in this process

        set_default_threads(cpus)  # a local model's threads: the CPUs Ray gave the actor
        self.compiled = compiled_for(source)
        self.pid = os.getpid()

    def run(self, job: RowJob) -> dict[str, Any]:
        return run_row(self.compiled, job)

    def info(self) -> int:
        return self.pid

    def flush(self, timeout: float) -> bool:
        import configurable_agents

        return bool(configurable_agents.flush(timeout))


class RayEngine:
    name = "ray"

    def __init__(
        self,
        source: WorkflowSource,
        concurrency: int,
        *,
        workers: int | None = None,
        address: str | None = None,
    ) -> None:
        self.ray = import_ray(local=address is None)
        self.source = source
        self.concurrency = concurrency
        self.workers = max(1, min(workers or min(concurrency, usable_cores()), concurrency))
        # A local Ray shares this machine's cores among the actors (fewer actors than cores:
        # more threads each for a local model); a cluster's actors take one CPU each.
        self.actor_cpus = ACTOR_CPUS if address else max(1, usable_cores() // self.workers)
        self.address = address
        compiled = compiled_for(source)
        self.local_model = any(n.provider.name == "local" for n in compiled.nodes.values())
        self.restarts = 0
        self.started_here = False
        self.actors: list[Any] = []
        self.worker_pids: list[int] = []

    # ------------------------------------------------------------------ cluster

    def start(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        env = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        runtime_env = {"env_vars": env}
        if self.address:
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(
                num_cpus=self.workers * self.actor_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                object_store_memory=OBJECT_STORE_BYTES,
                runtime_env=runtime_env,
                log_to_driver=False,
                configure_logging=False,
            )
            self.started_here = True

    def stop(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # it may be dead already
                self.ray.kill(actor)
        self.actors = []
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False

    def _actor(self) -> Any:
        per_actor = 1 if self.local_model else math.ceil(self.concurrency / self.workers)
        cls = self.ray.remote(num_cpus=self.actor_cpus, max_concurrency=per_actor)(BatchWorker)
        return cls.remote(self.source, self.actor_cpus)

    def pids(self) -> list[int]:
        return [int(p) for p in self.ray.get([a.info.remote() for a in self.actors])]

    # ------------------------------------------------------------------ rows

    def run(self, jobs: Iterable[RowJob], done: Done, stop: threading.Event) -> None:
        self.start()
        try:
            self.actors = [self._actor() for _ in range(self.workers)]
            self.worker_pids = self.pids()  # waits until every actor has loaded the workflow
            self._loop(iter(jobs), done, stop)
            self.flush()
        finally:
            self.stop()

    def _loop(self, jobs: Any, done: Done, stop: threading.Event) -> None:
        ray = self.ray
        # ref -> (job, actor slot, the actor, attempt)
        in_flight: dict[Any, tuple[RowJob, int, Any, int]] = {}
        load = [0] * len(self.actors)
        retry: list[tuple[RowJob, int]] = []
        exhausted = False
        while True:
            while len(in_flight) < self.concurrency and not stop.is_set():
                if retry:
                    job, attempt = retry.pop()
                else:
                    upcoming = None if exhausted else next(jobs, None)
                    if upcoming is None:
                        exhausted = True
                        break
                    job, attempt = upcoming, 1
                slot = load.index(min(load))
                actor = self.actors[slot]
                in_flight[actor.run.remote(job)] = (job, slot, actor, attempt)
                load[slot] += 1
            if not in_flight:
                return
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                job, slot, actor, attempt = in_flight.pop(ref)
                load[slot] -= 1
                try:
                    line = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    self._replace(slot, actor)
                    if attempt < MAX_ATTEMPTS:
                        retry.append((job, attempt + 1))
                        continue
                    line = failed_line(
                        job.key,
                        "WorkerDied",
                        f"the Ray worker running this row died {attempt} times: "
                        f"{str(exc).splitlines()[0]}",
                    )
                done(line)

    def _replace(self, slot: int, dead: Any) -> None:
        """``dead`` (the actor in ``slot``) died: start another there, once per death."""
        if self.actors[slot] is not dead:
            return  # another of its calls already replaced it
        self.actors[slot] = self._actor()
        self.restarts += 1

    def flush(self, timeout: float = 60.0) -> None:
        refs = [actor.flush.remote(timeout) for actor in self.actors]
        with contextlib.suppress(Exception):  # traces stay in the spool, drained later
            self.ray.get(refs, timeout=timeout + 5)
