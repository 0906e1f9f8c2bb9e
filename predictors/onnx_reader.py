"""An ONNX model as the runtime will run it: constants folded, batch 1, every shape known.

The splitter (:mod:`edgelat.predictors.graph`) prices the nodes a runtime really
executes, so the file is first brought to that graph:

- **Constant folding**, as onnxruntime's ConstantFolding does at session
  creation: every node whose inputs are all constants (initializers,
  ``Constant`` nodes, outputs of nodes already folded) is evaluated once, and
  ``Shape``/``Size`` of a tensor whose shape is static becomes a constant too,
  so ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` and
  ``ConstantOfShape``/``Range``/``ScatterND`` mask chains, and the
  ``Transpose`` of a weight, all vanish. Values come from onnx's reference
  evaluator (``onnx.reference``), one node at a time: it implements every
  standard op at every opset the onnx package knows, in numpy, needs no
  session or serialized sub-model, and where it cannot evaluate a node the
  node simply stays live (priced as an unknown kernel) instead of failing the
  model. Random ops and ops from other domains are never folded.
- **Shapes**: the symbolic batch of a graph input is fixed to 1 (and said so),
  then onnx shape inference runs with data propagation on a weight-free
  skeleton of the folded graph (large weights enter as typed inputs, so a
  500 MB model is not copied into the inference engine), folding and inference
  alternating until nothing changes. A tensor whose shape inference still
  cannot tell is taken from one onnxruntime run of the model at batch 1.
- **Batch**: only the graph inputs say what the batch is; a ``[1024, ...]``
  reshape inside a transformer is not a batch.

:meth:`ReadGraph.one_node` cuts one live node out as a standalone model (its
constant inputs, folded ones included, as initializers), which is what the
device measures for a node outside the kernel catalog.

Bytes whose float weights sit outside them (external data not bundled) still
read the same: such a weight stands in as zeros of its shape wherever a value
is needed, since latency depends on shapes, not weight values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelat.errors import BadInput, CorruptModel

# Ops whose output is not a function of their inputs: never folded.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})
# Constants up to this many elements go into the inference skeleton with their values
# (shape tensors, axes, small masks); larger ones go in as typed inputs.
SKELETON_VALUE_LIMIT = 4096
MAX_ROUNDS = 8
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # float, float16, double, bfloat16


class Consts:
    """Constant tensors by name, converted to numpy only when a value is needed."""

    def __init__(self) -> None:
        self._protos: dict[str, Any] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._arrays or name in self._protos

    def names(self) -> list[str]:
        return list(self._protos) + [n for n in self._arrays if n not in self._protos]

    def add_proto(self, name: str, proto) -> None:
        self._protos[name] = proto

    def set(self, name: str, value: np.ndarray) -> None:
        self._arrays[name] = np.asarray(value)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._arrays:
            return tuple(int(d) for d in self._arrays[name].shape)
        return tuple(int(d) for d in self._protos[name].dims)

    def elem_type(self, name: str) -> int:
        if name in self._arrays:
            from onnx import helper

            return helper.np_dtype_to_tensor_dtype(self._arrays[name].dtype)
        return int(self._protos[name].data_type)

    def size(self, name: str) -> int:
        return int(np.prod(self.shape(name), dtype=np.int64))

    def value(self, name: str) -> np.ndarray:
        """The tensor's values; ValueError if the file does not hold them (external data)."""
        if name not in self._arrays:
            from onnx import numpy_helper

            proto = self._protos[name]
            if proto.data_location == 1:  # TensorProto.EXTERNAL
                raise ValueError(f"tensor {name} is stored outside the model bytes")
            self._arrays[name] = numpy_helper.to_array(proto)
        return self._arrays[name]

    def get(self, name: str) -> np.ndarray | None:
        """The value if this is a constant whose values are available, else None."""
        if name not in self:
            return None
        try:
            return self.value(name)
        except ValueError:
            return None

    def stand_in(self, name: str) -> np.ndarray | None:
        """The value, or zeros of its shape for a float tensor the bytes do not hold (weights
        kept as external data): latency does not depend on weight values, shapes do."""
        value = self.get(name)
        if value is None and name in self and self.elem_type(name) in _FLOAT_TYPES:
            from onnx import helper

            value = np.zeros(self.shape(name), helper.tensor_dtype_to_np_dtype(self.elem_type(name)))
        return value


