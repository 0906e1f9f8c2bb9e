"""The hub's workers: lease jobs for the devices connected here and run them.

One dispatcher thread leases a job for each idle device that an agent serves
through this hub, and runs it on a thread of its own with a
:class:`~edgelat.hub.link.TunnelClient`, storing rows in the hub's tables (the
usual store under the hub's ``$EDGELAT_HOME``). Progress goes to the queue as
each row lands (which also renews the lease); a keeper renews it while no row
arrives. A job whose agent vanished is released (back to the queue, resumed on
the next lease where it stopped); a cancelled job, or one whose lease this hub
lost, stops at its next progress report. The dispatcher also requeues the
jobs of dead leases (``expire``) and drops agents that stopped heartbeating.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

from edgelat.errors import AgentUnreachable, EdgelatError
from edgelat.hub.kinds import KINDS, Stop
from edgelat.hub.link import Fleet
from edgelat.hub.shared_tables import SharedTables

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL_S = 20.0
DEFAULT_EXPIRE_EVERY_S = 2.0
POLL_S = 0.5
#: above this many idle devices the dispatcher leases for "any device of this hub" instead of naming them
MANY_DEVICES = 64
#: most jobs running at once on one hub (one per connected device; threads are reused between jobs)
MAX_JOB_THREADS = 2048
#: times a job is run again where it stopped when the hub's tables stayed locked
TABLES_LOCKED_TRIES = 4
#: longest a job waits for its device's preparation (then it does what is left itself)
PREPARE_WAIT_S = 30.0
#: longest one request of a device's preparation may take
PREPARE_TIMEOUT_S = 10.0


@dataclass
class _Running:
    """A job this hub runs: what its keeper renews, and whether its lease was lost."""

    lease_id: str
    state: dict[str, Any]
    lost: threading.Event = field(default_factory=threading.Event)
    renewed: float = field(default_factory=time.monotonic)


class Runner:
    """Lease and run jobs for this hub's connected devices until :meth:`stop`."""

    def __init__(self, store: Any, fleet: Fleet, lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
                 heartbeat_timeout_s: float = 20.0, expire_every_s: float = DEFAULT_EXPIRE_EVERY_S,
                 db_path: str | None = None, tables: SharedTables | None = None) -> None:
        self.store = store
        self.fleet = fleet
        self.tables = tables or SharedTables(store, db_path)
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.expire_every_s = expire_every_s
        self.db_path = db_path
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._busy: dict[str, int] = {}  # device -> jobs this hub runs on it (1, briefly 2 at a hand-over)
        self._enrolled: set[str] = set()  # devices known to the tables' registry
        # device -> the agent stream it was on when this hub last took in the other hubs' rows: while it
        # stays on that stream, its rows are written here only (it runs jobs through this hub alone)
        self._caught_up: dict[str, Any] = {}
        self._running: dict[str, _Running] = {}
        self._jobs: dict[str, futures.Future] = {}
        self._pool = futures.ThreadPoolExecutor(max_workers=MAX_JOB_THREADS, thread_name_prefix="edgelat-hub-job")
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._ready: dict[str, threading.Event] = {}  # device -> set once readied after dialling in (prepare)
        self.jobs_run = 0

    def start(self) -> None:
        self._dispatcher = threading.Thread(target=self._loop, daemon=True, name="edgelat-hub-dispatch")
        self._dispatcher.start()
        self._keeper = threading.Thread(target=self._keep, daemon=True, name="edgelat-hub-keeper")
        self._keeper.start()
        if getattr(self.store, "is_postgresql", False):
            threading.Thread(target=self._hear_other_hubs, daemon=True, name="edgelat-hub-hear").start()

    def _hear_other_hubs(self) -> None:
        """PostgreSQL: when another hub says work may wait for devices served here (jobs queued
        through it, say), lease each of them that this hub is not running a job on, one statement
        each, instead of waiting for the next poll; the dispatcher is woken when the news names no
        device. (A device this hub runs a job on leases its next job when that one finishes.)"""
        marker = self.store.work_marker()
        while not self._stop.is_set():
            try:
                seen = self.store.wait_for_work(marker, 1.0)
                if seen == marker:
                    continue
                marker, devices = self.store.work_since(marker)
                if devices is None:
                    self.wake.set()
                    continue
                for device in devices:
                    with self._lock:
                        if device in self._busy:
                            continue
                    if self.fleet.connection(device) is None or self._stop.is_set():
                        continue
                    lease = self.store.lease_device(device, ttl_s=self.lease_ttl_s)
                    if lease is not None:
                        self.adopt(lease)
            except EdgelatError as exc:
                log.warning("hub notifications: %s", exc)
                self._stop.wait(1.0)

    def prepare(self, conn: Any, then: Callable[[], None]) -> None:
        """Ready the devices of an agent that just dialled in, then call ``then`` (the Connect stream
        sends its welcome): each one's row in the tables' registry, and the drift sentinel's models
        (for the formats its runtimes read) in its cache, so that its first job starts as any other.
        A job leased for one of them meanwhile waits for this; what fails here, its first job does
        itself. It runs on the jobs' threads, which keep their connection to the tables."""
        ready = {device: threading.Event() for device in conn.devices}
        with self._lock:
            self._ready.update(ready)
        try:
            self._pool.submit(self._prepare, conn, ready, then)
        except RuntimeError:  # the pool was shut down: the hub is stopping
            for event in ready.values():
                event.set()
            then()

    def _prepare(self, conn: Any, ready: dict[str, threading.Event], then: Callable[[], None]) -> None:
        try:
            for device, event in ready.items():
                try:
                    if not self._stop.is_set() and not conn.closed.is_set():
                        self._prepare_one(conn, device)
                except AgentUnreachable as exc:  # gone or not answering: nothing more to ready on it
                    log.info("devices of agent %s not readied (%s); their first jobs do it", conn.agent_id, exc)
                    break
                except (EdgelatError, sqlite3.Error) as exc:
                    log.info("device %s not readied (%s); its first job does it", device, exc)
                except Exception:
                    log.exception("readying device %s failed; its first job does it", device)
                finally:
                    event.set()
        finally:
            for event in ready.values():
                event.set()
            then()

    def _prepare_one(self, conn: Any, device: str) -> None:
        from edgelat.hub.link import TunnelClient
        from edgelat.profiler.sentinel import put_models
        from edgelat.values import RuntimeConfig

        self._enroll(self.tables.db(), device, conn)
        runtimes = (conn.devices.get(device) or {}).get("runtimes")
        names = list(runtimes) if isinstance(runtimes, (dict, list)) and runtimes else [RuntimeConfig().runtime]
        client = TunnelClient(conn, device, PREPARE_TIMEOUT_S)
        for fmt in sorted({RuntimeConfig(runtime=str(n)).model_format for n in names}):
            put_models(client, fmt)

    def _await_ready(self, device: str) -> None:
        """Wait for the device's preparation (see :meth:`prepare`), if it is under way."""
        with self._lock:
            event = self._ready.get(device)
        if event is not None and not event.wait(PREPARE_WAIT_S):
            log.info("device %s still being readied after %g s; its job goes on", device, PREPARE_WAIT_S)

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop leasing; running jobs stop at their next progress report (their leases expire)."""
        self._stop.set()
        self.wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(wait_s)
        with self._lock:
            running = list(self._jobs.values())
        futures.wait(running, timeout=wait_s)
        self._pool.shutdown(wait=False)

    def _keep(self) -> None:
        """Renew the leases of running jobs that reported nothing lately (sentinel checks, model
        uploads, a long batch): one thread for all of them."""
        every = max(0.5, self.lease_ttl_s / 3)
        while not (self._stop.is_set() and not self._running):
            self._stop.wait(every / 2)
            now = time.monotonic()
            with self._lock:
                stale = [r for r in self._running.values() if now - r.renewed >= every]
            for r in stale:
                try:
                    r.renewed = now
                    if not self.store.progress(r.lease_id, r.state["done"], r.state["total"], r.state["message"]):
                        r.lost.set()
                except EdgelatError as exc:
                    log.warning("lease %s not renewed: %s", r.lease_id, exc)

    def _loop(self) -> None:
        last_expire = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now - last_expire >= self.expire_every_s:
                    last_expire = now
                    for agent in self.fleet.drop_silent(self.heartbeat_timeout_s):
                        log.warning("agent %s stopped heartbeating: dropped", agent)
                    requeued = self.store.expire()
                    if requeued:
                        log.warning("requeued %d job(s) whose lease expired: %s", len(requeued), ", ".join(requeued))
                with self._lock:
                    busy = len(self._busy)
                # Many idle devices: any free device online via this hub is one of them (the queue
                # knows which are busy), and naming them (or even listing them) costs more than the lease.
                if self.fleet.count() - busy > MANY_DEVICES:
                    idle: list[str] | None = None
                else:
                    with self._lock:
                        idle = [d for d in self.fleet.devices() if d not in self._busy]
                if idle is None or idle:
                    names = idle
                    lease = self.store.lease(devices=names, ttl_s=self.lease_ttl_s)
                    if lease is not None:
                        self._start(lease)
                        continue
            except EdgelatError as exc:
                log.warning("hub queue: %s", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("hub dispatcher failed; going on")
                self._stop.wait(1.0)
            self.wake.wait(POLL_S)
            self.wake.clear()

    def _start(self, lease: Any) -> None:
        device = lease.job["device"]
        with self._lock:
            self._busy[device] = self._busy.get(device, 0) + 1  # a count: an adopted lease may overlap the end of the last
            self._jobs[lease.lease_id] = self._pool.submit(self._run, lease)

    def adopt(self, lease: Any) -> None:
        """Run a lease taken elsewhere in this hub (a Submit that found its device free)."""
        if self._stop.is_set():
            self._release(lease.lease_id, "the hub is stopping")
            return
        try:
            self._start(lease)
        except RuntimeError:  # the pool was shut down meanwhile
            self._release(lease.lease_id, "the hub is stopping")

    @property
    def accepting(self) -> bool:
        """Whether leases handed to :meth:`adopt` are run now (False: stopping or not started)."""
        return self._dispatcher is not None and not self._stop.is_set()

    def _run(self, lease: Any) -> None:
        """Run a lease, then the device's next jobs while its finish hands one over."""
        first = lease.lease_id
        device = lease.job["device"]
        looked = False  # whether the last finish looked for the device's next job itself
        try:
            while lease is not None:
                lease, looked = self._run_one(lease)
        finally:
            with self._lock:
                left = self._busy.get(device, 1) - 1
                if left > 0:
                    self._busy[device] = left
                else:
                    self._busy.pop(device, None)
                self._jobs.pop(first, None)
            if not looked:
                self.wake.set()  # the device is free: the dispatcher looks for its work

    def _run_one(self, lease: Any) -> tuple[Any, bool]:
        """Run one leased job; returns the device's next lease when finishing it took one, and
        whether its finish looked for one (nothing else is waiting for the device when it did not take one)."""
        job = lease.job
        device = job["device"]
        lid = lease.lease_id
        running = _Running(lid, {"done": int(job.get("done") or 0), "total": int(job.get("total") or 0),
                                 "message": "started"})
        lost = running.lost
        with self._lock:
            self._running[lid] = running

        def report(done: int, total: int, message: str = "") -> bool:
            running.state.update(done=done, total=total, message=message)
            if done >= total > 0 and not lost.is_set():
                # the last step: finish() records it (the keeper renews the lease meanwhile)
                return not self._stop.is_set()
            running.renewed = time.monotonic()
            if not self.store.progress(lid, done, total, message):
                lost.set()
            return not lost.is_set() and not self._stop.is_set()
        client = None
        nxt = None
        looked = False
        try:
            log.debug("job %s (%s on %s for %s) leased", job["id"], job["kind"], device, job.get("user"))
            self._await_ready(device)
            client = self.fleet.client(device)
            db = self.tables.db()
            self._catch_up(device)  # what other hubs measured is not measured again
            try:
                def run() -> dict[str, Any]:
                    self._enroll(db, device)
                    return KINDS[job["kind"]][1](db, device, client, job, report)

                result = self._resuming(run, job["id"], db.conn)
            finally:
                self._publish()
            interrupted = result.pop("_interrupted", "")
            follow = None if self._stop.is_set() or client.lost else self.lease_ttl_s
            if interrupted and client.lost:
                self.store.release(lid, interrupted)
                log.warning("job %s released: %s", job["id"], interrupted)
            else:
                state = "failed" if interrupted else "done"
                finished, nxt = self.store.finish_then_lease(
                    lid, state, error=interrupted or None, result=result, done=running.state["done"],
                    total=running.state["total"], next_ttl_s=follow)
                looked = finished and follow is not None
                log.debug("job %s %s", job["id"], state)
        except Stop:
            log.info("job %s stopped (%s)", job["id"], "cancelled or lease lost" if lost.is_set() else "hub stopping")
        except AgentUnreachable as exc:
            self._release(lid, str(exc))
        except EdgelatError as exc:
            if client is not None and client.lost:
                self._release(lid, str(exc))
            else:
                self._finish_failed(lid, " ".join(str(exc).split()))
        except Exception as exc:  # a bug must not take the hub down; the job says what happened
            log.exception("job %s failed", job["id"])
            self._finish_failed(lid, f"hub error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(lid, None)
            self.jobs_run += 1
        return nxt, looked

    @staticmethod
    def _resuming(run: Any, job_id: str, tables: sqlite3.Connection) -> dict[str, Any]:
        """``run()``, again where it stopped (each kind skips what the tables hold) when the hub's
        own tables (``tables``) stayed locked past their busy timeout: many jobs write them at
        once, and a job must not fail for that."""
        for attempt in range(TABLES_LOCKED_TRIES):
            try:
                return run()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == TABLES_LOCKED_TRIES - 1:
                    raise
                if tables.in_transaction:
                    tables.rollback()
                log.warning("job %s: the hub's tables stayed locked (%s); going on where it stopped", job_id, exc)
        raise AssertionError("unreachable")

    def _catch_up(self, device: str) -> None:
        """Take in the other hubs' rows before the first job of a device on its current stream (a
        device that dialled here from another hub brings rows measured there); later jobs find
        them in place (the background exchange keeps the rest fresh for reads)."""
        conn = self.fleet.connection(device)
        if conn is not None and self._caught_up.get(device) is conn:
            return
        self.tables.pull()
        self._caught_up[device] = conn

    def _publish(self) -> None:
        """Publish the rows this job wrote before it is reported done (a failure leaves them to be
        published by the next job or the background exchange)."""
        try:
            self.tables.push()
        except EdgelatError as exc:
            log.warning("rows not published yet: %s", exc)

    def _enroll(self, db: Any, device: str, conn: Any = None) -> None:
        """Put a device that dialled in into the registry of the hub's tables (once per device)."""
        if device in self._enrolled:
            return
        from edgelat.devices.enroll import enroll_dialled
        from edgelat.devices.registry import Registry

        conn = conn if conn is not None else self.fleet.connection(device)
        enroll_dialled(Registry(db), device, dict(conn.devices.get(device) or {}) if conn is not None else {})
        self._enrolled.add(device)

    def _release(self, lid: str, error: str) -> None:
        try:
            self.store.release(lid, error)
            log.warning("lease %s released: %s", lid, error)
        except EdgelatError as exc:
            log.warning("lease %s not released (%s); it will expire", lid, exc)

    def _finish_failed(self, lid: str, error: str) -> None:
        try:
            self.store.finish(lid, "failed", error=error)
        except EdgelatError as exc:
            log.warning("lease %s not finished (%s); it will expire", lid, exc)
