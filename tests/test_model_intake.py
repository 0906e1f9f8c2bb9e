"""Model intake: real exported models (external data, as PyTorch writes them) through ``profile model``
and ``predict`` on ``local`` and over a real gRPC agent, and every bad input refused in one line with
nothing stored."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import real_models
from agent_helpers import running_agent
from edgelat import config
from edgelat.cli import main
from edgelat.errors import BadInput, CorruptModel, EdgelatError
from edgelat.profiler.builders import build_model
from edgelat.profiler.intake import model_ref_for, read_model
from edgelat.profiler.networks import tiny_net

FAST = ["--warmup", "1", "--min-runs", "3", "--max-seconds", "0.2"]


# --------------------------------------------------------------------------- helpers


def run(*args: object):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def db_dump() -> str:
    path = config.db_path()
    if not path.exists():
        return ""
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def model_rows() -> list[tuple]:
    path = config.db_path()
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return conn.execute("select model_ref, model_name from model_measurements").fetchall()


def fails_cleanly(*args: object, match: str) -> str:
    """Exit != 0, exactly one 'error:' line on stderr naming ``match``, no traceback, nothing stored."""
    before = db_dump()
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert match in lines[0], lines[0]
    assert db_dump() == before
    return lines[0]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """squeezenet1_1 and mobilenet_v3_small as PyTorch's exporter writes them (model + .data),
    and squeezenet1_1 with the same weights embedded in one file."""
    root = tmp_path_factory.mktemp("real")
    return {
        "squeezenet": real_models.materialize("squeezenet1_1", root / "ext"),
        "squeezenet_single": real_models.materialize("squeezenet1_1", root / "single", single_file=True),
        "mobilenet": real_models.materialize("mobilenet_v3_small", root / "ext"),
    }


def variant(src: Path, out_dir: Path, edit=None, copy_data: bool = True) -> Path:
    """A copy of the exported ``src`` (graph file + its data file) with ``edit(model, out_dir)`` applied."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src), load_external_data=False)
    data = src.with_name(src.name + ".data")
    if copy_data:
        shutil.copy(data, out_dir / data.name)
    if edit is not None:
        edit(model, out_dir)
    dst = out_dir / src.name
    dst.write_bytes(model.SerializeToString())
    return dst


def set_location(location: str):
    def edit(model, _dir: Path) -> None:
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
    return edit


def symbolic_batch(model, _dir: Path) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"


def conv_model(opset: int, ir_version: int, weights_as_inputs: bool = False) -> bytes:
    """Conv -> Relu at a given opset; older exporters also listed the weights as graph inputs."""
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])]
    if weights_as_inputs:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 3, 3, 3]))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model.SerializeToString()


def tflite_with_signature(data: bytes, signature: list[int]) -> bytes:
    """The TFLite model with its first input's shape_signature replaced (what the converter writes
    for a dynamic dimension: -1 in the signature, 1 in the shape)."""
    import ai_edge_litert.schema_py_generated as schema
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sg = model.subgraphs[0]
    sg.tensors[int(sg.inputs[0])].shapeSignature = np.array(signature, np.int32)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --------------------------------------------------------------------------- the library