@dataclass
class ReadGraph:
    """The folded, shaped graph of one ONNX model (see the module docstring)."""

    model: Any  # the ModelProto as read (weights included)
    nodes: list[Any]  # live nodes, in execution order
    names: list[str]  # a unique name per live node
    consts: Consts
    shapes: dict[str, tuple[int, ...]]  # every tensor whose shape is known (NCHW, as in the file)
    types: dict[str, int]  # element types (TensorProto enum)
    inputs: list[str]
    outputs: list[str]
    folded: list[dict[str, str]] = field(default_factory=list)  # {name, op_type} of nodes folded away
    notes: list[str] = field(default_factory=list)

    def opsets(self) -> dict[str, int]:
        return {o.domain or "": int(o.version) for o in self.model.opset_import}

    def one_node(self, node) -> bytes:
        """A standalone model of ``node``: live inputs as graph inputs, constants as initializers
        (see :meth:`Consts.stand_in` for weights the bytes do not hold)."""
        import onnx
        from onnx import helper, numpy_helper

        inputs, inits, seen = [], [], set()
        for name in node.input:
            if not name or name in seen:
                continue
            seen.add(name)
            if name in self.consts:
                value = self.consts.stand_in(name)
                if value is None:
                    raise ValueError(f"constant {name} is stored outside the model bytes")
                inits.append(numpy_helper.from_array(np.asarray(value), name))
            else:
                inputs.append(helper.make_tensor_value_info(name, self.types.get(name, onnx.TensorProto.FLOAT), self.shapes.get(name)))
        outputs = [helper.make_tensor_value_info(o, self.types.get(o, onnx.TensorProto.FLOAT), self.shapes.get(o))
                   for o in node.output if o]
        graph = helper.make_graph([node], "edgelat-node", inputs, outputs, initializer=inits)
        functions = [f for f in self.model.functions if (f.domain, f.name) == (node.domain, node.op_type)]
        m = helper.make_model(graph, opset_imports=list(self.model.opset_import), producer_name="edgelat", functions=functions)
        m.ir_version = self.model.ir_version
        return m.SerializeToString()


