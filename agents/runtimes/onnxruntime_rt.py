"""onnxruntime in this process, one execution provider per session.

Sessions are sequential with ``intra_op_num_threads = config.threads`` and one
inter-op thread, so ``threads`` means the same thing on every device. The
provider asked for must really run the model: onnxruntime silently falls back
to CPU when a GPU provider fails to initialize, and a CPU number filed under
"cuda" would poison the table, so that case raises RuntimeUnavailable.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgelat.agents.runtimes.base import Runtime, Session, check_input_bytes, random_input, short_reason
from edgelat.values import RuntimeConfig
from edgelat.errors import BadInput, CorruptModel, RuntimeUnavailable

# short provider name -> onnxruntime execution provider
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
}
_SHORT = {v: k for k, v in PROVIDERS.items()}
# Providers that are not local compute devices and never appear in providers().
_NOT_COMPUTE = {"AzureExecutionProvider"}

# onnxruntime type string -> numpy dtype
_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


_ALLOC_FAILED = re.compile(r"Failed to allocate memory for requested buffer of size (\d+)")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed: ?)?")


def _ort_reason(exc: BaseException) -> str:
    """onnxruntime's message without its status-code prefix and the repeated path."""
    return short_reason(_ORT_PREFIX.sub("", " ".join(str(exc).split())) or type(exc).__name__)


def _ort():
    import onnxruntime

    return onnxruntime


# Empty private folders kept between loads: creating and removing a folder per session
# costs far more than linking a file (slow on some filesystems); each is private (mode 0700)
# and empty whenever it is in this list.
_SPARE_FOLDERS: list[str] = []
_SPARE_LOCK = threading.Lock()


def _forget_spare_folders() -> None:
    """In a forked child: make its own folders (the parent's may be in use), with a fresh lock."""
    global _SPARE_LOCK
    _SPARE_LOCK = threading.Lock()
    _SPARE_FOLDERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spare_folders)


@atexit.register
def _remove_spare_folders() -> None:
    with _SPARE_LOCK:
        while _SPARE_FOLDERS:
            shutil.rmtree(_SPARE_FOLDERS.pop(), ignore_errors=True)


def _spare_folder() -> str | None:
    """A kept folder that is still empty (one where anything appeared is removed), or None."""
    while True:
        with _SPARE_LOCK:
            if not _SPARE_FOLDERS:
                return None
            folder = _SPARE_FOLDERS.pop()
        try:
            if not os.listdir(folder):
                return folder
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _alone(path: Path) -> Iterator[Path]:
    """The model file linked alone into an empty private folder: onnxruntime resolves external
    data next to the model, so a model's weights can only come from its own bytes (never from
    another cached model or any other file beside it). One folder per load at a time; folders
    are reused once empty again."""
    folder = _spare_folder() or tempfile.mkdtemp(prefix="edgelat-model-")
    alone = Path(folder) / "model.onnx"
    try:
        try:
            os.link(path, alone)
        except OSError:  # another filesystem: a copy does the same
            shutil.copyfile(path, alone)
        yield alone
    finally:
        try:
            alone.unlink(missing_ok=True)
            empty = not os.listdir(folder)
        except OSError:
            empty = False
        if empty:
            with _SPARE_LOCK:
                _SPARE_FOLDERS.append(folder)
        else:  # something else appeared in it: never reuse it
            shutil.rmtree(folder, ignore_errors=True)


class OrtSession(Session):
    """An ``InferenceSession`` plus one set of random inputs."""

    def __init__(self, sess: Any, feeds: dict[str, np.ndarray], session_ms: float, provider: str) -> None:
        self._sess = sess
        self.inputs = feeds
        self._outputs = [o.name for o in sess.get_outputs()]
        self.session_ms = session_ms
        self.provider = provider

    def run(self) -> None:
        try:
            self._sess.run(self._outputs, self.inputs)
        except Exception as exc:
            # Say "out of memory" in words: the arena's message is long and cut before its point.
            found = _ALLOC_FAILED.search(str(exc))
            if found:
                raise MemoryError(f"out of memory: a buffer of {found.group(1)} bytes could not be allocated") from None
            raise

    def end_profiling(self) -> str:
        """Stop onnxruntime's profiler (a profiled session only); the trace file's path."""
        return self._sess.end_profiling()

    def close(self) -> None:
        self._sess = None


