"""The trace writer process: ``python -m configurable_agents.observe.writer_process``.

Started by ``observe.tracing.TraceWriter``. It reads length-prefixed pickled runs on stdin,
writes each as an MLflow trace and answers ``(run_id, error, warning)`` on stdout, in order.
It exits when stdin closes or its parent process is gone. Anything a library prints goes to
stderr (the parent sends that to /dev/null), so stdout carries only the answers.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time


def _exit_with_parent(parent: int) -> None:
    """Stop when the parent is gone, even in the middle of a write to a hung store: the
    parent has already told the user which traces it gave up on."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main() -> int:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # Ctrl-C in a terminal is for the CLI; it tells us when to stop by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    from .tracing import TraceStore, _frame, _read_frame

    store = TraceStore()
    requests = sys.stdin.buffer
    while True:
        job = _read_frame(requests)
        if job is None:
            break
        run_id, info, result, config, tags = job
        error, warning = store.write(info, result, config, tags)
        answers.write(_frame((run_id, error, warning)))
        answers.flush()
    answers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
