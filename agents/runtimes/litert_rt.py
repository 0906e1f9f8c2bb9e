"""LiteRT (formerly TensorFlow Lite) interpreter in this process.

``ai_edge_litert`` is preferred; boards that only have the older
``tflite_runtime`` wheel get the same code under the runtime name
"tflite-runtime", so a table row always says which package really ran.
Delegates: "cpu" and "xnnpack" are the interpreter's default CPU path (XNNPACK
is applied by default); "gpu" needs a loadable GPU delegate library, otherwise
it is RuntimeUnavailable (never a silent CPU run).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgelat.agents.runtimes.base import Runtime, Session, check_input_bytes, random_input, short_reason
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, RuntimeUnavailable

# runtime name -> the Python package that provides its interpreter
PACKAGES = {"litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
CPU_DELEGATES = ("cpu", "xnnpack")
# GPU delegate libraries tried in order; EDGELAT_TFLITE_GPU_DELEGATE overrides.
GPU_DELEGATE_LIBS = ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so")


class LiteRTSession(Session):
    """An allocated interpreter whose input tensors are set once."""

    def __init__(self, interpreter: Any, inputs: dict[str, np.ndarray], session_ms: float, provider: str) -> None:
        self._interp = interpreter
        self.inputs = inputs
        self.session_ms = session_ms
        self.provider = provider

    def run(self) -> None:
        self._interp.invoke()

    def close(self) -> None:
        self._interp = None


class LiteRTRuntime(Runtime):
    model_format = "tflite"

    def __init__(self, name: str = "litert") -> None:
        if name not in PACKAGES:
            raise ValueError(f"unknown LiteRT flavour {name!r}")
        self.name = name
        self.package = PACKAGES[name]

    def _module(self) -> Any:
        """The package's ``interpreter`` module (imported on first use only)."""
        return importlib.import_module(f"{self.package}.interpreter")

    def available(self) -> bool:
        try:
            self._module()
        except ImportError:
            return False
        return True

    def version(self) -> str:
        if not self.available():
            return ""
        pkg = importlib.import_module(self.package)
        return str(getattr(pkg, "__version__", ""))

    def _gpu_delegate(self) -> Any:
        """A loaded GPU delegate, or RuntimeUnavailable saying what was tried."""
        mod = self._module()
        env = os.environ.get("EDGELAT_TFLITE_GPU_DELEGATE")
        libs = (env,) if env else GPU_DELEGATE_LIBS
        reasons = []
        for lib in libs:
            try:
                # open it ourselves first: load_delegate on a missing library leaves a
                # half-built Delegate whose __del__ prints a traceback
                ctypes.CDLL(lib)
                return mod.load_delegate(lib)
            except OSError:
                reasons.append(f"{lib} not found")
            except (ValueError, RuntimeError) as exc:
                reasons.append(f"{lib}: {short_reason(exc, 80)}")
        raise RuntimeUnavailable(
            f"{self.name} GPU delegate not loadable here ({'; '.join(reasons)}); "
            f"set EDGELAT_TFLITE_GPU_DELEGATE to the delegate .so or use --provider cpu"
        )

    def providers(self) -> list[str]:
        if not self.available():
            return []
        found = list(CPU_DELEGATES)
        try:
            self._gpu_delegate()
            found.append("gpu")
        except RuntimeUnavailable:
            pass
        return found

    def load(self, model_path: Path, config: RuntimeConfig) -> LiteRTSession:
        if not self.available():
            raise RuntimeUnavailable(
                f"{self.name} is not installed here (pip install {self.package.replace('_', '-')})"
            )
        path = Path(model_path)
        if not path.is_file():
            raise BadInput(f"model file not found: {path}")
        if config.threads < 0:
            raise BadInput(f"threads must be >= 0 (0 = runtime default), got {config.threads}")
        provider = config.provider.lower()
        if provider not in CPU_DELEGATES and provider != "gpu":
            raise RuntimeUnavailable(
                f"{self.name} delegate {config.provider!r} is not supported (use cpu, xnnpack or gpu)"
            )
        mod = self._module()
        t0 = time.perf_counter_ns()
        delegates = [self._gpu_delegate()] if provider == "gpu" else None
        try:
            interp = mod.Interpreter(
                model_path=str(path),
                num_threads=int(config.threads) if config.threads > 0 else None,
                experimental_delegates=delegates,
            )
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError with long texts
            raise CorruptModel(f"{self.name} cannot load {path.name}: {short_reason(exc)}") from None
        check_input_bytes([(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"])
                           for d in interp.get_input_details()])
        try:
            interp.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError with long texts
            raise CorruptModel(f"{self.name} cannot load {path.name}: {short_reason(exc)}") from None
        session_ms = (time.perf_counter_ns() - t0) / 1e6
        rng = np.random.default_rng(0)
        inputs: dict[str, np.ndarray] = {}
        for detail in interp.get_input_details():
            shape = tuple(int(d) for d in detail["shape"])
            try:
                data = random_input(shape, detail["dtype"], rng)
            except ValueError:
                raise BadInput(
                    f"model input {detail['name']!r} has type {np.dtype(detail['dtype'])}, which edgelat cannot feed"
                ) from None
            interp.set_tensor(detail["index"], data)
            inputs[detail["name"]] = data
        return LiteRTSession(interp, inputs, session_ms, provider)
