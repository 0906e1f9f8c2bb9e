"""Model intake: the one way a model file enters edgelat.

Every command that takes a model file (``profile model``, ``predict``) reads it
here. :func:`read_model` sniffs the format from the content (ONNX protobuf, or
TFLite by its ``TFL3`` identifier), reads every file the model references, and
returns a :class:`ModelFile` whose ``data`` is self-contained: what travels to
a device, what the graph splitter reads, and what ``ref`` hashes.

ONNX weights kept in external data files (PyTorch's exporter writes
``model.onnx`` + ``model.onnx.data``) are read, checked (inside the model's
folder, present, long enough) and embedded into one serialized ModelProto, so
the agents (local, gRPC, ADB) run it unchanged and the same weights hash the
same whether they were saved embedded or external. A symbolic batch dimension
is fixed to 1 in the bytes sent (the device then runs the shape the predictor
prices) and said so in ``notes``; any other dynamic dimension is refused.

Whatever is refused raises one line (:class:`BadInput` or :class:`CorruptModel`)
naming the file, and nothing has been sent or stored yet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from edgelat.agents.cache import sha256_bytes
from edgelat.errors import BadInput, CorruptModel

# A serialized protobuf message cannot exceed 2 GiB - 1 byte.
PROTOBUF_LIMIT = (1 << 31) - 1
# onnxruntime runs ONNX opsets from 7 on.
MIN_OPSET = 7
_ONNX_DOMAINS = ("", "ai.onnx")


def model_ref_for(data: bytes) -> str:
    """The table key of a model: the content hash of its self-contained bytes."""
    return f"sha256:{sha256_bytes(data)}"


@dataclass(frozen=True)
class ModelFile:
    """A model read from disk, ready to send.

    ``data`` is self-contained (no external references, concrete input shapes)
    and ``ref`` is its content hash; ``files`` lists every file that was read.
    """

    path: Path
    format: str
    data: bytes
    name: str
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    inputs: dict[str, list[int]] = field(default_factory=dict)

    @cached_property
    def ref(self) -> str:
        """``sha256:<hex>`` of ``data``: the key of the model's rows in a device's table."""
        return model_ref_for(self.data)


def read_model(path: str | Path) -> ModelFile:
    """Read a model file (and every file it references) into a :class:`ModelFile`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise BadInput(f"{p}: is a directory, not a model file") from None
    except OSError as exc:
        raise BadInput(f"cannot read model file {p}: {exc.strerror or exc}") from None
    if not data:
        raise BadInput(f"{p}: the file is empty")
    suffix = p.suffix.lower()
    fmt = "tflite" if len(data) >= 8 and data[4:8] == b"TFL3" else None
    proto = None
    if fmt is None:
        proto = _parse_onnx(data)
        fmt = "onnx" if proto is not None else None
    if fmt is None:
        if suffix == ".onnx":
            raise CorruptModel(f"{p}: not a readable ONNX model (the protobuf ModelProto does not parse)")
        if suffix == ".tflite":
            raise CorruptModel(f"{p}: not a TFLite model (no TFL3 file identifier)")
        raise BadInput(f"{p}: unknown model format: the content is neither ONNX nor TFLite")
    if suffix in (".onnx", ".tflite") and suffix[1:] != fmt:
        what = "a TFLite model (TFL3 identifier)" if fmt == "tflite" else "an ONNX model"
        raise BadInput(f"{p} is {what}, not {suffix[1:].upper().replace('TFLITE', 'TFLite')}: "
                       f"rename it to {p.stem}.{fmt}")
    if fmt == "tflite":
        return _read_tflite(p, data)
    return _read_onnx(p, data, proto)


# --------------------------------------------------------------------------- ONNX


def _parse_onnx(data: bytes) -> Any | None:
    """The ModelProto, or None when the bytes are not one (protobuf parses much garbage: ask for a graph)."""
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # DecodeError, RuntimeWarning-as-error on odd wire data
        return None
    if not model.HasField("graph") or model.ir_version <= 0 or not (model.graph.node or model.graph.output):
        return None
    return model


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) under it."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto in the model that can hold weights (initializers and constant attributes)."""

    def from_nodes(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                for s in a.sparse_tensors:
                    yield s.values
                    yield s.indices

    for g in _graphs(model.graph):
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
        yield from from_nodes(g.node)
    for f in model.functions:
        yield from from_nodes(f.node)


def _expected_nbytes(tensor: Any) -> int | None:
    """Bytes of raw data the tensor's dims and type need (None when the type has no fixed size)."""
    import numpy as np
    import onnx

    n = int(np.prod(list(tensor.dims), dtype=np.int64)) if len(tensor.dims) else 1
    packed4 = {getattr(onnx.TensorProto, k) for k in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, k)}
    if tensor.data_type in packed4:
        return (n + 1) // 2
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        return n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # a type this onnx does not know
        return None


@dataclass
class _Extent:
    tensor: Any
    file: Path
    offset: int
    length: int
    checksum: str


