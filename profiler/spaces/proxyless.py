"""ProxylessNAS mobile space (width 1.0, resolution 224), in OFA's elastic form.

The ProxylessNAS mobile backbone (Cai et al., ICLR 2019; OFA's
``OFAProxylessNASNets``): stem conv 3x3 3->32 stride 2 bn relu6, first block
mbconv 32->16 k3 e1 relu6, then six stages of widths 24, 40, 80, 96, 192, 320
with strides 2, 2, 2, 1, 2, 1; the first five hold up to 4 blocks (depth
{1, 2, 3, 4}: ProxylessNAS's "zero" op on non-first blocks, which leaves
between one and four blocks per stage), the last exactly one; every block
chooses kernel {3, 5, 7} and expand {3, 6}; relu6 everywhere, no SE. Head:
1x1 conv 320->1280 bn relu6, global average pool, 1280->1000 fc.

Strings use the OFA dict format as JSON: ``{"ks": [21], "e": [21], "d": [6], "r": 224}``
(the last ``d`` is always 1; ``r`` may be left out).
"""

from __future__ import annotations

from edgelat.profiler.spaces.mobile import HeadLayer, MobileStageSpace, Stage

KS = (3, 5, 7)
EXPANDS = (3, 6)
_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))


class ProxylessNAS(MobileStageSpace):
    """The ProxylessNAS mobile space (see the module docstring)."""

    def __init__(self) -> None:
        stages = [Stage(widths=(w,), depths=(1, 2, 3, 4), kernels=KS, expands=EXPANDS, stride=s, act="relu6")
                  for w, s in _STAGES]
        stages.append(Stage(widths=(320,), depths=(1,), kernels=KS, expands=EXPANDS, stride=1, act="relu6"))
        super().__init__(
            name="proxyless",
            stages=stages,
            resolutions=(224,),
            stem_width=32,
            stem_act="relu6",
            first_block=(16, "relu6"),
            head=(HeadLayer("conv", 1280, "relu6"), HeadLayer("gap"), HeadLayer("fc", 1000)),
        )
