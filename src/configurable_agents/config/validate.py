"""Validation of a workflow: every problem found at once, each with file, line and a hint.

``load_workflow`` is the entry point: read → parse YAML (``loader``) → check the shape
(``schema``; its errors reworded by ``shape_errors``) → check the rules that span sections
(this module, ``judges``, ``governance``), all into one ``collector.Collector``. The problems
of this machine (provider packages, API keys, model files) are
``providers.check_environment``'s, which ``validate`` and ``run`` report too, before any model
is called.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..exceptions import WorkflowValidationError
from ..tools import ToolResolutionError, resolve_tool
from . import bounds
from .collector import Collector, did_you_mean, sorted_issues
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
from .shape_errors import pydantic_issue, typo_keys
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


def load_workflow(path: str | Path) -> LoadedWorkflow:
    """Read, parse and validate a workflow file; raise ``WorkflowValidationError`` with all
    problems (or ``WorkflowFileError`` when the file is not readable YAML)."""
    return validate_document(load_document(path))


def load_workflow_text(text: str, file: str = "<string>") -> LoadedWorkflow:
    """Like ``load_workflow`` for YAML given as a string."""
    return validate_document(parse_yaml(text, file))


def validate_document(doc: Document) -> LoadedWorkflow:
    col = Collector(doc)
    try:
        spec = Workflow.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        typos = typo_keys(errors)
        for err in errors:
            # 'promt:' gives "unknown key 'promt'" and "'prompt' is missing": report it once.
            if err["type"] == "missing" and tuple(err["loc"]) in typos:
                continue
            pydantic_issue(col, err)
        _semantic_checks_on_raw(col, doc.data)
        _check_valid_sections(col, doc.data)
        raise WorkflowValidationError(sorted_issues(col.issues)) from None
    state_types = _check_state(col, spec.state)
    _check_nodes(col, spec.nodes, spec.config.llm, state_types, [j.name for j in spec.judges])
    _check_edges(col, spec.nodes, spec.edges, state_types)
    from .governance import check_governance
    from .judges import check_judges

    check_judges(col, spec, state_types)

    check_governance(col, spec)
    if col.issues:
        raise WorkflowValidationError(sorted_issues(col.issues))
    return LoadedWorkflow(spec=spec, file=doc.file, document=doc, state_types=state_types)


def _semantic_checks_on_raw(col: Collector, data: Any) -> None:
    """Checks worth reporting even when the shape is broken elsewhere (duplicate ids)."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if isinstance(nodes, list):
        _check_duplicate_ids(col, [n.get("id") if isinstance(n, dict) else None for n in nodes])


def _check_valid_sections(col: Collector, data: Any) -> None:
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


def _check_duplicate_ids(col: Collector, ids: list[Any]) -> None:
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


def _check_state(col: Collector, state: State) -> dict[str, TypeRef]:
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
    col: Collector,
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
                did_you_mean(node_id, node_ids | set(judges))
                or "responses are keyed by node id (or judge name); nodes are: "
                + ", ".join(sorted(node_ids)),
            )
        for j, answer in enumerate(answers):
            kind = answer.get("__error__")
            if "__error__" in answer and kind not in TEST_ERRORS:
                col.add(
                    ("config", "llm", "responses", node_id, j, "__error__"),
                    f"config.llm.responses for '{node_id}': {kind!r} is not a simulated error",
                    did_you_mean(str(kind), TEST_ERRORS) or "use one of " + ", ".join(TEST_ERRORS),
                )


def _check_local_name(col: Collector, node: Node, i: int, llm: LLMConfig) -> None:
    """Without ``model_path``, a local ``model`` must name a bundled model."""
    if (llm.provider or DEFAULT_PROVIDER) != "local" or llm.model_path or llm.model is None:
        return
    if llm.model in LOCAL_MODELS:
        return
    own = node.llm is not None and "model" in node.llm.model_fields_set
    path: Path_ = ("nodes", i, "llm", "model") if own else ("config", "llm", "model")
    close = did_you_mean(llm.model, LOCAL_MODELS)
    col.add(
        path,
        f"provider 'local' has no bundled model {llm.model!r}",
        close or f"use one of {', '.join(LOCAL_MODELS)}, or set model_path to a .gguf file",
    )


def _check_prompt(col: Collector, node: Node, base: Path_, state: dict[str, TypeRef]) -> None:
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
                did_you_mean(name, state) or f"add '{name}' to state.fields",
                col.doc.text_line(path, offset),
            )


def _check_outputs(col: Collector, node: Node, base: Path_, state: dict[str, TypeRef]) -> None:
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
                did_you_mean(out, state) or f"add '{out}' to state.fields",
            )
            continue
        if node.output_schema is None:
            continue
        if out not in schema_fields:
            col.add(
                opath,
                f"node '{node.id}' writes '{out}', but its output_schema has no field '{out}'",
                did_you_mean(out, schema_fields)
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


def _check_edges(
    col: Collector, nodes: list[Node], edges: list[Edge], state: dict[str, TypeRef]
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
                did_you_mean(src, [*known, START]) or "nodes are: " + ", ".join(node_ids),
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
                    did_you_mean(dst, [*known, END]) or "nodes are: " + ", ".join(node_ids),
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
