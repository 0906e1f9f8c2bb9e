"""The small interface every in-process inference runtime implements.

A :class:`Runtime` knows whether it is installed, its version and which
providers (onnxruntime execution providers, LiteRT delegates) work here; it
loads a model into a :class:`Session` that runs one inference per ``run()``
call on inputs made once at load time, so the timing loop measures inference
and nothing else.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edgelat.agents.bounds import MAX_INPUT_BYTES
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, RuntimeUnavailable


class Session(ABC):
    """A loaded model, ready to run on pre-made random inputs."""

    #: Wall time to create the session (load, optimize, allocate), in ms.
    session_ms: float = 0.0
    #: The provider/delegate that really runs the model (after fallbacks).
    provider: str = ""
    #: The random inputs every run uses, by input name.
    inputs: dict[str, np.ndarray]

    @abstractmethod
    def run(self) -> None:
        """One inference."""

    @abstractmethod
    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runtime(ABC):
    """An inference runtime usable in this process."""

    name: str = ""
    model_format: str = ""

    @abstractmethod
    def available(self) -> bool:
        """True when the runtime's Python package imports here."""

    @abstractmethod
    def version(self) -> str:
        """The installed version ("" when not available)."""

    @abstractmethod
    def providers(self) -> list[str]:
        """Short names of the providers/delegates usable here (e.g. "cpu", "cuda")."""

    @abstractmethod
    def load(self, model_path: Path, config: RuntimeConfig) -> Session:
        """Load a model; raises CorruptModel, RuntimeUnavailable or BadInput."""

    def layer_times(self, model_path: Path, config: RuntimeConfig, runs: int, max_seconds: float) -> list[dict[str, Any]]:
        """Per-layer times from the runtime's own profiler over ``runs`` profiled runs (at most
        ``max_seconds``): one dict per layer in execution order (``layer``, ``op``, ``median_ms``,
        ``runs``). Runtimes without a profiler say so (RuntimeUnavailable)."""
        raise RuntimeUnavailable(f"{self.name} has no per-layer profiler here")


def check_input_bytes(inputs: list[tuple[str, tuple[int, ...], Any]], limit: int = MAX_INPUT_BYTES) -> None:
    """Refuse, before anything is allocated, inputs whose total size is over ``limit`` bytes.

    ``inputs`` are (name, shape, dtype). A model of a few kilobytes can declare
    a 1x3x100000x100000 input; making it would exhaust the machine.
    """
    total = 0
    largest = ("", (), np.float32, 0)
    for name, shape, dtype in inputs:
        size = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
        total += size
        if size >= largest[3]:
            largest = (name, shape, dtype, size)
    if total > limit:
        name, shape, dtype, size = largest
        dims = "x".join(str(int(d)) for d in shape)
        raise BadInput(
            f"the model's inputs need {total} bytes (input {name!r} is {dims} {np.dtype(dtype).name}); "
            f"edgelat feeds at most {limit} bytes of random inputs to a model: export it with smaller inputs"
        )


def random_input(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """A random tensor of ``shape``/``dtype``: floats in [-1, 1), integers in {0, 1}.

    Small integers keep index-like inputs (Gather, embedding ids) in range.
    """
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dt)
    raise ValueError(f"unsupported input dtype {dt}")


def short_reason(exc: BaseException | str, limit: int = 160) -> str:
    """The runtime's error shortened to one line (runtimes often print pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
