"""``configurable-agents deploy``: the bundle's files, checked with the real tools where they
exist here (promtool, amtool, mlflow server); no Docker engine runs in tests, so the compose
file and the Dockerfile are checked by reading them.

promtool and amtool come from Debian's ``prometheus`` and ``prometheus-alertmanager``
(``.ci/install-servers.sh``); without them those checks skip locally and fail on CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
from ruamel.yaml import YAML
from typer.testing import CliRunner

import configurable_agents as ca
from configurable_agents.cli.deploy import deploy_command
from configurable_agents.deploy import SERVICES, write_bundle
from configurable_agents.exceptions import UserError
from configurable_agents.observe.metrics.alerts import AlertThresholds
from configurable_agents.observe.metrics.dashboards import DASHBOARDS
from servers import free_port, log_tail, skip_unless_ci

from conftest import EXAMPLES, MINIMAL

pytest.importorskip("grafana_foundation_sdk")

REPO = Path(__file__).resolve().parent.parent


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_unless_ci(f"{name} not found (Debian package '{package}': .ci/install-servers.sh)")
    return path


def check(argv: list[str], cwd: Path) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{output}"
    return output


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    written = write_bundle(EXAMPLES / "review_loop.yaml", out)
    assert written.directory == out and written.install == "source" and not written.notes
    assert all(p.is_file() for p in written.files)
    return out


@pytest.fixture
def compose(bundle: Path) -> dict[str, Any]:
    return load(bundle / "docker-compose.yml")


def test_bundle_has_every_file(bundle):
    expected = {
        "Dockerfile",
        ".dockerignore",
        "docker-compose.yml",
        "README.md",
        "app/workflow.yaml",
        "prometheus/prometheus.yml",
        "prometheus/rules.yml",
        "alertmanager/alertmanager.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/configurable-agents.yml",
        "package/pyproject.toml",
        "package/README.md",
        "package/src/configurable_agents/__init__.py",
        "package/src/configurable_agents/observe/metrics/prometheus/rules.yml",
        *(f"grafana/dashboards/{name}" for name in DASHBOARDS),
    }
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert expected <= present
    assert not [p for p in present if "__pycache__" in p or p.endswith(".pyc")]
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    assert "docker compose up" in readme and '{"inputs": {"topic": "..."}}' in readme


def test_prometheus_config_and_rules_pass_promtool(bundle):
    promtool = tool("promtool", "prometheus")
    output = check([promtool, "check", "config", "prometheus/prometheus.yml"], bundle)
    assert "SUCCESS: 1 rule files found" in output
    assert "SUCCESS: 17 rules found" in output


def test_alertmanager_config_passes_amtool(bundle):
    amtool = tool("amtool", "prometheus-alertmanager")
    output = check([amtool, "check-config", "alertmanager/alertmanager.yml"], bundle)
    assert "SUCCESS" in output


def test_compose_wires_services_ports_and_volumes(bundle, compose):
    services = compose["services"]
    assert set(services) == set(SERVICES)
    published = {
        name: [str(p) for p in service.get("ports", [])] for name, service in services.items()
    }
    assert published == {
        "workflow": ["127.0.0.1:8000:8000"],
        "mlflow": ["127.0.0.1:5000:5000"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "alertmanager": ["127.0.0.1:9093:9093"],
        "grafana": ["127.0.0.1:3000:3000"],
        "phoenix": ["127.0.0.1:6006:6006"],
    }
    named = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), volume
            if source.startswith("./"):
                assert (bundle / source).exists(), f"{name}: {volume}"
            else:
                assert source in named, f"{name}: {volume}"
        for dependency in service.get("depends_on", []):
            assert dependency in services
    # The workflow server and the MLflow UI run from the image this bundle builds.
    for name in ("workflow", "mlflow"):
        assert services[name]["build"] == {"context": "."}
    assert services["workflow"]["image"] == services["mlflow"]["image"]
    assert "workflow-data:/data" in services["workflow"]["volumes"]
    assert "CONFIGURABLE_AGENTS_API_KEY" in services["workflow"]["environment"]
    mlflow = services["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == "sqlite:////mlflow/mlflow.db"
    assert "mlflow-data:/mlflow" in services["mlflow"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "./alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    assert services["phoenix"]["image"].startswith("arizephoenix/phoenix:")
    assert services["phoenix"]["environment"]["PHOENIX_WORKING_DIR"] == "/mnt/data"
    for name in ("prometheus", "alertmanager", "grafana", "phoenix"):
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest")


def container_port(service: dict[str, Any]) -> int:
    return int(str(service["ports"][0]).rsplit(":", 1)[1])


def test_configs_point_at_the_compose_services(bundle, compose):
    services = compose["services"]
    prometheus = load(bundle / "prometheus" / "prometheus.yml")
    assert prometheus["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    scrape = jobs["configurable-agents"]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == [
        f"workflow:{container_port(services['workflow'])}"
    ]
    (alertmanager,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == f"alertmanager:{container_port(services['alertmanager'])}"

    datasources = load(bundle / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    prom = next(d for d in datasources if d["type"] == "prometheus")
    assert prom["isDefault"] and prom["url"] == (
        f"http://prometheus:{container_port(services['prometheus'])}"
    )
    providers = load(bundle / "grafana/provisioning/dashboards/configurable-agents.yml")
    path = providers["providers"][0]["options"]["path"]
    mounts = dict(v.split(":")[1::-1] for v in services["grafana"]["volumes"])
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (
        home.startswith(path + "/") and (bundle / "grafana/dashboards" / Path(home).name).is_file()
    )
    for name in DASHBOARDS:
        dashboard = json.loads((bundle / "grafana/dashboards" / name).read_text(encoding="utf-8"))
        datasource = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
        assert datasource["query"] == prom["type"]


def test_bundled_workflow_sends_traces_to_mlflow_and_phoenix(bundle, compose):
    loaded = ca.load_workflow(bundle / "app" / "workflow.yaml")
    observability = loaded.spec.config.observability
    services = compose["services"]
    mlflow_port = services["mlflow"]["command"][services["mlflow"]["command"].index("--port") + 1]
    assert observability.mlflow.enabled
    assert observability.mlflow.tracking_uri == f"http://mlflow:{mlflow_port}"
    assert observability.opentelemetry.enabled
    assert observability.opentelemetry.endpoint == (
        f"http://phoenix:{container_port(services['phoenix'])}/v1/traces"
    )
    # The rest of the workflow is the user's, comments included.
    original = (EXAMPLES / "review_loop.yaml").read_text(encoding="utf-8")
    copied = (bundle / "app" / "workflow.yaml").read_text(encoding="utf-8")
    assert original.splitlines()[0] in copied
    assert loaded.spec.nodes == ca.load_workflow(EXAMPLES / "review_loop.yaml").spec.nodes


def test_dockerfile_installs_the_package_with_its_extras(bundle):
    dockerfile = (bundle / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM .*$", dockerfile, re.M) == ["FROM python:3.11-slim"]
    assert "COPY package/ /opt/configurable-agents/" in dockerfile
    (extras,) = re.findall(r'pip install "/opt/configurable-agents\[([a-z,]+)\]"', dockerfile)
    assert set(extras.split(",")) == {"server", "mlflow"}
    declared = tomllib.loads((bundle / "package" / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(extras.split(",")) <= set(declared["project"]["optional-dependencies"])
    assert "COPY app/ /app/" in dockerfile
    cmd = json.loads(re.search(r"CMD (\[.*?\])", dockerfile, re.S).group(1).replace("\\\n", ""))
    assert cmd[:3] == ["configurable-agents", "serve", "/app/workflow.yaml"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "build-essential" not in dockerfile  # no local model: nothing to compile
    ignore = (bundle / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {"*", "!package/", "!app/"} <= set(ignore)  # the context is the two folders


HOSTED = """\
schema_version: "1.0"
flow: {name: "triage.v2"}
config:
  llm: {provider: google, model: gemini-2.5-flash}
