"""``examples/article_writer.yaml`` on topics it was not tuned on: how often its outputs pass.

Runs the shipped example as is (its model, temperature, seed and ``structured`` strategy;
tracing off) once per topic of ``HELD_OUT`` (topics chosen before any of these runs and not used
while tuning prompts) and checks each run against the issue's targets:

* outputs valid (the run succeeded: every output validated)             target 100 %
* article of >= 15 words that names the topic (a word of it, 4+ letters) target >= 90 %
* title of 1-12 words that is not the article (nor its first sentence)  target >= 90 %
* 1-5 tags, each a string of at most 3 words                            target >= 90 %

    python bench/article_writer.py [--topics 20] [--threads N] [-v]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from configurable_agents import compile_workflow, load_workflow, run_workflow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "article_writer.yaml"
# Written down once, before measuring; none of them was used while tuning the prompts.
HELD_OUT = [
    "lighthouses",
    "penguins",
    "the Great Wall of China",
    "composting",
    "hot air balloons",
    "earthquakes",
    "jazz music",
    "electric cars",
    "the Roman Empire",
    "sourdough bread",
    "coral reefs",
    "marathon running",
    "honey bees",
    "glaciers",
    "origami",
    "the internet",
    "chess",
    "wind turbines",
    "octopuses",
    "public libraries",
]
TARGETS = {"valid": 1.0, "article": 0.9, "title": 0.9, "tags": 0.9}


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def names_topic(text: str, topic: str) -> bool:
    low = text.lower()
    keys = [w.lower() for w in words(topic) if len(w) >= 4] or [topic.lower()]
    # "octopuses" -> "octopus", "glaciers" -> "glacier": match on a stem of the word
    return any(k[: max(4, len(k) - 2)] in low for k in keys)


def judge(topic: str, out: dict[str, Any]) -> dict[str, bool]:
    article, title, tags = out.get("article", ""), out.get("title", ""), out.get("tags", [])
    first = re.split(r"(?<=[.!?])\s", article.strip(), maxsplit=1)[0]
    return {
        "article": len(words(article)) >= 15 and names_topic(article, topic),
        "title": 1 <= len(words(title)) <= 12
        and title.strip() not in (article.strip(), first.strip()),
        "tags": 1 <= len(tags) <= 5
        and all(isinstance(t, str) and 1 <= len(words(t)) <= 3 for t in tags),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=len(HELD_OUT))
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp n_threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every output")
    args = parser.parse_args(argv)

    loaded = load_workflow(EXAMPLE)
    if args.threads:
        loaded.spec.config.llm.n_threads = args.threads
    compiled = compile_workflow(loaded)
    counts = {k: 0 for k in TARGETS}
    topics = HELD_OUT[: args.topics]
    seconds = []
    for topic in topics:
        t0 = time.perf_counter()
        result = run_workflow(compiled, {"topic": topic}, trace=False)
        seconds.append(time.perf_counter() - t0)
        ok = {"valid": result.succeeded, **judge(topic, result.outputs)}
        for key, passed in ok.items():
            counts[key] += passed
        if args.verbose or not all(ok.values()):
            failed = ", ".join(k for k, v in ok.items() if not v) or "-"
            print(f"[{topic}] failed: {failed}")
            for key in ("title", "article", "tags"):
                print(f"    {key}: {result.outputs.get(key)!r}")
    model = compiled.nodes["write"].model_name
    print(
        f"\narticle_writer.yaml on {len(topics)} held-out topics ({model}, structured: "
        f"{compiled.nodes['write'].structured_mode}; {sum(seconds) / len(seconds):.1f} s/run)"
    )
    ok_all = True
    labels = {
        "valid": "outputs valid",
        "article": "article >= 15 words naming the topic",
        "title": "title 1-12 words, not the article",
        "tags": "tags: 1-5 strings of <= 3 words",
    }
    for key, target in TARGETS.items():
        share = counts[key] / len(topics)
        verdict = "PASS" if share >= target else "FAIL"
        ok_all &= verdict == "PASS"
        print(
            f"  {labels[key]:<40} {counts[key]:>3}/{len(topics)} = {share:>4.0%}  "
            f"target >= {target:.0%}  {verdict}"
        )
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
