"""Validation of a workflow: every problem found at once, each with file, line and a hint.

``load_workflow`` is the entry point: read → parse YAML (``loader``) → check the shape
(``schema``) → check the rules that span sections (this module). The problems of this machine
(provider packages, API keys, model files) are ``providers.check_environment``'s, which
``validate`` and ``run`` report too, before any model is called.
"""

from __future__ import annotations

import difflib
import keyword
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..exceptions import Issue, WorkflowValidationError
from ..tools import ToolResolutionError, resolve_tool
from . import bounds
from .conditions import ConditionError, compile_condition
from .loader import Document, Path_, load_document, parse_yaml
from .schema import (
    DEFAULT_PROVIDER,
    LOCAL_MODELS,
    TEST_ERRORS,
    TOOL_PROVIDERS,
    Config,
    Edge,
    LLMConfig,
    Node,
    State,
    Workflow,
    merge_llm,
)
from .template import parse_template
from .types import TypeRef, TypeSyntaxError, type_adapter

START, END = "START", "END"
_RESERVED_FIELDS = {"true", "false", "null", "len", "True", "False", "None"}


@dataclass
class LoadedWorkflow:
    """A workflow that passed validation, with where it came from."""

    spec: Workflow
    file: str
    document: Document
    state_types: dict[str, TypeRef] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.flow.name

    @property
    def directory(self) -> Path:
        return Path(self.file).resolve().parent


class _Collector:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.issues: list[Issue] = []

    def add(
        self, path: Path_, message: str, hint: str | None = None, line: int | None = None
    ) -> None:
        self.issues.append(
            Issue(
                message,
                file=self.doc.file,
                line=line or self.doc.line_of(path),
                hint=hint,
                path=tuple(path),
            )
        )


def load_workflow(path: str | Path) -> LoadedWorkflow:
    """Read, parse and validate a workflow file; raise ``WorkflowValidationError`` with all
    problems (or ``WorkflowFileError`` when the file is not readable YAML)."""
    return validate_document(load_document(path))


def load_workflow_text(text: str, file: str = "<string>") -> LoadedWorkflow:
    """Like ``load_workflow`` for YAML given as a string."""
    return validate_document(parse_yaml(text, file))


def validate_document(doc: Document) -> LoadedWorkflow:
    col = _Collector(doc)
    try:
        spec = Workflow.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        typos = _typo_keys(errors)
        for err in errors:
            # 'promt:' gives "unknown key 'promt'" and "'prompt' is missing": report it once.
            if err["type"] == "missing" and tuple(err["loc"]) in typos:
                continue
            _pydantic_issue(col, err)
        _semantic_checks_on_raw(col, doc.data)
        _check_valid_sections(col, doc.data)
        raise WorkflowValidationError(_sorted(col.issues)) from None
    state_types = _check_state(col, spec.state)
    _check_nodes(col, spec.nodes, spec.config.llm, state_types, [j.name for j in spec.judges])
    _check_edges(col, spec.nodes, spec.edges, state_types)
    from .governance import check_governance
    from .judges import check_judges

    check_judges(col, spec, state_types)

    check_governance(col, spec)
    if col.issues:
        raise WorkflowValidationError(_sorted(col.issues))
    return LoadedWorkflow(spec=spec, file=doc.file, document=doc, state_types=state_types)


def _sorted(issues: list[Issue]) -> list[Issue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: i.line or 0)


# --- shape errors from pydantic -------------------------------------------------------------


def _typo_keys(errors: list[Any]) -> set[tuple[str | int, ...]]:
    """Paths of required keys that are missing only because an unknown key misspells them."""
    found = set()
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc:
            close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), 1, 0.6)
            if close:
                found.add((*loc[:-1], close[0]))
    return found


