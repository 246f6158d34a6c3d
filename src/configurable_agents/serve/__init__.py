"""The HTTP server: one workflow behind a FastAPI app (``create_app``), run records in SQL
(``records``), runs bounded and recorded from queued to finished (``runner``).

Needs the ``server`` extra (``pip install "configurable-agents[server]"``).
"""

from __future__ import annotations

import importlib.util

from ..exceptions import MissingExtraError

for _module, _package in (
    ("fastapi", "fastapi"),
    ("sqlalchemy", "sqlalchemy"),
    ("prometheus_client", "prometheus-client"),
):
    if importlib.util.find_spec(_module) is None:
        raise MissingExtraError(_package, "server", "The HTTP server")

from .app import API_KEY_ENV, create_app, request_shutdown, to_api  # noqa: E402
from .records import DEFAULT_DATABASE_FILE, RunStore, default_database_url  # noqa: E402

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_DATABASE_FILE",
    "RunStore",
    "create_app",
    "default_database_url",
    "request_shutdown",
    "to_api",
]
