"""This hub's latency tables as one replica of the set that the hubs on one database share.

Each hub keeps its tables in its own SQLite file (the store of :mod:`edgelat.lut.store`, as
every command uses); hubs on one database exchange what changed through the table log of
:mod:`edgelat.hub.table_log`. A hub takes in the others' entries before it runs a job (so a
resumed or repeated job skips what another hub measured) and before it serves reads, and
publishes the rows its jobs wrote when each job ends; a background thread does both every
:data:`SYNC_EVERY_S` for long jobs, and each time compacts up to :data:`COMPACT_PER_ROUND` more
entries of the log (:func:`edgelat.hub.table_log.compact`: one hub at a time does it; a little at
a time, as the log grows, so that it never costs a burst). One hub on its own
(SQLite queue) shares nothing: the calls below then only hand out the tables.

Each worker thread keeps its connection to the tables open between jobs.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import sqlite_utils

from edgelat.errors import EdgelatError
from edgelat.hub import table_log
from edgelat.lut import replica
from edgelat.lut.store import open_db

log = logging.getLogger(__name__)

#: seconds between two background exchanges with the log
SYNC_EVERY_S = 1.0
#: log entries read (or rows published) per round
BATCH = 2000
#: log entries taken in per transaction of the tables (short, so the jobs' writes wait little)
APPLY_BATCH = 200
#: seconds a write to the hub's tables waits for SQLite's lock: the jobs' threads, taking in and
#: publishing all write to one file, and a job waiting its turn is better than a job failed
TABLES_BUSY_S = 300.0
#: log entries compacted per round at most (more than the log grows by in a second at full load)
COMPACT_PER_ROUND = 1000


class SharedTables:
    """The hub's tables: per-thread connections, and (``shared``) the exchange with the log."""

    def __init__(self, store: object, db_path: str | Path | None = None, shared: bool = False) -> None:
        self.store = store
        self.db_path = db_path
        self.shared = shared
        self.replica: str | None = None
        self._local = threading.local()
        self._pull = _Coalesced(self._pull_now)
        self._push = _Coalesced(self._push_now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def db(self) -> sqlite_utils.Database:
        """This thread's connection to the hub's tables (opened once, kept open)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.db_path, timeout_s=TABLES_BUSY_S)
        return db

    def fresh_db(self) -> sqlite_utils.Database:
        """This thread's connection after taking in the other hubs' changes: for serving reads."""
        self.pull()
        return self.db()

    def start(self) -> "SharedTables":
        """Start recording this hub's changes and exchanging them (only when shared)."""
        if not self.shared:
            return self
        self.replica = replica.enable(self.db(), table_log.log_name(self.store))
        table_log.prepare(self.store)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="edgelat-hub-tables")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.close_thread_db()

    def close_thread_db(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_EVERY_S):
            try:
                self.push()
                self.pull()
                table_log.compact(self.store, step=COMPACT_PER_ROUND, max_steps=1)
            except EdgelatError as exc:
                log.warning("shared tables: %s", exc)
            except Exception:  # noqa: BLE001 - the hub goes on; the next round tries again
                log.exception("shared tables: exchange failed")
        try:
            self.push()  # what the last jobs wrote
        except EdgelatError as exc:
            log.warning("shared tables: last publish failed (published at the next start): %s", exc)
        self.close_thread_db()

    def pull(self) -> int:
        """Take in the other hubs' changes up to now; returns how many rows changed here. Threads
        asking at once share one exchange that began after they asked."""
        return self._pull() if self.shared else 0

    def push(self) -> int:
        """Publish the rows changed here up to now; returns how many (shared as :meth:`pull` is)."""
        return self._push() if self.shared else 0

    def _pull_now(self) -> int:
        db = self.db()
        changed = 0
        while True:
            entries = table_log.after(self.store, replica.watermark(db), BATCH, self.replica or "")
            for start in range(0, len(entries), APPLY_BATCH):
                changed += replica.apply(db, entries[start:start + APPLY_BATCH])
            if len(entries) < BATCH:
                return changed

    def _push_now(self) -> int:
        db = self.db()
        published = 0
        while True:
            changes = replica.changed_rows(db, BATCH)
            ids = table_log.append(self.store, self.replica or "", changes)
            replica.mark_published(db, zip(changes, ids))
            published += len(changes)
            if len(changes) < BATCH:
                return published


class _Coalesced:
    """``fn`` called by many threads with as few runs as possible: each caller returns the outcome
    of a run that began after it called (so the run saw everything the caller did before)."""

    def __init__(self, fn: Callable[[], int]) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._started = 0
        self._running = False
        self._outcomes: dict[int, tuple[int, BaseException | None]] = {}

    def __call__(self) -> int:
        with self._cond:
            target = self._started + 1  # the first run to begin from now on
            while target not in self._outcomes:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                gen = self._started
                self._cond.release()
                try:
                    outcome: tuple[int, BaseException | None] = (self._fn(), None)
                except BaseException as exc:  # noqa: BLE001 - handed to every caller of this run
                    outcome = (0, exc)
                finally:
                    self._cond.acquire()
                self._running = False
                self._outcomes[gen] = outcome
                for old in [g for g in self._outcomes if g < gen - 256]:
                    del self._outcomes[old]
                self._cond.notify_all()
            value, error = self._outcomes[target]
        if error is not None:
            raise error
        return value