def _pydantic_issue(col: _Collector, err: Any) -> None:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    where = _describe(loc, col.doc.data)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else None
        if not hint and allowed:
            hint = "allowed keys here: " + ", ".join(allowed)
        col.add(loc, f"unknown key '{key}' in {_describe(loc[:-1], col.doc.data)}", hint)
    elif kind == "missing":
        parent = _describe(loc[:-1], col.doc.data)
        col.add(
            loc[:-1],
            f"{parent}: required key '{loc[-1]}' is missing",
            _MISSING_HINTS.get(str(loc[-1]), f"add '{loc[-1]}:'"),
        )
    elif kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        col.add(loc, f"{where}: {err['input']!r} is not allowed", f"use one of {expected}")
    elif kind == "string_pattern_mismatch":
        col.add(
            loc,
            f"{where}: {err['input']!r} is not a valid name",
            "use letters, digits and underscores, starting with a letter",
        )
    elif kind in ("value_error", "assertion_error"):
        error = err.get("ctx", {}).get("error", err["msg"])
        msg = str(error)
        # A message that already names its key ("schema_version '2.0' is ...") needs no prefix.
        text = msg if len(loc) == 1 and msg.startswith(f"{loc[0]} ") else f"{where}: {msg}"
        col.add(loc, text, getattr(error, "hint", None) or _value_hint(msg))
    else:
        shown = err.get("input")
        got = f" (got {shown!r})" if not isinstance(shown, (dict, list)) else ""
        col.add(
            loc,
            f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}{got}",
            _type_hint(kind, str(loc[-1]) if loc else "", err.get("ctx") or {})
            or "see the file format (configurable-agents schema prints it)",
        )


