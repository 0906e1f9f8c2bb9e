"""The Python API (``import edgelat``): the three jobs without a subprocess, on real files and runtimes.

Models are real exported graphs (``tests/data/real-models``) written as PyTorch's exporter
writes them (``model.onnx`` + ``model.onnx.data``); the device is ``local`` (onnxruntime in
process); the database is the test's own ``$EDGELAT_HOME``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from real_models import materialize

import edgelat
from edgelat.errors import BadInput, UnknownDevice

QUICK = {"max_seconds": 0.3, "target_ci": 0.05}


def test_the_api_is_listed_and_loads_lazily():
    assert {"device", "list_devices", "predictor", "search", "export", "ModelProfile", "Prediction"} <= set(dir(edgelat))
    # an agent-only board imports the package without the host stack: the API must not load eagerly
    code = "import sys, edgelat; print(any(m in sys.modules for m in ('pandas', 'sqlite_utils', 'edgelat.api')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_profile_then_predict_a_real_exported_model(tmp_path):
    path = materialize("squeezenet1_1", tmp_path)  # squeezenet1_1.onnx + squeezenet1_1.onnx.data
    dev = edgelat.device("local")
    assert dev.kind == "host" and [d.name for d in edgelat.list_devices()] == ["local"]
    r = dev.profile_model(path, **QUICK)
    assert isinstance(r, edgelat.ModelProfile)
    assert r.latency_ms.median > 0 and r.latency_ms.n >= 1 and r.runtime == "onnxruntime"
    assert r.model_ref.startswith("sha256:") and r.to_dict()["latency_ms"]["median"] == r.latency_ms.median
    table = dev.table(models=True)
    assert list(table["model_ref"]) == [r.model_ref] and table["median_ms"].iloc[0] == r.latency_ms.median

    p = edgelat.predictor("local")
    pred = p.predict(path)
    assert isinstance(pred, edgelat.Prediction) and pred.latency_ms > 0
    assert pred.details["measured_ms"] == r.latency_ms.median  # the stored measurement of the same file
    assert len(pred.kernels_frame()) == len(pred.kernels) > 10
    # an in-memory ModelProto: the same network, the same prediction (the table is now filled)
    proto = onnx.load(str(path))
    again = p.predict(proto)
    assert again.model == "<onnx.ModelProto>" and again.latency_ms == pytest.approx(p.predict(path).latency_ms)


def test_profile_ops_table_archs_search_and_export(tmp_path):
    dev = edgelat.device("local")
    summary = dev.profile_ops(space="nasbench201", **QUICK)
    assert summary["measured"] == summary["requested"] == 27 and not summary["failed"]
    again = dev.profile_ops(space="nasbench201", **QUICK)
    assert again["skipped"] == 27 and again["measured"] == 0  # idempotent
    assert len(dev.table(op="conv2d")) > 0

    p = edgelat.predictor("local")
    heavy = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    light = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    ms = p.predict_archs("nasbench201", [heavy, light])
    assert isinstance(ms, np.ndarray) and ms.shape == (2,) and ms[0] > 2 * ms[1] > 0

    budget = float(np.median(p.predict_archs("nasbench201", [heavy, light])))
    res = edgelat.search("nasbench201", device="local", max_latency_ms=budget, population=20, generations=5)
    assert res.results and all(r["predicted_latency_ms"] <= budget for r in res.results)
    assert len(res.to_frame()) == len(res.results) and res.best == res.results[0]

    out = edgelat.export("nasbench201", res.best["arch"], tmp_path / "best.onnx")
    assert out["format"] == "onnx" and (tmp_path / "best.onnx").stat().st_size == out["bytes"]
    onnx.checker.check_model(onnx.load(str(tmp_path / "best.onnx")))


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UnknownDevice, match="pixel9"):
        edgelat.device("pixel9")
    with pytest.raises(UnknownDevice):
        edgelat.predictor("pixel9")
    with pytest.raises(BadInput, match="ModelProto"):
        edgelat.predictor("local").predict(42)
    with pytest.raises(BadInput, match="threads"):
        edgelat.predictor("local", threads=0)
    with pytest.raises(BadInput, match="max_seconds"):
        edgelat.device("local").profile_model(tmp_path / "x.onnx", max_seconds=1e9)
    missing = tmp_path / "missing.onnx"
    with pytest.raises(BadInput, match="missing.onnx"):
        edgelat.device("local").profile_model(missing)
    with pytest.raises(BadInput, match="max-latency"):
        edgelat.search("nasbench201", device="local")
    assert edgelat.device("local").table(models=True).empty  # nothing was stored
