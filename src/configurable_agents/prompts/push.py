"""``prompts push`` / ``prompts list``: a workflow's inline prompts into the MLflow Prompt
Registry, and what the registry holds.

Names: a node's inline ``prompt`` is registered as ``<flow.name>.<node id>``, unless the node
also has a ``prompt_ref``, whose ``name`` is then used (the inline prompt being that ref's
fallback, pushing it makes the two the same text). A node with only a ``prompt_ref`` has no
inline text and is skipped. A prompt whose latest version already has the same template is
not registered again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.template import parse_template
from ..exceptions import InputError, Issue
from ..urls import resolve_tracking_uri
from .registry import client_for, to_registry_template

if TYPE_CHECKING:
    from ..config.validate import LoadedWorkflow

# MLflow keeps a trace's link to a prompt version as "name/version" in a 36-character column
# (``entity_associations.destination_id``); PostgreSQL and MySQL refuse longer ids.
LINK_ID_LIMIT = 36


@dataclass
class Pushed:
    node: str
    name: str
    version: int
    registered: bool  # False: the latest version already had this template
    warning: str | None = None

    @property
    def ref_line(self) -> str:
        return f"prompt_ref: {{name: {self.name}, version: {self.version}}}"


@dataclass
class Listed:
    name: str
    versions: list[tuple[int, list[str]]] = field(default_factory=list)  # (version, aliases)
    tags: dict[str, str] = field(default_factory=dict)


def prompt_name(workflow: LoadedWorkflow, node_id: str) -> str:
    """The registry name of a node's inline prompt (see the module docstring)."""
    node = workflow.spec.node(node_id)
    if node.prompt_ref is not None:
        return node.prompt_ref.name
    return f"{workflow.spec.flow.name}.{node_id}"


def _client(uri: str, *, create: bool) -> Any:
    from .registry import RegistryUnavailable

    if create and uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        import mlflow

        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        return client_for(uri)
    except RegistryUnavailable as exc:
        raise InputError(Issue(f"no prompt registry at {uri}: {exc}")) from None


def _failed(uri: str, exc: Exception) -> InputError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(
        Issue(
            f"the prompt registry at {uri} cannot be used: {text}",
            hint="is the store up, and is observability.mlflow.tracking_uri (or --tracking-uri) "
            "right?",
        )
    )


def push(workflow: LoadedWorkflow, tracking_uri: str | None = None) -> tuple[str, list[Pushed]]:
    """Register every inline node prompt that differs from its latest registered version;
    ``(store, what was done per node)``."""
    configured = workflow.spec.config.observability.mlflow.tracking_uri
    uri = resolve_tracking_uri(tracking_uri or configured)
    client = _client(uri, create=True)
    out: list[Pushed] = []
    try:
        for node in workflow.spec.nodes:
            if node.prompt is None:
                continue
            name = prompt_name(workflow, node.id)
            template = to_registry_template(parse_template(node.prompt)[0])
            latest = client.load_prompt(
                f"prompts:/{name}@latest", allow_missing=True, cache_ttl_seconds=0
            )
            if latest is not None and latest.is_text_prompt and latest.template == template:
                pushed = Pushed(node.id, name, int(latest.version), registered=False)
            else:
                version = client.register_prompt(
                    name=name,
                    template=template,
                    commit_message=f"configurable-agents prompts push {Path(workflow.file).name}",
                    tags={"workflow": workflow.spec.flow.name, "node": node.id},
                )
                pushed = Pushed(node.id, name, int(version.version), registered=True)
            if len(f"{name}/{pushed.version}") > LINK_ID_LIMIT:
                pushed.warning = (
                    f"'{name}/{pushed.version}' is longer than {LINK_ID_LIMIT} characters: MLflow "
                    "cannot link traces to it on PostgreSQL or MySQL stores; use a shorter name "
                    "(give the node a prompt_ref with one)"
                )
            out.append(pushed)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store's failure, told to the user
        raise _failed(uri, exc) from None
    return uri, out


def list_prompts(uri: str, names: list[str] | None = None) -> list[Listed]:
    """The registered prompts (all, or those ``names``), with their versions and aliases."""
    client = _client(resolve_tracking_uri(uri), create=False)
    try:
        if names is None:
            found, token = [], None
            while True:
                page = client.search_prompts(max_results=1000, page_token=token)
                found += [p.name for p in page]
                token = page.token
                if not token:
                    break
            names = sorted(found)
        out = []
        for name in names:
            prompt = client.get_prompt(name)
            if prompt is None:
                continue
            listed = Listed(name, tags={k: v for k, v in prompt.tags.items() if k[:1] != "_"})
            for version in client.search_prompt_versions(name, max_results=1000):
                full = client.get_prompt_version(name, version.version)
                listed.versions.append((int(version.version), list(full.aliases or [])))
            listed.versions.sort()
            out.append(listed)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store's failure, told to the user
        raise _failed(uri, exc) from None
    return out


def workflow_prompt_names(workflow: LoadedWorkflow) -> list[str]:
    """The registry names a workflow uses or would push to, in node order."""
    names: list[str] = []
    for node in workflow.spec.nodes:
        if node.prompt is not None or node.prompt_ref is not None:
            name = prompt_name(workflow, node.id)
            if name not in names:
                names.append(name)
    return names