state:
  fields:
    ticket: {type: str, required: true}
    label: {type: str, default: ""}
    summary: {type: str, default: ""}
nodes:
  - id: label
    prompt: "Label {ticket}."
    outputs: [label]
  - id: summarize
    prompt: "Summarize {ticket}."
    outputs: [summary]
    llm: {provider: local}
edges:
  - {from: START, to: label}
  - {from: label, to: summarize}
  - {from: summarize, to: END}
"""


def test_extras_and_keys_follow_the_workflow_providers(write_workflow, tmp_path):
    bundle = write_bundle(write_workflow(HOSTED), tmp_path / "out").directory
    dockerfile = (bundle / "Dockerfile").read_text(encoding="utf-8")
    assert '"/opt/configurable-agents[google,local,mlflow,server]"' in dockerfile
    assert "build-essential cmake" in dockerfile  # llama-cpp-python compiles
    compose = load(bundle / "docker-compose.yml")
    environment = compose["services"]["workflow"]["environment"]
    assert environment["GOOGLE_API_KEY"] == "${GOOGLE_API_KEY:-}"
    assert environment["GEMINI_API_KEY"] == "${GEMINI_API_KEY:-}"
    assert compose["services"]["workflow"]["image"] == "configurable-agents/triage-v2:latest"
    assert "GOOGLE_API_KEY=..." in (bundle / "README.md").read_text(encoding="utf-8")


def test_files_the_workflow_names_are_copied(tmp_path, monkeypatch):
    folder = tmp_path / "wf"
    (folder / "prices").mkdir(parents=True)
    (folder / "prices" / "models.yaml").write_text(
        "models:\n  gemini-2.5-flash: {input_per_million: 1, output_per_million: 2}\n",
        encoding="utf-8",
    )
    (folder / "deploy_test_tools.py").write_text(
        'def double(n: int) -> int:\n    """Twice n."""\n    return 2 * n\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(folder))
    workflow = folder / "wf.yaml"
    workflow.write_text(
        MINIMAL.replace(
            "config:\n  llm: {provider: test}",
            "config:\n  llm: {provider: test}\n  pricing: {file: prices/models.yaml}",
        ).replace(
            "    outputs: [article]",
            "    outputs: [article]\n    tools: [deploy_test_tools:double, sample_tools:shout]",
        ),
        encoding="utf-8",
    )
    written = write_bundle(workflow, tmp_path / "out")
    app = written.directory / "app"
    assert (app / "prices" / "models.yaml").is_file()
    assert (app / "deploy_test_tools.py").is_file()
    assert [n for n in written.notes if "sample_tools" in n]  # not next to the workflow
    assert "sample_tools" in (written.directory / "README.md").read_text(encoding="utf-8")
    sys.modules.pop("deploy_test_tools", None)


def test_thresholds_and_bind_address(tmp_path):
    out = write_bundle(
        EXAMPLES / "review_loop.yaml",
        tmp_path / "out",
        thresholds=AlertThresholds(latency_p95_seconds=12),
        bind="0.0.0.0",
    ).directory
    rules = load(out / "prometheus" / "rules.yml")
    exprs = {r.get("record"): r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert exprs["configurable_agents:high_latency:p95_seconds_threshold"] == "vector(12)"
    ports = [p for s in load(out / "docker-compose.yml")["services"].values() for p in s["ports"]]
    assert all(str(p).startswith("0.0.0.0:") for p in ports)


def test_without_wiring_the_workflow_is_copied_verbatim(tmp_path):
    out = write_bundle(EXAMPLES / "review_loop.yaml", tmp_path / "out", wire_observability=False)
    copied = (out.directory / "app" / "workflow.yaml").read_bytes()
    assert copied == (EXAMPLES / "review_loop.yaml").read_bytes()
    assert "tracking_uri: http://mlflow:5000" in (out.directory / "README.md").read_text(
        encoding="utf-8"
    )


def test_a_non_empty_folder_needs_force(tmp_path):
    out = tmp_path / "out"
    (out / "app").mkdir(parents=True)
    (out / "app" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="not empty"):
        write_bundle(EXAMPLES / "review_loop.yaml", out)
    write_bundle(EXAMPLES / "review_loop.yaml", out, force=True)
    assert (out / "app" / "keep.txt").read_text(encoding="utf-8") == "mine"  # not our folder
    assert (out / "docker-compose.yml").is_file()
    # Over a bundle of its own, the copies it made are replaced, not merged.
    (out / "app" / "keep.txt").unlink()
    (out / "app" / "stale.yaml").write_text("old", encoding="utf-8")
    write_bundle(EXAMPLES / "review_loop.yaml", out, force=True)
    assert sorted(p.name for p in (out / "app").iterdir()) == ["workflow.yaml"]


# --------------------------------------------------------------------------- the command


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("deploy")(deploy_command)
    app.command("noop")(lambda: None)  # two commands, so "deploy" is a subcommand
    return app


def test_cli_writes_the_bundle(cli, tmp_path):
    result = CliRunner().invoke(
        cli, ["deploy", str(EXAMPLES / "review_loop.yaml"), "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "docker compose up -d --build" in result.output
    assert (tmp_path / "b" / "docker-compose.yml").is_file()


def test_cli_exit_2_on_an_invalid_workflow(cli, write_workflow, tmp_path):
    bad = write_workflow(MINIMAL.replace("{topic}", "{topc}"), "bad.yaml")
    result = CliRunner().invoke(cli, ["deploy", str(bad), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "topc" in result.output and "did you mean 'topic'" in result.output
    assert not (tmp_path / "b").exists()


def test_cli_exit_2_on_a_non_empty_folder_unless_forced(cli, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "x").write_text("", encoding="utf-8")
    args = ["deploy", str(EXAMPLES / "review_loop.yaml"), "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--force" in result.output
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0


# --------------------------------------------------------------------------- MLflow service


def test_mlflow_service_command_accepts_the_workflow_server(compose, tmp_path):
    """Run the compose file's ``mlflow server`` command (on loopback, paths moved to a temp
    folder): the workflow server's ``Host: mlflow:5000`` is allowed, a stranger's is not."""
    script = Path(sys.executable).with_name("mlflow")
    if not script.is_file():
        skip_unless_ci("mlflow is not installed (the 'mlflow' extra)")
    command = list(compose["services"]["mlflow"]["command"])
    port = free_port()
    replace = {
        "0.0.0.0": "127.0.0.1",
        command[command.index("--port") + 1]: str(port),
        "sqlite:////mlflow/mlflow.db": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "/mlflow/artifacts": str(tmp_path / "artifacts"),
        "2": "1",
    }
    argv = [str(script), *(replace.get(a, a) for a in command[1:])]
    log = tmp_path / "mlflow.log"
    environment = {**os.environ, **compose["services"]["mlflow"]["environment"]}
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"

    def status(host: str) -> int:
        request = urllib.request.Request(url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_tail(log)
            try:
                code = status("mlflow:5000")
                break
            except OSError:
                assert time.monotonic() < deadline, log_tail(log)
                time.sleep(0.5)
        assert code == 200, log_tail(log)
        assert status(f"localhost:{port}") == 200
        assert status("attacker.example") == 403
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived the server
            os.killpg(process.pid, signal.SIGKILL)


def test_readme_mentions_every_service(bundle):
    text = textwrap.dedent((bundle / "README.md").read_text(encoding="utf-8"))
    for service in SERVICES:
        assert f"| {service} |" in text
    assert "127.0.0.1" in text and "GRAFANA_ADMIN_PASSWORD" in text
    assert REPO.name not in text  # no paths of the machine that wrote it


def test_installed_from_a_wheel_the_image_installs_the_release(tmp_path, monkeypatch):
    from configurable_agents.deploy import bundle as bundle_module

    monkeypatch.setattr(bundle_module, "_checkout", lambda: None)
    written = write_bundle(EXAMPLES / "review_loop.yaml", tmp_path / "out")
    assert written.install == "pypi" and not (written.directory / "package").exists()
    dockerfile = (written.directory / "Dockerfile").read_text(encoding="utf-8")
    assert f'pip install "configurable-agents[mlflow,server]=={ca.__version__}"' in dockerfile
    assert "COPY package/" not in dockerfile
    assert [n for n in written.notes if "PyPI" in n]
