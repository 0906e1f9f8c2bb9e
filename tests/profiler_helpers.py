"""Shared by the profiler tests: run one built model in both real runtimes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

from edgelat.profiler.builders import build_model
from edgelat.profiler.ops import KernelSpec

RTOL, ATOL = 1e-4, 1e-5


def run_both(specs, seed: int = 0, inputs: list[np.ndarray] | None = None):
    """Run the ONNX model with onnxruntime and the TFLite model with LiteRT on the same NHWC inputs."""
    onnx_bytes = build_model(specs, "onnx", seed)
    tflite_bytes = build_model(specs, "tflite", seed)
    first = specs if isinstance(specs, KernelSpec) else specs[0]
    if inputs is None:
        rng = np.random.default_rng(123)
        inputs = [rng.standard_normal(s).astype(np.float32) for s in first.input_shapes()]

    interp = Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    details = interp.get_input_details()
    assert [d["name"] for d in details] == ["input", "input2"][: len(inputs)]
    for d, x in zip(details, inputs):
        assert tuple(d["shape"]) == x.shape
        interp.set_tensor(d["index"], x)
    interp.invoke()
    t_out = interp.get_tensor(interp.get_output_details()[0]["index"])

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == ["input", "input2"][: len(inputs)]
    o_out = sess.run(["output"], {n: x.transpose(0, 3, 1, 2) for n, x in zip(names, inputs)})[0]
    if o_out.ndim == 4:
        o_out = o_out.transpose(0, 2, 3, 1)
    return o_out, t_out, inputs


def expected_shape(spec: KernelSpec) -> tuple[int, ...]:
    """Graph output shape: NHWC, or (1, C) after a fully connected layer (as exporters write it)."""
    shape = spec.output_shape()
    return (1, shape[3]) if spec.op == "fc" else shape
