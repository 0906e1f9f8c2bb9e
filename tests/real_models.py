"""Runnable copies of the real exported models kept (weights stripped) in ``tests/data/real-models``.

The graphs are exactly what PyTorch's exporter wrote; only the float weights were stripped, each
tensor keeping its mean and standard deviation in the model's metadata. ``materialize`` fills them
back from a fixed seed and writes the file the way the exporter does (``NAME.onnx`` plus
``NAME.onnx.data``) or as one file with the weights embedded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "real-models"

# Small enough to materialize and run in a test (under 6 M parameters).
SMALL = ("squeezenet1_1", "mnasnet0_5", "shufflenet_v2_x1_0", "mobilenet_v3_small", "mobilenet_v2",
         "regnet_y_400mf", "regnet_x_400mf")


def names() -> list[str]:
    """Every real model kept here."""
    return sorted(p.stem for p in DATA.glob("*.onnx"))


def materialize(name: str, out_dir: str | Path, single_file: bool = False) -> Path:
    """Write ``out_dir/NAME.onnx`` (+ ``NAME.onnx.data`` unless ``single_file``) with weights filled in."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(DATA / f"{name}.onnx"), load_external_data=False)
    stats = json.loads({p.key: p.value for p in model.metadata_props}.get("stripped_weights", "{}"))
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        if t.name not in stats:
            continue
        mean, std = stats[t.name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        values = rng.normal(mean, std, size=tuple(t.dims)).astype(dtype)
        t.CopyFrom(numpy_helper.from_array(values, t.name))
    del model.metadata_props[:]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"{name}.onnx"
    if single_file:
        onnx.save_model(model, str(dst))
    else:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{name}.onnx.data", size_threshold=1024)
    return dst
