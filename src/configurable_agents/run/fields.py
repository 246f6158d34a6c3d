"""The ``per_field`` structured-output strategy: one model call per output field.

Small models write well and fill JSON badly, so a node's typed output can be asked for one
field at a time, in the order of its ``output_schema``, as one conversation:

* a ``str`` field that holds prose (``is_prose``: its name or description says article,
  summary, reply, paragraph, sentences, ...) is generated as **free text**: the prompt, then
  one line asking for that field only (its description included), stopping at the provider's
  boundary (on ``local``: the end of the first paragraph for the bundled models, the end of
  the turn for other GGUF files); a label the model repeats
  (``Article: ...``), wrapping quotes or markdown emphasis are stripped; a field with a
  ``max_length`` is asked for in that many characters and an answer longer than that is cut
  after its last sentence that fits (``fit_text``);
* every other field (short strings such as a title or a city, int, float, bool, lists, dicts,
  objects) is asked for as a one-key JSON object through the provider's structured output (on
  ``local``: grammar-constrained decoding with a tightened schema, see
  ``providers.local_structured``); small models answer short values far more exactly this
  way than in free text, where they write a whole sentence around the value.

Each answer becomes an assistant turn, so later fields see earlier ones (a title sees its
article). The assembled object is validated against the node's ``output_schema``; fields that
fail are asked again with the error fed back, up to ``max_retries`` (counted per node, as with
``json_schema``). Every call is one ``LLMCall`` of the node (one CHAT_MODEL span with its
tokens). On ``provider: test`` every field goes through its structured path (so canned
``responses`` and the ``"test <field>"`` defaults apply field by field).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ValidationError

from ..exceptions import OutputValidationError
from ..providers.base import StructuredReply
from .calls import call_model
from .result import LLMCall

if TYPE_CHECKING:
    from ..compile.plan import CompiledNode
    from .context import RunContext
    from .result import NodeRun


_PROSE_NAMES = re.compile(
    r"^(article|paragraphs?|text|body|story|essay|summary|description|content|explanation|"
    r"reply|response|email|letter|poem|haiku|verse|lyrics|review|draft|message|report|notes?|"
    r"bio|biography|post|script|speech|feedback|critique|outline|translation|rewrite|prose)$"
)
_PROSE_DESCRIPTIONS = re.compile(r"\b(sentences?|paragraphs?|prose)\b", re.IGNORECASE)


def is_prose(name: str, spec: dict[str, Any]) -> bool:
    """A ``str`` field that holds prose: a word of its name is article, summary, reply, poem,
    ... or its description says sentence(s), paragraph(s) or prose. Other ``str`` fields (a
    title, a city, a name) are short values."""
    if spec.get("type") != "string":
        return False
    if any(_PROSE_NAMES.match(part) for part in name.lower().split("_")):
        return True
    return bool(_PROSE_DESCRIPTIONS.search(spec.get("description") or ""))


def label(name: str) -> str:
    return name.replace("_", " ")


def field_request(name: str, spec: dict[str, Any], text: bool, prompt: str = "") -> str:
    """The line that asks for one field, with its description unless the prompt already says
    it (small models echo a repeated description as the answer)."""
    what = label(name)
    description = (spec.get("description") or "").strip()
    said = description.lower() == what or description.lower() in prompt.lower()
    about = f" ({description})" if description and not said else ""
    if text:
        return f"Write only the {what}{about}{_length(spec)}, nothing else."
    return f"Give the {what}{about}."


def _length(spec: dict[str, Any]) -> str:
    """``, in at most 300 characters`` for a free-text field that declares its length (the
    structured fields carry their bounds in the schema the provider gets)."""
    low, high = spec.get("minLength"), spec.get("maxLength")
    if low and high:
        return f", in {low} to {high} characters"
    if high:
        return f", in at most {high} characters"
    return f", in at least {low} characters" if low else ""


def fit_text(text: str, spec: dict[str, Any]) -> str:
    """A free-text answer longer than the field's ``maxLength``, cut after the last sentence
    that fits (as the paragraph boundary ends it); without a sentence end that fits it is left
    as it is, and validation asks again with the error."""
    limit = spec.get("maxLength")
    if not limit or len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text[: limit + 1]) if m.end() <= limit]
    return text[: ends[-1]].strip() if ends else text


def clean_text(text: str, name: str) -> str:
    """Strip what small models wrap a free-text answer in: a repeated label, quotes, emphasis."""
    out = text.strip()
    names = {label(name), name}
    for _ in range(2):
        match = re.match(r"^[#*_\s]*([A-Za-z][A-Za-z _-]{0,30}?)[*_\s]*:[*_\s]*", out)
        if match and match.group(1).strip().lower() in names:
            out = out[match.end() :].strip()
        if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'*_`":
            out = out.strip(out[0]).strip()
        out = re.sub(r"^#+\s+", "", out)
    if len(out) >= 2 and out[0] in '"“' and out[-1] in '"”':
        out = out[1:-1].strip()
    return out


def per_field_output(
    node: CompiledNode,
    messages: list[BaseMessage],
    config: RunnableConfig,
    ctx: RunContext,
    record: NodeRun,
) -> dict[str, Any]:
    properties: dict[str, dict[str, Any]] = node.json_schema.get("properties", {})
    is_test = node.provider.name == "test"
    answered: dict[str, tuple[str, str]] = {}  # field -> (question, answer), in asking order
    values: dict[str, Any] = {}
    pending = list(properties)
    feedback: dict[str, str] = {}
    while True:
        # the test provider answers a node's canned response per attempt, not per field
        visit = ctx.scope(node.id).count(f"test:{node.id}") if is_test else 0
        errors: dict[str, str] = {}
        calls: dict[str, LLMCall] = {}
        for name in pending:
            spec = properties[name]
            text = is_prose(name, spec) and not is_test
            request = field_request(name, spec, text, _text_of(messages))
            if name in feedback:
                request = f"{feedback[name]}\n{request}"
            answered.pop(name, None)
            sent = _conversation(messages, list(answered.values()), request)
            error: str | None
            value: Any = None
            if text:
                options = node.text_options(name, spec)
                model: Runnable[Any, Any] = node.model.bind(**options) if options else node.model
                reply, call = call_model(
                    node, ctx, record, "structured", model, sent, config, text=True
                )
                assert isinstance(reply, AIMessage)
                shown = reply.text if isinstance(reply.content, list) else str(reply.content)
                value = fit_text(clean_text(shown, name), spec)
                error = None if value else "the answer is empty"
            else:
                asked = node.field_runnable(name)
                if is_test:
                    asked = asked.bind(ca_node=node.id, ca_visit=visit)  # type: ignore[attr-defined]
                reply, call = call_model(node, ctx, record, "structured", asked, sent, config)
                assert isinstance(reply, StructuredReply)
                shown = call.response
                error = reply.error
                if error is None:
                    if isinstance(reply.parsed, dict) and name in reply.parsed:
                        value = reply.parsed[name]
                    else:
                        error = f"the reply has no key {name!r}"
            record.responses.append(shown)
            calls[name] = call
            answered[name] = (request, shown)
            if error is None:
                values[name] = value
            else:
                values.pop(name, None)
                errors[name] = f"{name}: {error}"
        if not errors:
            try:
                validated = node.output_model.model_validate(values)
                data = validated.model_dump()
                return {name: data[name] for name in node.spec.outputs}
            except ValidationError as exc:
                errors = _errors_by_field(exc, list(properties))
        for name, message in errors.items():
            if name in calls:
                calls[name].error = message
        error = "; ".join(errors.values())
        record.validation_errors.append(error)
        if record.retries >= node.max_retries:
            raise OutputValidationError(
                f"node '{node.id}' returned invalid output {record.retries + 1} time(s); "
                f"last error: {error}",
                node=node.id,
                attempts=record.retries + 1,
            )
        record.retries += 1
        pending = [n for n in properties if n in errors]
        feedback = {
            n: f"Your answer for the {label(n)} was:\n{answered[n][1]}\nIt is invalid: {errors[n]}"
            for n in pending
            if n in answered
        }


def _text_of(messages: list[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))


def _conversation(
    messages: list[BaseMessage], answered: list[tuple[str, str]], request: str
) -> list[BaseMessage]:
    """The node's messages, the fields asked so far with their answers, then ``request``.

    Without tool rounds the node's prompt is one user message; the first question joins it.
    """
    turns = [*answered, (request, None)]
    single = len(messages) == 1 and isinstance(messages[0], HumanMessage)
    out: list[BaseMessage] = [] if single else list(messages)
    for i, (question, answer) in enumerate(turns):
        if single and i == 0:
            question = f"{messages[0].content}\n\n{question}"
        out.append(HumanMessage(question))
        if answer is not None:
            out.append(AIMessage(answer))
    return out


def _errors_by_field(exc: ValidationError, names: list[str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        name = str(loc[0]) if loc and str(loc[0]) in names else names[0]
        where = ".".join(str(p) for p in loc) or "(root)"
        errors[name] = (f"{errors[name]}; " if name in errors else "") + f"{where}: {err['msg']}"
    return errors
