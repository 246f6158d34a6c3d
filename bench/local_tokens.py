"""Local provider generation speed: ``ChatLocalLlama`` vs raw llama-cpp-python.

The model is the default one (SmolLM2-135M-Instruct) unless ``--model gemma-3-270m``; its
chat format is the GGUF file's own template on both sides (the same ``Llama`` object).

Both sides use the very same ``llama_cpp.Llama`` object (from
``configurable_agents.providers.local.shared_llama``), the same chat messages, temperature 0,
the same seed and the same ``max_tokens``. Two pairs are measured:

* **plain**: free text generation (no ``response_format``);
* **json**: generation constrained by a JSON-schema ``response_format`` (the grammar is built by
  llama-cpp-python on both sides).

tokens/s = completion tokens / wall time of the whole call (raw: ``usage.completion_tokens``
around ``llama.create_chat_completion``; ours: ``usage_metadata["output_tokens"]`` around
``ChatLocalLlama.invoke``). Raw and ours alternate (the first one flips every repetition) after
one untimed warm-up call each; medians are reported.

    python bench/local_tokens.py [--reps 5] [--max-tokens 128] [--threads N] [--model NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from langchain_core.messages import HumanMessage

from configurable_agents.providers.local import BUNDLED, DEFAULT_MODEL, ChatLocalLlama, shared_llama

TARGET = 0.95  # ours / raw tokens per second, at least
N_CTX = 2048
SEED = 7
PROMPTS = {
    "plain": "Write a long, detailed story about a lighthouse keeper who finds a message "
    "in a bottle. Describe the sea, the weather and the keeper's daily routine.",
    "json": "Write a short article about tide pools, with a title.",
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "article": {"type": "string", "minLength": 1},
    },
    "required": ["title", "article"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed calls per side and mode")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every call")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama.cpp n_threads (default: all cores, as the provider does); 1 is steadier "
        "on a busy machine",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, choices=sorted(BUNDLED), help="bundled model name"
    )
    args = parser.parse_args(argv)

    path = BUNDLED[args.model].locate()
    started = time.perf_counter()
    llama, lock = shared_llama(path, N_CTX, args.threads, SEED)
    print(f"model: {path} (loaded in {time.perf_counter() - started:.1f} s)")
    chat = ChatLocalLlama(
        model_name=args.model,
        n_ctx=N_CTX,
        n_threads=args.threads,
        seed=SEED,
        temperature=0.0,
        max_tokens=args.max_tokens,
    )
    assert chat.load()[0] is llama, "ChatLocalLlama must use the same Llama instance"

    def raw(prompt: str, response_format: dict[str, Any] | None) -> tuple[int, float, str]:
        params: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": args.max_tokens,
            "stop": None,
            "seed": SEED,
            # the provider's default for this model, same on both sides
            "repeat_penalty": chat.default_repeat_penalty(),
        }
        if response_format is not None:
            params["response_format"] = response_format
        t0 = time.perf_counter()
        with lock:
            reply = llama.create_chat_completion(**params)
        wall = time.perf_counter() - t0
        text = reply["choices"][0]["message"]["content"] or ""
        return int(reply["usage"]["completion_tokens"]), wall, text

    def ours(prompt: str, response_format: dict[str, Any] | None) -> tuple[int, float, str]:
        kwargs = {"response_format": response_format} if response_format is not None else {}
        t0 = time.perf_counter()
        message = chat.invoke([HumanMessage(prompt)], **kwargs)
        wall = time.perf_counter() - t0
        usage = message.usage_metadata or {}
        return int(usage.get("output_tokens", 0)), wall, str(message.content)

    modes: dict[str, dict[str, Any] | None] = {
        "plain": None,
        "json": {"type": "json_object", "schema": JSON_SCHEMA},
    }
    sides = {"raw": raw, "ours": ours}
    results: dict[str, dict[str, list[tuple[int, float]]]] = {}
    ok = True
    for mode, fmt in modes.items():
        prompt = PROMPTS[mode]
        texts = {name: fn(prompt, fmt)[2] for name, fn in sides.items()}  # warm-up, untimed
        if texts["raw"] != texts["ours"]:
            print(f"  warning: {mode}: raw and ours generated different text")
        results[mode] = {"raw": [], "ours": []}
        for rep in range(args.reps):
            order = ["raw", "ours"] if rep % 2 == 0 else ["ours", "raw"]
            for name in order:
                tokens, wall, _ = sides[name](prompt, fmt)
                results[mode][name].append((tokens, wall))

    print(
        f"local provider tokens/s vs raw llama-cpp-python (max_tokens={args.max_tokens}, "
        f"temperature 0, n_threads={args.threads or 'all'}, {args.reps} alternating "
        "reps/side, medians)"
    )
    print(
        f"  {'mode':<6} {'tokens':>6} {'raw tok/s':>10} {'ours tok/s':>11} {'ours/raw':>9}  verdict"
    )
    for mode, by_side in results.items():
        rate = {name: statistics.median(t / w for t, w in runs) for name, runs in by_side.items()}
        tokens = statistics.median(t for t, _ in by_side["ours"])
        ratio = rate["ours"] / rate["raw"]
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        ok &= verdict == "PASS"
        print(
            f"  {mode:<6} {tokens:>6.0f} {rate['raw']:>10.1f} {rate['ours']:>11.1f} "
            f"{ratio:>8.3f}x  {verdict} (target >= {TARGET:.2f}x)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
