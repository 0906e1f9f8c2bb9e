"""Models cached on the device side by content hash (sent once, reused).

Files are named by their sha256, so a name never comes from a request, and the
cache never holds more than ``max_bytes``: the least recently used models go
first when a new one arrives.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

from edgelat.errors import BadInput

_SHA = re.compile(r"^[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha(sha: str) -> str:
    """Validate a content hash taken from a request (it becomes a file name)."""
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise BadInput(f"not a sha256 hex digest: {sha!r}")
    return sha


class ModelCache:
    """A size-capped directory of model files keyed by sha256."""

    def __init__(self, directory: str | Path, max_bytes: int = 2 << 30) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path(self, sha: str) -> Path | None:
        """The cached file for ``sha``, or None; touching it marks it recently used."""
        p = self.directory / check_sha(sha)
        if not p.exists():
            return None
        os.utime(p)
        return p

    def put(self, data: bytes, expected_sha: str | None = None) -> str:
        """Store ``data``; verifies ``expected_sha`` when given. Returns the sha."""
        sha = sha256_bytes(data)
        if expected_sha is not None and check_sha(expected_sha) != sha:
            raise BadInput(f"model content hash mismatch: got {sha}, expected {expected_sha}")
        if len(data) > self.max_bytes:
            raise BadInput(f"model of {len(data)} bytes exceeds the agent cache cap of {self.max_bytes} bytes")
        with self._lock:
            target = self.directory / sha
            if not target.exists():
                self._evict(len(data))
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            else:
                os.utime(target)
        return sha

    def size(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.is_file() and _SHA.match(p.name)]

    def _evict(self, incoming: int) -> None:
        files = sorted(self._files(), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total + incoming > self.max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
