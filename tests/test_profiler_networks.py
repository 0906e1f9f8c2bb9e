"""Whole networks and presets: real structure, published sizes, both formats agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgelat.errors import BadInput
from edgelat.profiler.lowering import as_spec_list
from edgelat.profiler.networks import (
    NETWORKS,
    get_network,
    mobilenetv2,
    mobilenetv3_large,
    ofa_mbv3,
    tiny_net,
)
from edgelat.profiler.ops import OP_TYPES, KernelSpec
from edgelat.profiler.presets import get_preset
from profiler_helpers import ATOL, RTOL, run_both


def macs(specs) -> float:
    return sum(s.flops() for s in specs) / 2


def test_smoke_is_small_and_covers_the_op_types():
    smoke = get_preset("smoke")
    assert len(smoke) <= 20
    assert {s.op for s in smoke} == set(OP_TYPES)
    assert all(s.flops() < 2_000_000 for s in smoke)  # each well under a millisecond on a CPU core
    assert len({s.key for s in smoke}) == len(smoke)


def test_mobilenet_preset_is_deduplicated_and_holds_every_ofa_block():
    preset = get_preset("mobilenet")
    keys = [s.key for s in preset]
    assert len(keys) == len(set(keys))

    # the OFA-MBv3 space at 224, written out independently of networks.py
    stages = [(24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False),
              (112, 1, "hswish", True), (160, 2, "hswish", True)]  # fmt: skip
    ofa, h, cin = set(), 112, 16
    for width, stride, act, se in stages:
        hout = -(-h // stride)
        for k in (3, 5, 7):
            for e in (3, 4, 6):
                ofa.add(f"mbconv:h{h},w{h},cin{cin},cout{width},k{k},s{stride},e{e}{',se' if se else ''},{act}")
                ofa.add(f"mbconv:h{hout},w{hout},cin{width},cout{width},k{k},s1,e{e}{',se' if se else ''},{act}")
        h, cin = hout, width
    assert len(ofa) == 5 * 2 * 3 * 3 == 90
    assert ofa <= set(keys)
    # OFA's fixed parts
    for key in (
        "conv2d:h224,w224,cin3,cout16,k3,s2,bn,hswish",
        "mbconv:h112,w112,cin16,cout16,k3,s1,e1,relu",
        "conv2d:h7,w7,cin160,cout960,k1,s1,bn,hswish",
        "global-avgpool:h7,w7,cin960",
        "fc:h1,w1,cin960,cout1280,hswish",
        "fc:h1,w1,cin1280,cout1000",
    ):
        assert key in keys
    # every kernel of the two hand-designed networks is there too
    assert {s.key for s in mobilenetv2() + mobilenetv3_large()} <= set(keys)
    assert len(keys) == len({s.key for s in mobilenetv2() + mobilenetv3_large()} | ofa | set(keys))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_networks_are_valid_chains(name: str):
    specs = get_network(name)
    assert as_spec_list(specs) == specs  # shapes line up kernel to kernel
    assert specs[0].input_shapes() == [(1, specs[0].h, specs[0].w, 3)]
    assert specs[-1].op == "fc"


def test_published_sizes():
    """MobileNetV2: 300M MACs, 3.4M params; MobileNetV3-Large: 219M MAdds, 5.4M params (papers' tables)."""
    v2, v3 = mobilenetv2(), mobilenetv3_large()
    assert macs(v2) == pytest.approx(300e6, rel=0.03)
    assert sum(s.params() for s in v2) == pytest.approx(3.4e6, rel=0.04)
    assert macs(v3) == pytest.approx(219e6, rel=0.03)
    assert sum(s.params() for s in v3) == pytest.approx(5.4e6, rel=0.03)
    assert sum(s.op == "mbconv" for s in v2) == 17 and sum(s.op == "mbconv" for s in v3) == 15
    assert sum(s.se for s in v3) == 8
    # width and resolution scale the network
    assert macs(mobilenetv2(width=0.5)) < 0.35 * macs(v2)
    assert mobilenetv2(resolution=160)[-4].h == 5


def test_ofa_subnet_structure():
    ks, es = [3, 5, 7, 3] * 5, [3, 4, 6, 4] * 5
    net = ofa_mbv3(ks, es, [2, 3, 4, 2, 3], resolution=192)
    blocks = [s for s in net if s.op == "mbconv"]
    assert len(blocks) == 1 + 2 + 3 + 4 + 2 + 3
    assert blocks[1].key == "mbconv:h96,w96,cin16,cout24,k3,s2,e3,relu"
    assert blocks[2].key == "mbconv:h48,w48,cin24,cout24,k5,s1,e4,relu"
    # stage 2 starts at slot 4: skipped slots of stage 1 are ignored
    assert blocks[3].key == "mbconv:h48,w48,cin24,cout40,k3,s2,e3,se,relu"
    assert as_spec_list(net) == net
    with pytest.raises(BadInput, match="20 kernels"):
        ofa_mbv3(ks[:10], es, [2] * 5)
    with pytest.raises(BadInput, match="depths"):
        ofa_mbv3(ks, es, [5, 2, 2, 2, 2])


def test_bad_network_arguments():
    with pytest.raises(BadInput, match="unknown network 'resnet'"):
        get_network("resnet")
    with pytest.raises(BadInput, match="resolution"):
        mobilenetv2(resolution=8)
    with pytest.raises(BadInput, match="width"):
        mobilenetv2(width=0)


def test_tiny_net_runs_the_same_in_both_runtimes():
    net = tiny_net()
    assert 50e6 < macs(net) < 150e6  # small: a few ms on one core
    o_out, t_out, _ = run_both(net, seed=11)
    assert o_out.shape == t_out.shape == (1, 10)
    np.testing.assert_allclose(o_out, t_out, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv2", "mobilenetv3-large"])
def test_full_networks_run_the_same_in_both_runtimes(name: str):
    o_out, t_out, _ = run_both(get_network(name))
    assert o_out.shape == t_out.shape == (1, 1000)
    assert np.abs(o_out).max() > 1e-2 and np.isfinite(o_out).all()
    np.testing.assert_allclose(o_out, t_out, rtol=1e-3, atol=1e-4)


def test_spec_lists_are_fresh_copies():
    a = get_preset("smoke")
    a.append(KernelSpec("relu", 1, 1, 1))
    assert len(get_preset("smoke")) == len(a) - 1


def test_plain_and_residual_cnns_have_their_published_sizes_and_build():
    from edgelat.predictors.fusion import FusionRules
    from edgelat.predictors.graph import split_model
    from edgelat.profiler.builders import build_model
    from edgelat.profiler.networks import alexnet_like, resnet_like, vgg_like

    def weights(net):
        return sum(s.params() for s in net)

    vgg = vgg_like()  # VGG-11 at 224: 7.6 G multiply-adds, 132.9 M weights (torchvision's vgg11)
    assert 7.4e9 < macs(vgg) < 7.8e9 and 132e6 < weights(vgg) < 134e6
    assert vgg[-3].key == "fc:h1,w1,cin25088,cout4096,relu"  # the 7x7x512 map, flattened
    r34 = resnet_like(224, 1.0, (3, 4, 6, 3))  # ResNet-34's main path: 3.6 G multiply-adds
    assert 3.4e9 < macs(r34) < 3.8e9 and 21e6 < weights(r34) < 22e6
    r50 = resnet_like(224, 1.0, (3, 4, 6, 3), bottleneck=True)  # ResNet-50 without its 4 projection convs
    assert 3.6e9 < macs(r50) < 4.1e9
    for net in (vgg_like(96, 0.5, "vgg13", 512), alexnet_like(128, 0.5, 256), resnet_like(64, 0.25, (1, 1, 1, 1), True)):
        assert as_spec_list(net) == net
        # the model splits back into the same kernels: a flattened fc keeps its key
        split = split_model(build_model(net, "onnx"), "onnx", FusionRules())
        assert not split.unknown and {k.key for k in split.kernels if k.op == "fc"} == {s.key for s in net if s.op == "fc"}
    with pytest.raises(BadInput, match="VGG configuration"):
        vgg_like(config="vgg99")
    with pytest.raises(BadInput, match="4 stage depths"):
        resnet_like(depths=(2, 2))


def test_an_fc_over_a_flattened_map_runs_the_same_in_both_runtimes():
    from edgelat.profiler.networks import vgg_like

    net = vgg_like(64, 0.25, "vgg11", 64, classes=10)
    assert net[-3].cin == 2 * 2 * 128
    o_out, t_out, _ = run_both(net, seed=5)
    assert o_out.shape == t_out.shape == (1, 10)
    np.testing.assert_allclose(o_out, t_out, rtol=RTOL, atol=ATOL)


def test_resnet_like_holds_resnet34s_kernels_in_order_shortcut_adds_included(tmp_path):
    """The builder's ResNet-34 is the exported one's kernel sequence, projection convs aside."""
    import sys

    from edgelat.predictors.fusion import FusionRules
    from edgelat.predictors.graph import split_model
    from edgelat.profiler.networks import resnet_like

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_models

    path = real_models.materialize("resnet34", tmp_path, single_file=True)
    real = [k.key for k in split_model(path.read_bytes(), "onnx", FusionRules()).kernels]
    projections = [k for k in real if k.startswith("conv2d:") and ",k1,s2" in k]
    assert len(projections) == 3  # one 1x1 stride-2 conv on the shortcut of stages 2-4
    ours = [s.key for s in resnet_like(224, 1.0, (3, 4, 6, 3))]
    assert [k for k in real if k not in projections] == ours
    assert sum(k.startswith("add:") for k in ours) == 16


def test_wide_bottlenecks_hold_wide_resnet50_2s_kernels_in_order(tmp_path):
    """mid_width=2 is torchvision's Wide ResNet-50-2: the exported model's kernel sequence
    without its four shortcut projections (the 3x3s reach 1024 -> 1024 channels)."""
    import sys

    from edgelat.predictors.fusion import FusionRules
    from edgelat.predictors.graph import split_model
    from edgelat.profiler.networks import resnet_like

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_models

    path = real_models.materialize("wide_resnet50_2", tmp_path, single_file=True)
    real = [k.key for k in split_model(path.read_bytes(), "onnx", FusionRules()).kernels]
    ours = [s.key for s in resnet_like(224, 1.0, (3, 4, 6, 3), bottleneck=True, mid_width=2.0)]
    projections = ["conv2d:h56,w56,cin64,cout256,k1,s1", "conv2d:h56,w56,cin256,cout512,k1,s2",
                   "conv2d:h28,w28,cin512,cout1024,k1,s2", "conv2d:h14,w14,cin1024,cout2048,k1,s2"]
    assert [k for k in real if k not in projections] == ours
    assert "conv2d:h7,w7,cin1024,cout1024,k3,s1,relu" in ours
    # the default keeps ResNet-50's inner width
    assert "conv2d:h7,w7,cin512,cout512,k3,s1,relu" in [s.key for s in resnet_like(224, 1.0, (3, 4, 6, 3), True)]
    with pytest.raises(BadInput, match="width multiplier must be positive"):
        resnet_like(224, 1.0, (3, 4, 6, 3), bottleneck=True, mid_width=0)


def test_a_chains_shortcut_add_reads_the_blocks_input():
    """In a chain, add takes its second operand from the block's input (identity shortcut), or
    from its own first operand where the block changed the shape."""
    from edgelat.profiler.lowering import lower

    same = [KernelSpec("conv2d", 8, 8, 4, 4, kernel=3, act="relu"), KernelSpec("conv2d", 8, 8, 4, 4, kernel=3),
            KernelSpec("add", 8, 8, 4), KernelSpec("relu", 8, 8, 4),
            KernelSpec("conv2d", 8, 8, 4, 4, kernel=3, act="relu"), KernelSpec("conv2d", 8, 8, 4, 4, kernel=3),
            KernelSpec("add", 8, 8, 4)]
    g = lower(same)
    adds = [n for n in g.nodes if n.kind == "add"]
    assert len(adds) == 2
    first_block_out = adds[0].output
    relu_out = next(n.output for n in g.nodes if n.kind == "act" and n.inputs == [first_block_out])
    assert adds[0].inputs[1] == "input"
    assert adds[1].inputs[1] == relu_out  # the second block's input: after the first add, its relu
    wider = [KernelSpec("conv2d", 8, 8, 4, 8, kernel=3, stride=2), KernelSpec("add", 4, 4, 8)]
    add = [n for n in lower(wider).nodes if n.kind == "add"][0]
    assert add.inputs[0] == add.inputs[1]
    with pytest.raises(BadInput, match="cannot be part of a chain"):
        lower([KernelSpec("add", 8, 8, 4), KernelSpec("relu", 8, 8, 4)])
    o_out, t_out, _ = run_both(same, seed=3)
    np.testing.assert_allclose(o_out, t_out, rtol=1e-4, atol=1e-4)