# --------------------------------------------------------------------------- reading
def read_onnx(data: bytes) -> ReadGraph:
    """Read, fold and shape a serialized ONNX model (see the module docstring)."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # DecodeError and friends
        raise CorruptModel(f"not a readable ONNX model: {_first_line(exc)}") from None
    if not model.graph.node:
        raise CorruptModel("not a readable ONNX model: the graph has no nodes")
    g = model.graph
    notes: list[str] = []
    consts = Consts()
    for t in g.initializer:
        consts.add_proto(t.name, t)
    inputs = [i for i in g.input if i.name not in consts]  # weights listed as graph inputs are weights
    in_shapes = _fix_inputs(inputs, notes)

    names = _node_names(g.node)
    live = list(range(len(g.node)))
    folded: list[int] = []
    shapes: dict[str, tuple[int, ...]] = dict(in_shapes)
    types: dict[str, int] = {i.name: i.type.tensor_type.elem_type for i in inputs}
    static_vi = _declared(g)
    opsets = {o.domain or "": int(o.version) for o in model.opset_import}
    ran: dict[str, tuple[int, ...]] = {}  # shapes from one runtime run, when inference and folding stall
    tried = False
    for round_ in range(MAX_ROUNDS + 1):  # infer, fold what became computable, again until nothing folds
        inferred, types = _infer(model, [g.node[i] for i in live], consts, inputs, in_shapes, static_vi, opsets)
        shapes = {**ran, **inferred}
        newly = _fold(g.node, live, consts, shapes, opsets) if round_ < MAX_ROUNDS else []
        if not newly:
            missing = _unshaped([g.node[i] for i in live], consts, shapes)
            if missing and not tried and round_ < MAX_ROUNDS:
                tried = True
                ran = _shapes_by_running(model, missing, types, in_shapes)
                if ran:
                    continue  # fold again with what the run told
            break
        folded += newly
        gone = set(newly)
        live = [i for i in live if i not in gone]
    nodes = [g.node[i] for i in live]
    from_run = [t for t in _unshaped(nodes, consts, inferred) if t in ran]
    if from_run:
        notes.append(f"shapes of {len(from_run)} tensor(s) that shape inference could not tell were taken "
                     "from an onnxruntime run at batch 1")
    still = _unshaped(nodes, consts, shapes)
    if still:
        notes.append(f"{len(still)} tensor(s) have an unknown shape; the nodes using them are measured as they are")
    for name in consts.names():
        shapes.setdefault(name, consts.shape(name))
        types.setdefault(name, consts.elem_type(name))
    folded_rows = [{"name": names[i], "op_type": g.node[i].op_type} for i in sorted(folded)]
    if folded_rows:
        notes.append(f"{len(folded_rows)} node(s) computing constants were folded, as the runtime does at load time")
    return ReadGraph(
        model, nodes, [names[i] for i in live], consts, shapes, types,
        [i.name for i in inputs], [o.name for o in g.output], folded_rows, notes,
    )


def _unshaped(nodes, consts: Consts, shapes) -> list[str]:
    """Live tensors of ``nodes`` whose shape is not known, in order, once each."""
    return list(dict.fromkeys(t for n in nodes for t in [*n.input, *n.output] if t and t not in consts and t not in shapes))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _node_names(nodes) -> list[str]:
    """Node names, made unique (exporters may leave them empty or repeat them)."""
    out, seen = [], set()
    for i, n in enumerate(nodes):
        name = n.name or f"{n.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(name)
    return out


def _fix_inputs(inputs, notes: list[str]) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph inputs: a symbolic batch becomes 1, a bigger one is refused."""
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in inputs:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise BadInput(f"input {vi.name} has no declared shape; export the model with a fixed input size")
        dims = []
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif axis == 0:
                dims.append(1)
                notes.append(f"input {vi.name}: symbolic dimension {d.dim_param or '?'} taken as 1")
            else:
                raise BadInput(f"input {vi.name}: dimension {axis} is dynamic ({d.dim_param or '?'}); "
                               "export the model with a fixed input size")
        if len(dims) >= 2 and dims[0] != 1:
            raise BadInput(f"input {vi.name} has batch {dims[0]}; the kernel predictor covers batch 1 models")
        shapes[vi.name] = tuple(dims)
    return shapes


def _static(vi) -> tuple[int, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tt.shape.dim]
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)


def _declared(g) -> dict[str, Any]:
    """Fully static value_info entries written by the exporter (kept where inference says nothing)."""
    return {vi.name: vi for vi in list(g.value_info) + list(g.output) if _static(vi) is not None}


def _infer(model, nodes, consts: Consts, inputs, in_shapes, declared, opsets) -> tuple[dict, dict]:
    """Shapes and element types of every tensor, by onnx shape inference on a weight-free skeleton."""
    from onnx import helper, numpy_helper, shape_inference

    used = {t for n in nodes for t in n.input if t}
    g_inputs, inits = [], []
    for vi in inputs:
        g_inputs.append(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, in_shapes[vi.name]))
    for name in used:
        if name not in consts:
            continue
        value = consts.get(name) if consts.size(name) <= SKELETON_VALUE_LIMIT else None
        if value is not None:
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        else:
            g_inputs.append(helper.make_tensor_value_info(name, consts.elem_type(name), consts.shape(name)))
    produced = {o for n in nodes for o in n.output}
    outputs = [o for o in model.graph.output if o.name in produced or o.name in consts]
    vinfo = [vi for name, vi in declared.items() if name in produced]
    graph = helper.make_graph(list(nodes), "skeleton", g_inputs, outputs, initializer=inits, value_info=vinfo)
    skel = helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    skel.ir_version = max(model.ir_version, 4)  # IR < 4 ignores initializers not listed as inputs
    try:
        inferred = shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    except Exception:  # inference gives up on some graphs: keep what the file declares
        inferred = skel
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            types[vi.name] = int(tt.elem_type)
        s = _static(vi)
        if s is not None:
            shapes[vi.name] = s
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name not in types and vi.type.tensor_type.elem_type:
            types[vi.name] = int(vi.type.tensor_type.elem_type)
    for name in consts.names():
        shapes.pop(name, None)  # a constant's shape is its own
    shapes.update(in_shapes)
    return shapes, types


