"""Leases on in-flight run records, for several server replicas on one database.

Every ``RunStore`` has a ``replica`` id; each in-flight row it writes carries ``owner`` and
``lease_until``. Its heartbeat (``beat``, a thread) renews those leases every third of
``lease_seconds`` and fails the in-flight rows of other replicas whose lease has passed
(``reap``): the replica that owned them crashed, was killed or lost the database, and nobody
else will finish them. A live replica's runs are never failed by another.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from .tables import describe_url, runs, utcnow

if TYPE_CHECKING:
    from .records import RunStore

log = logging.getLogger("configurable_agents.serve")

DEFAULT_LEASE_SECONDS = 30.0
IN_FLIGHT = ("queued", "running")
STOPPED_REASON = "server stopped before the run finished"
STOPPED_ERROR_TYPE = "ServerStopped"


def stopped_error(message: str = STOPPED_REASON) -> dict[str, Any]:
    return {"type": STOPPED_ERROR_TYPE, "message": message, "node": None}


def lease_expired_error(owner: str | None) -> dict[str, Any]:
    return stopped_error(
        f"{STOPPED_REASON}: server replica {owner} stopped renewing its lease on the run "
        "(it crashed, was killed or lost the database)"
    )


def new_replica_id() -> str:
    """``<host>-<pid>-<random>``: unique per server process (at most 64 characters)."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fail_orphans(store: RunStore) -> int:
    """Fail in-flight rows no live server can finish: rows of the store's workflow written by
    servers older than leases (no lease), and rows of the store's replica id (an earlier
    process that used the same id)."""
    now = utcnow()
    legacy = (runs.c.workflow == store.workflow) & runs.c.lease_until.is_(None)
    mine = runs.c.owner == store.replica
    with store.engine.begin() as conn:
        marked = conn.execute(
            update(runs)
            .where(runs.c.status.in_(IN_FLIGHT), legacy | mine)
            .values(status="failed", error=stopped_error(), finished_at=now, lease_until=None)
        ).rowcount
    if marked:
        log.warning("marked %d run(s) left unfinished by a previous server as failed", marked)
    return int(marked or 0)


def renew(store: RunStore) -> int:
    with store.engine.begin() as conn:
        renewed = conn.execute(
            update(runs)
            .where(runs.c.owner == store.replica, runs.c.status.in_(IN_FLIGHT))
            .values(lease_until=store.lease_end())
        ).rowcount
    return int(renewed or 0)


def reap(store: RunStore) -> int:
    """Fail the in-flight rows (of any workflow) whose owner is another replica and whose
    lease has passed."""
    now = utcnow()
    expired = (
        runs.c.status.in_(IN_FLIGHT) & (runs.c.lease_until < now) & (runs.c.owner != store.replica)
    )
    total = 0
    with store.engine.begin() as conn:
        owners = conn.execute(select(runs.c.owner).where(expired).distinct()).scalars().all()
        for owner in owners:
            total += (
                conn.execute(
                    update(runs)
                    .where(expired, runs.c.owner == owner)
                    .values(
                        status="failed",
                        error=lease_expired_error(owner),
                        finished_at=now,
                        lease_until=None,
                    )
                ).rowcount
                or 0
            )
    if total:
        log.warning(
            "marked %d run(s) of server replica(s) %s as failed: their lease expired",
            total,
            ", ".join(str(o) for o in owners),
        )
    return total


def beat(store: RunStore, stop: threading.Event) -> None:
    """The heartbeat thread: renew, then reap, every third of the lease until ``stop``."""
    interval = max(0.05, store.lease_seconds / 3)
    failing = False
    while not stop.wait(interval):
        try:
            renew(store)
            reap(store)
        except Exception as exc:  # noqa: BLE001 - the database may come back; keep beating
            if not failing:
                text = str(exc).strip().splitlines()
                log.warning(
                    "cannot renew run leases in %s: %s: %s (other replicas fail this server's "
                    "runs if that lasts longer than %g s)",
                    describe_url(store.url),
                    type(exc).__name__,
                    text[0] if text else "",
                    store.lease_seconds,
                )
            failing = True
        else:
            if failing:
                log.info("run leases are renewed again")
            failing = False
