"""Storage faults as one-line errors: what happened to the database and what to do.

:func:`preflight` looks at the file before SQLite does (an empty, foreign or
truncated file is refused, never opened, so SQLite cannot quietly start a new
database over it); :func:`translate` turns an ``sqlite3`` error raised at any
later point into an :class:`~edgelat.errors.StoreError` subclass.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgelat.errors import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreReadOnly,
    StoreSchema,
    StoreUnavailable,
)

_MAGIC = b"SQLite format 3\x00"
#: the database most recently opened by :func:`edgelat.lut.store.open_db` (named in messages)
last_path: Path | None = None


def _where(path: Path | None) -> str:
    p = path or last_path
    return f"the database {p}" if p else "the database"


def _keep_it(path: Path | None) -> str:
    return (
        "it was left as it is: restore it from a backup, or move it away "
        f"(e.g. mv {path or last_path or 'edgelat.db'}{{,.broken}}) and a new empty one is created"
    )


def corrupt(path: Path, what: str) -> StoreCorrupt:
    return StoreCorrupt(f"{_where(path)} {what}; {_keep_it(path)}")


def _header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(100)


def _truncated(path: Path) -> bool:
    """True when the file is shorter than the page count its header declares.

    The header count is trusted only when SQLite marks it valid (change counter
    equal to its version-valid-for number). A checkpoint in another process writes
    the header page before the last pages, so a short file is read again before
    it is called truncated.
    """
    for attempt in range(3):
        head = _header(path)
        size = path.stat().st_size
        page = struct.unpack(">H", head[16:18])[0]
        page = 65536 if page == 1 else page
        (counter,) = struct.unpack(">I", head[24:28])
        (pages,) = struct.unpack(">I", head[28:32])
        (valid_for,) = struct.unpack(">I", head[92:96])
        if page < 512 or page & (page - 1):
            return True  # not a page size SQLite can write
        short = size % page != 0 or (counter == valid_for and pages > 0 and size < pages * page)
        if not short:
            return False
        time.sleep(0.05 * (attempt + 1))
    return True


class Connection(sqlite3.Connection):
    """The store's SQLite connection: a class of its own so that :func:`holds` can count the
    live ones (a plain ``sqlite3.Connection`` takes no weak reference)."""


_live: dict[str, "weakref.WeakSet[Connection]"] = {}


def track(path: Path, conn: Connection) -> None:
    """Remember that ``conn`` (open in this process) holds ``path``."""
    _live.setdefault(str(path.resolve()), weakref.WeakSet()).add(conn)


def holds(path: Path) -> bool:
    """Whether this process has an open store connection to ``path``."""
    for conn in list(_live.get(str(path.resolve()), ())):
        try:
            conn.total_changes  # raises once closed
        except sqlite3.ProgrammingError:
            continue
        return True
    return False


def preflight(path: Path) -> None:
    """Refuse, with one line, a database file that SQLite must not be let near:
    a folder, an empty (0-byte) file, a file that is not SQLite, a truncated one,
    or one that cannot be written (read-only file, folder or filesystem)."""
    if path.is_dir():
        raise StoreUnavailable(f"{path} is a folder, not a database: move it away or set EDGELAT_HOME elsewhere")
    folder = path.parent
    if not path.exists():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreReadOnly(
                f"cannot create the database {path}: its folder is read-only; "
                "make it writable (chmod u+w) or set EDGELAT_HOME to a writable folder"
            )
        return
    try:
        size = path.stat().st_size
        # Reading the file ourselves is safe only before this process holds an SQLite connection
        # to it: closing any handle on the file drops every POSIX lock the process holds on it,
        # SQLite's included, and another process could then checkpoint and delete a write-ahead
        # log this one still writes to. While a connection here is open, the file was checked
        # when it was opened and SQLite reports damage itself.
        checked = holds(path)
        head = _header(path) if size and not checked else b""
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the database {path}: {exc.strerror or exc}") from exc
    if size == 0:
        raise corrupt(path, "is empty (0 bytes): it was probably truncated")
    if not checked and (not head.startswith(_MAGIC) or len(head) < 100):
        raise corrupt(path, "is not an SQLite database (damaged or overwritten)")
    if not checked and _truncated(path):
        raise corrupt(path, f"is truncated ({size} bytes, shorter than its header says)")
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        # access() first, existence after, access() again: another connection closing between the
        # first two may remove its -wal/-shm (access() then says not writable) and one opening
        # may make it again before exists() looks; only a file still refused is read-only
        if not os.access(p, os.W_OK) and p.exists() and not os.access(p, os.W_OK):
            raise StoreReadOnly(
                f"{p} is read-only: make it writable (chmod u+w {p}) or set EDGELAT_HOME to a writable folder"
            )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreReadOnly(
            f"the folder of the database {path} is read-only (SQLite needs to write its journal next to it): "
            "make it writable (chmod u+w) or set EDGELAT_HOME to a writable folder"
        )


def _nearly_full(path: Path | None) -> bool:
    """Whether the filesystem of ``path`` has (almost) no room left: SQLite reports a
    write that found no space as an I/O error when it was not growing the database."""
    if path is None:
        return False
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 256 * 1024


def translate(exc: sqlite3.Error, path: Path | None = None, timeout_s: float | None = None) -> StoreError:
    """The one-line :class:`StoreError` for an ``sqlite3`` error."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    where = _where(path)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return StoreCorrupt(f"{where} is damaged ({text}); {_keep_it(path)}")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreReadOnly(
            f"{where} cannot be written ({text}): make it and its folder writable, "
            "or set EDGELAT_HOME to a writable folder"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        waited = f" (waited {timeout_s:g} s)" if timeout_s is not None else ""
        return StoreLocked(
            f"{where} is locked by another process{waited}: let it finish and retry, "
            "or set EDGELAT_DB_TIMEOUT to wait longer (seconds)"
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return StoreFull(f"{where} cannot grow: the disk is full; nothing of this change was kept: free some space and retry")
    if (name.startswith("SQLITE_IOERR") or "disk I/O error" in text) and _nearly_full(path or last_path):
        return StoreFull(f"{where} cannot be written: the disk is full; nothing of this change was kept: free some space and retry")
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return StoreUnavailable(f"disk I/O error on {where} ({text}): is its disk full or failing? Free space and retry")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or "unable to open" in text:
        return StoreUnavailable(f"cannot open {where} ({text}): check that it and its folder exist and are writable")
    return StoreError(f"database error on {where}: {text} (if this persists, report it as a bug)")


@contextmanager
def translated(path: Path | None = None, timeout_s: float | None = None) -> Iterator[None]:
    """Re-raise ``sqlite3`` errors of the block as :class:`StoreError` (one line)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path, timeout_s) from exc


def newer_schema(path: Path, found: int, latest: int) -> StoreSchema:
    return StoreSchema(
        f"{_where(path)} has schema version {found}, newer than this edgelat knows ({latest}): "
        "upgrade edgelat (pip install -U edgelat), or set EDGELAT_HOME to another folder"
    )
