"""Whole networks as sequential kernel lists (for quickstart, benchmarks and presets).

Each network is the chain of kernels a real implementation runs: stem conv,
MobileNet inverted-residual blocks (``mbconv``), head conv, global pool and
fully connected layers; or the dense convs, pools and fully connected heads of
plain and residual CNNs (VGG, AlexNet, a ResNet's main path). Feeding the list to :func:`edgelat.profiler.builders.build_model`
gives a runnable model with the same structure, so a model-level measurement can
be compared with the sum of its kernels.
"""

from __future__ import annotations

from typing import Callable, Sequence

from edgelat.errors import BadInput
from edgelat.profiler.ops import KernelSpec, make_divisible, same_out

# OFA MobileNetV3 search space (Cai et al., "Once-for-All"), per stage:
# (width, first-block stride, activation, has SE)
OFA_STAGES: tuple[tuple[int, int, str, bool], ...] = (
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "hswish", False),
    (112, 1, "hswish", True),
    (160, 2, "hswish", True),
)
OFA_KERNELS: tuple[int, ...] = (3, 5, 7)
OFA_EXPANDS: tuple[int, ...] = (3, 4, 6)
OFA_DEPTHS: tuple[int, ...] = (2, 3, 4)
OFA_MAX_DEPTH = 4


def _head(h: int, cin: int, last: int, act: str, fc_hidden: int | None, classes: int) -> list[KernelSpec]:
    """1x1 conv to ``last`` channels, global pool, optional hidden fc, classifier fc."""
    specs = [
        KernelSpec("conv2d", h, h, cin, last, kernel=1, bn=True, act=act),
        KernelSpec("global-avgpool", h, h, last),
    ]
    width = last
    if fc_hidden:
        specs.append(KernelSpec("fc", 1, 1, last, fc_hidden, act=act))
        width = fc_hidden
    specs.append(KernelSpec("fc", 1, 1, width, classes))
    return specs


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 32:
        raise BadInput(f"resolution must be an integer >= 32, got {resolution!r}")


def mobilenetv2(resolution: int = 224, width: float = 1.0, classes: int = 1000) -> list[KernelSpec]:
    """MobileNetV2 (Sandler et al. 2018): relu6, expand 6, no SE."""
    _check_resolution(resolution)
    if not width > 0:
        raise BadInput(f"width multiplier must be positive, got {width!r}")
    # expand t, channels c, repeats n, first stride s (the paper's Table 2)
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = make_divisible(32 * width)
    specs = [KernelSpec("conv2d", resolution, resolution, 3, cin, kernel=3, stride=2, bn=True, act="relu6")]
    h = same_out(resolution, 2)
    for t, c, n, s in settings:
        cout = make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            specs.append(KernelSpec("mbconv", h, h, cin, cout, kernel=3, stride=stride, expand=t, act="relu6"))
            h, cin = same_out(h, stride), cout
    last = make_divisible(1280 * max(1.0, width))
    return specs + _head(h, cin, last, "relu6", None, classes)


# MobileNetV3-Large (Howard et al. 2019), Table 1: kernel, expanded, out, SE, act, stride
_MBV3_LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)


def mobilenetv3_large(resolution: int = 224, classes: int = 1000) -> list[KernelSpec]:
    """MobileNetV3-Large: SE and hswish in the later stages, 960 -> 1280 hidden fc."""
    _check_resolution(resolution)
    specs = [KernelSpec("conv2d", resolution, resolution, 3, 16, kernel=3, stride=2, bn=True, act="hswish")]
    h, cin = same_out(resolution, 2), 16
    for k, mid, cout, se, act, s in _MBV3_LARGE:
        specs.append(KernelSpec("mbconv", h, h, cin, cout, kernel=k, stride=s, expand=mid / cin, se=se, act=act))
        h, cin = same_out(h, s), cout
    return specs + _head(h, cin, 960, "hswish", 1280, classes)


def ofa_mbv3(
    ks: Sequence[int],
    es: Sequence[float],
    ds: Sequence[int],
    resolution: int = 224,
    classes: int = 1000,
) -> list[KernelSpec]:
    """One OFA MobileNetV3 subnet: ``ks``/``es`` hold 20 per-block choices (5 stages x 4
    slots, as OFA encodes them; slots past a stage's depth are ignored), ``ds`` the 5 depths."""
    _check_resolution(resolution)
    n = len(OFA_STAGES) * OFA_MAX_DEPTH
    if len(ks) != n or len(es) != n or len(ds) != len(OFA_STAGES):
        raise BadInput(f"OFA subnet needs {n} kernels, {n} expands and {len(OFA_STAGES)} depths")
    if any(d < 1 or d > OFA_MAX_DEPTH for d in ds):
        raise BadInput(f"OFA depths must be in 1..{OFA_MAX_DEPTH}, got {list(ds)}")
    specs = [KernelSpec("conv2d", resolution, resolution, 3, 16, kernel=3, stride=2, bn=True, act="hswish")]
    h = same_out(resolution, 2)
    specs.append(KernelSpec("mbconv", h, h, 16, 16, kernel=3, expand=1, act="relu"))
    cin = 16
    for stage, ((width, stride, act, se), depth) in enumerate(zip(OFA_STAGES, ds)):
        for i in range(depth):
            slot = stage * OFA_MAX_DEPTH + i
            s = stride if i == 0 else 1
            k, e = ks[slot], es[slot]
            specs.append(KernelSpec("mbconv", h, h, cin, width, kernel=k, stride=s, expand=e, se=se, act=act))
            h, cin = same_out(h, s), width
    return specs + _head(h, cin, 960, "hswish", 1280, classes)


