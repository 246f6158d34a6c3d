"""Node prompts from the MLflow Prompt Registry (``nodes[].prompt_ref``).

``resolve_prompts`` runs when a workflow is compiled (and by ``validate``), before any model
call: for each node with a ``prompt_ref`` it loads the version from the registry of
``observability.mlflow.tracking_uri`` with MLflow's own client (``MlflowClient.load_prompt``,
what ``mlflow.genai.load_prompt`` calls, here bound to the workflow's store instead of the
process-wide tracking URI), checks the template's ``{{ field }}`` placeholders against the
state like an inline prompt (issues at the ``prompt_ref``'s line), and returns the parsed
template with the version used (``name/3``).

Loaded versions are cached per process (per store and prompt URI). A version number names
an immutable version: it is read once. An alias can be moved: ``PromptSource`` (held by the
compiled node) asks the registry again when ``alias_ttl()`` seconds (``CA_PROMPT_ALIAS_TTL``,
default 60) have passed since the last answer, at most once per TTL per store and alias
whatever the number of runs or nodes, on a thread of its own (no run waits for the registry:
the runs meanwhile keep the version they have), and later visits run on the version found
(checked against the state first). A refresh that fails keeps the last good version, with
one warning until the registry answers again.

When the registry cannot be read, or the version or alias does not exist, at compile time, a
node that also has ``prompt`` runs on it, with one warning per process and node (an alias is
tried again after the TTL); a node without ``prompt`` is a ``PromptRegistryError`` (exit 2)
before any call.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.collector import did_you_mean
from ..config.template import Template, TemplateProblem
from ..exceptions import Issue, UserError, WorkflowValidationError
from ..urls import mask_url, resolve_tracking_uri, scrub, url_secrets

if TYPE_CHECKING:
    from ..config.schema import PromptRef
    from ..config.validate import LoadedWorkflow

log = logging.getLogger("configurable_agents.prompts")
ALIAS_TTL_SECONDS = 60.0  # default; MLflow's own for alias lookups
ALIAS_TTL_ENV = "CA_PROMPT_ALIAS_TTL"
clock = time.monotonic  # what the TTL is measured with (tests move time forward)
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
    # an alias ``prompt_ref``: what re-resolves it at run time (None: a fixed version)
    source: PromptSource | None = None


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


@dataclass(frozen=True)
class _Entry:
    prompt: LoadedPrompt
    checked: float  # clock() of the registry's last answer (or last failed refresh)
    failing: bool = False  # the last refresh failed (warned once)


_cache: dict[tuple[str, str], _Entry] = {}
_refreshing: set[tuple[str, str]] = set()
_warned: set[tuple[str, ...]] = set()
_threads: set[threading.Thread] = set()  # alias refreshes under way
_lock = threading.Lock()


def join_refreshes(timeout: float = 30.0) -> bool:
    """Wait until the alias refreshes under way have finished (tests; a server that wants the
    new version before its next run); False if some are still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with _lock:
            pending = list(_threads)
        if not pending:
            return True
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            with _lock:
                return not _threads


def clear_cache() -> None:
    """Forget every loaded version and warning (tests; a long-lived server after a push)."""
    with _lock:
        _cache.clear()
        _refreshing.clear()
        _warned.clear()


def alias_ttl() -> float:
    """Seconds an alias's version is trusted before the registry is asked again:
    ``$CA_PROMPT_ALIAS_TTL`` (0: every run asks), else ``ALIAS_TTL_SECONDS``."""
    raw = os.environ.get(ALIAS_TTL_ENV, "").strip()
    if not raw:
        return ALIAS_TTL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    if _first(("ttl", raw)):
        log.warning(
            "%s=%r is not a number of seconds >= 0; aliases are re-read every %g s",
            ALIAS_TTL_ENV,
            raw,
            ALIAS_TTL_SECONDS,
        )
    return ALIAS_TTL_SECONDS


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
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:  # noqa: BLE001 - the store's failure (a database that is down)
        raise _unreadable(exc, uri) from None