def _external_extents(p: Path, model: Any) -> list[_Extent]:
    """Where each external tensor's bytes are; refuses references outside the folder, missing or short files."""
    import onnx

    folder = p.parent.resolve()
    sizes: dict[Path, int] = {}
    extents: list[_Extent] = []
    for t in _tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        where = f"{p}: tensor '{t.name}'"
        location = info.get("location", "")
        if not location:
            raise CorruptModel(f"{where} is marked external but names no data file")
        rel = Path(location)
        if rel.is_absolute() or ".." in rel.parts or "\x00" in location:
            raise BadInput(f"{where} points outside the model's folder ({location}); "
                           "edgelat reads external data only next to the model")
        target = (folder / rel).resolve()
        if folder != target and folder not in target.parents:
            raise BadInput(f"{where} points outside the model's folder ({location} resolves to {target}); "
                           "edgelat reads external data only next to the model")
        if target not in sizes:
            if not target.exists():
                raise BadInput(f"{where}: its external data file {location} is missing (looked in {folder})")
            if not target.is_file():
                raise BadInput(f"{where}: its external data {location} is not a regular file")
            sizes[target] = target.stat().st_size
        size = sizes[target]
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") not in (None, "") else size - offset
        except ValueError:
            raise CorruptModel(f"{where}: malformed external data offset/length "
                               f"({info.get('offset')!r}, {info.get('length')!r})") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise CorruptModel(f"{where}: its external data file {location} is truncated (the tensor needs bytes "
                               f"{offset}..{offset + length}, the file holds {size})")
        need = _expected_nbytes(t)
        if need is not None and length != need:
            raise CorruptModel(f"{where}: {location} holds {length} bytes for it but its shape "
                               f"{list(t.dims)} needs {need}")
        extents.append(_Extent(t, target, offset, length, info.get("checksum", "")))
    return extents


def _embed(p: Path, data_size: int, extents: list[_Extent]) -> list[Path]:
    """Read each external tensor into its raw_data; returns the data files read, in order."""
    total = data_size + sum(e.length for e in extents)
    if total > PROTOBUF_LIMIT:
        raise BadInput(f"{p}: the model with its external weights is {total} bytes, over protobuf's 2 GiB limit "
                       "for one model file; edgelat sends each model as one file and cannot send this one")
    files: list[Path] = []
    handles: dict[Path, Any] = {}
    try:
        for e in extents:
            fh = handles.get(e.file)
            if fh is None:
                fh = handles[e.file] = open(e.file, "rb")
                files.append(e.file)
            fh.seek(e.offset)
            raw = fh.read(e.length)
            if len(raw) != e.length:  # the file shrank while it was read
                raise CorruptModel(f"{p}: tensor '{e.tensor.name}': {e.file.name} is truncated")
            if e.checksum and hashlib.sha1(raw).hexdigest() != e.checksum:
                raise CorruptModel(f"{p}: tensor '{e.tensor.name}': its bytes in {e.file.name} do not match "
                                   "the checksum the model records")
            e.tensor.raw_data = raw
            del e.tensor.external_data[:]
            e.tensor.ClearField("data_location")  # as if it had been saved embedded
    except OSError as exc:
        raise BadInput(f"{p}: cannot read external data: {exc.strerror or exc}") from None
    finally:
        for fh in handles.values():
            fh.close()
    return files


def _opset(p: Path, model: Any) -> int:
    import onnx

    versions = [o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS]
    if not versions:
        raise CorruptModel(f"{p}: the model declares no ONNX opset")
    opset = max(versions)
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise BadInput(f"{p}: opset {opset} is older than {MIN_OPSET}, the oldest onnxruntime runs; "
                       "convert it with onnx.version_converter")
    if opset > newest:
        raise BadInput(f"{p}: opset {opset} is newer than this onnx package knows ({newest}); upgrade onnx")
    return opset