def _type_hint(kind: str, key: str, ctx: dict[str, Any]) -> str | None:
    """A fix for a value of the wrong type or out of range, from pydantic's error kind."""
    if kind.startswith("int_"):
        return f"write a whole number without quotes, e.g. {key}: 25"
    if kind == "finite_number":
        return f"write a finite number, e.g. {key}: 10"
    if kind.startswith("float_"):
        return f"write a number without quotes, e.g. {key}: 0.5"
    if kind.startswith("bool_"):
        return f"write {key}: true or {key}: false"
    if kind.startswith("string_too_short"):
        return f"{key} cannot be empty"
    if kind.startswith("string_"):
        return f'write text; quote it if it looks like a number: {key}: "..."'
    if kind.startswith("list_") or kind == "too_short":
        return f"write a list, e.g. {key}: [a, b]" + (
            f" with at least {ctx['min_length']} item(s)" if "min_length" in ctx else ""
        )
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"write a mapping, e.g. {key}: {{name: value}}"
    bounds = {
        "greater_than": ("gt", "above"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "below"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds and bounds[kind][0] in ctx:
        limit = ctx[bounds[kind][0]]
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"use a value {bounds[kind][1]} {limit}"
    return None


_MISSING_HINTS = {
    "schema_version": 'add schema_version: "1.0" at the top',
    "flow": "add flow: {name: my_workflow}",
    "state": "add state: {fields: {topic: {type: str, required: true}}}",
    "nodes": "add a nodes: list with at least one node",
    "edges": "add edges, starting with {from: START, to: <first node>}",
    "prompt": 'add prompt: "...{field}..."',
    "outputs": "add outputs: [<state field>]",
    "type": "add type: str (or int, float, bool, list[T], dict[str, T], object)",
    "from": "add from: <node id or START>",
    "to": "add to: <node id or END>",
}


def _value_hint(msg: str) -> str | None:
    if "this version reads" in msg:
        return 'write schema_version: "1.0"'
    if "a route has either" in msg:
        return (
            'write {when: "score >= 7", to: <node>} or, as the last route, '
            "{default: true, to: <node>}"
        )
    if "an edge has either" in msg:
        return "write {from: a, to: b}, or {from: a, routes: [...]} to branch"
    return None


def _describe(loc: Iterable[str | int], data: Any) -> str:
    """A readable name for a path: ``node 'review' prompt`` rather than ``nodes.1.prompt``."""
    loc = tuple(loc)
    if not loc:
        return "the workflow"
    parts: list[str] = []
    value = data
    i = 0
    while i < len(loc):
        key = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if key in ("nodes", "edges") and isinstance(nxt, int):
            seq = value.get(key) if isinstance(value, dict) else None
            item = seq[nxt] if isinstance(seq, list) and _has(seq, nxt) else None
            if key == "nodes":
                label = (
                    f"node '{item['id']}'"
                    if isinstance(item, dict) and "id" in item
                    else f"nodes[{nxt}]"
                )
            else:
                label = (
                    f"edge from '{item['from']}'"
                    if isinstance(item, dict) and "from" in item
                    else f"edges[{nxt}]"
                )
            parts.append(label)
            value = item
            i += 2
            continue
        if key == "fields" and parts and parts[-1] == "state" and nxt is not None:
            parts[-1] = f"state field '{nxt}'"
            value = value.get("fields", {}).get(nxt) if isinstance(value, dict) else None
            i += 2
            continue
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif parts and not parts[-1].endswith("'"):  # after a plain key: config.llm
            parts.append(f".{key}")
        else:
            parts.append(f" {key}" if parts else str(key))
        value = _child(value, key)
        i += 1
    return "".join(
        p if p.startswith(("[", ".", " ")) or not j else " " + p for j, p in enumerate(parts)
    )


def _has(seq: Any, index: int) -> bool:
    return isinstance(seq, list) and 0 <= index < len(seq)


def _child(value: Any, key: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, list) and isinstance(key, int) and _has(value, key):
        return value[key]
    return None


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Keys a mapping at ``loc`` may have, read from the pydantic models."""
    annotation: Any = Workflow
    for key in loc:
        annotation = _unwrap(annotation, key)
        if annotation is None:
            return []
    model = _model_in(annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _unwrap(annotation: Any, key: str | int) -> Any:
    model = _model_in(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap(arg, key)
    if origin is list and isinstance(key, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if model is not None and isinstance(key, str):
        for name, f in model.model_fields.items():
            if key in (name, f.alias):
                return f.annotation
    return None


def _semantic_checks_on_raw(col: _Collector, data: Any) -> None:
    """Checks worth reporting even when the shape is broken elsewhere (duplicate ids)."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if isinstance(nodes, list):
        _check_duplicate_ids(col, [n.get("id") if isinstance(n, dict) else None for n in nodes])


def _check_valid_sections(col: _Collector, data: Any) -> None:
    """When the file's shape is broken somewhere, still run the cross-section rules on the
    sections that are well-formed, so that one pass reports as much as possible."""
    if not isinstance(data, dict):
        return

    def valid(model: type[BaseModel], value: Any) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    state = valid(State, data.get("state"))
    if state is None:
        return
    config = valid(Config, data.get("config") or {}) or Config()
    state_types = _check_state(col, state)
    raw_nodes, raw_edges = data.get("nodes"), data.get("edges")
    nodes = [valid(Node, n) for n in raw_nodes] if isinstance(raw_nodes, list) else []
    if not nodes or not all(nodes):
        return
    raw_judges = data.get("judges")
    judges = [
        str(j.get("name"))
        for j in (raw_judges if isinstance(raw_judges, list) else [])
        if isinstance(j, dict)
    ]
    _check_nodes(col, nodes, config.llm, state_types, judges)
    edges = [valid(Edge, e) for e in raw_edges] if isinstance(raw_edges, list) else []
    if edges and all(edges):
        _check_edges(col, nodes, edges, state_types)


def _check_duplicate_ids(col: _Collector, ids: list[Any]) -> None:
    seen: dict[Any, int] = {}
    for i, node_id in enumerate(ids):
        if not isinstance(node_id, (str, int)) or isinstance(node_id, bool):
            continue  # missing, or a list/mapping/...: the shape check reports it
        if node_id in seen:
            col.add(
                ("nodes", i, "id"),
                f"duplicate node id '{node_id}' (first defined at line "
                f"{col.doc.line_of(('nodes', seen[node_id], 'id'))})",
                "give each node a unique id",
            )
        else:
            seen[node_id] = i


# --- cross-section rules --------------------------------------------------------------------


def _check_state(col: _Collector, state: State) -> dict[str, TypeRef]:
    types_: dict[str, TypeRef] = {}
    for name, fdef in state.fields.items():
        path: Path_ = ("state", "fields", name)
        if not name.isidentifier() or keyword.iskeyword(name) or name in _RESERVED_FIELDS:
            col.add(
                path,
                f"state field name '{name}' cannot be used",
                "use a name of letters, digits and underscores that is not a keyword",
            )
        try:
            tref = fdef.type_ref()
        except TypeSyntaxError as exc:
            col.add((*path, "type"), f"state field '{name}': {exc}", exc.hint)
            continue
        types_[name] = tref
        bad_bounds = bounds.check_field(col.add, path, f"state field '{name}'", fdef, tref)
        if fdef.default is not None:
            bare = tref.with_bounds({})
            problem = _value_problem(bare, fdef.default)
            if problem:
                col.add(
                    (*path, "default"),
                    f"state field '{name}': default {fdef.default!r} is not {_a(tref)} ({problem})",
                    f"give {_a(tref)} default or remove it",
                )
            elif not bad_bounds and not bounds.is_empty_value(tref, fdef.default):
                problem = _value_problem(tref, fdef.default)
                if problem:
                    col.add(
                        (*path, "default"),
                        f"state field '{name}': default {fdef.default!r} is out of its "
                        f"bounds ({problem})",
                        "give a default within the bounds, or remove it (an empty default, "
                        '[] or "", is allowed: it means not written yet)',
                    )
        if fdef.required and fdef.default is not None:
            col.add(
                (*path, "required"),
                f"state field '{name}' is required and also has a default",
                "drop 'required: true' (the default is used) or drop the default",
            )
    return types_


def _a(tref: TypeRef) -> str:
    text = str(tref)
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _value_problem(tref: TypeRef, value: Any) -> str | None:
    try:
        type_adapter(tref).validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return str(first["msg"]).lower()
    return None


def _check_nodes(
    col: _Collector,
    nodes: list[Node],
    base_llm: LLMConfig,
    state: dict[str, TypeRef],
    judges: Iterable[str] = (),
) -> None:
    _check_duplicate_ids(col, [n.id for n in nodes])
    node_ids = {n.id for n in nodes}
    for i, node in enumerate(nodes):
        base: Path_ = ("nodes", i)
        if node.id in (START, END):
            col.add((*base, "id"), f"'{node.id}' is reserved and cannot be a node id", "rename it")
        _check_prompt(col, node, base, state)
        _check_outputs(col, node, base, state)
        llm = merge_llm(base_llm, node.llm)
        for j, tool in enumerate(node.tools):
            try:
                resolve_tool(tool)
            except ToolResolutionError as exc:
                col.add((*base, "tools", j), f"node '{node.id}': {exc}", exc.hint)
        provider = llm.provider or DEFAULT_PROVIDER
        if node.tools and provider not in TOOL_PROVIDERS:
            col.add(
                (*base, "tools"),
                f"node '{node.id}' uses tools, but provider '{provider}' cannot call tools",
                "give this node a tool-calling provider in its llm: section "
                "(openai, anthropic, google, ollama, or test for offline runs)",
            )
        _check_local_name(col, node, i, llm)
    responses = base_llm.responses or {}
    for node_id, answers in responses.items():
        if node_id not in node_ids | set(judges):
            col.add(
                ("config", "llm", "responses", node_id),
                f"config.llm.responses names node '{node_id}', which does not exist",
                _did_you_mean(node_id, node_ids | set(judges))
                or "responses are keyed by node id (or judge name); nodes are: "
                + ", ".join(sorted(node_ids)),
            )
        for j, answer in enumerate(answers):
            kind = answer.get("__error__")
            if "__error__" in answer and kind not in TEST_ERRORS:
                col.add(
                    ("config", "llm", "responses", node_id, j, "__error__"),
                    f"config.llm.responses for '{node_id}': {kind!r} is not a simulated error",
                    _did_you_mean(str(kind), TEST_ERRORS) or "use one of " + ", ".join(TEST_ERRORS),
                )


def _check_local_name(col: _Collector, node: Node, i: int, llm: LLMConfig) -> None:
    """Without ``model_path``, a local ``model`` must name a bundled model."""
    if (llm.provider or DEFAULT_PROVIDER) != "local" or llm.model_path or llm.model is None:
        return
    if llm.model in LOCAL_MODELS:
        return
    own = node.llm is not None and "model" in node.llm.model_fields_set
    path: Path_ = ("nodes", i, "llm", "model") if own else ("config", "llm", "model")
    close = _did_you_mean(llm.model, LOCAL_MODELS)
    col.add(
        path,
        f"provider 'local' has no bundled model {llm.model!r}",
        close or f"use one of {', '.join(LOCAL_MODELS)}, or set model_path to a .gguf file",
    )


def _check_prompt(col: _Collector, node: Node, base: Path_, state: dict[str, TypeRef]) -> None:
    if node.prompt is None:  # prompt_ref only: prompts.resolve_prompts checks the registry's
        return
    path = (*base, "prompt")
    _, problems, used = parse_template(node.prompt)
    for p in problems:
        col.add(path, f"node '{node.id}': {p.message}", p.hint, col.doc.text_line(path, p.offset))
    for name, offset in used:
        if name not in state:
            col.add(
                path,
                f"node '{node.id}' reads {{{name}}}, which is not a state field",
                _did_you_mean(name, state) or f"add '{name}' to state.fields",
                col.doc.text_line(path, offset),
            )


def _check_outputs(col: _Collector, node: Node, base: Path_, state: dict[str, TypeRef]) -> None:
    schema_fields: dict[str, tuple[int, TypeRef | None]] = {}
    if node.output_schema is not None:
        for j, f in enumerate(node.output_schema.fields):
            fpath = (*base, "output_schema", "fields", j)
            try:
                schema_fields[f.name] = (j, f.type_ref())
            except TypeSyntaxError as exc:
                col.add((*fpath, "type"), f"node '{node.id}' output '{f.name}': {exc}", exc.hint)
                schema_fields[f.name] = (j, None)
                continue
            label = f"node '{node.id}' output '{f.name}'"
            bounds.check_field(col.add, fpath, label, f, f.type_ref())
    for j, out in enumerate(node.outputs):
        opath = (*base, "outputs", j)
        if out not in state:
            col.add(
                opath,
                f"node '{node.id}' writes '{out}', which is not a state field",
                _did_you_mean(out, state) or f"add '{out}' to state.fields",
            )
            continue
        if node.output_schema is None:
            continue
        if out not in schema_fields:
            col.add(
                opath,
                f"node '{node.id}' writes '{out}', but its output_schema has no field '{out}'",
                _did_you_mean(out, schema_fields)
                or f"add {{name: {out}, type: {state[out]}}} to output_schema.fields",
            )
            continue
        j_schema, tref = schema_fields[out]
        if tref is not None and not state[out].accepts(tref):
            col.add(
                (*base, "output_schema", "fields", j_schema, "type"),
                f"node '{node.id}' output '{out}' is {tref}, but state field '{out}' is "
                f"{state[out]}",
                f"make both the same type ({state[out]})",
            )
        elif tref is not None and tref.bounds and state[out].bounds:
            both = bounds.intersect(tref.bound_map, state[out].bound_map)
            if bounds.conflict(tref.bound_map) is None and bounds.conflict(both):
                col.add(
                    (*base, "output_schema", "fields", j_schema),
                    f"node '{node.id}' output '{out}' must fit its own bounds and those of "
                    f"state field '{out}', and no value fits both ({bounds.conflict(both)})",
                    "make the two agree (or drop the output's bounds: the state field's apply "
                    "to what the node writes)",
                )
    for name, (j_schema, _) in schema_fields.items():
        if name not in node.outputs:
            col.add(
                (*base, "output_schema", "fields", j_schema),
                f"node '{node.id}': output_schema field '{name}' is not in outputs, so its "
                "value would be lost",
                f"add '{name}' to outputs (and to state.fields), or remove it from output_schema",
            )


def _did_you_mean(name: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _check_edges(
    col: _Collector, nodes: list[Node], edges: list[Edge], state: dict[str, TypeRef]
) -> None:
    node_ids = [n.id for n in nodes]
    known = set(node_ids)
    targets: dict[str, list[str]] = {}
    first_edge: dict[str, int] = {}
    dangling = False  # an edge names a node that does not exist
    for i, edge in enumerate(edges):
        base: Path_ = ("edges", i)
        src = edge.from_
        if src == END:
            col.add((*base, "from"), "an edge cannot start at END", "END is where a run stops")
        elif src != START and src not in known:
            dangling = True
            col.add(
                (*base, "from"),
                f"edge from '{src}': no node has that id",
                _did_you_mean(src, [*known, START]) or "nodes are: " + ", ".join(node_ids),
            )
        if src in first_edge:
            col.add(
                base,
                f"'{src}' has more than one outgoing edge (first at line "
                f"{col.doc.line_of(('edges', first_edge[src]))})",
                "branch with one edge that has routes: "
                "[{when: ..., to: ...}, {default: true, to: ...}]",
            )
        else:
            first_edge[src] = i
        outs: list[tuple[str, Path_]] = []
        if edge.to is not None:
            outs.append((edge.to, (*base, "to")))
        for j, route in enumerate(edge.routes or []):
            rpath: Path_ = (*base, "routes", j)
            outs.append((route.to, (*rpath, "to")))
            if route.when is not None:
                try:
                    compile_condition(route.when, state)
                except ConditionError as exc:
                    col.add((*rpath, "when"), f"edge from '{src}': {exc}", exc.hint)
        if edge.routes is not None:
            defaults = [j for j, r in enumerate(edge.routes) if r.default]
            if not defaults:
                col.add(
                    (*base, "routes"),
                    f"routes from '{src}' have no default route",
                    "end the list with {default: true, to: <node or END>}",
                )
            elif defaults != [len(edge.routes) - 1]:
                col.add(
                    (*base, "routes", defaults[0]),
                    f"routes from '{src}': the default route must be the last, and only one",
                    "move {default: true, to: ...} to the end of the list",
                )
        for dst, dpath in outs:
            if dst == START:
                col.add(dpath, "an edge cannot lead to START", "START is where a run begins")
            elif dst != END and dst not in known:
                dangling = True
                col.add(
                    dpath,
                    f"edge from '{src}' goes to '{dst}': no node has that id",
                    _did_you_mean(dst, [*known, END]) or "nodes are: " + ", ".join(node_ids),
                )
            targets.setdefault(src, []).append(dst)
    if START not in first_edge:
        col.add(
            ("edges",),
            "no edge starts at START, so the run has no first node",
            f"add {{from: START, to: {node_ids[0]}}}",
        )
        return
    if dangling:
        # Reachability follows from fixing the misnamed edges; reporting it now would only
        # repeat the same mistake as "unreachable" / "cannot reach END" noise.
        return
    reachable = _walk(START, targets)
    for i, node_id in enumerate(node_ids):
        if node_id not in reachable:
            col.add(
                ("nodes", i, "id"),
                f"node '{node_id}' is unreachable from START",
                "add an edge that leads to it, or remove the node",
            )
    reverse: dict[str, list[str]] = {}
    for src, dsts in targets.items():
        for dst in dsts:
            reverse.setdefault(dst, []).append(src)
    reaches_end = _walk(END, reverse)
    stuck = {n for n in node_ids if n in reachable and n not in reaches_end}
    dead_ends = {n for n in stuck if not targets.get(n)}
    # Nodes that only get stuck by running into a dead end are fixed with that dead end; report
    # the dead ends, and the loops that have no way out at all.
    leads_to_dead_end = _walk_many(dead_ends, reverse)
    for i, node_id in enumerate(node_ids):
        if node_id in dead_ends:
            col.add(
                ("nodes", i, "id"),
                f"node '{node_id}' cannot reach END: no edge leaves it",
                f"add {{from: {node_id}, to: END}} or an edge to a later node",
            )
        elif node_id in stuck and node_id not in leads_to_dead_end:
            col.add(
                ("nodes", i, "id"),
                f"node '{node_id}' cannot reach END",
                f"every path from '{node_id}' loops back; make one of its edges or routes "
                "lead (eventually) to END",
            )


def _walk(start: str, graph: dict[str, list[str]]) -> set[str]:
    return _walk_many({start}, graph)


def _walk_many(starts: set[str], graph: dict[str, list[str]]) -> set[str]:
    seen, todo = set(starts), list(starts)
    while todo:
        for nxt in graph.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def resolve_model_path(model_path: str, directory: Path) -> Path:
    p = Path(model_path).expanduser()
    if not p.is_absolute() and (directory / p).exists():
        return directory / p
    return p