def ofa_mbv3_blocks(resolution: int = 224) -> list[KernelSpec]:
    """Every distinct searchable OFA block at one resolution: per stage, the first
    block (stride, width change) and the repeated block, each in all k x e choices."""
    _check_resolution(resolution)
    h, cin, out = same_out(resolution, 2), 16, []
    for width, stride, act, se in OFA_STAGES:
        for c, s, hh in ((cin, stride, h), (width, 1, same_out(h, stride))):
            for k in OFA_KERNELS:
                for e in OFA_EXPANDS:
                    out.append(KernelSpec("mbconv", hh, hh, c, width, kernel=k, stride=s, expand=e, se=se, act=act))
        h, cin = same_out(h, stride), width
    return out


def ofa_mbv3_fixed(resolution: int = 224, classes: int = 1000) -> list[KernelSpec]:
    """The kernels every OFA subnet shares: stem, first block, head."""
    largest = ofa_mbv3([7] * 20, [6] * 20, [4] * 5, resolution, classes)
    return largest[:2] + largest[-4:]


def tiny_net(resolution: int = 224, classes: int = 10) -> list[KernelSpec]:
    """A small MobileNetV3-like net for the quickstart.

    About 160 MFLOPs at 224, 13 MFLOPs at 64."""
    _check_resolution(resolution)
    r = resolution
    h1, h2, h3 = same_out(r, 2), same_out(r, 4), same_out(r, 8)
    return [
        KernelSpec("conv2d", r, r, 3, 16, kernel=3, stride=2, bn=True, act="hswish"),
        KernelSpec("mbconv", h1, h1, 16, 16, kernel=3, expand=1, act="relu"),
        KernelSpec("mbconv", h1, h1, 16, 24, kernel=3, stride=2, expand=4, act="relu"),
        KernelSpec("mbconv", h2, h2, 24, 24, kernel=5, expand=3, se=True, act="relu"),
        KernelSpec("mbconv", h2, h2, 24, 40, kernel=5, stride=2, expand=4, se=True, act="hswish"),
        KernelSpec("mbconv", h3, h3, 40, 40, kernel=3, expand=6, act="hswish"),
        KernelSpec("conv2d", h3, h3, 40, 160, kernel=1, bn=True, act="hswish"),
        KernelSpec("global-avgpool", h3, h3, 160),
        KernelSpec("fc", 1, 1, 160, classes),
    ]


# VGG (Simonyan & Zisserman 2015), configurations A and B: a 3x3 conv's channels, or "M" (2x2 max pool)
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
}


def _check_width(width: float) -> None:
    if not width > 0:
        raise BadInput(f"width multiplier must be positive, got {width!r}")


def _fc_head(h: int, c: int, fc_hidden: int | None, classes: int) -> list[KernelSpec]:
    """The classifier of a plain CNN: the feature map flattened into two ``fc_hidden`` layers
    (VGG's and AlexNet's large weights), or, without ``fc_hidden``, global pool and one fc."""
    if not fc_hidden:
        return [KernelSpec("global-avgpool", h, h, c), KernelSpec("fc", 1, 1, c, classes)]
    return [KernelSpec("fc", 1, 1, h * h * c, fc_hidden, act="relu"),
            KernelSpec("fc", 1, 1, fc_hidden, fc_hidden, act="relu"),
            KernelSpec("fc", 1, 1, fc_hidden, classes)]


def vgg_like(resolution: int = 224, width: float = 1.0, config: str = "vgg11", fc_hidden: int | None = 4096,
             classes: int = 1000) -> list[KernelSpec]:
    """A VGG: dense 3x3 convs (relu, batch norm folded away as exporters write them) between 2x2
    max pools, then the flattened map into two ``fc_hidden`` layers (None: global pool and one fc)."""
    _check_resolution(resolution)
    _check_width(width)
    if config not in VGG_CONFIGS:
        raise BadInput(f"unknown VGG configuration {config!r}; valid: {', '.join(VGG_CONFIGS)}")
    h, cin, specs = resolution, 3, []
    for v in VGG_CONFIGS[config]:
        if v == "M":
            specs.append(KernelSpec("maxpool", h, h, cin, kernel=2, stride=2))
            h = same_out(h, 2)
        else:
            cout = make_divisible(int(v) * width)
            specs.append(KernelSpec("conv2d", h, h, cin, cout, kernel=3, act="relu"))
            cin = cout
    return specs + _fc_head(h, cin, fc_hidden, classes)


