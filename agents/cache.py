"""Models cached on the device side by content hash (sent once, reused).

Files are named by their sha256, so a name never comes from a request, and the
cache never holds more than ``max_bytes``: the least recently used models go
first when a new one arrives.

An upload streams into a partial file (``.incoming-*``) while it is hashed, so
an agent holds one chunk of a model in memory, never the whole model; only a
verified file is renamed to its hash. Partial files count against the cap while
they grow, and those left behind by a killed agent are swept when a cache opens
(and at every store) once nobody has written them for ``stale_s`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Iterator

from edgelat.errors import BadInput

_SHA = re.compile(r"^[0-9a-f]{64}$")
PARTIAL_PREFIX = ".incoming-"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha(sha: str) -> str:
    """Validate a content hash taken from a request (it becomes a file name)."""
    if not isinstance(sha, str) or not _SHA.match(sha):
        shown = sha[:80] + "..." if isinstance(sha, str) and len(sha) > 80 else sha
        raise BadInput(f"not a sha256 hex digest: {shown!r}")
    return sha


class CacheFull(BadInput):
    """The model does not fit under the cache cap (even after evicting every unused model)."""


class IncomingModel:
    """A model being received: appended chunk by chunk to a partial file and hashed on the way.

    Made by :meth:`ModelCache.incoming`; :meth:`ModelCache.commit` moves it into
    place, :meth:`discard` removes it (safe to call after a commit).
    """

    def __init__(self, cache: "ModelCache", hashed: str | None = None) -> None:
        fd, name = tempfile.mkstemp(dir=cache.directory, prefix=PARTIAL_PREFIX)
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb", buffering=0)  # on disk at once: other uploads see its size
        # ``hashed``: the sha256 of the bytes about to be written, computed by the caller from
        # those very bytes (``ModelCache.put``), so they are not hashed twice
        self._hash = None if hashed is not None else hashlib.sha256()
        self._hashed = hashed
        self.size = 0
        self.committed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._fh.write(view) or 0:]
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)

    def finish(self) -> str:
        """Close the file; returns the sha256 of everything written."""
        if not self._fh.closed:
            self._fh.close()
        return self._hash.hexdigest() if self._hash is not None else str(self._hashed)

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if not self.committed:
            self.path.unlink(missing_ok=True)


class ModelCache:
    """A size-capped directory of model files keyed by sha256.

    It keeps the size of every cached model it has seen, so a store reads only the
    folder's names (and the sizes of partial uploads): files are stat'ed one by one,
    oldest first, only when something must be evicted.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 2 << 30, stale_s: float = 120.0) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.stale_s = stale_s
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._sizes: dict[str, int] = {}  # cached model (sha) -> bytes, as of the last scan or store
        self.swept = self.sweep_partials()
        _CACHES[str(self.directory)] = self

    # -- lookups ------------------------------------------------------------------

    def path(self, sha: str) -> Path | None:
        """The cached file for ``sha``, or None; touching it marks it recently used."""
        p = self.directory / check_sha(sha)
        try:
            os.utime(p)
        except FileNotFoundError:
            return None
        return p

    @contextlib.contextmanager
    def pinned(self, sha: str) -> Iterator[None]:
        """Keep ``sha`` from being evicted while it is benchmarked (uploads run concurrently)."""
        with self._lock:
            self._pins[sha] += 1
        try:
            yield
        finally:
            with self._lock:
                self._pins[sha] -= 1
                if self._pins[sha] <= 0:
                    del self._pins[sha]

    # -- storing ------------------------------------------------------------------

    def put(self, data: bytes, expected_sha: str | None = None) -> str:
        """Store ``data``; verifies ``expected_sha`` when given. Returns the sha.

        A model already cached is only marked recently used (nothing is written)."""
        if len(data) > self.max_bytes:
            raise CacheFull(f"model of {len(data)} bytes exceeds the agent cache cap of {self.max_bytes} bytes")
        sha = sha256_bytes(data)
        if expected_sha is not None:
            _check_match(sha, expected_sha, len(data))
        if self.path(sha) is not None:
            return sha
        incoming = IncomingModel(self, hashed=sha)
        try:
            incoming.write(data)
            return self.commit(incoming)
        finally:
            incoming.discard()

    def incoming(self) -> IncomingModel:
        """A new partial file to stream a model into (see :class:`IncomingModel`)."""
        return IncomingModel(self)

    def commit(self, incoming: IncomingModel, expected_sha: str | None = None) -> str:
        """Verify ``incoming`` and move it into place, evicting least recently used models
        to stay under the cap. Returns the sha; raises BadInput on a hash mismatch and
        :class:`CacheFull` when it cannot fit."""
        sha = incoming.finish()
        if expected_sha is not None:
            _check_match(sha, expected_sha, incoming.size)
        with self._lock:
            target = self.directory / sha
            if target.exists():
                os.utime(target)
                incoming.discard()
                return sha
            self._evict(incoming)
            os.replace(incoming.path, target)
            incoming.committed = True
            self._sizes[sha] = incoming.size
        return sha

    # -- accounting ---------------------------------------------------------------

    def size(self) -> int:
        """Bytes on disk: cached models plus partial uploads."""
        return sum(_size(p) for p in self._files()) + sum(_size(p) for p in self._partials())

    def sweep_partials(self, older_than_s: float | None = None) -> int:
        """Remove partial files nobody wrote for ``older_than_s`` (default ``stale_s``); returns how many."""
        limit = time.time() - (self.stale_s if older_than_s is None else older_than_s)
        removed = 0
        for p in self._partials():
            try:
                if p.stat().st_mtime <= limit:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def _files(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if _SHA.match(p.name) and p.is_file()]

    def _partials(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.name.startswith(PARTIAL_PREFIX)]

    def _scan(self, skip: Path) -> tuple[int, int]:
        """One pass over the folder's names (called under the lock): bytes of cached models
        and of partial uploads other than ``skip``, stale partials swept on the way. Sizes of
        models seen before come from the running table; only new names are stat'ed, and
        models removed by someone else drop out of it."""
        limit = time.time() - self.stale_s
        sizes: dict[str, int] = {}
        partial_bytes = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if name.startswith(PARTIAL_PREFIX):
                        if name == skip.name:
                            continue
                        st = entry.stat()
                        if st.st_mtime <= limit:
                            os.unlink(entry.path)
                        else:
                            partial_bytes += st.st_size
                    elif _SHA.match(name):
                        known = self._sizes.get(name)
                        if known is not None:
                            sizes[name] = known
                        elif entry.is_file():
                            sizes[name] = entry.stat().st_size
                except FileNotFoundError:  # removed meanwhile
                    pass
        self._sizes = sizes
        return sum(sizes.values()), partial_bytes

    def _evict(self, incoming: IncomingModel) -> None:
        """Make room for ``incoming`` (called under the lock). Other uploads in progress
        count against the cap; pinned models are never evicted."""
        models, others = self._scan(incoming.path)
        total = models + others
        if total + incoming.size <= self.max_bytes:
            return
        files = sorted((self.directory / name for name in self._sizes), key=_mtime)
        evictable = [p for p in files if p.name not in self._pins]
        while evictable and total + incoming.size > self.max_bytes:
            victim = evictable.pop(0)
            total -= self._sizes.pop(victim.name, 0)
            victim.unlink(missing_ok=True)
        if total + incoming.size > self.max_bytes:
            raise CacheFull(
                f"model of {incoming.size} bytes does not fit in the agent cache cap of {self.max_bytes} bytes "
                f"({total} bytes are models in use or uploads in progress); retry when they are done, "
                "or restart the agent with a larger --cache-max-mb"
            )


#: Open caches by folder (as :meth:`ModelCache.path` spells it), for :func:`cached_sha`.
_CACHES: "weakref.WeakValueDictionary[str, ModelCache]" = weakref.WeakValueDictionary()


def cached_sha(path: Path) -> str | None:
    """The sha256 of ``path`` when it is a model file of a cache open in this process (its
    name is its verified content hash, and cached files are only ever replaced whole), so a
    backend need not hash it again; None for any other file."""
    cache = _CACHES.get(str(path.parent))
    if cache is None or not _SHA.match(path.name):
        return None
    return path.name


def _check_match(sha: str, expected_sha: str, size: int) -> None:
    if check_sha(expected_sha) != sha:
        raise BadInput(
            f"model content hash mismatch: got {sha}, expected {expected_sha} "
            f"({size} bytes received; the upload was truncated or altered)"
        )


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return 0.0
