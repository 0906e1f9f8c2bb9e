"""Once-for-All MobileNetV3 (width 1.0): the space of the OFA paper and its dataset.

Exactly OFA's ``OFAMobileNetV3(width_mult=1.0, ks_list=[3,5,7], expand_ratio_list=[3,4,6],
depth_list=[2,3,4])`` with resolutions 128..224 step 4:

- stem: conv 3x3 3->16 stride 2, bn, hswish;
- first block: mbconv 16->16 k3 e1 relu (fixed, with its identity shortcut);
- 5 stages of up to 4 blocks, widths 24, 40, 80, 112, 160, strides 2, 2, 2, 1, 2,
  SE in the 40/112/160 stages, relu in the 24/40 stages and hswish after;
- head: 1x1 conv 160->960 bn hswish, global average pool, 960->1280 hswish
  (OFA's ``feature_mix_layer``, a 1x1 conv without bn on the pooled 1x1 map,
  priced here as an ``fc`` kernel: the same arithmetic), 1280->1000 fc.

Strings: ``{"ks": [20 kernels], "e": [20 expands], "d": [5 depths], "r": 224}``,
the format of the HELP measurements (``tests/data/help/ofa_latency_ms.csv.xz``).

Figures, computed by ``flops``/``params`` from the kernels (FLOPs = 2 x MACs
plus element-wise ops, the catalog's convention; checked in tests):

- largest subnet (ks 7, e 6, d 4, r 224): 7,645,128 parameters, 1,135.7 MFLOPs
  (about 568 M multiply-adds). OFA reports about 7.7M parameters for it; the
  0.7% difference is convention: OFA counts batch-norm's two affine
  parameters per channel, here batch-norm is folded into one bias per channel
  (and the bias-free 960->1280 layer is priced as an fc with a bias);
- smallest (ks 3, e 3, d 2, r 128): 3,406,104 parameters, 83.3 MFLOPs.
"""

from __future__ import annotations

from edgelat.profiler.spaces.mobile import HeadLayer, MobileStageSpace, Stage

RESOLUTIONS = tuple(range(128, 225, 4))
KS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
#           width, stride, se,   act
_STAGES = ((24, 2, False, "relu"), (40, 2, True, "relu"), (80, 2, False, "hswish"),
           (112, 1, True, "hswish"), (160, 2, True, "hswish"))


class OFAMobileNetV3(MobileStageSpace):
    """The OFA-MobileNetV3 space (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(
            name="ofa-mbv3",
            stages=[Stage(widths=(w,), depths=DEPTHS, kernels=KS, expands=EXPANDS, stride=s, se=se, act=act)
                    for w, s, se, act in _STAGES],
            resolutions=RESOLUTIONS,
            stem_width=16,
            stem_act="hswish",
            first_block=(16, "relu"),
            head=(HeadLayer("conv", 960, "hswish"), HeadLayer("gap"), HeadLayer("fc", 1280, "hswish"),
                  HeadLayer("fc", 1000)),
        )
