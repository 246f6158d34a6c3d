"""Write a deploy bundle for one workflow: ``write_bundle(workflow, out_dir)``.

Layout of the bundle::

    Dockerfile  .dockerignore  docker-compose.yml  README.md
    app/workflow.yaml (+ price file, model file, tool modules it names, when next to it)
    package/                     the configurable-agents source (when run from a checkout)
    prometheus/prometheus.yml    prometheus/rules.yml
    alertmanager/alertmanager.yml
    grafana/provisioning/datasources/prometheus.yml
    grafana/provisioning/dashboards/configurable-agents.yml
    grafana/dashboards/*.json
"""

from __future__ import annotations

import io
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..exceptions import Issue, UserError
from ..observe.metrics.alerts import AlertThresholds, write_rules
from . import templates as t

__all__ = ["IMAGES", "SERVICES", "Bundle", "write_bundle"]

SERVICES = ("workflow", "mlflow", "prometheus", "alertmanager", "grafana", "phoenix")

# Third-party images, pinned; the workflow and mlflow services use the image built here.
IMAGES = {
    "prometheus": "prom/prometheus:v2.53.0",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "grafana": "grafana/grafana:11.1.0",
    "phoenix": "arizephoenix/phoenix:version-11.23.1",
}

COMPOSE_MARK = "written by `configurable-agents deploy`"

# Extras every bundle installs: the HTTP server and metrics, and MLflow for traces and the UI.
BASE_EXTRAS = ("server", "mlflow")


@dataclass
class Bundle:
    """What ``write_bundle`` wrote."""

    directory: Path
    files: list[Path]
    extras: list[str]
    install: str  # "source" (package/ copied from a checkout) or "pypi"
    notes: list[str] = field(default_factory=list)  # things the user should check


def write_bundle(
    workflow_path: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    thresholds: AlertThresholds | None = None,
    bind: str = "127.0.0.1",
    wire_observability: bool = True,
    project_root: Path | None = None,
) -> Bundle:
    """Write the deploy bundle of the workflow at ``workflow_path`` into ``out_dir``.

    Raises ``UserError`` when the workflow is invalid, or when ``out_dir`` is not empty and
    ``force`` is false. ``thresholds``: alert thresholds (default: the rules file's).
    ``bind``: the host address ports are published on. ``wire_observability``: point the
    bundled workflow's MLflow tracing and OTLP export at the stack's mlflow and phoenix
    services. ``project_root``: the configurable-agents source tree to copy into the image
    (default: this package's checkout, if it runs from one; else the image installs the
    released version from PyPI).
    """
    from ..config import load_workflow

    source = Path(workflow_path)
    loaded = load_workflow(source)
    out = Path(out_dir)
    _check_output(out, force)
    root = project_root if project_root is not None else _checkout()
    install = "source" if root is not None else "pypi"
    notes: list[str] = []
    spec = loaded.spec
    providers = _providers(spec)
    extras = _extras(providers)
    api_key_env = _api_key_env(providers)
    if install == "pypi":
        notes.append(
            f"the image installs configurable-agents {__version__} from PyPI; deploy from a "
            "source checkout to build it from source instead"
        )

    if _is_bundle(out):  # an earlier bundle: drop its copies, which may be stale
        for managed in ("package", "app", "grafana/dashboards"):
            shutil.rmtree(out / managed, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        files.append(path)

    # The workflow and what it refers to.
    text = source.read_text(encoding="utf-8")
    if wire_observability:
        text = _wired(text, source)
    write("app/workflow.yaml", text)
    files += _copy_assets(loaded, out / "app", notes)

    # The image.
    if root is not None:
        files += _copy_source(root, out / "package")
    write(
        "Dockerfile",
        t.dockerfile(
            extras=extras,
            install=install,
            compiles="local" in extras,
            version=__version__,
            workflow=spec.flow.name,
        ),
    )
    write(".dockerignore", t.DOCKERIGNORE)

    # The stack.
    ports = {
        "workflow": t.WORKFLOW_PORT,
        "mlflow": t.MLFLOW_PORT,
        "prometheus": t.PROMETHEUS_PORT,
        "alertmanager": t.ALERTMANAGER_PORT,
        "grafana": t.GRAFANA_PORT,
        "phoenix": t.PHOENIX_PORT,
    }
    compose = _compose(spec.flow.name, bind, ports, api_key_env, ollama="ollama" in providers)
    write("docker-compose.yml", compose)
    write("prometheus/prometheus.yml", t.prometheus_yml(workflow=spec.flow.name))
    files.append(write_rules(out / "prometheus" / "rules.yml", thresholds))
    write("alertmanager/alertmanager.yml", t.ALERTMANAGER_YML)
    write("grafana/provisioning/datasources/prometheus.yml", t.GRAFANA_DATASOURCES)
    write("grafana/provisioning/dashboards/configurable-agents.yml", t.GRAFANA_DASHBOARD_PROVIDER)
    from ..observe.metrics.dashboards import write_dashboards

    files += write_dashboards(out / "grafana" / "dashboards")
    write(
        "README.md",
        t.readme(
            workflow=spec.flow.name,
            source_name=source.name,
            extras=extras,
            install=install,
            bind=bind,
            ports=ports,
            api_key_env=api_key_env,
            wired=wire_observability,
            notes=notes,
            thresholds=thresholds or AlertThresholds(),
            example_inputs=_example_inputs(spec),
        ),
    )
    return Bundle(out, files, extras, install, notes)


# --------------------------------------------------------------------------- checks


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(Issue(f"{out} exists and is not a folder", hint="choose another -o DIR"))
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            Issue(
                f"{out} is not empty",
                hint="choose another -o DIR, or pass --force to write the bundle over it",
            )
        )


