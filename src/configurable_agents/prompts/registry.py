"""Node prompts from the MLflow Prompt Registry (``nodes[].prompt_ref``).

``resolve_prompts`` runs when a workflow is compiled (and by ``validate``), before any model
call: for each node with a ``prompt_ref`` it loads the version from the registry of
``observability.mlflow.tracking_uri`` with MLflow's own client (``MlflowClient.load_prompt``,
what ``mlflow.genai.load_prompt`` calls, here bound to the workflow's store instead of the
process-wide tracking URI), checks the template's ``{{ field }}`` placeholders against the
state like an inline prompt (issues at the ``prompt_ref``'s line), and returns the parsed
template with the version used (``name/3``).

Loaded versions are cached per process (per store and prompt URI; an alias is read again
after ``ALIAS_TTL_SECONDS``). When the registry cannot be read, or the version or alias does
not exist, a node that also has ``prompt`` runs on it, with one warning per process and
node; a node without ``prompt`` is a ``PromptRegistryError`` (exit 2) before any call.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.template import Template, TemplateProblem
from ..exceptions import Issue, UserError, WorkflowValidationError
from ..urls import mask_url, resolve_tracking_uri, scrub, url_secrets

if TYPE_CHECKING:
    from ..config.schema import PromptRef
    from ..config.validate import LoadedWorkflow

log = logging.getLogger("configurable_agents.prompts")
ALIAS_TTL_SECONDS = 60.0  # MLflow's own default for alias lookups
_VAR = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PromptRegistryError(UserError):
    """A ``prompt_ref`` without a fallback ``prompt`` could not be loaded."""


class RegistryUnavailable(Exception):
    """Why a prompt could not be loaded (store unreachable, no such prompt or version)."""


@dataclass(frozen=True)
class LoadedPrompt:
    """One registered prompt version."""

    name: str
    version: int
    template: str  # the registry's text, ``{{ field }}`` placeholders

    @property
    def label(self) -> str:
        """``name/version``: the ``node.prompt_version`` span attribute and MLflow's id of a
        prompt version in its trace links."""
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ResolvedPrompt:
    """What a node runs with: the template, and the registry version it came from (None when
    the node fell back to its inline ``prompt``)."""

    template: Template
    version: LoadedPrompt | None = None
    fallback_reason: str | None = None


def registry_uri(workflow: LoadedWorkflow) -> str:
    """The store whose registry ``prompt_ref`` reads: ``observability.mlflow.tracking_uri``,
    a relative SQLite path taken from the current folder, as the trace writer takes it."""
    return resolve_tracking_uri(workflow.spec.config.observability.mlflow.tracking_uri)


# --------------------------------------------------------------------------- templates


def parse_registry_template(
    text: str,
) -> tuple[Template, list[TemplateProblem], list[tuple[str, int]]]:
    """Split a registry template (MLflow's ``{{ field }}`` syntax; single braces are literal
    text); return the template, its problems and each ``(field, offset)`` used."""
    parts: list[str] = []
    problems: list[TemplateProblem] = []
    used: list[tuple[str, int]] = []
    if "{%" in text and "%}" in text:
        problems.append(
            TemplateProblem(
                "the registry template uses Jinja2 control flow ({% ... %}), which nodes "
                "do not render",
                "register a plain text template whose placeholders are {{ field }}",
                text.index("{%"),
            )
        )
    position = 0
    literal = ""
    for match in _VAR.finditer(text):
        literal += text[position : match.start()]
        inner = match.group(1).strip()
        if _NAME.fullmatch(inner):
            parts += [literal, inner]
            literal = ""
            used.append((inner, match.start()))
        else:
            literal += match.group(0)
            what = "attribute access" if "." in inner else "an expression"
            problems.append(
                TemplateProblem(
                    f"registry placeholder {match.group(0)} uses {what}; only {{{{ field }}}} "
                    "is allowed",
                    "placeholders insert a whole state field; compute parts in an earlier node",
                    match.start(),
                )
            )
        position = match.end()
    rest = text[position:]
    if "{{" in rest:
        problems.append(
            TemplateProblem(
                "the registry template has a '{{' that is never closed",
                "close the placeholder: {{ field }}",
                position + rest.index("{{"),
            )
        )
    parts.append(literal + rest)
    return Template(tuple(parts)), problems, used


def to_registry_template(template: Template) -> str:
    """An inline prompt's template in the registry's syntax (``{field}`` → ``{{ field }}``;
    ``{{`` / ``}}``, literal braces inline, become single braces)."""
    out = []
    for i, part in enumerate(template.parts):
        out.append(part if i % 2 == 0 else "{{ " + part + " }}")
    return "".join(out)


# --------------------------------------------------------------------------- loading

_cache: dict[tuple[str, str], tuple[LoadedPrompt, float]] = {}
_warned: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded version and warning (tests; a long-lived server after a push)."""
    with _lock:
        _cache.clear()
        _warned.clear()