def node_times(trace: Path, skip_runs: int = 0) -> list[dict[str, Any]]:
    """Per-node median time (ms) from an onnxruntime profile trace (Chrome trace JSON): the
    ``<node>_kernel_time`` events, one per node per run, the first ``skip_runs`` runs left out.
    Nodes keep the order of their first run."""
    import json

    events = json.loads(trace.read_text())
    per_node: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or "dur" not in e:
            continue
        node = name[: -len("_kernel_time")]
        per_node.setdefault(node, []).append(float(e["dur"]) / 1000.0)
        ops.setdefault(node, str((e.get("args") or {}).get("op_name", "")))
    rows = []
    for node, times in per_node.items():
        kept = times[skip_runs:] or times
        rows.append({"layer": node, "op": ops[node], "median_ms": float(np.median(kept)), "runs": len(kept)})
    return rows


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    model_format = "onnx"

    def available(self) -> bool:
        try:
            _ort()
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return _ort().__version__ if self.available() else ""

    def providers(self) -> list[str]:
        if not self.available():
            return []
        return [_SHORT.get(p, p) for p in _ort().get_available_providers() if p not in _NOT_COMPUTE]

    def _provider_list(self, provider: str, precision: str) -> list[Any]:
        """The provider list for a session: the one asked for, then its fallbacks."""
        ort = _ort()
        full = PROVIDERS.get(provider.lower(), provider)
        available = ort.get_available_providers()
        if full not in available or full in _NOT_COMPUTE:
            usable = ", ".join(self.providers())
            raise RuntimeUnavailable(
                f"onnxruntime provider {provider!r} is not available here (available: {usable}); "
                f"install the onnxruntime build that has it or pick another --provider"
            )
        chain: list[Any] = []
        if full == "TensorrtExecutionProvider":
            chain.append((full, {"trt_fp16_enable": precision == "fp16"}))
            if "CUDAExecutionProvider" in available:
                chain.append("CUDAExecutionProvider")
        else:
            chain.append(full)
        if full != "CPUExecutionProvider":
            chain.append("CPUExecutionProvider")
        return chain

    def load(self, model_path: Path, config: RuntimeConfig) -> OrtSession:
        return self._load(model_path, config, None)

    def layer_times(self, model_path: Path, config: RuntimeConfig, runs: int, max_seconds: float) -> list[dict[str, Any]]:
        """onnxruntime's profiler over ``runs`` runs of a session of its own (profiling slows every
        run, so the timed runs never use it): each node's median ``*_kernel_time``, in ms."""
        with tempfile.TemporaryDirectory(prefix="edgelat-profile-") as folder:
            session = self._load(model_path, config, Path(folder))
            try:
                session.run()  # the first run allocates; its node times are left out
                start, done = time.perf_counter(), 0
                while done < max(1, runs) and (done == 0 or time.perf_counter() - start < max_seconds):
                    session.run()
                    done += 1
                trace = session.end_profiling()
            finally:
                session.close()
            return node_times(Path(trace), skip_runs=1)

    def _load(self, model_path: Path, config: RuntimeConfig, profile_dir: Path | None) -> OrtSession:
        if not self.available():
            raise RuntimeUnavailable("onnxruntime is not installed here (pip install onnxruntime)")
        ort = _ort()
        path = Path(model_path)
        if not path.is_file():
            raise BadInput(f"model file not found: {path}")
        if config.threads < 0:
            raise BadInput(f"threads must be >= 0 (0 = runtime default), got {config.threads}")
        chain = self._provider_list(config.provider, config.precision)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(config.threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # errors only; the reason goes into our exception
        if profile_dir is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(profile_dir / "ort")
        t0 = time.perf_counter_ns()
        try:
            with _alone(path) as isolated:
                sess = ort.InferenceSession(str(isolated), sess_options=opts, providers=chain)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            if type(exc).__name__ == "EPFail":
                raise RuntimeUnavailable(
                    f"onnxruntime provider {config.provider!r} failed to start: {_ort_reason(exc)}"
                ) from None
            if "external data" in str(exc).lower():
                raise CorruptModel(f"{path.name} refers to external data files, which a device never reads: "
                                   "send the model with its weights inside it") from None
            raise CorruptModel(f"onnxruntime cannot load {path.name}: {_ort_reason(exc)}") from None
        session_ms = (time.perf_counter_ns() - t0) / 1e6
        wanted = chain[0][0] if isinstance(chain[0], tuple) else chain[0]
        used = sess.get_providers()
        if not used or used[0] != wanted:
            raise RuntimeUnavailable(
                f"onnxruntime provider {config.provider!r} did not initialize (session fell back to "
                f"{', '.join(used) or 'nothing'}); check the GPU driver/CUDA libraries"
            )
        rng = np.random.default_rng(0)
        specs: list[tuple[str, tuple[int, ...], Any]] = []
        for inp in sess.get_inputs():
            dtype = _DTYPES.get(inp.type)
            if dtype is None:
                raise BadInput(f"model input {inp.name!r} has type {inp.type}, which edgelat cannot feed")
            # symbolic or unknown dimensions (batch, sequence) are fed as 1
            specs.append((inp.name, tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape), dtype))
        check_input_bytes(specs)
        feeds: dict[str, np.ndarray] = {name: random_input(shape, dtype, rng) for name, shape, dtype in specs}
        return OrtSession(sess, feeds, session_ms, _SHORT.get(wanted, wanted))
