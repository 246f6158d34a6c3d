"""Real-server fixtures for the tracing tests: PostgreSQL and an MLflow tracking server.

They start on first use and stop at the end of the session. When a server's binaries are
missing the tests that need it skip on a developer's machine but fail when ``CI`` is set:
CI installs them with ``.ci/install-servers.sh``.
"""

from __future__ import annotations

import importlib.util
import itertools
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from servers import (
    MissingServerBinary,
    MlflowServer,
    PostgresServer,
    skip_unless_ci,
    start_mlflow_server,
    start_postgres,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's binaries), stopped at the end."""
    if importlib.util.find_spec("psycopg2") is None:
        skip_unless_ci("psycopg2 is not installed (pip install psycopg2-binary)")
    try:
        server = start_postgres()
    except MissingServerBinary as exc:
        skip_unless_ci(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a database on the session's server, shared by the whole session."""
    return postgres_server.create_database("session_db")


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_tracking_uri(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a new, empty database for this test alone."""
    name = f"test_{next(_database_numbers)}_{uuid.uuid4().hex[:8]}"
    return postgres_server.create_database(name)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 with a SQLite store; ``.url``, ``.backend_uri``, ``.pid``."""
    if importlib.util.find_spec("mlflow") is None:
        skip_unless_ci("mlflow is not installed (the 'mlflow' extra)")
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung store or receiver)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