def client_for(uri: str) -> Any:
    """MLflow's client bound to ``uri`` for both tracking and the registry (no global state
    changed). A SQLite file that does not exist is not created: nothing is registered there."""
    from ..exceptions import MissingExtraError

    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:" and not Path(path).is_file():
            raise RegistryUnavailable(f"{path} does not exist (no prompt is registered there)")
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise MissingExtraError("mlflow", "mlflow", "prompt_ref") from exc
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def load_prompt(uri: str, ref: PromptRef) -> LoadedPrompt:
    """The registered version ``ref`` names (cached); ``RegistryUnavailable`` with the reason
    when it cannot be read."""
    key = (uri, ref.uri)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and (ref.alias is None or now - hit[1] < ALIAS_TTL_SECONDS):
        return hit[0]
    client = client_for(uri)
    try:
        found = client.load_prompt(ref.uri, allow_missing=True)
    except Exception as exc:  # noqa: BLE001 - the store's failure, told to the user
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = scrub(text, url_secrets(uri))
        raise RegistryUnavailable(f"the registry cannot be read: {text}") from None
    if found is None:
        what = f"alias '{ref.alias}'" if ref.alias else f"version {ref.version}"
        raise RegistryUnavailable(f"prompt '{ref.name}' has no {what} in the registry")
    if not found.is_text_prompt:
        raise RegistryUnavailable(
            f"prompt '{ref.name}' version {found.version} is a chat prompt; nodes take text prompts"
        )
    loaded = LoadedPrompt(found.name, int(found.version), str(found.template))
    with _lock:
        _cache[key] = (loaded, now)
    return loaded


# --------------------------------------------------------------------------- resolving


def resolve_prompts(workflow: LoadedWorkflow) -> dict[str, ResolvedPrompt]:
    """The registry template of every node with a ``prompt_ref`` (by node id), validated
    against the state; raises ``WorkflowValidationError`` for bad placeholders and
    ``PromptRegistryError`` when a version without fallback cannot be loaded."""
    from ..config.template import parse_template

    nodes = [(i, n) for i, n in enumerate(workflow.spec.nodes) if n.prompt_ref is not None]
    if not nodes:
        return {}
    uri = registry_uri(workflow)
    doc = workflow.document
    issues: list[Issue] = []
    missing: list[Issue] = []
    out: dict[str, ResolvedPrompt] = {}
    for i, node in nodes:
        ref = node.prompt_ref
        assert ref is not None
        path: tuple[str | int, ...] = ("nodes", i, "prompt_ref")
        line = doc.line_of(path)
        try:
            loaded = load_prompt(uri, ref)
        except RegistryUnavailable as exc:
            reason = str(exc)
            if node.prompt is None:
                missing.append(
                    Issue(
                        f"node '{node.id}': cannot load {ref.uri} from {mask_url(uri)}: {reason}",
                        doc.file,
                        line,
                        "register it (configurable-agents prompts push, or "
                        "mlflow.genai.register_prompt), fix the name/version/alias, or give "
                        "the node a fallback prompt:",
                        path,
                    )
                )
                continue
            _warn_once(uri, ref.uri, node.id, reason)
            out[node.id] = ResolvedPrompt(parse_template(node.prompt)[0], None, reason)
            continue
        template, problems, used = parse_registry_template(loaded.template)
        where = f"node '{node.id}' ({loaded.label} in the registry)"
        for p in problems:
            issues.append(Issue(f"{where}: {p.message}", doc.file, line, p.hint, path))
        for name, _ in used:
            if name not in workflow.state_types:
                issues.append(
                    Issue(
                        f"{where} reads {{{{ {name} }}}}, which is not a state field",
                        doc.file,
                        line,
                        _did_you_mean(name, workflow.state_types)
                        or f"add '{name}' to state.fields, or register a version without it",
                        path,
                    )
                )
        out[node.id] = ResolvedPrompt(template, loaded)
    if issues:
        raise WorkflowValidationError(issues + missing)
    if missing:
        raise PromptRegistryError(missing)
    return out


def _warn_once(uri: str, prompt_uri: str, node: str, reason: str) -> None:
    key = (uri, prompt_uri, node)
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(
        "node '%s': cannot load %s (%s); running on its inline prompt", node, prompt_uri, reason
    )


def _did_you_mean(name: str, options: Any) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
