"""Wire compiled nodes and routes into a LangGraph ``StateGraph``.

This lives in ``run/`` because the graph's nodes are the node runtime (``run.node``); ``compile/``
only plans (templates, output models, chat models, limits) and never imports ``run/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from ..exceptions import RoutingError
from .node import make_node_function

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ..compile.plan import CompiledRoute, CompiledWorkflow


def _endpoint(name: str) -> str:
    return {"START": START, "END": END}.get(name, name)


def graph_of(compiled: CompiledWorkflow) -> CompiledStateGraph:
    """The workflow's graph, built on its first run and kept on ``compiled`` for the next."""
    if compiled.graph_cache is None:
        compiled.graph_cache = build_graph(compiled)
    graph: CompiledStateGraph = compiled.graph_cache
    return graph


def build_graph(compiled: CompiledWorkflow) -> CompiledStateGraph:
    fields = {name: Any for name in compiled.state_types}
    state_type = TypedDict(f"{compiled.name}_state", fields)  # type: ignore[misc, operator]
    builder = StateGraph(state_type)
    for node_id, node in compiled.nodes.items():
        builder.add_node(node_id, make_node_function(node))  # type: ignore[call-overload]
    for src, dst in compiled.plain_edges:
        builder.add_edge(_endpoint(src), _endpoint(dst))
    for src, routes in compiled.routes.items():
        targets = {r.target: _endpoint(r.target) for r in routes}
        builder.add_conditional_edges(src, _router(src, routes), targets)  # type: ignore[arg-type]
    return builder.compile()


def _router(src: str, routes: list[CompiledRoute]) -> Any:
    def route(state: dict[str, Any]) -> str:
        for r in routes:
            if r.condition is None or r.condition(state):
                return r.target
        raise RoutingError(f"no route from '{src}' matched the state", node=src)

    route.__name__ = f"route_from_{src}"
    return route
