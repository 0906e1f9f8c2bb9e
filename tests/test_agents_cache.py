"""The device-side model cache: stores by content hash, keeps a running table of model sizes,
evicts least recently used models past its cap, and tells a backend a cached model's hash."""

from __future__ import annotations

import os
import time

import pytest

from edgelat.agents.cache import PARTIAL_PREFIX, CacheFull, ModelCache, cached_sha, sha256_bytes
from edgelat.errors import BadInput

KB = 1024


def _models(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(PARTIAL_PREFIX))


def test_a_cached_model_is_not_written_again_but_marked_recently_used(tmp_path):
    cache = ModelCache(tmp_path)
    data = os.urandom(10 * KB)
    sha = cache.put(data)
    path = tmp_path / sha
    os.utime(path, (1000.0, 1000.0))
    inode = path.stat().st_ino
    assert cache.put(data) == sha
    assert path.stat().st_ino == inode  # the same file, not a new copy moved over it
    assert path.stat().st_mtime > 1000.0
    assert _models(tmp_path) == [sha]


def test_a_bad_expected_hash_stores_nothing(tmp_path):
    cache = ModelCache(tmp_path)
    with pytest.raises(BadInput, match="hash mismatch"):
        cache.put(b"model bytes", expected_sha="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_the_least_recently_used_model_goes_first(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=25 * KB)
    a, b = cache.put(os.urandom(10 * KB)), cache.put(os.urandom(10 * KB))
    os.utime(tmp_path / a, (time.time() - 60, time.time() - 60))
    os.utime(tmp_path / b, (time.time() - 30, time.time() - 30))
    assert cache.path(a) is not None  # a is used again: b is now the oldest
    c = cache.put(os.urandom(10 * KB))
    assert _models(tmp_path) == sorted([a, c])
    assert cache.size() <= 25 * KB


def test_models_removed_by_someone_else_stop_counting(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=25 * KB)
    a, b = cache.put(os.urandom(10 * KB)), cache.put(os.urandom(10 * KB))
    (tmp_path / a).unlink()
    c = cache.put(os.urandom(10 * KB))  # fits beside b once a's bytes are no longer counted
    assert _models(tmp_path) == sorted([b, c])


def test_models_added_by_someone_else_count(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=25 * KB)
    a = cache.put(os.urandom(10 * KB))
    other = os.urandom(10 * KB)  # another agent on the same folder stored this one
    (tmp_path / sha256_bytes(other)).write_bytes(other)
    os.utime(tmp_path / sha256_bytes(other), (time.time() - 60, time.time() - 60))
    c = cache.put(os.urandom(10 * KB))
    assert _models(tmp_path) == sorted([a, c])  # the other model was the oldest: evicted


def test_partial_uploads_count_and_stale_ones_are_swept_at_a_store(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=25 * KB)
    growing = tmp_path / f"{PARTIAL_PREFIX}writing"
    growing.write_bytes(b"y" * 20 * KB)
    with pytest.raises(CacheFull, match="uploads in progress"):
        cache.put(os.urandom(10 * KB))
    os.utime(growing, (time.time() - 3600, time.time() - 3600))  # its writer died long ago
    cache.put(os.urandom(10 * KB))
    assert not growing.exists()


def test_a_model_bigger_than_the_cap_is_refused(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=5 * KB)
    with pytest.raises(CacheFull, match="exceeds the agent cache cap"):
        cache.put(os.urandom(6 * KB))
    assert list(tmp_path.iterdir()) == []


def test_a_cached_models_hash_is_known_without_reading_it(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    data = os.urandom(KB)
    sha = cache.put(data)
    assert cached_sha(cache.path(sha)) == sha == sha256_bytes(data)
    elsewhere = tmp_path / sha  # the same name outside any open cache
    elsewhere.write_bytes(b"something else")
    assert cached_sha(elsewhere) is None
    stray = tmp_path / "cache" / "model.onnx"
    stray.write_bytes(data)
    assert cached_sha(stray) is None
