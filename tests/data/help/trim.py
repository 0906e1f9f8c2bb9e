"""Rebuild the trimmed HELP tables kept here from the full CSV files.

Usage: python tests/data/help/trim.py HELP_DIR [OUT_DIR]

HELP_DIR holds the full nasbench201/fbnet/ofa ``*_latency_ms.csv`` files (see
README.md for their origin). Each output keeps the first rows and the named
columns of one file, written with the same CSV dialect (comma, minimal quoting,
CRLF), then xz-compressed; rows and cells are copied unchanged.
"""

from __future__ import annotations

import csv
import io
import lzma
import sys
from pathlib import Path

# output name -> (source file, data rows kept from the top, device columns kept; None = all)
SPEC: dict[str, tuple[str, int, list[str] | None]] = {
    "nasbench201_latency_ms.csv.xz": ("nasbench201_latency_ms.csv", 1900, None),
    "nasbench201_every_arch_latency_ms.csv.xz": ("nasbench201_latency_ms.csv", 15625, ["pixel3", "gold_6240"]),
    "ofa_latency_ms.csv.xz": ("ofa_latency_ms.csv", 2800, ["v100_1", "v100_64"]),
    "fbnet_latency_ms.csv.xz": ("fbnet_latency_ms.csv", 1000, ["pixel3"]),
}


def trim(src: Path, rows: int, devices: list[str] | None) -> bytes:
    """The header and first ``rows`` data rows of ``src``, keeping ``idx``, ``arch`` and ``devices``."""
    with src.open(newline="") as fh:
        table = list(csv.reader(fh))
    header = table[0]
    keep = list(range(len(header))) if devices is None else [header.index(c) for c in ["idx", "arch", *devices]]
    out = io.StringIO()
    writer = csv.writer(out)
    for row in table[: rows + 1]:
        writer.writerow([row[i] for i in keep])
    return out.getvalue().encode()


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2):
        sys.exit(__doc__.split("\n\n")[1])
    src = Path(argv[0])
    dst = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent
    for name, (source, rows, devices) in SPEC.items():
        data = lzma.compress(trim(src / source, rows, devices), preset=9 | lzma.PRESET_EXTREME)
        (dst / name).write_bytes(data)
        print(f"{name}: {rows} rows, {len(data):,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