def _error_text(exc: Exception, uri: str) -> str:
    """``exc``'s first line, with the secrets of ``uri`` masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return scrub(text, url_secrets(uri))


def _unreadable(exc: Exception, uri: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"the registry cannot be read: {_error_text(exc, uri)}")


def load_prompt(uri: str, ref: PromptRef) -> LoadedPrompt:
    """The registered version ``ref`` names (cached); ``RegistryUnavailable`` with the reason
    when it cannot be read."""
    return lookup(uri, ref)[0]


def lookup(uri: str, ref: PromptRef) -> tuple[LoadedPrompt, float]:
    """``load_prompt`` and the ``clock()`` time of the registry answer it comes from.

    A version is read once. An alias is read again once ``alias_ttl()`` has passed (by one
    caller: the others meanwhile get the version cached); when that refresh fails, the last
    good version is kept (and counts as checked now: the next try is one TTL later), with one
    warning until the registry answers again."""
    key = (uri, ref.uri)
    now = clock()
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            if ref.alias is None or now - hit.checked < alias_ttl() or key in _refreshing:
                return hit.prompt, hit.checked
            _refreshing.add(key)
    try:
        loaded = _fetch(uri, ref)
    except RegistryUnavailable as exc:
        if hit is None:
            raise
        with _lock:
            _cache[key] = _Entry(hit.prompt, now, failing=True)
        if not hit.failing:
            log.warning(
                "cannot refresh %s from %s (%s); still running on %s, tried again every %g s",
                ref.uri,
                mask_url(uri),
                exc,
                hit.prompt.label,
                alias_ttl(),
            )
        return hit.prompt, now
    finally:
        if hit is not None:
            with _lock:
                _refreshing.discard(key)
    with _lock:
        _cache[key] = _Entry(loaded, now)
    if hit is not None and hit.prompt != loaded:
        log.info("%s now names %s (was %s)", ref.uri, loaded.label, hit.prompt.label)
    return loaded, now


def _fetch(uri: str, ref: PromptRef) -> LoadedPrompt:
    """One read of the registry (no cache)."""
    client = client_for(uri)  # its own errors (a missing file, the mlflow extra) as they are
    try:
        found = client.load_prompt(ref.uri, allow_missing=True)
    except Exception as exc:  # noqa: BLE001 - the store's failure, told to the user
        raise _unreadable(exc, uri) from None
    if found is None:
        what = f"alias '{ref.alias}'" if ref.alias else f"version {ref.version}"
        raise RegistryUnavailable(f"prompt '{ref.name}' has no {what} in the registry")
    if not found.is_text_prompt:
        raise RegistryUnavailable(
            f"prompt '{ref.name}' version {found.version} is a chat prompt; nodes take text prompts"
        )
    return LoadedPrompt(found.name, int(found.version), str(found.template))


def _first(key: tuple[str, ...]) -> bool:
    """True the first time ``key`` is seen in this process (one warning per key)."""
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


# --------------------------------------------------------------------------- run time


class PromptSource:
    """The template of a node whose ``prompt_ref`` names an alias, as runs should use it.

    ``current()`` is on every node visit's path: while the last answer is younger than the
    TTL it is a clock read and a comparison. Past it, the one caller that takes the lock starts
    ``lookup`` on a thread (one registry call per TTL and alias in the process, however many
    sources and runs); every run meanwhile runs on the version it has. A new version is
    checked against the state like at compile time; one that does not fit is not used (one
    warning per version).
    """

    def __init__(
        self,
        uri: str,
        ref: PromptRef,
        node: str,
        state: Any,
        resolved: ResolvedPrompt,
        checked: float,
    ) -> None:
        self.uri = uri
        self.ref = ref
        self.node = node
        self._state = state  # field name -> TypeRef (LoadedWorkflow.state_types)
        self._loaded = resolved.version
        self._current = (resolved.template, resolved.version.label if resolved.version else None)
        self._next = checked + alias_ttl()
        self._lock = threading.Lock()

    def current(self) -> tuple[Template, str | None]:
        """The template to render and its ``name/version`` (None: the fallback ``prompt``).

        Past the TTL, the visit that takes the lock starts the refresh on a thread of its own
        and runs on the version it has, like every other visit meanwhile: no run waits for the
        registry. With a TTL of 0 (``CA_PROMPT_ALIAS_TTL=0``: every run asks) the visit that
        takes the lock asks and waits (the registry's own timeouts bound it), and the visits
        that find it taken run on the version it has."""
        if clock() < self._next or not self._lock.acquire(blocking=False):
            return self._current
        if alias_ttl() == 0:
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - never raised into a run
                self._failed(exc)
            finally:
                self._lock.release()
            return self._current
        with _lock:
            busy = (self.uri, self.ref.uri) in _refreshing  # another source asks right now
        if busy:  # its answer lands in the cache: a later visit takes it from there
            self._lock.release()
            return self._current
        thread = threading.Thread(
            target=self._refresh_then_release, daemon=True, name="configurable-agents-prompt"
        )
        with _lock:
            _threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # the interpreter is shutting down: no refresh, no harm
            with _lock:
                _threads.discard(thread)
            self._lock.release()
        return self._current

    def _refresh_then_release(self) -> None:
        try:
            self._refresh()
        except Exception as exc:  # noqa: BLE001 - never into a run; the next TTL tries again
            self._failed(exc)
        finally:
            self._lock.release()
            with _lock:
                _threads.discard(threading.current_thread())

    def _failed(self, exc: Exception) -> None:
        # no traceback: it may quote the store's URL
        log.warning("refreshing %s failed: %s", self.ref.uri, _error_text(exc, self.uri))
        self._next = clock() + alias_ttl()

    def _refresh(self) -> None:
        try:
            loaded, checked = lookup(self.uri, self.ref)
        except RegistryUnavailable:  # never loaded (the node runs on its fallback): later
            self._next = clock() + alias_ttl()
            return
        self._next = checked + alias_ttl()
        if loaded == self._loaded:
            return
        template, problems = check_template(loaded, self._state, loaded.label)
        if problems:
            if _first(("invalid", self.uri, self.ref.uri, self.node, loaded.label)):
                keeps = self._current[1] or "its inline prompt"
                log.warning(
                    "node '%s': %s now names %s, which does not fit the workflow (%s); "
                    "still running on %s",
                    self.node,
                    self.ref.uri,
                    loaded.label,
                    "; ".join(message for message, _ in problems),
                    keeps,
                )
            return
        self._loaded = loaded
        self._current = (template, loaded.label)


# --------------------------------------------------------------------------- resolving


def check_template(
    loaded: LoadedPrompt, state: Any, where: str
) -> tuple[Template, list[tuple[str, str | None]]]:
    """A registry version's parsed template and its problems against the state fields
    ``state``, as ``(message, hint)`` whose message starts with ``where``: a bad
    placeholder, a field the state does not have."""
    template, problems, used = parse_registry_template(loaded.template)
    out: list[tuple[str, str | None]] = [(f"{where}: {p.message}", p.hint) for p in problems]
    for name, _ in used:
        if name not in state:
            out.append(
                (
                    f"{where} reads {{{{ {name} }}}}, which is not a state field",
                    did_you_mean(name, state)
                    or f"add '{name}' to state.fields, or register a version without it",
                )
            )
    return template, out


def resolve_prompts(workflow: LoadedWorkflow) -> dict[str, ResolvedPrompt]:
    """The registry template of every node with a ``prompt_ref`` (by node id), validated
    against the state; raises ``WorkflowValidationError`` for bad placeholders and
    ``PromptRegistryError`` when a version without fallback cannot be loaded. An alias's
    ``ResolvedPrompt`` carries the ``PromptSource`` that re-reads it at run time."""
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
            loaded, checked = lookup(uri, ref)
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
            resolved = ResolvedPrompt(parse_template(node.prompt)[0], None, reason)
            out[node.id] = _with_source(uri, ref, node.id, workflow, resolved, clock())
            continue
        where = f"node '{node.id}' ({loaded.label} in the registry)"
        template, problems = check_template(loaded, workflow.state_types, where)
        for message, hint in problems:
            issues.append(Issue(message, doc.file, line, hint, path))
        resolved = ResolvedPrompt(template, loaded)
        out[node.id] = _with_source(uri, ref, node.id, workflow, resolved, checked)
    if issues:
        raise WorkflowValidationError(issues + missing)
    if missing:
        raise PromptRegistryError(missing)
    return out


def _with_source(
    uri: str,
    ref: PromptRef,
    node: str,
    workflow: LoadedWorkflow,
    resolved: ResolvedPrompt,
    checked: float,
) -> ResolvedPrompt:
    if ref.alias is None:
        return resolved
    from dataclasses import replace

    source = PromptSource(uri, ref, node, workflow.state_types, resolved, checked)
    return replace(resolved, source=source)


def _warn_once(uri: str, prompt_uri: str, node: str, reason: str) -> None:
    if not _first((uri, prompt_uri, node)):
        return
    log.warning(
        "node '%s': cannot load %s (%s); running on its inline prompt", node, prompt_uri, reason
    )
