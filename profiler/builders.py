"""One entry point for model bytes in either format: ``build_model(specs, "onnx" | "tflite")``."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec

BUILD_FORMATS: tuple[str, ...] = ("onnx", "tflite")

#: single-kernel models kept once built (a hub runs the same kernels for many jobs): at most
#: this many bytes in all, and only models up to CACHE_MODEL_BYTES (big fc layers are built anew)
CACHE_BYTES = 64 << 20
CACHE_MODEL_BYTES = 1 << 20
_built: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
_built_lock = threading.Lock()


def build_model(specs: KernelSpec | Sequence[KernelSpec], fmt: str, seed: int = 0) -> bytes:
    """Serialized model for one kernel or a sequential chain, in ``fmt``.

    The same ``seed`` gives the same weights in both formats. A small single kernel is built once
    per process and its bytes handed out again (they are immutable and deterministic).
    """
    if not isinstance(specs, KernelSpec):
        return _build(specs, fmt, seed)
    key = (specs.key, fmt, seed)
    with _built_lock:
        data = _built.get(key)
        if data is not None:
            _built.move_to_end(key)
            return data
    data = _build(specs, fmt, seed)
    if len(data) <= CACHE_MODEL_BYTES:
        with _built_lock:
            _built[key] = data
            total = sum(len(v) for v in _built.values())
            while total > CACHE_BYTES:
                total -= len(_built.popitem(last=False)[1])
    return data


def _build(specs: KernelSpec | Sequence[KernelSpec], fmt: str, seed: int) -> bytes:
    if fmt == "onnx":
        from edgelat.profiler.onnx_builder import build_onnx

        return build_onnx(specs, seed)
    if fmt == "tflite":
        from edgelat.profiler.tflite_builder import build_tflite

        return build_tflite(specs, seed)
    raise BadInput(f"unknown model format {fmt!r}; valid: {', '.join(BUILD_FORMATS)}")


def model_suffix(fmt: str) -> str:
    """File suffix for a format ('.onnx', '.tflite')."""
    if fmt not in BUILD_FORMATS:
        raise BadInput(f"unknown model format {fmt!r}; valid: {', '.join(BUILD_FORMATS)}")
    return f".{fmt}"
