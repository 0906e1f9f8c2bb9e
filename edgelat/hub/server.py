"""One hub process: the queue, the connected agents, the gRPC service and the job runner.

``edgelat hub serve`` runs :func:`serve`; tests start a :class:`Hub` in process.
"""

from __future__ import annotations

import gc
import signal
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from edgelat.hub.link import Fleet
from edgelat.hub.runner import DEFAULT_LEASE_TTL_S, Runner
from edgelat.hub.shared_tables import SharedTables
from edgelat.hub.service import DEFAULT_HEARTBEAT_S, DEFAULT_HEARTBEAT_TIMEOUT_S, HubServicer, make_server


#: the serving hub's garbage collector thresholds (Python's default: 700, 10, 10)
GC_THRESHOLDS = (20000, 20, 20)


def default_db_url() -> str:
    """SQLite (WAL) in ``$EDGELAT_HOME/hub.db``: the embedded default."""
    from edgelat.config import home

    return f"sqlite:///{home() / 'hub.db'}"


class Hub:
    """A running hub: ``start()``, then ``port``; ``stop()`` ends it."""

    def __init__(self, listen: str = "127.0.0.1:50100", db_url: str | None = None, hub_id: str | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
                 lease_ttl_s: float = DEFAULT_LEASE_TTL_S, expire_every_s: float = 2.0,
                 tables_path: str | Path | None = None, share_tables: bool | None = None) -> None:
        from edgelat.hub.queue import HubStore

        self.hub_id = hub_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.store = HubStore(db_url or default_db_url(), hub_id=self.hub_id).open()
        try:
            # hubs on one PostgreSQL share their tables (SQLite: one hub, unless told otherwise)
            self.tables = SharedTables(self.store, tables_path,
                                       shared=self.store.is_postgresql if share_tables is None else share_tables)
            self.fleet = Fleet()
            self.servicer = HubServicer(self.store, self.fleet, self.hub_id, heartbeat_s=heartbeat_s)
            self.servicer.tables_path = str(tables_path) if tables_path else None
            self.runner = Runner(self.store, self.fleet, lease_ttl_s=lease_ttl_s,
                                 heartbeat_timeout_s=heartbeat_timeout_s, expire_every_s=expire_every_s,
                                 tables=self.tables)
            self.fleet.changed = self.runner.wake
            self.servicer.tables = self.tables
            self.servicer.on_submit = self.runner.wake
            self.servicer.runner = self.runner
            self.server = make_server(self.servicer, listen, tls_cert=tls_cert, tls_key=tls_key)
        except BaseException:
            self.store.close()
            raise
        self.port: int = self.server.edgelat_port  # type: ignore[attr-defined]
        self.address = f"{listen.rpartition(':')[0]}:{self.port}"

    def start(self) -> "Hub":
        self.tables.start()
        self.server.start()
        self.runner.start()
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        self.runner.stop()
        self.tables.stop()
        for conn in self.fleet.connections():
            conn.close("the hub is stopping")
        self.server.stop(grace_s).wait()
        self.store.close()

    def __enter__(self) -> "Hub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(on_ready: Callable[[Hub], None] | None = None, **kwargs: Any) -> None:
    """Run a hub until SIGTERM/SIGINT."""
    hub = Hub(**kwargs).start()
    # A serving hub allocates many short-lived objects per message; what it loaded to start (modules,
    # schema, stubs) lives on and need not be scanned by every full collection, nor young objects so often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *a: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready is not None:
            on_ready(hub)
        while not stop.wait(0.5):
            pass
    finally:
        hub.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
