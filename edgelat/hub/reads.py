"""Read commands through a hub: a private local copy of the hub's rows, refreshed when they change.

``lut show|export|history``, ``predict`` and ``predictor list|report`` read the tables. With a
hub configured they run unchanged against a copy of the rows of the device they ask about
(every device the token may read when they name none), fetched from the hub's ReadTables
and kept under ``$EDGELAT_HOME/hub-tables/<hub and token>/``. Each read asks the hub whether
its rows changed since the copy (its marker): a current copy is used as it is, a stale one
is replaced. The hub is asked every time, so a revoked token or a device the token may no
longer read is refused even with a copy on disk.

Each copy is a file named by its marker, written beside and renamed into place, with a small
pointer file naming the current one: a reader never sees a half-written copy, and a copy is
never replaced in place under a reader.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgelat.errors import EdgelatError, StoreUnavailable

#: the folder under $EDGELAT_HOME that holds the copies
CACHE_DIR = "hub-tables"
#: the name of the copy of every device the token may read
ALL = "_all"
#: copies replaced by a newer one are removed once this old (a reader may still have one open)
STALE_S = 600.0


def cache_folder(client: Any) -> Path:
    """The private folder of this hub + token's copies."""
    from edgelat.config import home

    folder = home() / CACHE_DIR / client.identity
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create {folder} for the hub's tables: {exc.strerror or exc}") from exc
    return folder


def _current(folder: Path, name: str) -> tuple[str, Path | None]:
    """The marker and file of the current copy of ``name`` (``("", None)`` when there is none)."""
    try:
        marker = (folder / f"{name}.marker").read_text().strip()
    except OSError:
        return "", None
    path = folder / f"{name}-{marker[:32]}.db"
    return (marker, path) if marker and path.is_file() else ("", None)


def _write_atomically(path: Path, chunks: Iterator[bytes], size: int | None = None,
                      sha256: str | None = None) -> None:
    """Write ``chunks`` beside ``path`` and rename the file into place once complete (and, with
    ``size``, checked against the size and sha256 the hub announced)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    digest = hashlib.sha256()
    got = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for data in chunks:
                f.write(data)
                digest.update(data)
                got += len(data)
        if size is not None and (got != size or digest.hexdigest() != sha256):
            raise EdgelatError(f"the copy of the hub's tables arrived damaged ({got} of {size} bytes); run the "
                               "command again")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sweep(folder: Path, name: str, keep: Path) -> None:
    """Remove this name's older copies that no reader is likely to hold any more."""
    now = time.time()
    for old in folder.glob(f"{name}-*.db*"):
        if old.name.startswith(keep.name):
            continue
        try:
            if now - old.stat().st_mtime > STALE_S:
                old.unlink()
        except OSError:
            pass


def local_copy(client: Any, device: str | None) -> Path:
    """The current copy of ``device``'s rows on the hub (every device the token may read when
    None): fetched when there is none or the hub's rows changed since."""
    name = device or ALL
    folder = cache_folder(client)
    known, path = _current(folder, name)
    marker, chunks, size, sha256 = client.read_tables(device, known)
    if chunks is None and path is not None:
        return path
    if chunks is None:  # the hub said unchanged for a copy that went meanwhile: ask for a full one
        marker, chunks, size, sha256 = client.read_tables(device, "")
        assert chunks is not None
    path = folder / f"{name}-{marker[:32]}.db"
    try:
        _write_atomically(path, chunks, size, sha256)
        _write_atomically(folder / f"{name}.marker", iter([marker.encode()]))
    except OSError as exc:
        raise StoreUnavailable(f"cannot write the copy of the hub's tables in {folder}: "
                               f"{exc.strerror or exc}") from exc
    _sweep(folder, name, path)
    return path


@contextmanager
def hub_tables(hub: str | None, token_file: str | None, device: str | None) -> Iterator[Path]:
    """Within the block, the store (:func:`edgelat.config.db_path`) is the current local copy of
    the hub's rows of ``device`` (every device the token may read when None)."""
    from edgelat.config import reading_db
    from edgelat.hub.client import HubClient

    with HubClient.from_env(hub, token_file) as client:
        path = local_copy(client, device)
    with reading_db(path):
        yield path