def test_external_data_is_read_and_embedded(exported, tmp_path):
    m = read_model(exported["mobilenet"])
    data_file = exported["mobilenet"].with_name("mobilenet_v3_small.onnx.data")
    assert m.format == "onnx" and m.name == "mobilenet_v3_small.onnx"
    assert m.files == [exported["mobilenet"], data_file.resolve()]
    assert m.inputs == {"x": [1, 3, 224, 224]}
    assert any("embedded" in n for n in m.notes)
    # self-contained: no tensor points anywhere, and the weights are all in the bytes
    proto = onnx.load_from_string(m.data)
    assert all(t.data_location != TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert len(m.data) > data_file.stat().st_size
    # onnxruntime runs it from a folder with nothing else in it, as an agent's cache holds it
    import onnxruntime as ort

    alone = tmp_path / "cache" / m.ref.split(":")[1]
    alone.parent.mkdir()
    alone.write_bytes(m.data)
    sess = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": np.zeros((1, 3, 224, 224), np.float32)})
    assert out.shape == (1, 1000) and np.isfinite(out).all()


def test_model_ref_is_the_same_for_the_same_weights_embedded_or_external(exported, tmp_path):
    """Design choice: the ref hashes the self-contained bytes, so one set of weights has one ref
    however it was saved, and a self-contained file keeps its own file hash as before."""
    ext, single = read_model(exported["squeezenet"]), read_model(exported["squeezenet_single"])
    assert ext.ref == single.ref
    assert single.ref == model_ref_for(exported["squeezenet_single"].read_bytes())
    assert single.data == exported["squeezenet_single"].read_bytes() and len(single.files) == 1
    # the common re-save: onnx.load() (which reads the external data) then onnx.save() as one file
    resaved = tmp_path / "resaved" / "squeezenet1_1.onnx"
    resaved.parent.mkdir()
    onnx.save_model(onnx.load(str(exported["squeezenet"])), str(resaved))
    assert read_model(resaved).ref == ext.ref

    def flip_a_weight(_model, out_dir: Path) -> None:
        data = out_dir / "squeezenet1_1.onnx.data"
        raw = bytearray(data.read_bytes())
        raw[100] ^= 0x01
        data.write_bytes(bytes(raw))

    assert read_model(variant(exported["squeezenet"], tmp_path / "flip", flip_a_weight)).ref != ext.ref


def _escape_symlink(model, out_dir: Path) -> None:
    elsewhere = out_dir.parent / "elsewhere"
    elsewhere.mkdir()
    (out_dir / "squeezenet1_1.onnx.data").rename(elsewhere / "w.data")
    os.symlink(elsewhere / "w.data", out_dir / "w.data")
    set_location("w.data")(model, out_dir)


def _truncate(_model, out_dir: Path) -> None:
    data = out_dir / "squeezenet1_1.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])


BAD_EXTERNAL = {
    "missing": (dict(copy_data=False), BadInput, "squeezenet1_1.onnx.data is missing"),
    "truncated": (dict(edit=_truncate), CorruptModel, "is truncated"),
    "absolute": (dict(edit=set_location("/etc/passwd")), BadInput, "outside the model's folder"),
    "dotdot": (dict(edit=set_location("../x/squeezenet1_1.onnx.data")), BadInput, "outside the model's folder"),
    "symlink": (dict(edit=_escape_symlink), BadInput, "outside the model's folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTERNAL))
def test_bad_external_data_is_refused_naming_file_and_tensor(exported, tmp_path, case):
    kwargs, cls, match = BAD_EXTERNAL[case]
    shutil.copytree(exported["squeezenet"].parent, tmp_path / "ext")
    path = variant(tmp_path / "ext" / "squeezenet1_1.onnx", tmp_path / "cases" / case, **kwargs)
    with pytest.raises(cls) as exc:
        read_model(path)
    text = one_line(exc)
    assert str(path) in text and "tensor '" in text and match in text, text


def test_a_symlink_inside_the_folder_is_followed(exported, tmp_path):
    def link(model, out_dir: Path) -> None:
        (out_dir / "squeezenet1_1.onnx.data").rename(out_dir / "real.data")
        os.symlink("real.data", out_dir / "w.data")
        set_location("w.data")(model, out_dir)

    m = read_model(variant(exported["squeezenet"], tmp_path / "inside", link))
    assert m.ref == read_model(exported["squeezenet"]).ref


def test_a_model_over_protobufs_limit_is_refused_before_reading(tmp_path):
    n = (1 << 29) + 16  # float32: just over 2 GiB
    t = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[n], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.data"), ("offset", "0"), ("length", str(4 * n))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "big"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], initializer=[t],
    )
    path = tmp_path / "big.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with open(tmp_path / "big.data", "wb") as fh:
        fh.truncate(4 * n)  # sparse: nothing is really written
    with pytest.raises(BadInput) as exc:
        read_model(path)
    assert "2 GiB" in one_line(exc) and str(path) in str(exc.value)


def test_symbolic_batch_is_fixed_to_one_and_said(exported, tmp_path):
    m = read_model(variant(exported["squeezenet"], tmp_path / "batch", symbolic_batch))
    assert m.inputs == {"x": [1, 3, 224, 224]}
    assert "input 'x': symbolic batch dimension 'batch' taken as 1" in m.notes
    g = onnx.load_from_string(m.data).graph
    dims = [[d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in (g.input[0], g.output[0])]
    assert dims == [[1, 3, 224, 224], [1, 1000]]


@pytest.mark.parametrize("axis,label", [(2, "height"), (3, "")])
def test_dynamic_spatial_dimension_is_refused(exported, tmp_path, axis, label):
    def dynamic(model, _dir: Path) -> None:
        d = model.graph.input[0].type.tensor_type.shape.dim[axis]
        d.Clear()
        if label:
            d.dim_param = label

    path = variant(exported["squeezenet"], tmp_path / "dyn", dynamic)
    with pytest.raises(BadInput) as exc:
        read_model(path)
    assert f"input 'x' has a dynamic dimension '{label or '?'}' at axis {axis}" in one_line(exc)


def test_old_and_new_opsets(tmp_path):
    old = tmp_path / "old.onnx"
    old.write_bytes(conv_model(7, 3, weights_as_inputs=True))
    m = read_model(old)
    assert m.inputs == {"x": [1, 3, 32, 32]}  # the weight listed as an input is not a model input
    newest = onnx.defs.onnx_opset_version()
    new = tmp_path / "new.onnx"
    new.write_bytes(conv_model(newest, onnx.IR_VERSION))
    assert read_model(new).format == "onnx"
    too_old = tmp_path / "v6.onnx"
    too_old.write_bytes(conv_model(6, 3))
    with pytest.raises(BadInput) as exc:
        read_model(too_old)
    assert "opset 6 is older than 7" in one_line(exc)
    too_new = tmp_path / "next.onnx"
    too_new.write_bytes(conv_model(newest + 1, onnx.IR_VERSION))
    with pytest.raises(BadInput) as exc:
        read_model(too_new)
    assert f"opset {newest + 1} is newer" in one_line(exc)


def test_tflite_is_read_by_content(tmp_path):
    data = build_model(tiny_net(), "tflite")
    path = tmp_path / "net.tflite"
    path.write_bytes(data)
    m = read_model(path)
    assert m.format == "tflite" and m.data == data and m.ref == model_ref_for(data) and not m.notes
    assert list(m.inputs.values()) == [[1, 224, 224, 3]]
    dyn = tmp_path / "dyn.tflite"
    dyn.write_bytes(tflite_with_signature(data, [-1, 224, 224, 3]))
    assert read_model(dyn).notes == [f"input '{next(iter(m.inputs))}': dynamic batch dimension taken as 1"]
    spatial = tmp_path / "spatial.tflite"
    spatial.write_bytes(tflite_with_signature(data, [1, -1, -1, 3]))
    with pytest.raises(BadInput) as exc:
        read_model(spatial)
    assert "dynamic dimension at axis 1" in one_line(exc)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModel) as exc:
        read_model(cut)
    assert "truncated or damaged TFLite" in one_line(exc)


def test_no_inputs_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))],
        "const", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    path = tmp_path / "const.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(BadInput) as exc:
        read_model(path)
    assert "has no inputs" in one_line(exc)


