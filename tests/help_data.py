"""Plain-CSV copies of the trimmed HELP tables kept (xz-compressed) in ``tests/data/help``.

The library and the CLI read plain CSV files, so each table is decompressed
once per test process into a private temporary folder, under its original
name (``nasbench201_latency_ms.csv`` etc.); see ``tests/data/help/README.md``
for what each one holds.
"""

from __future__ import annotations

import atexit
import lzma
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "help"

# rows 0..1899 (the README protocol's training and query rows) of every device column
NB201 = "nasbench201_latency_ms.csv"
# all 15,625 NAS-Bench-201 architectures, columns pixel3 and gold_6240
NB201_EVERY_ARCH = "nasbench201_every_arch_latency_ms.csv"
FBNET = "fbnet_latency_ms.csv"
OFA = "ofa_latency_ms.csv"


@lru_cache(maxsize=None)
def _folder() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgelat-help-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=None)
def help_csv(name: str) -> Path:
    """The plain CSV ``name`` (e.g. ``NB201``), decompressed from ``DATA/name.xz``."""
    src = DATA / f"{name}.xz"
    dst = _folder() / name
    dst.write_bytes(lzma.decompress(src.read_bytes()))
    return dst
