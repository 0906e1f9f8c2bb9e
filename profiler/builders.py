"""One entry point for model bytes in either format: ``build_model(specs, "onnx" | "tflite")``."""

from __future__ import annotations

from typing import Sequence

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec

BUILD_FORMATS: tuple[str, ...] = ("onnx", "tflite")


def build_model(specs: KernelSpec | Sequence[KernelSpec], fmt: str, seed: int = 0) -> bytes:
    """Serialized model for one kernel or a sequential chain, in ``fmt``.

    The same ``seed`` gives the same weights in both formats.
    """
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
