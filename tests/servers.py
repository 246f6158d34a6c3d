"""Throwaway real servers for tests: PostgreSQL, an MLflow tracking server, headless Chromium.

Plain helpers with no pytest dependency; the fixtures that use them live in
``tests/observe/conftest.py``. Everything listens on 127.0.0.1 only and is stopped by the
caller (the fixtures do it at the end of the session).

On Debian 12 the binaries come from the ``postgresql`` and ``chromium`` packages
(``.ci/install-servers.sh`` installs them). PostgreSQL refuses to run as root, so when the
tests run as root (as CI does) ``initdb`` and ``pg_ctl`` run as the ``postgres`` OS user
that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

PG_USER = "postgres"
CHROMIUM = Path("/usr/bin/chromium")


class MissingServerBinary(RuntimeError):
    """A program a server needs is not installed (tests skip locally, fail on CI)."""


def skip_unless_ci(reason: str) -> NoReturn:
    """``pytest.skip`` on a developer's machine; ``pytest.fail`` when ``CI`` is set.

    CI must have every server, so a missing one fails there instead of passing unseen.
    """
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group led by ``proc``, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    # Workers may outlive their parent; the group id stays valid while any member lives.
    _kill_group(proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path | None:
    """Debian's ``/usr/lib/postgresql/<major>/bin``, newest major first; ``PG_BIN`` overrides."""
    candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []

    def major(path: Path) -> int:
        name = path.parent.name
        return int(name) if name.isdigit() else -1

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``url()`` gives SQLAlchemy URLs for its databases."""

    root: Path
    bin_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = PG_USER
    as_user: str | None = PG_USER
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "postgres.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        """``CREATE DATABASE dbname`` and return its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", dbname):
            raise ValueError(f"unsafe database name: {dbname!r}")
        import psycopg2  # type: ignore[import-untyped]  # psycopg2-binary (dev dependency)

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", connect_timeout=10
        )
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        return self.url(dbname)

    def pg_ctl(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return _run_pg(
            self, [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout
        )

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` and remove the cluster's files."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _run_pg(
    server: PostgresServer, argv: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", server.as_user, "--"] if server.as_user else []
    return subprocess.run(
        [*prefix, *argv],
        cwd=server.root,  # the caller's cwd may be a root-only directory
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _check(result: subprocess.CompletedProcess[str], what: str, server: PostgresServer) -> None:
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"--- {server.log_path} ---\n{log_tail(server.log_path)}"
        )


def start_postgres(*, attempts: int = 3) -> PostgresServer:
    """Start a throwaway cluster on 127.0.0.1:<free port>, trust auth, fsync off.

    Its files live in a fresh directory under the system temp dir (pytest's own temp dirs
    are root-only, and the server runs as ``postgres``); ``stop()`` removes it.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise MissingServerBinary(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
            "(install the Debian 'postgresql' package: .ci/install-servers.sh)"
        )
    as_user: str | None = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise MissingServerBinary("running as root but 'runuser' is missing (util-linux)")
        try:
            pw = pwd.getpwnam(PG_USER)
        except KeyError:
            raise MissingServerBinary(
                f"running as root but there is no {PG_USER!r} OS user to run PostgreSQL as"
            ) from None
        as_user = PG_USER

    root = Path(tempfile.mkdtemp(prefix="pg-test-"))
    try:
        (root / "sock").mkdir()
        if as_user is not None:
            for path in (root, root / "sock"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        server = PostgresServer(root=root, bin_dir=bin_dir, port=0, as_user=as_user)
        initdb = [
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        _check(_run_pg(server, initdb, timeout=120), "initdb", server)
        for attempt in range(attempts):
            server.port = free_port()
            options = (
                f"-h 127.0.0.1 -p {server.port} -k {server.socket_dir}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            result = server.pg_ctl(
                "start", "-w", "-t", "60", "-l", str(server.log_path), "-o", options
            )
            if result.returncode == 0:
                return server
            # Another process may have taken the port between free_port() and the bind.
            if attempt + 1 == attempts or "could not bind" not in log_tail(server.log_path):
                _check(result, "pg_ctl start", server)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``stop()`` ends its whole process group."""

    url: str
    backend_uri: str
    artifacts_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        _stop_process_group(self.process)


def _mlflow_cli() -> list[str]:
    script = Path(sys.executable).with_name("mlflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow_server(workdir: Path, *, timeout: float = 90.0) -> MlflowServer:
    """``mlflow server`` on 127.0.0.1:<free port>, one worker, SQLite store in ``workdir``.

    Artifacts are proxied (``--serve-artifacts``) into ``workdir/artifacts``, so clients
    need no access to the server's file system, as with a real remote server. Returns once
    ``GET /health`` answers 200; raises with the tail of the server log otherwise.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    artifacts = workdir / "artifacts"
    log_path = workdir / "mlflow-server.log"
    argv = [
        *_mlflow_cli(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_"))
    }
    env |= {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        backend_uri=backend_uri,
        artifacts_dir=artifacts,
        log_path=log_path,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _http_ok(f"{server.url}/health"):
            return server
        time.sleep(0.5)
    exited = process.poll()
    server.stop()
    state = f"exited with {exited}" if exited is not None else f"not healthy after {timeout:.0f} s"
    raise RuntimeError(
        f"mlflow server on {server.url} {state}: {' '.join(argv)}\n"
        f"--- {log_path} (tail) ---\n{log_tail(log_path)}"
    )


# --------------------------------------------------------------------------- Chromium


def chromium_dump_dom(
    url: str,
    screenshot_path: Path | None = None,
    *,
    wait_ms: int = 20_000,
    window_size: tuple[int, int] = (1400, 900),
    chromium: Path = CHROMIUM,
    timeout: float | None = None,
) -> str:
    """Load ``url`` in headless Chromium and return the DOM after scripts ran.

    ``--virtual-time-budget`` lets a single-page app fetch and render for ``wait_ms`` of
    virtual time (it pauses while network requests are pending) before the DOM is dumped;
    the same run saves a PNG screenshot when ``screenshot_path`` is given.
    """
    if not chromium.is_file():
        raise MissingServerBinary(
            f"{chromium} not found (install the Debian 'chromium' package: .ci/install-servers.sh)"
        )
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        argv = [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={wait_ms}",
            f"--window-size={window_size[0]},{window_size[1]}",
            "--dump-dom",
        ]
        if screenshot_path is not None:
            screenshot_path.parent.mkdir(parents=True, exist_ok=True)
            screenshot_path.unlink(missing_ok=True)
            argv.append(f"--screenshot={screenshot_path}")
        argv.append(url)
        proc = subprocess.Popen(
            argv,
            cwd=profile,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        limit = timeout if timeout is not None else wait_ms / 1000 + 90
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise RuntimeError(
                f"chromium timed out after {limit:.0f} s on {url}:\n"
                f"{err.decode(errors='replace')[-3000:]}"
            ) from None
        finally:
            # Renderer or zygote processes must not outlive the profile directory.
            _kill_group(proc.pid, signal.SIGKILL)
    dom = out.decode("utf-8", errors="replace")
    if proc.returncode != 0 or not dom.strip():
        raise RuntimeError(
            f"chromium exited with {proc.returncode} on {url} and dumped "
            f"{len(dom)} characters:\n{err.decode(errors='replace')[-3000:]}"
        )
    if screenshot_path is not None and not screenshot_path.is_file():
        raise RuntimeError(
            f"chromium wrote no screenshot to {screenshot_path}:\n"
            f"{err.decode(errors='replace')[-3000:]}"
        )
    return dom