def _is_bundle(out: Path) -> bool:
    """Whether ``out`` holds a bundle written by this command (its compose file says so)."""
    try:
        head = (out / "docker-compose.yml").read_text(encoding="utf-8")[:300]
    except OSError:
        return False
    return COMPOSE_MARK in head


# --------------------------------------------------------------------------- what to install


def _providers(spec: Any) -> set[str]:
    from ..providers import merge_llm

    return {merge_llm(spec.config.llm, node.llm).provider or "local" for node in spec.nodes}


def _extras(providers: set[str]) -> list[str]:
    from ..providers import PROVIDERS

    wanted = set(BASE_EXTRAS)
    wanted |= {e for p in providers if (e := PROVIDERS[p].extra) is not None}
    return sorted(wanted)


def _api_key_env(providers: set[str]) -> list[str]:
    from ..providers import PROVIDERS

    return sorted({name for p in providers for name in PROVIDERS[p].api_key_env})


def _checkout() -> Path | None:
    """The source tree this package runs from (``src/`` layout with its pyproject.toml)."""
    import configurable_agents

    package = Path(configurable_agents.__file__).resolve().parent
    root = package.parent.parent
    pyproject = root / "pyproject.toml"
    if package.parent.name != "src" or not pyproject.is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return None
    return root if name == "configurable-agents" else None


