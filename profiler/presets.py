"""Named kernel lists to profile: what ``edgelat profile ops --preset NAME`` runs.

Presets are built on demand from the network definitions so they can never
drift from the networks they claim to cover.
"""

from __future__ import annotations

from typing import Callable

from edgelat.errors import UnknownPreset
from edgelat.profiler.networks import mobilenetv2, mobilenetv3_large, ofa_mbv3_blocks, ofa_mbv3_fixed
from edgelat.profiler.ops import KernelSpec, dedupe


def _mobilenet() -> list[KernelSpec]:
    """Distinct kernels of MobileNetV2, MobileNetV3-Large and the OFA-MBv3 space at 224."""
    return dedupe(mobilenetv2(224) + mobilenetv3_large(224) + ofa_mbv3_fixed(224) + ofa_mbv3_blocks(224))


def _smoke() -> list[KernelSpec]:
    """One small instance of (almost) every op type: each runs well under a millisecond."""
    return [
        KernelSpec("conv2d", 16, 16, 8, 16, kernel=3, stride=2, bn=True, act="relu"),
        KernelSpec("conv2d", 8, 8, 16, 16, kernel=1),
        KernelSpec("dwconv2d", 16, 16, 16, kernel=3, bn=True, act="relu6"),
        KernelSpec("dwconv2d", 16, 16, 16, kernel=5, stride=2, bn=True, act="hswish"),
        KernelSpec("fc", 1, 1, 64, 32),
        KernelSpec("maxpool", 16, 16, 8, kernel=3, stride=2),
        KernelSpec("avgpool", 16, 16, 8, kernel=2, stride=2),
        KernelSpec("global-avgpool", 8, 8, 32),
        KernelSpec("add", 16, 16, 16),
        KernelSpec("mul", 16, 16, 16),
        KernelSpec("concat", 16, 16, 8, 8),
        KernelSpec("relu", 16, 16, 16),
        KernelSpec("relu6", 16, 16, 16),
        KernelSpec("hswish", 16, 16, 16),
        KernelSpec("hsigmoid", 16, 16, 16),
        KernelSpec("sigmoid", 16, 16, 16),
        KernelSpec("swish", 16, 16, 16),
        KernelSpec("se", 8, 8, 32),
        KernelSpec("mbconv", 16, 16, 16, 16, kernel=3, expand=3, act="relu"),
        KernelSpec("mbconv", 16, 16, 16, 24, kernel=5, stride=2, expand=4, se=True, act="hswish"),
    ]


PRESETS: dict[str, Callable[[], list[KernelSpec]]] = {
    "mobilenet": _mobilenet,
    "smoke": _smoke,
}


def get_preset(name: str) -> list[KernelSpec]:
    """The kernels of a named preset (a fresh list); UnknownPreset lists the valid names."""
    try:
        make = PRESETS[name]
    except KeyError:
        raise UnknownPreset(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None
    return make()
