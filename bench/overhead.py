"""Framework overhead per run: our executor vs a hand-written LangGraph graph.

Both sides run the same 2-node workflow (``bench/two_node.yaml``) on the same zero-latency
``TestChatModel`` instance, making the same model calls:

* **ours**: ``run_workflow(compiled, inputs)`` with the workflow compiled once.
* **hand**: a ``StateGraph`` written by hand with the same 2 nodes; each formats its prompt with
  an f-string, calls ``model.with_structured_output(schema, include_raw=True)
  .bind(ca_node=..., ca_visit=0).invoke([HumanMessage(prompt)])``, validates the reply with the
  same pydantic model and returns the state update.

Runs alternate in blocks (ours first in even blocks, hand first in odd ones) so machine noise
hits both sides alike; each run is timed on its own and medians are reported.

    python bench/overhead.py [--runs 2000] [--block 50] [--warmup 200]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

import configurable_agents as ca

WORKFLOW = Path(__file__).with_name("two_node.yaml")
INPUTS = {"topic": "tide pools"}
TARGET = 1.2  # ours / hand, at most


class WriteOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(..., description="the article's title")
    article: str = Field(..., description="the article text")


class TagOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(..., description="three one-word tags")


class HandState(TypedDict):
    topic: str
    title: str
    article: str
    tags: list[str]


def build_hand_graph(model: Any) -> Any:
    """The same workflow written directly against LangGraph."""
    write_schema = WriteOutput.model_json_schema()
    tag_schema = TagOutput.model_json_schema()

    def call(node: str, schema: dict[str, Any], prompt: str) -> Any:
        runnable = model.with_structured_output(schema, include_raw=True).bind(
            ca_node=node, ca_visit=0
        )
        return runnable.invoke([HumanMessage(prompt)])["parsed"]

    def write(state: HandState) -> dict[str, Any]:
        prompt = (
            f"Write a short article of three sentences about {state['topic']}.\nGive it a title.\n"
        )
        out = WriteOutput.model_validate(call("write", write_schema, prompt))
        return {"title": out.title, "article": out.article}

    def tag(state: HandState) -> dict[str, Any]:
        prompt = (
            f"List three one-word tags for this article.\n\n{state['title']}\n{state['article']}\n"
        )
        out = TagOutput.model_validate(call("tag", tag_schema, prompt))
        return {"tags": out.tags}

    builder = StateGraph(HandState)
    builder.add_node("write", write)
    builder.add_node("tag", tag)
    builder.add_edge(START, "write")
    builder.add_edge("write", "tag")
    builder.add_edge("tag", END)
    return builder.compile()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="timed runs per side")
    parser.add_argument("--block", type=int, default=50, help="runs per alternating block")
    parser.add_argument("--warmup", type=int, default=200, help="untimed runs per side first")
    args = parser.parse_args(argv)

    compiled = ca.compile_workflow(ca.load_workflow(WORKFLOW))
    model = compiled.nodes["write"].model  # the same TestChatModel instance on both sides
    assert model is compiled.nodes["tag"].model
    assert compiled.nodes["write"].json_schema == WriteOutput.model_json_schema()
    assert compiled.nodes["tag"].json_schema == TagOutput.model_json_schema()
    hand = build_hand_graph(model)
    hand_state = {"topic": INPUTS["topic"], "title": "", "article": "", "tags": []}

    def run_ours() -> dict[str, Any]:
        result = ca.run_workflow(compiled, INPUTS)
        assert result.status == "succeeded", result.error
        return result.outputs

    def run_hand() -> dict[str, Any]:
        final = hand.invoke(dict(hand_state))
        return {k: final[k] for k in ("title", "article", "tags")}

    ours_out, hand_out = run_ours(), run_hand()
    assert ours_out == hand_out, (ours_out, hand_out)

    for _ in range(args.warmup):
        run_ours()
        run_hand()

    times: dict[str, list[float]] = {"ours": [], "hand": []}
    sides = [("ours", run_ours), ("hand", run_hand)]
    done = 0
    block_no = 0
    gc.collect()
    while done < args.runs:
        n = min(args.block, args.runs - done)
        order = sides if block_no % 2 == 0 else sides[::-1]
        for name, fn in order:
            bucket = times[name]
            for _ in range(n):
                t0 = time.perf_counter_ns()
                fn()
                bucket.append((time.perf_counter_ns() - t0) / 1000)
        done += n
        block_no += 1

    ours = statistics.median(times["ours"])
    hand_med = statistics.median(times["hand"])
    ratio = ours / hand_med
    q = {k: statistics.quantiles(v, n=10) for k, v in times.items()}
    print(
        f"framework overhead per run, 2-node workflow, provider test ({args.runs} runs/side, "
        f"alternating blocks of {args.block})"
    )
    print(f"  {'side':<6} {'median µs':>10} {'p10 µs':>9} {'p90 µs':>9}")
    print(f"  {'ours':<6} {ours:>10.1f} {q['ours'][0]:>9.1f} {q['ours'][-1]:>9.1f}")
    print(f"  {'hand':<6} {hand_med:>10.1f} {q['hand'][0]:>9.1f} {q['hand'][-1]:>9.1f}")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"  ratio ours/hand = {ratio:.2f}x (target <= {TARGET:.1f}x): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