def _fix_inputs(p: Path, model: Any, notes: list[str]) -> tuple[dict[str, list[int]], bool]:
    """Concrete input shapes: a symbolic batch (axis 0) becomes 1 everywhere it appears; any other
    dynamic dimension is refused. Returns the shapes and whether the model changed."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]  # older exporters list weights as inputs
    if not inputs:
        raise BadInput(f"{p}: the model has no inputs, so there is nothing to feed it and nothing to time")
    shapes: dict[str, list[int]] = {}
    batch_params: set[str] = set()
    changed = False
    for vi in inputs:
        if vi.type.WhichOneof("value") != "tensor_type":
            raise BadInput(f"{p}: input '{vi.name}' is a {vi.type.WhichOneof('value') or 'untyped value'}, "
                           "not a tensor; edgelat feeds tensors only")
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise BadInput(f"{p}: input '{vi.name}' has no shape; export the model with a fixed input shape")
        shape: list[int] = []
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
                continue
            label = d.dim_param or "?"
            if axis != 0:
                raise BadInput(f"{p}: input '{vi.name}' has a dynamic dimension '{label}' at axis {axis}; "
                               "edgelat times fixed shapes: export the model with a fixed input size")
            notes.append(f"input '{vi.name}': symbolic batch dimension '{label}' taken as 1")
            if d.dim_param:
                batch_params.add(d.dim_param)
            d.Clear()
            d.dim_value = 1
            changed = True
            shape.append(1)
        shapes[vi.name] = shape
    if batch_params:  # the same symbol on outputs and intermediate values is the same batch
        for graph in _graphs(g):
            for vi in list(graph.output) + list(graph.value_info):
                if vi.type.WhichOneof("value") != "tensor_type":
                    continue
                for d in vi.type.tensor_type.shape.dim:
                    if d.dim_param in batch_params:
                        d.Clear()
                        d.dim_value = 1
    return shapes, changed


def _read_onnx(p: Path, data: bytes, model: Any) -> ModelFile:
    import onnx

    if model.ir_version > onnx.IR_VERSION:
        raise BadInput(f"{p}: IR version {model.ir_version} is newer than this onnx package knows "
                       f"({onnx.IR_VERSION}); upgrade onnx")
    _opset(p, model)
    notes: list[str] = []
    # Check and locate everything before reading any weights: a refusal costs no I/O.
    extents = _external_extents(p, model)
    shapes, fixed = _fix_inputs(p, model, notes)
    files = [p] + _embed(p, len(data), extents)
    if extents:
        notes.append(f"weights read from {', '.join(f.name for f in files[1:])} and embedded")
    # onnx.load() marks the tensors it filled from external data as DEFAULT explicitly; an unset field
    # means the same, so clear it: one set of weights, one byte string, however it was saved.
    explicit = [t for t in _tensors(model) if t.HasField("data_location")]
    for t in explicit:
        t.ClearField("data_location")
    if extents or fixed or explicit:
        try:
            out = model.SerializeToString(deterministic=True)
        except Exception as exc:  # ValueError: message too large
            raise BadInput(f"{p}: cannot serialize the model as one file: {str(exc).splitlines()[0]}") from None
    else:
        out = data  # already self-contained: the file's own bytes (and hash)
    return ModelFile(path=p, format="onnx", data=out, name=p.name, notes=notes, files=files, inputs=shapes)


# --------------------------------------------------------------------------- TFLite


def _read_tflite(p: Path, data: bytes) -> ModelFile:
    """Check a TFLite flatbuffer (as the converter writes it) and describe its inputs; the bytes go as they are."""
    import ai_edge_litert.schema_py_generated as schema

    notes: list[str] = []
    shapes: dict[str, list[int]] = {}
    try:
        m = schema.Model.GetRootAs(data, 0)
        if m.SubgraphsLength() < 1:
            raise CorruptModel(f"{p}: the TFLite model has no subgraph")
        if not m.ExternalBuffersIsNone() and m.ExternalBuffersLength() > 0:
            raise BadInput(f"{p}: the TFLite model keeps weights in external buffer files, which edgelat "
                           "does not send; convert it with the weights inside the .tflite file")
        for b in range(m.BuffersLength()):
            buf = m.Buffers(b)
            if buf.DataLength():
                buf.DataAsNumpy()  # raises when the bytes run past the end of the file
            offset, size = int(buf.Offset()), int(buf.Size())
            if offset > 1 and offset + size > len(data):
                raise CorruptModel(f"{p}: TFLite buffer {b} needs bytes {offset}..{offset + size} but the file "
                                   f"holds {len(data)}: the file is truncated")
        sg = m.Subgraphs(0)
        if sg.InputsLength() < 1:
            raise BadInput(f"{p}: the model has no inputs, so there is nothing to feed it and nothing to time")
        for k in range(sg.InputsLength()):
            idx = int(sg.Inputs(k))
            if not 0 <= idx < sg.TensorsLength():
                raise CorruptModel(f"{p}: TFLite input {k} names tensor {idx}, which does not exist")
            t = sg.Tensors(idx)
            name = (t.Name() or b"").decode(errors="replace") or f"input{k}"
            shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
            sig = [int(d) for d in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else list(shape)
            for axis, d in enumerate(sig):
                if d >= 0:
                    continue
                if axis != 0:
                    raise BadInput(f"{p}: input '{name}' has a dynamic dimension at axis {axis}; edgelat times "
                                   "fixed shapes: convert the model with a fixed input size")
                notes.append(f"input '{name}': dynamic batch dimension taken as 1")
            shapes[name] = [1 if (i == 0 and (d < 0 or (sig and sig[0] < 0))) else d for i, d in enumerate(shape)]
    except (BadInput, CorruptModel):
        raise
    except Exception as exc:  # flatbuffers raises IndexError/struct.error on a damaged file
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptModel(f"{p}: a truncated or damaged TFLite file ({why})") from None
    return ModelFile(path=p, format="tflite", data=data, name=p.name, notes=notes, files=[p], inputs=shapes)
