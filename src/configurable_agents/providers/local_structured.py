"""Typed outputs on the local provider: JSON-schema-constrained decoding with tight schemas.

Small models fill JSON badly when the grammar leaves them room: they answer ``""``, repeat one
list item until ``max_tokens`` runs out, or write a whole paragraph into a tag. So the grammar
the decoder gets is a *tightened* copy of the node's schema (``guide_schema``): non-empty
strings, at most ``MAX_LIST_ITEMS`` list items (at least one), list items of at most
``MAX_ITEM_CHARS`` characters. Bounds the field declares (``config.bounds``: ``minItems``,
``maxItems``, ``minLength``, ``maxLength`` in the schema) win over those defaults and are kept
by llama.cpp's grammar; an ``int`` bounded on both sides by a small range is given as the enum
of its values (the grammar has no ``minimum``/``maximum``). The prompt ends with one line
naming the keys to answer with (and their descriptions). The reply is still validated
against the node's real ``output_schema`` by the node runtime.

``text_options`` serves the ``per_field`` strategy (``run.fields``): where the answer of a
free-text field stops.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableLambda

from .base import parse_json_reply

if TYPE_CHECKING:
    from .local import ChatLocalLlama

MAX_LIST_ITEMS = 5
MAX_ITEM_CHARS = 40  # a list item is a word or a short phrase, not a paragraph
MAX_ENUM_RANGE = 1000  # an int field bounded by ge and le closer than this: an enum grammar
# On the bundled tiny models a list item is at most three words (no underscores or brackets):
# left more room they write clauses ("is a wondrous place") or glue words with "_".
SHORT_ITEM_PATTERN = r'^[^ \n\t_{}\[\]"\\]+( [^ \n\t_{}\[\]"\\]+){0,2}$'


def guide_schema(schema: dict[str, Any], short_items: bool = False) -> dict[str, Any]:
    """A copy of ``schema`` that asks the decoder for non-empty strings and short lists (with
    ``short_items``, list items of at most three words)."""
    guided = copy.deepcopy(schema)

    def visit(node: Any, in_list: bool = False) -> None:
        if isinstance(node, list):
            for value in node:
                visit(value, in_list)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "string":
            node.setdefault("minLength", 1)
            if in_list:
                node.setdefault("maxLength", MAX_ITEM_CHARS)
                if short_items:
                    node.setdefault("pattern", SHORT_ITEM_PATTERN)
        elif kind == "array":
            # a declared size (the field's min_items / max_items) wins over the defaults
            node.setdefault("maxItems", max(MAX_LIST_ITEMS, node.get("minItems", 0)))
            node.setdefault("minItems", min(1, node["maxItems"]))
        elif kind == "integer" and "enum" not in node:
            low, high = node.get("minimum"), node.get("maximum")
            # llama.cpp's grammar ignores minimum/maximum; a small range becomes an enum
            if low is not None and high is not None and high - low < MAX_ENUM_RANGE:
                node["enum"] = list(range(math.ceil(low), math.floor(high) + 1))
        for key, value in node.items():
            item = kind == "array" and key == "items"
            visit(value, item or (in_list and key in ("anyOf", "oneOf", "allOf")))

    visit(guided)
    return guided


def describe_keys(schema: dict[str, Any], known: str = "") -> str:
    """``article (the article text), title`` for the keys of an object schema; a description
    already in ``known`` (the question) is not repeated (small models echo it as the value)."""
    parts = []
    for name, spec in schema.get("properties", {}).items():
        description = spec.get("description") if isinstance(spec, dict) else None
        if description and description.lower() not in known.lower():
            parts.append(f"{name} ({description})")
        else:
            parts.append(name)
    return ", ".join(parts)


def json_schema_runnable(
    model: ChatLocalLlama, schema: dict[str, Any], *, include_raw: bool = False
) -> Runnable[LanguageModelInput, Any]:
    """``model`` asked for one JSON object matching a tightened ``schema``."""
    guided = guide_schema(schema, short_items=model.is_bundled())
    bound = model.bind(response_format={"type": "json_object", "schema": guided})
    ask: Runnable[Any, Any] = RunnableLambda(lambda messages: _ask_for_json(messages, schema))
    parse: Runnable[Any, Any] = RunnableLambda(lambda m: parse_json_reply(m).as_langchain())
    chain = ask | bound | parse
    return chain if include_raw else chain | (lambda d: d["parsed"])


def _ask_for_json(messages: Any, schema: dict[str, Any]) -> list[BaseMessage]:
    out = list(messages)
    if out and isinstance(out[-1], HumanMessage):
        question = str(out[-1].content)
        keys = describe_keys(schema, question)
        if keys:
            out[-1] = HumanMessage(f"{question}\nAnswer in JSON with the keys: {keys}.")
    return out


def text_options(model: ChatLocalLlama) -> dict[str, Any]:
    """Where a free-text (prose) field's answer ends: on SmolLM2 at the end of the first
    paragraph (after it, it drifts and repeats itself), on Gemma (a base model, which echoes
    the request first) at two blank lines, on other GGUF files at the end of the turn."""
    bundled = model.bundled()
    return {"stop": list(bundled.text_stop)} if bundled else {}
