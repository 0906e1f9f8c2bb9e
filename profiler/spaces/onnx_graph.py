"""A tiny ONNX graph writer for spaces whose networks are not a chain of catalog kernels.

The profiler's builders build sequential networks from ``KernelSpec`` lists.
NAS-Bench-201 cells are DAGs and FBNet blocks have grouped convolutions with
a channel shuffle, so those spaces write their graphs here, node by node
(NCHW, opset 17, random weights from one seed, batch-norm folded into the
conv bias as in the profiler's builders).
"""

from __future__ import annotations

import numpy as np

OPSET = 17


class OnnxGraph:
    """Append-only graph: each method adds nodes and returns the output tensor name."""

    def __init__(self, seed: int = 0, name: str = "edgelat") -> None:
        import onnx  # noqa: F401  (fail early with the real import error)

        self.rng = np.random.default_rng(seed)
        self.name = name
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self._n = 0

    def _fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def _const(self, prefix: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def _node(self, op: str, inputs: list[str], **attrs: object) -> str:
        from onnx import helper

        out = self._fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def input(self, c: int, h: int, w: int, name: str = "input") -> str:
        from onnx import TensorProto, helper

        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, h, w]))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, act: str = "none") -> str:
        """kxk convolution with "same" padding (odd k) and a bias (the folded batch-norm)."""
        fan_in = (cin // group) * k * k
        w = self.rng.normal(0.0, np.sqrt(1.0 / fan_in), size=(cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.01, size=(cout,)).astype(np.float32)
        p = k // 2
        y = self._node(
            "Conv", [x, self._const("w", w), self._const("b", b)],
            kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p], group=group,
        )
        return self.act(y, act)

    def act(self, x: str, act: str) -> str:
        if act == "none":
            return x
        if act == "relu":
            return self._node("Relu", [x])
        raise ValueError(f"activation {act!r} is not used by the DAG spaces")

    def relu(self, x: str) -> str:
        return self._node("Relu", [x])

    def avgpool(self, x: str, k: int, stride: int, pad: int) -> str:
        """Average pool that ignores padding (PyTorch ``count_include_pad=False``)."""
        return self._node(
            "AveragePool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, count_include_pad=0
        )

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b])

    def zeros_like(self, x: str) -> str:
        """A tensor of zeros shaped like ``x`` (an all-``none`` node)."""
        return self._node("Mul", [x, self._const("zero", np.zeros((1,), dtype=np.float32))])

    def shuffle(self, x: str, c: int, h: int, w: int, groups: int) -> str:
        """Channel shuffle (ShuffleNet): reshape to groups, transpose, flatten back."""
        r1 = self._node("Reshape", [x, self._const("shape", np.array([1, groups, c // groups, h, w], dtype=np.int64))])
        t = self._node("Transpose", [r1], perm=[0, 2, 1, 3, 4])
        return self._node("Reshape", [t, self._const("shape", np.array([1, c, h, w], dtype=np.int64))])

    def gap_fc(self, x: str, cin: int, cout: int) -> str:
        """Global average pool, flatten, fully connected."""
        g = self._node("GlobalAveragePool", [x])
        f = self._node("Flatten", [g], axis=1)
        w = self.rng.normal(0.0, np.sqrt(1.0 / cin), size=(cin, cout)).astype(np.float32)
        b = np.zeros((cout,), dtype=np.float32)
        return self._node("Gemm", [f, self._const("w", w), self._const("b", b)])

    def finish(self, out: str, shape: list[int]) -> bytes:
        """Serialise with ``out`` (of ``shape``) as the graph output "output"; checked by onnx."""
        import onnx
        from onnx import TensorProto, helper

        self.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgelat")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model.SerializeToString()
