"""The hub's side of ReadTables: a read-only copy of a device's rows for a remote reader.

The read commands (``lut show|export|history``, ``predict``, ``predictor list|report``)
run unchanged on a client against a copy of the rows they read, taken here from the hub's
tables by :func:`edgelat.lut.snapshot.write_snapshot` and sent as an SQLite file in
chunks. A client that holds a copy sends its marker; when the rows have not changed since,
the hub answers "unchanged" without copying anything.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgelat.errors import UnknownDevice

#: bytes per chunk of the file (well under gRPC's message cap)
CHUNK_BYTES = 1 << 20


@dataclass
class Copy:
    """What the hub answers: the marker, and unless ``unchanged`` the file to send."""

    marker: str
    unchanged: bool
    path: Path | None = None
    size: int = 0
    sha256: str = ""

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in order; its temporary folder is removed once read (or abandoned)."""
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                while True:
                    data = f.read(CHUNK_BYTES)
                    if not data:
                        break
                    yield data
        finally:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def tables_file(tables_path: str | Path | None) -> Path:
    """The hub's tables: the given file, or the store under the hub's ``$EDGELAT_HOME``."""
    from edgelat.config import db_path

    return Path(tables_path) if tables_path else db_path()


def _readable_check(principal: Any, device: str) -> None:
    from edgelat.hub.errors import Forbidden

    if principal.role != "admin" and not principal.may_use(device):
        raise Forbidden(f"user {principal.user!r} may not read device {device!r} "
                        f"(the token names {', '.join(principal.devices or ())})")


def _readable(conn: Any, principal: Any, device: str) -> list[str]:
    """The devices the copy covers: ``device`` (checked), or every device the token may read."""
    from edgelat.lut.snapshot import has_rows, registry_names

    def may(name: str) -> bool:
        return principal.role == "admin" or principal.may_use(name)

    if not device:
        return [n for n in registry_names(conn) if may(n)]
    _readable_check(principal, device)
    if not has_rows(conn, device):
        raise UnknownDevice(f"device {device!r} is not in the hub's tables: no job has run on it "
                            "there yet (see 'edgelat devices list' and 'edgelat jobs list')")
    return [device]


def prepare(tables_path: str | Path | None, principal: Any, device: str, known: str) -> Copy:
    """Check the request and, unless the caller's copy (``known`` marker) is current, write the
    copy to a temporary file. Raises the one-line errors the service turns into status codes."""
    import sqlite3

    from edgelat.lut import snapshot

    path = tables_file(tables_path)
    source: Path | None = path if path.is_file() else None
    try:
        if source is None:
            names = _readable_without_tables(principal, device)
            mark = snapshot.EMPTY_MARKER
        else:
            conn = snapshot.open_source(source)
            try:
                names = _readable(conn, principal, device)
                mark = snapshot.marker(conn, names)
            finally:
                conn.close()
        if known and known == mark:
            return Copy(mark, True)
        folder = Path(tempfile.mkdtemp(prefix="edgelat-hub-read-"))
        try:
            out = folder / "tables.db"
            mark = snapshot.write_snapshot(source, names, out)
            digest = hashlib.sha256()
            with open(out, "rb") as f:
                for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                    digest.update(block)
            return Copy(mark, False, out, out.stat().st_size, digest.hexdigest())
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    except sqlite3.Error as exc:
        from edgelat.lut.faults import translate

        raise translate(exc, path) from None


def _readable_without_tables(principal: Any, device: str) -> list[str]:
    if device:
        _readable_check(principal, device)
        raise UnknownDevice(f"device {device!r} is not in the hub's tables: no job has run there yet")
    return []