def _fold(nodes, live: list[int], consts: Consts, shapes, opsets: dict[str, int]) -> list[int]:
    """Fold, in order, every live node computable now; returns the indices folded."""
    done = []
    for i in live:
        n = nodes[i]
        if n.domain not in ("", "ai.onnx") or n.op_type in NONDETERMINISTIC:
            continue
        if any(a.type in (5, 10) for a in n.attribute):  # GRAPH / GRAPHS: control flow stays live
            continue
        ins = [t for t in n.input if t]
        values: list[np.ndarray] | None = None
        if n.op_type in ("Shape", "Size") and ins and ins[0] not in consts and ins[0] in shapes:
            values = [_shape_op(n, shapes[ins[0]])]
        elif (ins or n.op_type == "Constant") and all(t in consts for t in ins):
            values = _evaluate(n, consts, opsets)
        if values is None or len(values) < len([o for o in n.output if o]):
            continue
        for name, v in zip(n.output, values):
            if name:
                consts.set(name, v)
        done.append(i)
    return done


def _shape_op(node, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[slice(start, end if "end" in attrs else None)], np.int64)


def _evaluate(node, consts: Consts, opsets: dict[str, int]) -> list[np.ndarray] | None:
    """Outputs of one node on constant inputs by the onnx reference evaluator; None if it cannot."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    feeds = {}
    for t in node.input:
        if t:
            v = consts.stand_in(t)
            if v is None:
                return None
            feeds[t] = v
    try:
        # a one-node graph under the model's opsets: the evaluator picks the op's version from them
        # (given a bare node it would take the newest, e.g. Unsqueeze-13 for an opset-11 node)
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for t, v in feeds.items()],
            [helper.make_empty_tensor_value_info(o) for o in node.output if o],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        out = ReferenceEvaluator(model).run(None, feeds)
    except Exception:  # an op the evaluator lacks, or bad attributes: the node stays live
        return None
    return [np.asarray(v) for v in out]


def _shapes_by_running(model, tensors: list[str], types: dict[str, int], in_shapes) -> dict[str, tuple[int, ...]]:
    """Shapes of ``tensors`` from one onnxruntime run at batch 1 (empty if the model cannot run).

    A tensor of unknown element type (the output of an op onnx does not know) is asked
    for as float, the usual case; if the runtime refuses that, only the typed ones are.
    """
    import onnx

    typed = [t for t in tensors if t in types]
    for wanted in ([*tensors], typed) if len(typed) < len(tensors) else (typed,):
        if not wanted:
            continue
        got = _run_for(model, wanted, {t: types.get(t, onnx.TensorProto.FLOAT) for t in wanted}, types, in_shapes)
        if got is not None:
            return got
    return {}


def _run_for(model, wanted: list[str], want_types: dict[str, int], types, in_shapes) -> dict[str, tuple[int, ...]] | None:
    import onnx
    from onnx import helper

    g = model.graph
    n_out = len(g.output)
    declared = {o.name for o in g.output}
    try:  # the model itself, with the tensors asked for as extra outputs (restored after)
        g.output.extend(helper.make_tensor_value_info(t, want_types[t], None) for t in wanted if t not in declared)
        data = model.SerializeToString()
    finally:
        del g.output[n_out:]
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            dtype = helper.tensor_dtype_to_np_dtype(types.get(i.name, onnx.TensorProto.FLOAT))
            feeds[i.name] = np.zeros(in_shapes.get(i.name, ()), dtype)
        names = [o.name for o in sess.get_outputs()]
        values = sess.run(names, feeds)
    except Exception:  # the model cannot run here (missing kernel, bad types): shapes stay unknown
        return None
    got = dict(zip(names, values))
    for t in wanted:  # the element type the runtime produced is the one to use
        if t in got and t not in types:
            types[t] = helper.np_dtype_to_tensor_dtype(np.asarray(got[t]).dtype)
    return {t: tuple(int(d) for d in np.shape(got[t])) for t in wanted if t in got}
