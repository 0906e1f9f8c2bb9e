#!/usr/bin/env python3
"""edgelat's on-device Python runner: time one model with LiteRT or onnxruntime.

The ADB bridge pushes this file, together with ``measure.py`` (the shared
measurement protocol), into one directory on a Linux-like device that has
Python and an inference runtime, and runs for example::

    python3 runner.py --model M.tflite --format tflite --runtime litert --threads 4 \
        --warmup 5 --min-runs 10 --max-runs 1000 --target-rel-ci 0.02 --max-seconds 10

The timing loop runs here, on the device, never across the connection. On
success it prints exactly one line ``EDGELAT_RESULT {json}``; on any failure one
line ``EDGELAT_ERROR <reason>`` and exits 2, so the bridge never has to guess
from a traceback. ``--describe`` prints the runtimes this Python has instead.

Self-contained on purpose: standard library, numpy, the runtime and
``measure.py`` only; no edgelat import (edgelat is not installed on the device).
Inputs follow the agent's convention (floats uniform in [-1, 1), integers in
{0, 1}, seed 0) so a phone row and a board row time the same work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

# The three markers are read by edgelat/agents/parsers/runner_output.py; keep them equal.
RESULT_PREFIX = "EDGELAT_RESULT "
ERROR_PREFIX = "EDGELAT_ERROR "
STEADY_MARK = "EDGELAT_STEADY start"  # printed (and flushed) when the timed loop begins
EXIT_FAILURE = 2

# --runtime value -> interpreter packages tried in order (the first importable one runs)
LITERT_PACKAGES = {"litert": ("ai_edge_litert", "tflite_runtime"), "tflite-runtime": ("tflite_runtime",)}
RUNTIME_NAME_OF_PACKAGE = {"ai_edge_litert": "litert", "tflite_runtime": "tflite-runtime"}
FORMAT_OF_RUNTIME = {"onnxruntime": "onnx", "litert": "tflite", "tflite-runtime": "tflite"}
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider", "qnn": "QNNExecutionProvider",
    "acl": "ACLExecutionProvider", "armnn": "ArmNNExecutionProvider",
    "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "coreml": "CoreMLExecutionProvider",
}
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(uint16)": "uint16", "tensor(int32)": "int32", "tensor(uint32)": "uint32",
    "tensor(int64)": "int64", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


class RunnerError(Exception):
    """A failure with a one-line reason meant for the user."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception, shortened (runtimes raise pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit 2 without our prefix
        raise RunnerError(f"bad arguments: {message}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="runner.py", description="Time one model on this device (edgelat).")
    p.add_argument("--describe", action="store_true", help="print the runtimes this Python has and exit")
    p.add_argument("--model", help="model file path")
    p.add_argument("--format", choices=("onnx", "tflite"))
    p.add_argument("--runtime", choices=tuple(FORMAT_OF_RUNTIME))
    p.add_argument("--provider", default="cpu", help="onnxruntime EP or LiteRT delegate (cpu, xnnpack)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0 = runtime default)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--max-runs", type=int, default=1000)
    p.add_argument("--target-rel-ci", type=float, default=0.02)
    p.add_argument("--max-seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.describe:
        return args
    missing = [flag for flag, v in (("--model", args.model), ("--format", args.format),
                                    ("--runtime", args.runtime)) if v is None]
    if missing:
        raise RunnerError(f"bad arguments: {', '.join(missing)} required")
    if FORMAT_OF_RUNTIME[args.runtime] != args.format:
        raise RunnerError(f"runtime {args.runtime} runs {FORMAT_OF_RUNTIME[args.runtime]} models, "
                          f"not {args.format}")
    if args.threads < 0:
        raise RunnerError(f"bad arguments: --threads must be >= 0, got {args.threads}")
    if args.max_runs < 1 or args.min_runs < 1 or args.warmup < 0 or args.max_seconds <= 0:
        raise RunnerError("bad arguments: need --warmup >= 0, --min-runs >= 1, --max-runs >= 1, "
                          "--max-seconds > 0")
    return args


def import_measure():
    """``measure.py`` is pushed next to this file; import it from there."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return importlib.import_module("measure")
    except ImportError as exc:
        raise RunnerError(f"measure.py must sit next to runner.py in {here}: {one_line(exc)}") from None


def _numpy():
    try:
        import numpy as np
    except ImportError:
        raise RunnerError("numpy is not installed for this Python (the runtimes need it)") from None
    return np


def random_input(np, shape, dtype, rng):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dt)
    if dt.kind in "iub":
        return rng.integers(0, 2, size=shape).astype(dt)
    raise RunnerError(f"model input has type {dt}, which edgelat cannot feed")


def describe() -> dict:
    """Runtimes importable here and their versions (the bridge stores this as a device fact)."""
    runtimes = {}
    try:
        ort = importlib.import_module("onnxruntime")
        runtimes["onnxruntime"] = {"version": str(ort.__version__),
                                   "providers": list(ort.get_available_providers())}
    except Exception:  # a broken wheel is as absent as a missing one
        pass
    for package, name in RUNTIME_NAME_OF_PACKAGE.items():
        try:
            importlib.import_module(package + ".interpreter")
            runtimes[name] = {"version": _package_version(package), "providers": ["cpu", "xnnpack"]}
        except Exception:
            pass
    try:
        np_version = _numpy().__version__
    except RunnerError:
        np_version = None
    return {"python": platform.python_version(), "machine": platform.machine(),
            "numpy": np_version, "runtimes": runtimes}


def _package_version(package: str) -> str:
    mod = importlib.import_module(package)
    version = getattr(mod, "__version__", "")
    if not version:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version(package.replace("_", "-"))
        except Exception:
            version = ""
    return str(version)


def load_onnxruntime(args):
    """Returns (run_once, runtime name, version, provider) after building the session."""
    np = _numpy()
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise RunnerError("runtime onnxruntime is not installed for this Python") from None
    wanted = ORT_PROVIDERS.get(args.provider.lower(), args.provider)
    available = ort.get_available_providers()
    if wanted not in available:
        raise RunnerError(f"onnxruntime provider {args.provider!r} not available here "
                          f"(available: {', '.join(available)})")
    chain = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(args.threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    t0 = time.perf_counter_ns()
    try:
        sess = ort.InferenceSession(args.model, sess_options=opts, providers=chain)
    except Exception as exc:
        raise RunnerError(f"onnxruntime cannot load {os.path.basename(args.model)}: {one_line(exc)}") from None
    session_ms = (time.perf_counter_ns() - t0) / 1e6
    used = sess.get_providers()
    if not used or used[0] != wanted:
        raise RunnerError(f"onnxruntime provider {args.provider!r} did not initialize "
                          f"(session fell back to {', '.join(used) or 'nothing'})")
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        dtype = ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise RunnerError(f"model input {inp.name!r} has type {inp.type}, which edgelat cannot feed")
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        feeds[inp.name] = random_input(np, shape, dtype, rng)
    outputs = [o.name for o in sess.get_outputs()]

    def run_once() -> None:
        sess.run(outputs, feeds)

    return run_once, session_ms, "onnxruntime", str(ort.__version__), args.provider.lower()


def load_litert(args):
    np = _numpy()
    if args.provider.lower() not in ("cpu", "xnnpack"):
        raise RunnerError(f"{args.runtime} delegate {args.provider!r} is not supported by the python "
                          "runner (use cpu or xnnpack)")
    module = package = None
    for candidate in LITERT_PACKAGES[args.runtime]:
        try:
            module = importlib.import_module(candidate + ".interpreter")
            package = candidate
            break
        except ImportError:
            continue
    if module is None:
        raise RunnerError(f"runtime {args.runtime} is not installed for this Python "
                          f"(tried {', '.join(LITERT_PACKAGES[args.runtime])})")
    t0 = time.perf_counter_ns()
    try:
        interp = module.Interpreter(model_path=args.model,
                                    num_threads=int(args.threads) if args.threads > 0 else None)
        interp.allocate_tensors()
    except Exception as exc:
        raise RunnerError(f"{RUNTIME_NAME_OF_PACKAGE[package]} cannot load "
                          f"{os.path.basename(args.model)}: {one_line(exc)}") from None
    session_ms = (time.perf_counter_ns() - t0) / 1e6
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        shape = tuple(int(d) for d in detail["shape"])
        interp.set_tensor(detail["index"], random_input(np, shape, detail["dtype"], rng))

    def run_once() -> None:
        interp.invoke()

    return run_once, session_ms, RUNTIME_NAME_OF_PACKAGE[package], _package_version(package), \
        args.provider.lower()


def benchmark(args) -> dict:
    if not os.path.isfile(args.model):
        raise RunnerError(f"model file not found: {args.model}")
    measure = import_measure()
    loader = load_onnxruntime if args.runtime == "onnxruntime" else load_litert
    run_once, session_ms, name, version, provider = loader(args)
    try:
        t0 = time.perf_counter_ns()
        run_once()
        first_run_ms = (time.perf_counter_ns() - t0) / 1e6
        steady = {}

        def before_steady() -> None:
            print(STEADY_MARK, flush=True)
            steady["t0"] = time.perf_counter_ns()

        samples, summary = measure.run_protocol(
            run_once, args.warmup, args.min_runs, args.max_runs, args.target_rel_ci,
            args.max_seconds, before_steady=before_steady)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(f"{name} failed while running {os.path.basename(args.model)}: "
                          f"{one_line(exc)}") from None
    steady_wall_s = (time.perf_counter_ns() - steady["t0"]) / 1e9 if "t0" in steady else None
    return {
        "session_ms": session_ms,
        "first_run_ms": first_run_ms,
        "latency": summary,
        "samples": len(samples),
        "samples_ms": [round(s, 6) for s in samples],
        "steady_wall_s": steady_wall_s,
        "runtime": {"name": name, "version": version, "provider": provider, "threads": args.threads},
        "format": args.format,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        result = describe() if args.describe else benchmark(args)
    except RunnerError as exc:
        print(ERROR_PREFIX + one_line(exc), flush=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(ERROR_PREFIX + "interrupted", flush=True)
        return EXIT_FAILURE
    except Exception as exc:  # never let a traceback be the only output
        print(ERROR_PREFIX + f"{type(exc).__name__}: {one_line(exc)}", flush=True)
        return EXIT_FAILURE
    print(RESULT_PREFIX + json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