# --------------------------------------------------------------------------- the commands


def test_profile_and_predict_an_exported_model_on_local(exported, tmp_path):
    path = exported["mobilenet"]
    out = json.loads(run("profile", "model", path, "--device", "local", "--json", *FAST).stdout)
    ref = read_model(path).ref
    assert out["model_ref"] == ref and out["model"] == str(path) and out["latency_ms"]["median"] > 0
    assert isinstance(out["notes"], list) and any("embedded" in n for n in out["notes"])
    assert model_rows() == [(ref, "mobilenet_v3_small.onnx")]
    # the embedded copy of the same weights is the same model: it finds that row
    pred = json.loads(run("predict", path, "--device", "local", "--json").stdout)
    assert pred["format"] == "onnx" and pred["latency_ms"] > 0 and pred["kernels"]
    assert pred["measured_ms"] == out["latency_ms"]["median"]
    assert any("embedded" in n for n in pred["notes"])


def test_symbolic_batch_and_old_opset_through_the_commands(exported, tmp_path):
    batch = variant(exported["squeezenet"], tmp_path / "batch", symbolic_batch)
    out = json.loads(run("profile", "model", batch, "--device", "local", "--json", *FAST).stdout)
    assert "input 'x': symbolic batch dimension 'batch' taken as 1" in out["notes"]
    text = run("profile", "model", batch, "--device", "local", *FAST)
    assert "note: input 'x': symbolic batch dimension 'batch' taken as 1" in text.stderr
    old = tmp_path / "old.onnx"
    old.write_bytes(conv_model(7, 3, weights_as_inputs=True))
    assert json.loads(run("profile", "model", old, "--device", "local", "--json", *FAST).stdout)["notes"] == []
    pred = json.loads(run("predict", old, "--device", "local", "--json").stdout)
    assert [k["type"] for k in pred["kernels"]] == ["conv2d"]
    dyn = tmp_path / "dyn.tflite"  # the converter's dynamic batch: -1 in the signature; LiteRT runs it at 1
    dyn.write_bytes(tflite_with_signature(build_model(tiny_net(), "tflite"), [-1, 224, 224, 3]))
    out = json.loads(run("profile", "model", dyn, "--device", "local", "--json", *FAST).stdout)
    assert out["runtime"] == "litert" and out["notes"] == ["input 'input': dynamic batch dimension taken as 1"]


