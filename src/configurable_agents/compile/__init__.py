"""Compile a validated workflow into a runnable LangGraph graph.

``plan`` turns each node into what it needs at run time (parsed template, output model, chat
model, tools, limits, retry policy). ``run.graph`` wires the planned nodes and routes into a
LangGraph ``StateGraph`` whose nodes are the run-time node functions.
"""

from .plan import CompiledNode, CompiledRoute, CompiledWorkflow, compile_workflow

__all__ = ["CompiledNode", "CompiledRoute", "CompiledWorkflow", "compile_workflow"]
