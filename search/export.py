"""Write an architecture of a search space as a model file: what ``edgelat export`` and the API call."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from edgelat.search.report import check_writable
from edgelat.profiler.spaces.space import format_for_path
from edgelat.profiler.spaces import get_space


def export_arch(space_name: str, arch: str, out: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write ``arch`` of ``space_name`` to ``out`` (ONNX or TFLite by the file name, random
    weights from ``seed``), atomically: a failure never leaves half a model behind. Returns
    what was written (space, arch, format, out, bytes, flops, params, seed)."""
    space = get_space(space_name)
    path = check_writable(str(out), "--out")
    assert path is not None
    fmt = format_for_path(str(out))
    g = space.from_string(arch)
    data = space.export(g, fmt, seed)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return {"space": space.name, "arch": space.to_string(g), "format": fmt, "out": str(path), "bytes": len(data),
            "flops": int(space.flops(g)[0]), "params": int(space.params(g)[0]), "seed": seed}