@pytest.fixture(scope="module")
def bad_files(exported, tmp_path_factory) -> list[tuple[Path, str]]:
    """(file, words its one-line error must contain) for every bad input the intake refuses."""
    root = tmp_path_factory.mktemp("bad")
    shutil.copytree(exported["squeezenet"].parent, root / "ext")
    src = root / "ext" / "squeezenet1_1.onnx"
    cases: list[tuple[Path, str]] = []
    for name, (kwargs, _cls, match) in BAD_EXTERNAL.items():
        cases.append((variant(src, root / name, **kwargs), match))
    tfl = build_model(tiny_net(), "tflite")
    (root / "tflite.onnx").write_bytes(tfl)
    cases.append((root / "tflite.onnx", "is a TFLite model (TFL3 identifier), not ONNX"))
    (root / "onnx.tflite").write_bytes(exported["squeezenet_single"].read_bytes())
    cases.append((root / "onnx.tflite", "is an ONNX model, not TFLite"))
    cases.append((root / "nosuch.onnx", "No such file"))
    (root / "empty.onnx").write_bytes(b"")
    cases.append((root / "empty.onnx", "the file is empty"))
    (root / "garbage.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    cases.append((root / "garbage.onnx", "not a readable ONNX model"))
    (root / "garbage.tflite").write_bytes(b"TFL3 garbage")
    cases.append((root / "garbage.tflite", "not a TFLite model"))
    (root / "garbage.bin").write_bytes(b"x")
    cases.append((root / "garbage.bin", "unknown model format"))

    def spatial(model, _dir: Path) -> None:
        model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"

    cases.append((variant(src, root / "spatial", spatial), "dynamic dimension 'width' at axis 3"))

    def no_inputs(model, _dir: Path) -> None:
        del model.graph.input[:]

    cases.append((variant(src, root / "noin", no_inputs), "has no inputs"))
    return cases


@pytest.mark.parametrize("command", ["profile", "predict"])
def test_bad_inputs_are_one_line_and_store_nothing(bad_files, tmp_path, command):
    tiny = tmp_path / "tiny.onnx"
    tiny.write_bytes(build_model(tiny_net(64), "onnx"))
    run("profile", "model", tiny, "--device", "local", *FAST)  # something to protect
    for path, match in bad_files:
        args = ["profile", "model", path, "--device", "local", *FAST] if command == "profile" else \
            ["predict", path, "--device", "local"]
        line = fails_cleanly(*args, match=match)
        assert str(path) in line, line
    # with --json the same line comes as a JSON error object
    path, match = bad_files[0]
    result = CliRunner().invoke(main, ["predict", str(path), "--device", "local", "--json"])
    err = json.loads(result.stderr)
    assert result.exit_code != 0 and match in err["error"] and str(path) in err["error"] and err["kind"]
    assert len(model_rows()) == 1


def test_profile_model_over_a_grpc_agent(exported, tmp_path):
    """The exported model travels as one bundle to a real agent; one over its cap is refused in one line,
    nothing is stored on either side, and the agent keeps serving."""
    with running_agent(tmp_path / "agent", cache_max_mb=8) as agent:
        run("devices", "register", "board", "--agent", agent.address)
        squeeze = exported["squeezenet"]  # about 5 MB of weights
        out = json.loads(run("profile", "model", squeeze, "--device", "board", "--json", *FAST).stdout)
        ref = read_model(squeeze).ref
        assert out["model_ref"] == ref and out["latency_ms"]["median"] > 0
        cached = sorted(p.name for p in agent.cache_dir.iterdir())
        assert cached == [ref.split(":")[1]]

        big = exported["mobilenet"]  # about 10 MB: over the 8 MB cap
        fails_cleanly("profile", "model", big, "--device", "board", *FAST, match="exceeds the agent cache cap")
        assert sorted(p.name for p in agent.cache_dir.iterdir()) == cached
        assert agent.proc.poll() is None

        tiny = tmp_path / "tiny.onnx"
        tiny.write_bytes(build_model(tiny_net(64), "onnx"))
        run("profile", "model", tiny, "--device", "board", *FAST)
        assert sorted(name for _, name in model_rows()) == ["squeezenet1_1.onnx", "tiny.onnx"]


def test_every_refusal_is_an_edgelat_error(bad_files):
    for path, _match in bad_files:
        with pytest.raises(EdgelatError):
            read_model(path)


def test_damaged_files_never_raise_anything_but_one_line(tmp_path):
    """Fuzz: garbage, with or without the TFL3 identifier, and cut or bit-flipped real models, give a
    ModelFile or an EdgelatError of one line; never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tfl = build_model(tiny_net(), "tflite")
    onx = build_model(tiny_net(), "onnx")

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(base=st.sampled_from([b"", tfl, onx]), cut=st.integers(0, 1 << 20), flips=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), max_size=4), junk=st.binary(max_size=64),
        suffix=st.sampled_from([".onnx", ".tflite", ".bin"]))
    def check(base: bytes, cut: int, flips: list, junk: bytes, suffix: str) -> None:
        raw = bytearray(base[: cut % (len(base) + 1)] if base else junk)
        for at, bits in flips:
            if raw:
                raw[at % len(raw)] ^= bits
        path = tmp_path / f"m{suffix}"
        path.write_bytes(bytes(raw))
        try:
            read_model(path)
        except EdgelatError as exc:
            assert str(exc) and "\n" not in str(exc)

    check()
