"""Compile a validated workflow into a runnable LangGraph graph.

``plan`` turns each node into what it needs at run time (parsed template, output model, chat
model, tools, limits); ``graph`` wires the nodes and routes into a ``StateGraph``.
"""

from .graph import build_graph
from .plan import CompiledNode, CompiledRoute, CompiledWorkflow, compile_workflow

__all__ = ["CompiledNode", "CompiledRoute", "CompiledWorkflow", "build_graph", "compile_workflow"]
