"""Where our per-run overhead goes (diagnostic companion of ``bench/overhead.py``).

Times, interleaved in alternating blocks, the hand-written LangGraph graph and our executor,
plus variants of our executor with one cost removed by monkeypatching *in this process only*
(nothing under ``src/`` is changed):

* ``ours-inline``: ``run/node.py`` runs ``_execute`` on the calling thread instead of
  submitting it to the ``_pool`` ThreadPoolExecutor (no per-node thread hop);
* ``ours-inline-cachedTA``: additionally, ``run/inputs.py`` reuses one pydantic
  ``TypeAdapter`` per type instead of building one per input per run.

The differences between medians attribute the gap. ``--cprofile`` then prints the top
functions of our path (inline variant, since cProfile only sees the calling thread).

    python bench/profile_overhead.py [--runs 1000] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pydantic import TypeAdapter

import configurable_agents as ca
import overhead as ob
from configurable_agents.run import inputs as inputs_mod
from configurable_agents.run import node as node_mod


class InlineExecutor:
    """Runs submitted work immediately on the calling thread (no timeout enforcement)."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the future, like a pool
            future.set_exception(exc)
        return future


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


class _CachedTypeAdapter:
    """Stand-in for ``TypeAdapter`` inside ``run/inputs.py``: one adapter per annotation."""

    def __new__(cls, annotation: Any) -> TypeAdapter:  # type: ignore[misc]
        return _adapter(annotation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per variant")
    parser.add_argument("--block", type=int, default=50, help="runs per alternating block")
    parser.add_argument("--cprofile", action="store_true", help="also cProfile our path")
    args = parser.parse_args(argv)

    compiled = ca.compile_workflow(ca.load_workflow(ob.WORKFLOW))
    hand = ob.build_hand_graph(compiled.nodes["write"].model)
    hand_state = {"topic": ob.INPUTS["topic"], "title": "", "article": "", "tags": []}
    real_pool, real_ta = node_mod._pool, inputs_mod.TypeAdapter

    def patched(inline: bool, cached_ta: bool) -> Callable[[], Any]:
        def run() -> Any:
            node_mod._pool = InlineExecutor() if inline else real_pool  # type: ignore[assignment]
            inputs_mod.TypeAdapter = _CachedTypeAdapter if cached_ta else real_ta  # type: ignore[assignment,misc]
            try:
                return ca.run_workflow(compiled, ob.INPUTS)
            finally:
                node_mod._pool, inputs_mod.TypeAdapter = real_pool, real_ta

        return run

    variants: dict[str, Callable[[], Any]] = {
        "hand": lambda: hand.invoke(dict(hand_state)),
        "ours": patched(False, False),
        "ours-inline": patched(True, False),
        "ours-inline-cachedTA": patched(True, True),
    }
    for _ in range(100):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    gc.collect()
    for block in range(max(1, args.runs // args.block)):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:
            fn, bucket = variants[name], times[name]
            for _ in range(args.block):
                t0 = time.perf_counter_ns()
                fn()
                bucket.append((time.perf_counter_ns() - t0) / 1000)

    hand_med = statistics.median(times["hand"])
    print(f"per-run medians, {len(times['hand'])} runs per variant, rotating blocks")
    for name in names:
        med = statistics.median(times[name])
        print(f"  {name:<22} {med:8.1f} µs  {med / hand_med:5.2f}x hand  {med - hand_med:+7.1f} µs")

    if args.cprofile:
        run = patched(True, False)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(500):
            run()
        profiler.disable()
        stats = pstats.Stats(profiler)
        print("\ncProfile of ours-inline, 500 runs, configurable_agents functions by cumtime:")
        stats.sort_stats("cumtime").print_stats("configurable_agents", 15)
        print("all functions by tottime:")
        stats.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