def alexnet_like(resolution: int = 224, width: float = 1.0, fc_hidden: int | None = 4096,
                 classes: int = 1000) -> list[KernelSpec]:
    """An AlexNet (the one-GPU variant torchvision has): an 11x11 stride-4 stem, 5x5 and 3x3 convs
    between 3x3 stride-2 max pools, then a large flattened fc head."""
    _check_resolution(resolution)
    _check_width(width)
    c = [make_divisible(v * width) for v in (64, 192, 384, 256, 256)]
    specs = [KernelSpec("conv2d", resolution, resolution, 3, c[0], kernel=11, stride=4, act="relu")]
    h = same_out(resolution, 4)
    specs.append(KernelSpec("maxpool", h, h, c[0], kernel=3, stride=2))
    h = same_out(h, 2)
    specs.append(KernelSpec("conv2d", h, h, c[0], c[1], kernel=5, act="relu"))
    specs.append(KernelSpec("maxpool", h, h, c[1], kernel=3, stride=2))
    h = same_out(h, 2)
    for cin, cout in zip(c[1:4], c[2:5]):
        specs.append(KernelSpec("conv2d", h, h, cin, cout, kernel=3, act="relu"))
    specs.append(KernelSpec("maxpool", h, h, c[4], kernel=3, stride=2))
    h = same_out(h, 2)
    return specs + _fc_head(h, c[4], fc_hidden, classes)


def resnet_like(resolution: int = 224, width: float = 1.0, depths: Sequence[int] = (2, 2, 2, 2),
                bottleneck: bool = False, classes: int = 1000, mid_width: float = 1.0) -> list[KernelSpec]:
    """A ResNet's main path (He et al. 2016) as a chain: 7x7 stride-2 stem, 3x3 max pool, four
    stages of basic blocks (two 3x3 convs) or bottlenecks (1x1, 3x3, 1x1 to 4x), the block's
    closing shortcut add and relu as kernels of their own (as PyTorch exports them), global
    pool, one fc. The add's second operand is the block's input (see
    :func:`edgelat.profiler.lowering.lower`); where the block changes the shape a real ResNet
    projects that input with a 1x1 conv, which a chain cannot hold, so those blocks add
    an earlier tensor of their output's shape instead.

    ``mid_width`` widens a bottleneck's inner 1x1 -> 3x3 -> 1x1 path and keeps its output:
    2 is Wide ResNet-50-2 (Zagoruyko & Komodakis 2016, as torchvision builds it), whose 3x3
    convs reach 1024 -> 1024 channels."""
    _check_resolution(resolution)
    _check_width(width)
    _check_width(mid_width)
    if len(depths) != 4 or any(d < 1 for d in depths):
        raise BadInput(f"a ResNet needs 4 stage depths >= 1, got {list(depths)}")
    stem = make_divisible(64 * width)
    specs = [KernelSpec("conv2d", resolution, resolution, 3, stem, kernel=7, stride=2, act="relu")]
    h = same_out(resolution, 2)
    specs.append(KernelSpec("maxpool", h, h, stem, kernel=3, stride=2))
    h, cin = same_out(h, 2), stem
    for stage, depth in enumerate(depths):
        planes = make_divisible(64 * 2**stage * width)
        cout = 4 * planes if bottleneck else planes
        mid = make_divisible(planes * mid_width) if bottleneck else planes
        for i in range(depth):
            s = 2 if stage and i == 0 else 1
            if bottleneck:
                specs.append(KernelSpec("conv2d", h, h, cin, mid, kernel=1, act="relu"))
                specs.append(KernelSpec("conv2d", h, h, mid, mid, kernel=3, stride=s, act="relu"))
                h = same_out(h, s)
                specs.append(KernelSpec("conv2d", h, h, mid, cout, kernel=1))
            else:
                specs.append(KernelSpec("conv2d", h, h, cin, mid, kernel=3, stride=s, act="relu"))
                h = same_out(h, s)
                specs.append(KernelSpec("conv2d", h, h, mid, cout, kernel=3))
            specs.append(KernelSpec("add", h, h, cout))
            specs.append(KernelSpec("relu", h, h, cout))
            cin = cout
    return specs + [KernelSpec("global-avgpool", h, h, cin), KernelSpec("fc", 1, 1, cin, classes)]


NETWORKS: dict[str, Callable[..., list[KernelSpec]]] = {
    "vgg-like": vgg_like,
    "alexnet-like": alexnet_like,
    "resnet-like": resnet_like,
    "mobilenetv2": mobilenetv2,
    "mobilenetv3-large": mobilenetv3_large,
    "tiny": tiny_net,
}


def get_network(name: str, **kwargs) -> list[KernelSpec]:
    """A named network's kernels; BadInput listing the valid names."""
    try:
        fn = NETWORKS[name]
    except KeyError:
        raise BadInput(f"unknown network {name!r}; valid: {', '.join(NETWORKS)}") from None
    return fn(**kwargs)
