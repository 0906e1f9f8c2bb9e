"""Operator catalog: canonical keys, validation, shapes, costs, spec files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelat.errors import BadInput, UnknownPreset
from edgelat.profiler.ops import (
    ACTIVATIONS,
    FEATURE_NAMES,
    OP_TYPES,
    KernelSpec,
    load_specs,
    make_divisible,
    se_channels,
)
from edgelat.profiler.presets import PRESETS, get_preset

# one small instance of every op type (plus option variants)
EVERY_OP = [
    KernelSpec("conv2d", 15, 13, 3, 8, kernel=3, stride=2, bn=True, act="relu"),
    KernelSpec("dwconv2d", 9, 9, 8, kernel=5, stride=2, act="hswish"),
    KernelSpec("fc", 1, 1, 32, 10, act="sigmoid"),
    KernelSpec("maxpool", 9, 9, 4, kernel=3, stride=2),
    KernelSpec("avgpool", 8, 8, 4, kernel=2, stride=2),
    KernelSpec("global-avgpool", 7, 7, 16),
    KernelSpec("add", 4, 4, 8),
    KernelSpec("mul", 4, 4, 8),
    KernelSpec("concat", 4, 4, 8, 5),
    *(KernelSpec(a, 4, 5, 6) for a in ACTIVATIONS[1:]),
    KernelSpec("se", 4, 4, 24),
    KernelSpec("mbconv", 14, 14, 40, 40, kernel=5, expand=6, se=True, act="hswish"),
    KernelSpec("mbconv", 56, 56, 24, 40, kernel=7, stride=2, expand=3, act="relu"),
    KernelSpec("mbconv", 112, 112, 16, 16, kernel=3, expand=1, act="relu"),
    KernelSpec("mbconv", 14, 14, 80, 80, kernel=3, expand=184 / 80, act="hswish"),
]


def test_every_op_type_is_covered_here():
    assert {s.op for s in EVERY_OP} == set(OP_TYPES)


@pytest.mark.parametrize("spec", EVERY_OP, ids=lambda s: s.key)
def test_key_round_trips(spec: KernelSpec):
    again = KernelSpec.from_key(spec.key)
    assert again == spec
    assert again.key == spec.key
    assert KernelSpec.from_dict(spec.to_dict()) == spec
    assert KernelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_entry_round_trips(name: str):
    specs = get_preset(name)
    assert specs
    for spec in specs:
        assert KernelSpec.from_key(spec.key) == spec


def test_key_spelling():
    assert KernelSpec("conv2d", 112, 112, 32, 64, 3, 2, bn=True, act="relu").key == (
        "conv2d:h112,w112,cin32,cout64,k3,s2,bn,relu"
    )
    assert KernelSpec("mbconv", 28, 28, 40, 40, 5, 1, expand=4, se=True, act="relu").key == (
        "mbconv:h28,w28,cin40,cout40,k5,s1,e4,se,relu"
    )
    assert KernelSpec("mbconv", 14, 14, 80, 80, 3, expand=2.5, act="hswish").key.endswith(",e2.5,hswish")
    assert KernelSpec("add", 7, 7, 160).key == "add:h7,w7,cin160"
    assert KernelSpec("fc", 1, 1, 1280, 1000).key == "fc:h1,w1,cin1280,cout1000"


def test_implied_fields_normalise_to_one_spec():
    a = KernelSpec("dwconv2d", 8, 8, 16, 16, kernel=3)
    b = KernelSpec("dwconv2d", 8, 8, 16, kernel=3)
    assert a == b and a.key == b.key and a.cout == 0
    assert KernelSpec("mbconv", 8, 8, 16, 16, 3, bn=True) == KernelSpec("mbconv", 8, 8, 16, 16, 3)
    # numpy integers (e.g. from a graph walker) are plain ints afterwards
    c = KernelSpec("conv2d", np.int64(8), 8, 4, np.int32(4))
    assert type(c.h) is int and type(c.cout) is int and c == KernelSpec("conv2d", 8, 8, 4, 4)


def test_shapes_use_same_padding():
    s = KernelSpec("conv2d", 15, 13, 3, 8, kernel=3, stride=2)
    assert s.input_shapes() == [(1, 15, 13, 3)]
    assert s.output_shape() == (1, 8, 7, 8)
    assert KernelSpec("maxpool", 9, 9, 4, kernel=3, stride=2).output_shape() == (1, 5, 5, 4)
    assert KernelSpec("global-avgpool", 7, 7, 16).output_shape() == (1, 1, 1, 16)
    assert KernelSpec("concat", 4, 4, 8, 5).input_shapes() == [(1, 4, 4, 8), (1, 4, 4, 5)]
    assert KernelSpec("concat", 4, 4, 8, 5).output_shape() == (1, 4, 4, 13)
    assert KernelSpec("add", 4, 4, 8).input_shapes() == [(1, 4, 4, 8)] * 2
    assert KernelSpec("fc", 1, 1, 32, 10).output_shape() == (1, 1, 1, 10)
    assert KernelSpec("mbconv", 56, 56, 24, 40, 7, 2, expand=3).output_shape() == (1, 28, 28, 40)


def test_flops_and_params_by_hand():
    conv = KernelSpec("conv2d", 112, 112, 32, 64, kernel=3, stride=2, bn=True, act="relu")
    assert conv.flops() == 2 * (56 * 56) * (3 * 3 * 32) * 64 == 115_605_504
    assert conv.params() == 3 * 3 * 32 * 64 + 64 == 18_496

    dw = KernelSpec("dwconv2d", 28, 28, 96, kernel=5, stride=1)
    assert dw.flops() == 2 * 28 * 28 * 25 * 96
    assert dw.params() == 25 * 96 + 96

    fc = KernelSpec("fc", 1, 1, 1280, 1000)
    assert fc.flops() == 2 * 1280 * 1000 and fc.params() == 1280 * 1000 + 1000

    assert KernelSpec("maxpool", 8, 8, 4, kernel=3, stride=2).flops() == 4 * 4 * 4 * 9
    assert KernelSpec("relu", 4, 5, 6).flops() == 120 and KernelSpec("relu", 4, 5, 6).params() == 0

    # OFA stage-4 repeated block: 112 -> 112, k3, e6, SE, hswish, at 14x14 with residual
    mb = KernelSpec("mbconv", 14, 14, 112, 112, kernel=3, expand=6, se=True, act="hswish")
    mid, r = 672, 168  # SE squeeze = make_divisible(672 // 4, 8)
    assert mb.mid_channels == mid and se_channels(mid) == r
    expand = 112 * mid + mid
    depthwise = 9 * mid + mid
    se = mid * r + r + r * mid + mid
    project = mid * 112 + 112
    assert mb.params() == expand + depthwise + se + project == 75_936 + 6_720 + 226_632 + 75_376
    hw = 14 * 14
    se_flops = hw * mid + 2 * mid * r + r + 2 * r * mid + mid + hw * mid
    assert mb.flops() == 2 * hw * 112 * mid + 2 * hw * 9 * mid + se_flops + 2 * hw * mid * 112 + hw * 112
    assert mb.has_residual
    # expand ratio 1 has no expansion conv and no residual when the stride is 2
    mb1 = KernelSpec("mbconv", 16, 16, 16, 24, kernel=3, stride=2, expand=1)
    assert mb1.params() == (9 * 16 + 16) + (16 * 24 + 24)
    assert not mb1.has_residual


def test_make_divisible_matches_mobilenet_rule():
    assert make_divisible(18) == 24  # 16 would drop more than 10%
    assert make_divisible(60) == 64
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(3) == 8


def test_features_fixed_length_and_meaningful():
    rows = [s.features() for s in EVERY_OP]
    assert all(r.dtype == np.float64 and r.shape == (len(FEATURE_NAMES),) for r in rows)
    assert all(np.isfinite(r).all() for r in rows)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    f = dict(zip(FEATURE_NAMES, EVERY_OP[0].features()))
    spec = EVERY_OP[0]
    assert f["flops"] == spec.flops() and f["params"] == spec.params()
    assert (f["h"], f["w"], f["cin"], f["cout"], f["kernel"], f["stride"]) == (15, 13, 3, 8, 3, 2)
    assert f["input_elems"] == 15 * 13 * 3 and f["output_elems"] == 8 * 7 * 8
    assert f["op_conv2d"] == 1 and f["act_relu"] == 1 and f["bn"] == 1
    # distinct kernels get distinct feature vectors
    assert len({r.tobytes() for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(op="conv3d", h=4, w=4, cin=4), "unknown op"),
        (dict(op="conv2d", h=0, w=4, cin=4, cout=4), "h must be positive"),
        (dict(op="conv2d", h=4, w=4, cin=4), "cout must be positive"),
        (dict(op="conv2d", h=4, w=4, cin=4, cout=4, kernel=4), "kernel must be odd"),
        (dict(op="conv2d", h=4, w=4, cin=4, cout=4, act="gelu"), "unknown activation"),
        (dict(op="conv2d", h=4.5, w=4, cin=4, cout=4), "h must be an integer"),
        (dict(op="add", h=4, w=4, cin=4, kernel=3), "do not apply"),
        (dict(op="add", h=4, w=4, cin=4, act="relu"), "no fused activation"),
        (dict(op="dwconv2d", h=4, w=4, cin=4, cout=8), "implied"),
        (dict(op="fc", h=7, w=7, cin=4, cout=4), "1x1"),
        (dict(op="conv2d", h=4, w=4, cin=4, cout=4, se=True), "only applies to mbconv"),
        (dict(op="conv2d", h=4, w=4, cin=4, cout=4, expand=6), "only applies to mbconv"),
        (dict(op="mbconv", h=4, w=4, cin=4, cout=4, expand=0), "expand"),
        (dict(op="relu", h=4, w=4, cin=4, bn=True), "bn only applies"),
        # huge values are one line too, never an OverflowError or a 300-digit number
        (dict(op="mbconv", h=8, w=8, cin=4, cout=4, expand=1e308), r"expand 1e\+308 gives inf channels, over the cap"),
        (dict(op="mbconv", h=8, w=8, cin=4, cout=4, expand=1e300), r"gives 4e\+300 channels"),
        (dict(op="conv2d", h=8, w=8, cin=4, cout=4, kernel=3, stride=10**24), r"stride must be at most 2147483647, got 1e\+24"),
        (dict(op="add", h=10**30, w=4, cin=4), r"h must be at most 2147483647, got 1e\+30"),
        (dict(op="conv2d", h=10**6, w=10**6, cin=10**6, cout=4), r"its input would have 1e\+18 elements"),
    ],
)
def test_bad_specs_are_rejected(kwargs, fragment):
    with pytest.raises(BadInput, match=fragment):
        KernelSpec(**kwargs)


def test_huge_values_in_a_spec_file_are_one_line(tmp_path):
    from click.testing import CliRunner

    from edgelat.cli import main

    path = tmp_path / "ops.yaml"
    path.write_text("- {op: mbconv, h: 8, w: 8, cin: 4, cout: 4, expand: 1.0e+308}\n")
    r = CliRunner().invoke(main, ["profile", "ops", "--device", "local", "--ops", str(path)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.output.strip() == (f"error: {path}: entry 0: mbconv: expand 1e+308 gives inf channels, over the cap of "
                                "268435456 elements per tensor; profile a smaller kernel")


@pytest.mark.parametrize(
    "key, fragment",
    [
        ("conv2d", "expected"),
        ("conv2d:h4,w4", "missing cin"),
        ("conv2d:h4,w4,cin4,cout4,k3,s1,fast", "cannot read"),
        ("conv2d:h4,h4,w4,cin4,cout4,k3,s1", "given twice"),
        ("conv2d:w4,h4,cin4,cout4,k3,s1", "not canonical"),
        ("conv2d:h4,w4,cin4,cout4", "not canonical"),  # k/s must be spelled out
        ("mbconv:h4,w4,cin4,cout4,k3,s1,e6.0", "not canonical"),
        ("nope:h4,w4,cin4", "unknown op"),
    ],
)
def test_bad_keys_are_rejected(key, fragment):
    with pytest.raises(BadInput, match=fragment):
        KernelSpec.from_key(key)


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(BadInput, match="unknown spec field.*kernal"):
        KernelSpec.from_dict({"op": "conv2d", "h": 4, "w": 4, "cin": 4, "cout": 4, "kernal": 3})
    with pytest.raises(BadInput, match="missing cin"):
        KernelSpec.from_dict({"op": "relu", "h": 4, "w": 4})
    assert KernelSpec.from_dict({"key": "relu:h4,w4,cin4"}) == KernelSpec("relu", 4, 4, 4)


def test_load_specs_yaml_and_json(tmp_path):
    y = tmp_path / "k.yaml"
    y.write_text(
        "- {op: conv2d, h: 8, w: 8, cin: 4, cout: 8, kernel: 3, bn: true, act: relu6}\n"
        "- relu:h8,w8,cin8\n"
        "- op: mbconv\n  h: 8\n  w: 8\n  cin: 8\n  cout: 8\n  kernel: 5\n  expand: 4\n  se: true\n"
    )
    specs = load_specs(y)
    assert [s.key for s in specs] == [
        "conv2d:h8,w8,cin4,cout8,k3,s1,bn,relu6",
        "relu:h8,w8,cin8",
        "mbconv:h8,w8,cin8,cout8,k5,s1,e4,se",
    ]
    j = tmp_path / "k.json"
    j.write_text(json.dumps([s.to_dict() for s in specs]))
    assert load_specs(j) == specs


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("bad.yaml", "- op: conv2d\n  h: [\n", "not valid YAML"),
        ("bad.json", "[{", "not valid JSON"),
        ("empty.yaml", "[]", "non-empty list"),
        ("map.yaml", "op: relu\n", "non-empty list"),
        (
            "entry.yaml",
            "- relu:h4,w4,cin4\n- {op: conv2d, h: 4, w: 4, cin: 4, cout: 4, kernel: 2}\n",
            "entry 1: conv2d: kernel must be odd",
        ),
        ("type.yaml", "- 42\n", "entry 0"),
    ],
)
def test_load_specs_errors_name_file_and_entry(tmp_path, name, text, fragment):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(BadInput, match=fragment) as exc:
        load_specs(p)
    assert name in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_specs_missing_file(tmp_path):
    with pytest.raises(BadInput, match="cannot read spec file"):
        load_specs(tmp_path / "nothing.yaml")


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownPreset, match="mobilenet.*smoke"):
        get_preset("resnet")