def _copy_source(root: Path, target: Path) -> list[Path]:
    """Copy what building the package needs: pyproject.toml, its readme and licence files,
    and ``src/configurable_agents`` (no caches)."""
    files = []
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        if (root / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            files.append(Path(shutil.copy2(root / name, target / name)))
    shutil.copytree(
        root / "src" / "configurable_agents",
        target / "src" / "configurable_agents",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
    )
    return files + sorted(p for p in (target / "src").rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the workflow


def _wired(text: str, source: Path) -> str:
    """The workflow with MLflow tracing and OTLP export pointed at the bundle's services."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from ..config import load_workflow_text

    yaml = YAML()  # round trip: the user's comments, quotes and order stay
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the style of the README and examples
    doc: Any = yaml.load(text)

    def section(parent: Any, key: str) -> Any:
        if not isinstance(parent.get(key), dict):
            parent[key] = CommentedMap()
        return parent[key]

    observability = section(section(doc, "config"), "observability")
    mlflow = section(observability, "mlflow")
    mlflow["enabled"] = True
    mlflow["tracking_uri"] = t.MLFLOW_URI
    otel = section(observability, "opentelemetry")
    otel["enabled"] = True
    otel["endpoint"] = t.OTLP_ENDPOINT
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    wired = (
        f"# {source.name}, copied by `configurable-agents deploy`: observability points at the\n"
        "# bundle's mlflow and phoenix services (config.observability).\n" + buffer.getvalue()
    )
    load_workflow_text(wired, str(source))  # still valid (raises a UserError otherwise)
    return wired


def _copy_assets(loaded: Any, app: Path, notes: list[str]) -> list[Path]:
    """Copy the files the workflow names (price file, GGUF model, tool modules) that live in
    its folder; name the others in ``notes``."""
    from ..providers import merge_llm

    spec = loaded.spec
    directory: Path = loaded.directory
    wanted: list[tuple[str, str]] = []  # (what, path as written)
    if spec.config.pricing.file:
        wanted.append(("config.pricing.file", spec.config.pricing.file))
    for node in spec.nodes:
        llm = merge_llm(spec.config.llm, node.llm)
        if llm.provider == "local" and llm.model_path:
            wanted.append((f"node '{node.id}' model_path", llm.model_path))
    copied: list[Path] = []
    seen: set[Path] = set()

    def copy(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        target = app / path.relative_to(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(
                path,
                target,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
            copied.extend(sorted(p for p in target.rglob("*") if p.is_file()))
        else:
            copied.append(Path(shutil.copy2(path, target)))

    for what, written in wanted:
        path = Path(written).expanduser()
        resolved = (path if path.is_absolute() else directory / path).resolve()
        if not path.is_absolute() and resolved.is_relative_to(directory) and resolved.exists():
            copy(resolved)
        else:
            notes.append(
                f"{what} {written!r} is not a file in the workflow's folder, so it is not in "
                "the image: copy it into app/ and refer to it by a relative path"
            )
    for node in spec.nodes:
        for tool in node.tools:
            if ":" not in tool:
                continue
            top = tool.partition(":")[0].split(".")[0]
            for candidate in (directory / top, directory / f"{top}.py"):
                if candidate.exists():
                    copy(candidate.resolve())
                    break
            else:
                notes.append(
                    f"tool '{tool}' (node '{node.id}'): module '{top}' is not in the workflow's "
                    "folder; make it importable in the image (copy it into app/, or add its "
                    "package to the Dockerfile's pip install)"
                )
    return copied


# --------------------------------------------------------------------------- compose


def _compose(
    workflow: str, bind: str, ports: dict[str, int], api_key_env: list[str], *, ollama: bool
) -> str:
    from ruamel.yaml import YAML

    image = f"configurable-agents/{_slug(workflow)}:latest"

    def publish(service: str) -> list[str]:
        return [f"{bind}:{ports[service]}:{ports[service]}"]

    def python_get(url: str) -> dict[str, Any]:
        probe = f"import urllib.request; urllib.request.urlopen('{url}', timeout=5)"
        return {
            "test": ["CMD", "python", "-c", probe],
            "interval": "15s",
            "timeout": "10s",
            "retries": 5,
            "start_period": "30s",
        }

    environment = {
        "CONFIGURABLE_AGENTS_API_KEY": "${CONFIGURABLE_AGENTS_API_KEY:-}",
        **{name: f"${{{name}:-}}" for name in api_key_env},
    }
    workflow_service: dict[str, Any] = {
        "build": {"context": "."},
        "image": image,
        "restart": "unless-stopped",
        "ports": publish("workflow"),
        "environment": environment,
        "volumes": ["workflow-data:/data"],
        "depends_on": {
            "mlflow": {"condition": "service_healthy"},
            "phoenix": {"condition": "service_started"},
        },
        "healthcheck": python_get(f"http://127.0.0.1:{ports['workflow']}/health"),
    }
    if ollama:
        workflow_service["extra_hosts"] = ["host.docker.internal:host-gateway"]
    mlflow_port = str(ports["mlflow"])
    services: dict[str, Any] = {
        "workflow": workflow_service,
        "mlflow": {
            "build": {"context": "."},
            "image": image,
            "restart": "unless-stopped",
            "command": [
                "mlflow",
                "server",
                "--host",
                "0.0.0.0",
                "--port",
                mlflow_port,
                "--workers",
                "2",
                "--backend-store-uri",
                "sqlite:////mlflow/mlflow.db",
                "--artifacts-destination",
                "/mlflow/artifacts",
                # The workflow server calls it as mlflow:5000; browsers as localhost.
                "--allowed-hosts",
                f"mlflow,mlflow:{mlflow_port},localhost,localhost:*,127.0.0.1,127.0.0.1:*",
            ],
            # The UI and trace store only: no background job workers (several processes).
            "environment": {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            "ports": publish("mlflow"),
            "volumes": ["mlflow-data:/mlflow"],
            "healthcheck": python_get(f"http://127.0.0.1:{mlflow_port}/health"),
        },
        "prometheus": {
            "image": IMAGES["prometheus"],
            "restart": "unless-stopped",
            "command": [
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                "--storage.tsdb.retention.time=15d",
                "--web.enable-lifecycle",
            ],
            "ports": publish("prometheus"),
            "volumes": ["./prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
            "depends_on": ["workflow", "alertmanager"],
        },
        "alertmanager": {
            "image": IMAGES["alertmanager"],
            "restart": "unless-stopped",
            "command": [
                "--config.file=/etc/alertmanager/alertmanager.yml",
                "--storage.path=/alertmanager",
            ],
            "ports": publish("alertmanager"),
            "volumes": ["./alertmanager:/etc/alertmanager:ro", "alertmanager-data:/alertmanager"],
        },
        "grafana": {
            "image": IMAGES["grafana"],
            "restart": "unless-stopped",
            "environment": {
                "GF_SECURITY_ADMIN_USER": "admin",
                "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:-admin}",
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "GF_ANALYTICS_REPORTING_ENABLED": "false",
                "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": (
                    f"{t.DASHBOARDS_DIR}/workflow-performance.json"
                ),
            },
            "ports": publish("grafana"),
            "volumes": [
                "./grafana/provisioning:/etc/grafana/provisioning:ro",
                f"./grafana/dashboards:{t.DASHBOARDS_DIR}:ro",
                "grafana-data:/var/lib/grafana",
            ],
            "depends_on": ["prometheus"],
        },
        "phoenix": {
            "image": IMAGES["phoenix"],
            "restart": "unless-stopped",
            "environment": {"PHOENIX_WORKING_DIR": "/mnt/data"},
            "ports": publish("phoenix"),
            "volumes": ["phoenix-data:/mnt/data"],
        },
    }
    document = {
        "services": services,
        "volumes": {
            name: {}
            for name in (
                "workflow-data",
                "mlflow-data",
                "prometheus-data",
                "alertmanager-data",
                "grafana-data",
                "phoenix-data",
            )
        },
    }
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    header = f"# The '{workflow}' stack ({COMPOSE_MARK}): docker compose up -d --build\n"
    return header + buffer.getvalue()


def _example_inputs(spec: Any) -> dict[str, Any]:
    """The required inputs with a placeholder of their type, for the README's curl line."""
    samples = {"str": "...", "int": 1, "float": 1.0, "bool": True}
    return {
        name: samples.get(f.type, [] if f.type.startswith("list") else {})
        for name, f in spec.state.fields.items()
        if f.required
    }


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return slug or "workflow"
