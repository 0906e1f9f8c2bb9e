"""Adaptive sampling: build a device's kernel predictor within a profiling budget.

What ``edgelat predictor build`` runs (nn-Meter's recipe, on a budget):

1. **Fusion probes** (once per device + config): which conv/fc + activation
   pairs the runtime fuses (:mod:`edgelat.predictors.fusion`). Kernels are then
   drawn as the graph splitter will cut models on this device.
2. **Initial sample**: kernel configurations drawn from the distributions of
   real CNNs -- the kernels of MobileNetV2 (resolutions 96..256, width
   multipliers 0.35..1.4), MobileNetV3-Large and random Once-for-All
   MobileNetV3 subnets, the ``mobilenet`` preset, perturbations of those
   (channels x0.5..x2, feature maps, kernel size, expand ratio, SE, activation,
   stride within the ranges such networks use), and the other catalog types at
   the shapes those networks have. Measured in shuffled order so that a small
   budget still covers every type. Gets at most ``INITIAL_SHARE`` of the budget.
3. **Adaptive rounds** until all but ``MODELS_SHARE`` of the budget is spent:
   fit the per-type regressors, take the kernels with the largest
   cross-validated error (each type in proportion to its share of the
   kernels of real networks), measure once more those far off the trend (a slowed
   measurement looks exactly like that), then configurations around them (and
   a quarter of fresh draws, so no region is forgotten), refit.
4. **Whole models**, last, so the calibration sees the device as the build
   leaves it, and after running them unmeasured for a while
   (:data:`MODEL_SETTLE_S`), so that it sees the sustained speed rather than the
   first fast minute: networks measured whole, split from their own files;
   ``calibration`` ones fit the kernel-sum -> whole-model map, ``holdout`` ones
   are only reported on. Their passes stop early when the budget is spent.

Every kernel is measured in three passes spread over time (whole models in
seven) and the middle pass is kept (:func:`~edgelat.profiler.runner.median_of_passes`): shared hosts and
phones have slowed (and, more rarely, quickened) periods lasting seconds that
nothing inside one measurement shows. All of it goes through the job runner
(:mod:`edgelat.profiler.runner`); the kernel groups run under the drift
sentinel (:mod:`edgelat.profiler.sentinel`, a check every
:data:`SENTINEL_EVERY_S` and one when the kernels end), so each kernel row
records the device's level when it was measured.

The budget is profiling wall time (building, sending and measuring models),
summed over runs of the same device + config and stored with the build state:
an interrupted build continues where it stopped when rerun, nothing measured
twice (the table is keyed by kernel). Fitting time is reported, not budgeted.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import sqlite_utils

from edgelat.values import MeasurementProtocol, RuntimeConfig
from edgelat.lut import predictors_store
from edgelat.predictors.fusion import OVERHEAD_SPEC, FusionRules, apply_rules
from edgelat.predictors.graph import canonical_expand
from edgelat.profiler import networks, runner
from edgelat.profiler.ops import ACTIVATION_OPS, KernelSpec, make_divisible, same_out
from edgelat.profiler.sentinel import DriftSentinel
from edgelat.profiler.states import DEFAULT_STATE, SETTLE_S, STATES, state_name, state_ref

# per pass (each kernel and model is measured in PASSES passes, the middle one kept)
KERNEL_PROTOCOL = MeasurementProtocol(warmup=3, min_runs=10, max_runs=500, target_rel_ci=0.02, max_seconds=1.0)
MODEL_PROTOCOL = MeasurementProtocol(warmup=3, min_runs=10, max_runs=300, target_rel_ci=0.01, max_seconds=1.0)
INITIAL_SIZE = 3000
INITIAL_SHARE = 0.5
MODELS_SHARE = 0.15  # kept for the whole models, measured last (settling, then their passes)
GROUP = 96  # kernels measured together (in passes, ~10 s apart): how often the budget is checked
PASSES = 3  # passes over each group of kernels; the middle pass is kept (see edgelat.profiler.runner.median_of_passes)
MODEL_PASSES = 7  # passes over the whole models: few, and the figures everything is judged by
# Whole models run continuously, unmeasured, for this long (at most half the models' share
# of the budget) before their sustained passes. Why: the first minute or two of sustained
# whole-model load after anything lighter (kernel profiling, an idle minute) can run faster
# than the load goes on at (measured on one machine: docs/calibration.md). The build measures
# its whole models in both states (edgelat.profiler.states): warm, in a few passes right
# after the kernels (what one 'profile model' sees), then sustained after settling (what a
# model run continuously sees; 'profile model --sustained' settles the same time first), and
# fits a calibration to each. A phone's thermal throttling is the same shape, stronger.
MODEL_SETTLE_S = SETTLE_S
# Seconds between drift-sentinel checks while kernels are measured (one more when they end):
# longer than a profiling job's, because a build's passes already absorb short slowdowns and
# each check is profiling time taken from the budget.
SENTINEL_EVERY_S = 30.0
MIN_TYPE_SHARE = 0.02  # of each adaptive round, for a kernel type real networks rarely have
WORST_SHARE = 0.05  # share of the table whose neighbourhoods each adaptive round revisits
NEIGHBOURS = 4
MIN_ROUND = 48
RECHECK_ERROR = 0.3  # out-of-fold error above which a worst kernel is measured again before trusting it

# Share of drawn channel counts off the multiple-of-8 grid (a pruned network's widths), so the
# regressors see what a count the vector units cannot block costs (``channel_alignment``).
OFF_GRID_SHARE = 0.25
RESOLUTIONS = tuple(range(96, 257, 8))
WIDTHS = (0.35, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.4)
MB_ACTS = ("relu", "relu6", "hswish")
EXPANDS = (1.0, 2.0, 2.5, 3.0, 4.0, 4.5, 6.0)
OTHER_OPS = ("conv2d", "dwconv2d", "maxpool", "avgpool", "global-avgpool", "add", "mul", "concat", "se", "fc", *ACTIVATION_OPS)


# --------------------------------------------------------------------------- sampling
def _ofa_subnet(rng: np.random.Generator, resolution: int) -> list[KernelSpec]:
    ks = [int(rng.choice(networks.OFA_KERNELS)) for _ in range(20)]
    es = [float(rng.choice(networks.OFA_EXPANDS)) for _ in range(20)]
    ds = [int(rng.choice(networks.OFA_DEPTHS)) for _ in range(5)]
    return networks.ofa_mbv3(ks, es, ds, resolution)


def random_network(rng: np.random.Generator) -> tuple[str, list[KernelSpec]]:
    """One real CNN of a random family, resolution and width (the distribution kernels come from)."""
    r = int(rng.choice(RESOLUTIONS))
    family = rng.choice(["mobilenetv2", "mobilenetv3-large", "ofa-mbv3", "ofa-mbv3", "tiny", "vgg", "resnet"])
    if family in ("vgg", "resnet"):  # dense 3x3/1x1 convs and large fc heads at the sizes real CNNs have
        return _plain_network(rng, family, r)
    if family == "mobilenetv2":
        w = float(rng.choice(WIDTHS))
        return f"mobilenetv2-{r}-{w:g}", networks.mobilenetv2(r, w)
    if family == "mobilenetv3-large":
        return f"mobilenetv3-large-{r}", networks.mobilenetv3_large(r)
    if family == "tiny":
        r = int(rng.choice(range(32, 129, 8)))
        return f"tiny-{r}", networks.tiny_net(r)
    return f"ofa-mbv3-{r}-{int(rng.integers(1 << 30))}", _ofa_subnet(rng, r)


def _plain_network(rng: np.random.Generator, family: str, r: int) -> tuple[str, list[KernelSpec]]:
    w = float(rng.choice((0.5, 0.75, 1.0, 1.0, 1.5)))
    if family == "vgg":
        w = min(w, 1.0)
        # fc heads up to a real VGG's (its first holds 1e8 weights): neither regressor prices an
        # fc far beyond the sampled sizes well (figures: docs/calibration.md)
        alex = rng.random() < 0.25
        flat = networks.alexnet_like(max(r, 128), w, None) if alex else networks.vgg_like(r, w, "vgg11", None)
        hidden = int(rng.choice([hd for hd in (0, 1024, 2048, 4096) if hd * flat[-2].h ** 2 * flat[-2].cin <= 1.1e8]))
        if alex:
            return f"alexnet-{r}-{w:g}", networks.alexnet_like(max(r, 128), w, hidden or None)
        return f"vgg-{r}-{w:g}", networks.vgg_like(r, w, str(rng.choice(list(networks.VGG_CONFIGS))), hidden or None)
    depths = ((2, 2, 2, 2), (3, 4, 6, 3))[int(rng.integers(2))]
    bottleneck = bool(rng.random() < 0.4)
    # a third of the bottlenecks wide (Wide ResNet's doubled inner path: 3x3 convs of up to
    # 1024 -> 1024 channels and 9 M weights at w = 1), which no other family reaches
    mid = 2.0 if bottleneck and w <= 1.0 and rng.random() < 1 / 3 else 1.0
    return f"resnet-{r}-{w:g}" + ("-wide" if mid != 1.0 else ""), networks.resnet_like(r, w, depths, bottleneck, mid_width=mid)


def _divisor(rng: np.random.Generator) -> int:
    """The grid a drawn channel count is rounded to: 8 mostly, else 1, 2 or 4 (:data:`OFF_GRID_SHARE`)."""
    return int(rng.choice((1, 2, 4))) if rng.random() < OFF_GRID_SHARE else 8


def _scale(rng: np.random.Generator, value: int, spread: float, lo: int = 8, hi: int = 2048, divisor: int = 8) -> int:
    return int(min(max(make_divisible(value * math.exp(rng.uniform(-spread, spread)), divisor), lo), hi))


def _side(rng: np.random.Generator, h: int, spread: float) -> int:
    return int(min(max(round(h * math.exp(rng.uniform(-spread, spread))), 1), 256))


def perturb(spec: KernelSpec, rng: np.random.Generator, spread: float = math.log(1.5)) -> KernelSpec | None:
    """A kernel near ``spec``: channels and feature map scaled by up to ``exp(spread)``,
    sometimes another kernel size, expand ratio, SE, activation or stride (within the
    ranges mobile CNNs use). None if the draw is not a valid kernel."""
    d = spec.to_dict()
    p = min(1.0, 0.6 * spread / math.log(1.5))  # chance of a discrete change
    op = spec.op
    d["h"] = d["w"] = _side(rng, spec.h, spread)
    if op == "fc":
        d["h"] = d["w"] = 1
    if spec.cin != 3 or op != "conv2d":
        d["cin"] = _scale(rng, spec.cin, spread, divisor=_divisor(rng))
    if op in ("conv2d", "fc", "mbconv", "concat"):
        if op == "mbconv" and spec.cin == spec.cout and rng.random() < 0.6:
            d["cout"] = d["cin"]
        else:
            d["cout"] = _scale(rng, spec.cout, spread, lo=8 if op != "fc" else 10, divisor=_divisor(rng))
    if op in ("conv2d", "dwconv2d", "mbconv") and rng.random() < p:
        d["kernel"] = int(rng.choice((1, 3, 5)) if op == "conv2d" else rng.choice((3, 5, 7)))
    if op in ("conv2d", "dwconv2d", "mbconv", "maxpool", "avgpool") and rng.random() < p / 2:
        d["stride"] = 3 - spec.stride if spec.stride in (1, 2) else spec.stride
    if op == "mbconv":
        if rng.random() < p:
            e = float(rng.choice(EXPANDS))
            d["expand"] = 1.0 if e == 1.0 else canonical_expand(d["cin"], make_divisible(d["cin"] * e))
        elif spec.expand != 1.0:
            d["expand"] = canonical_expand(d["cin"], make_divisible(d["cin"] * spec.expand))
        if rng.random() < p / 2:
            d["se"] = not spec.se
        if rng.random() < p / 2:
            d["act"] = str(rng.choice(MB_ACTS))
    if op in ("conv2d", "dwconv2d", "fc") and rng.random() < p / 2:
        d["act"] = str(rng.choice(("none",) + MB_ACTS))
    try:
        return KernelSpec(**d)
    except Exception:  # BadInput from an invalid combination: just skip this draw
        return None


def _other_kernel(rng: np.random.Generator) -> KernelSpec:
    """A kernel of any catalog type at a shape a mobile CNN has."""
    op = str(rng.choice(OTHER_OPS))
    h = int(same_out(int(rng.choice(RESOLUTIONS)), int(rng.choice((2, 4, 8, 16, 32)))))
    c = int(rng.choice((16, 24, 32, 40, 48, 64, 80, 96, 112, 160, 192, 240, 320, 480, 672, 960)))
    if rng.random() < OFF_GRID_SHARE:  # a pruned width
        c = make_divisible(c * rng.uniform(0.6, 1.0), int(rng.choice((1, 2, 4))))
    if op == "conv2d":
        k = int(rng.choice((1, 1, 3, 5)))
        return KernelSpec("conv2d", h, h, c, _scale(rng, c, 1.0, divisor=_divisor(rng)), kernel=k, stride=int(rng.choice((1, 2))), bn=True, act=str(rng.choice(("none",) + MB_ACTS)))
    if op == "dwconv2d":
        return KernelSpec("dwconv2d", h, h, c, kernel=int(rng.choice((3, 5, 7))), stride=int(rng.choice((1, 2))), bn=True, act=str(rng.choice(("none",) + MB_ACTS)))
    if op in ("maxpool", "avgpool"):
        k = int(rng.choice((2, 3)))
        return KernelSpec(op, h, h, c, kernel=k, stride=int(rng.choice((1, 2))))
    if op == "concat":
        return KernelSpec("concat", h, h, c, _scale(rng, c, 0.7))
    if op == "fc":
        return KernelSpec("fc", 1, 1, _scale(rng, c * 2, 1.0), int(rng.choice((10, 100, 1000, 1280))), act=str(rng.choice(("none", "relu", "hswish"))))
    if op == "global-avgpool":
        return KernelSpec(op, min(h, 14), min(h, 14), c * 2)
    return KernelSpec(op, h, h, c)


class KernelSampler:
    """Draws kernel configurations from real CNNs and around given kernels (deterministic per seed)."""

    def __init__(self, seed: int = 0, rules: FusionRules | None = None) -> None:
        self.seed = seed
        self.rules = rules or FusionRules()

    def _as_run(self, specs: Sequence[KernelSpec]) -> list[KernelSpec]:
        out: list[KernelSpec] = []
        for s in specs:
            out.extend(apply_rules(s, self.rules))
        return out

    def type_shares(self, networks_drawn: int = 300) -> dict[str, float]:
        """Share of each kernel type among the kernels of random real networks, as they run
        on the device: how the adaptive rounds divide their attention between types."""
        from collections import Counter

        rng = np.random.default_rng([self.seed, 4])
        counts: Counter[str] = Counter()
        for _ in range(networks_drawn):
            counts.update(k.op for k in self._as_run(random_network(rng)[1]))
        total = sum(counts.values())
        return {op: c / total for op, c in counts.items()}

    def initial(self, n: int = INITIAL_SIZE) -> list[KernelSpec]:
        """About ``n`` distinct kernels in shuffled order (the run-overhead probe first): the mobilenet preset, then draws
        of which ~50% are kernels of random real networks, ~30% perturbations of those
        and ~20% other catalog types at mobile-CNN shapes."""
        from edgelat.profiler.presets import get_preset

        rng = np.random.default_rng([self.seed, 1])
        pool: dict[str, KernelSpec] = {}
        net_kernels: list[KernelSpec] = []
        while len(net_kernels) < n:
            net_kernels.extend(random_network(rng)[1])
        picks = rng.permutation(len(net_kernels))
        draws: list[KernelSpec] = []
        for i in range(n):
            u = rng.random()
            if u < 0.5:
                draws.append(net_kernels[picks[i % len(picks)]])
            elif u < 0.8:
                s = perturb(net_kernels[int(rng.integers(len(net_kernels)))], rng)
                if s is not None:
                    draws.append(s)
            else:
                draws.append(_other_kernel(rng))
        for s in self._as_run(get_preset("mobilenet")) + self._as_run(draws):
            pool.setdefault(s.key, s)
        keys = list(pool)
        # first: the near-empty model whose latency is the device's cost of one model run
        return [OVERHEAD_SPEC] + [pool[keys[i]] for i in rng.permutation(len(keys)) if keys[i] != OVERHEAD_SPEC.key]

    def around(self, specs: Sequence[KernelSpec], per_spec: int, round_no: int) -> list[KernelSpec]:
        """Neighbours of each kernel (small perturbations), as they run on the device."""
        rng = np.random.default_rng([self.seed, 2, round_no])
        out: list[KernelSpec] = []
        for s in specs:
            for _ in range(per_spec):
                p = perturb(s, rng, spread=math.log(1.25))
                if p is not None:
                    out.extend(apply_rules(p, self.rules))
        return out

    def fresh(self, n: int, round_no: int) -> list[KernelSpec]:
        """New draws from real networks (exploration next to the adaptive neighbours)."""
        rng = np.random.default_rng([self.seed, 3, round_no])
        out: list[KernelSpec] = []
        while len(out) < n:
            kernels = random_network(rng)[1]
            out.append(kernels[int(rng.integers(len(kernels)))])
        return self._as_run(out)


# --------------------------------------------------------------------------- whole models
def default_models() -> list[tuple[str, str, list[KernelSpec]]]:
    """(name, role, kernels) of the whole models a build measures: 42 calibration models
    spanning each family's resolutions, widths, weight sizes and kernel counts (0.06 M to 67 M weights:
    the spill form of :mod:`edgelat.predictors.calibration` needs models on both
    sides of the device's cache) -- MobileNet-like ones, and plain and residual CNNs
    (VGG, AlexNet, a ResNet's main path) -- and six held out. Benchmarks that claim
    "never seen" results must not use these."""
    rng = np.random.default_rng(12345)
    calibration = [
        ("tiny-64", networks.tiny_net(64)),
        ("mobilenetv2-224-1.0", networks.mobilenetv2(224, 1.0)),
        ("mobilenetv2-128-0.5", networks.mobilenetv2(128, 0.5)),
        ("mobilenetv2-144-0.75", networks.mobilenetv2(144, 0.75)),
        ("mobilenetv2-112-1.0", networks.mobilenetv2(112, 1.0)),
        ("mobilenetv3-large-224", networks.mobilenetv3_large(224)),
        ("mobilenetv3-large-144", networks.mobilenetv3_large(144)),
        ("ofa-mbv3-min-160", networks.ofa_mbv3([3] * 20, [3] * 20, [2] * 5, 160)),
        ("ofa-mbv3-max-224", networks.ofa_mbv3([7] * 20, [6] * 20, [4] * 5, 224)),
        ("ofa-mbv3-rand-192", _ofa_subnet(rng, 192)),
    ]
    holdout = [
        ("mobilenetv2-192-0.75", networks.mobilenetv2(192, 0.75)),
        ("mobilenetv3-large-160", networks.mobilenetv3_large(160)),
        ("ofa-mbv3-rand-176", _ofa_subnet(rng, 176)),
    ]
    calibration += [(f"ofa-mbv3-rand-{r}", _ofa_subnet(rng, r)) for r in (128, 144, 160, 208, 224)]
    # a second draw across each family's range of resolutions and widths, so that the
    # leave-one-out choice of the calibration form does not turn on one or two models
    calibration += [(f"mobilenetv2-{r}-{w:g}", networks.mobilenetv2(r, w))
                    for r, w in ((96, 0.5), (160, 1.4), (256, 1.0), (200, 0.35), (240, 0.6), (120, 0.75))]
    calibration += [(f"mobilenetv3-large-{r}", networks.mobilenetv3_large(r)) for r in (96, 112, 192, 232)]
    rng = np.random.default_rng(4242)
    calibration += [(f"ofa-mbv3-rand2-{r}", _ofa_subnet(rng, r)) for r in (96, 112, 184, 240, 256)]
    # plain and residual CNNs: dense convs at real VGG/ResNet sizes, and weights from 3 M to
    # 35 M (large fc heads), so that the calibration is not extrapolated from MobileNets alone
    calibration += [
        ("vgg11-160-0.5-fc2048", networks.vgg_like(160, 0.5, "vgg11", 2048)),
        ("vgg11-128-1-fc2048", networks.vgg_like(128, 1.0, "vgg11", 2048)),
        ("vgg13-96-0.75", networks.vgg_like(96, 0.75, "vgg13", None)),
        ("alexnet-192-0.75-fc3072", networks.alexnet_like(192, 0.75, 3072)),
        ("resnet-basic-224-0.5", networks.resnet_like(224, 0.5, (2, 2, 2, 2))),
        ("resnet-basic-160-1-d3463", networks.resnet_like(160, 1.0, (3, 4, 6, 3))),
        ("resnet-bottleneck-192-0.75", networks.resnet_like(192, 0.75, (3, 4, 6, 3), bottleneck=True)),
        ("resnet-basic-128-1.5", networks.resnet_like(128, 1.5, (2, 2, 2, 2))),
        # convs whose weights outgrow the cache (Wide ResNet's 9 M-weight 3x3s): the spill form
        # otherwise learns what evicted weights cost from VGG's and AlexNet's fc heads alone,
        # where nothing hides the fetch
        ("resnet-wide-160-1-d3463", networks.resnet_like(160, 1.0, (3, 4, 6, 3), bottleneck=True, mid_width=2.0)),
    ]
    # many small kernels (68 to 169, tens of microseconds each): where a whole model is mostly
    # the per-kernel costs that a run pays once, so that the count term is fitted, not extrapolated
    # from models of about 20 kernels
    calibration += [
        ("resnet-basic-96-0.25-d3463", networks.resnet_like(96, 0.25, (3, 4, 6, 3))),
        ("resnet-bottleneck-96-0.25-d34233", networks.resnet_like(96, 0.25, (3, 4, 23, 3), bottleneck=True)),
        ("resnet-bottleneck-128-0.5-d3463", networks.resnet_like(128, 0.5, (3, 4, 6, 3), bottleneck=True)),
    ]
    holdout += [
        ("resnet-bottleneck-112-0.25-d3463", networks.resnet_like(112, 0.25, (3, 4, 6, 3), bottleneck=True)),
    ]
    holdout += [
        ("resnet-basic-192-1", networks.resnet_like(192, 1.0, (2, 2, 2, 2))),
        ("vgg13-112-0.75-fc1024", networks.vgg_like(112, 0.75, "vgg13", 1024)),
    ]
    return [(n, "calibration", k) for n, k in calibration] + [(n, "holdout", k) for n, k in holdout]


# --------------------------------------------------------------------------- build state
def build_state(db: sqlite_utils.Database, device: str, config: RuntimeConfig) -> dict[str, Any]:
    """The stored state of a build (a fresh one if it never ran)."""
    row = predictors_store.build_state_row(db, device, config)
    if row is not None:
        return dict(row)
    return {"device": device, "config_key": config.key(), "spent_s": 0.0, "rounds": 0, "seed": 0, "updated_at": None,
            "summary_json": "{}"}


def _save_state(db: sqlite_utils.Database, state: dict[str, Any]) -> None:
    predictors_store.save_build_state(db, state)


@dataclass
class BuildSummary:
    device: str
    config: RuntimeConfig
    budget_s: float
    spent_s: float = 0.0  # profiling time over all runs of this build
    spent_this_run_s: float = 0.0
    fit_s: float = 0.0
    kernels_measured: int = 0  # this run
    kernels_rechecked: int = 0  # measured again because they were far off the trend
    kernels_total: int = 0
    models_measured: int = 0
    rounds: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    fusion: dict[str, str] = field(default_factory=dict)
    layout: dict[str, Any] | None = None  # the layout probe's figures (edgelat.predictors.layout_probe)
    regressors: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    interrupted: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "runtime": self.config.runtime,
            "threads": self.config.threads,
            "provider": self.config.provider,
            "config_key": self.config.key(),
            "budget_s": round(self.budget_s, 1),
            "spent_s": round(self.spent_s, 1),
            "spent_this_run_s": round(self.spent_this_run_s, 1),
            "fit_s": round(self.fit_s, 1),
            "kernels_measured": self.kernels_measured,
            "kernels_rechecked": self.kernels_rechecked,
            "kernels_total": self.kernels_total,
            "models_measured": self.models_measured,
            "rounds": self.rounds,
            "failed": [{"key": k, "error": e} for k, e in self.failed[:20]],
            "failed_count": len(self.failed),
            "fusion": self.fusion,
            "layout": self.layout,
            "regressors": self.regressors,
            "calibration": self.calibration,
            "interrupted": self.interrupted or None,
        }


def worst_kernels(predictor, specs: list[KernelSpec], y: np.ndarray, k: int,
                  shares: dict[str, float]) -> list[tuple[float, KernelSpec]]:
    """About ``k`` kernels with the largest out-of-fold relative error, with that error,
    divided between kernel types by their ``shares`` in real networks (at least
    ``MIN_TYPE_SHARE`` each). Without the quotas the rounds chase the types that are
    hardest to predict -- pooling with odd strides, kernels no MobileNet has -- and
    the table fills with them (figures from one machine: docs/calibration.md)."""
    by_op: dict[str, list[tuple[float, KernelSpec]]] = {}
    for s, v in zip(specs, y):
        p = predictor.cv_pred_.get(s.key)
        if p is not None:
            by_op.setdefault(s.op, []).append((abs(p - v) / v, s))
    picked: list[tuple[float, KernelSpec]] = []
    for op, scored in by_op.items():
        scored.sort(key=lambda t: -t[0])
        picked += scored[: math.ceil(k * max(shares.get(op, 0.0), MIN_TYPE_SHARE))]
    picked.sort(key=lambda t: -t[0])
    return picked


# progress(phase, spent_s, budget_s, message)
Progress = Callable[[str, float, float, str], None]


class Builder:
    """Runs one build; see the module docstring. Library entry point: :func:`build_predictor`."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        device: str,
        client,
        config: RuntimeConfig,
        budget_s: float,
        seed: int = 0,
        kernel_protocol: MeasurementProtocol = KERNEL_PROTOCOL,
        model_protocol: MeasurementProtocol = MODEL_PROTOCOL,
        models: Sequence[tuple[str, str, list[KernelSpec]]] | None = None,
        initial_size: int = INITIAL_SIZE,
        detect_fusion: bool = True,
        measure_layout: bool = True,
        recheck_error: float = RECHECK_ERROR,
        passes: int = PASSES,
        model_passes: int = MODEL_PASSES,
        model_settle_s: float | None = None,
        group: int = GROUP,
        progress: Progress | None = None,
        sentinel: bool = True,
        sentinel_every_s: float = SENTINEL_EVERY_S,
    ) -> None:
        self.db, self.device, self.client, self.config = db, device, client, config
        self.budget_s = float(budget_s)
        self.seed = seed
        self.kernel_protocol, self.model_protocol = kernel_protocol, model_protocol
        self.models = list(default_models() if models is None else models)
        self.initial_size = initial_size
        self.detect_fusion = detect_fusion
        self.measure_layout = measure_layout
        self._layout_cost = None  # LayoutCost the calibration takes off the kernel prices (edgelat.predictors.layout)
        self.recheck_error = recheck_error
        self.passes, self.model_passes, self.group = passes, model_passes, group
        # None: MODEL_SETTLE_S, but at most half the models' share of this budget
        self.model_settle_s = min(MODEL_SETTLE_S, MODELS_SHARE * self.budget_s / 2) if model_settle_s is None else model_settle_s
        self.progress = progress
        self.sentinel = DriftSentinel(db, device, client, config, every_s=sentinel_every_s) if sentinel else None
        self.state = build_state(db, device, config)
        self.summary = BuildSummary(device, config, self.budget_s, spent_s=self.state["spent_s"])
        self._phase = "start"
        self._choice: dict[str, str] | None = None  # regressor per op at the last selection
        self._choice_rows = 0
        self._rechecked: set[str] = set()

    # -- budget bookkeeping
    def spent(self) -> float:
        return self.state["spent_s"]

    def left(self) -> float:
        return self.budget_s - self.spent()

    def _charge(self, seconds: float) -> None:
        self.state["spent_s"] += seconds
        self.summary.spent_s = self.state["spent_s"]
        self.summary.spent_this_run_s += seconds
        _save_state(self.db, self.state)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(self._phase, self.spent(), self.budget_s, message)

    # -- measuring (every measurement goes through the job runner, edgelat.profiler.runner)
    def _lost(self, exc: Exception) -> "_Stop":
        """A device or agent lost mid-measurement ends the build, not the process: the rows
        stored so far stay, and :meth:`finish` still fits what the table holds. Rerunning
        the command goes on from there."""
        self.summary.interrupted = f"{exc} (what was measured is kept; rerun the same command to go on)"
        return _Stop()

    def _profile(self, specs: list[KernelSpec], limit_s: float, again: bool = False) -> None:
        """Measure ``specs`` (those not in the table, or all with ``again``) in groups
        (the middle of ``passes`` passes each, see :func:`~edgelat.profiler.runner.median_of_passes`) until done or
        ``limit_s`` spent. Each row is stored as soon as its group is done; the profiling
        time (sentinel checks included) is charged after each group."""
        mark = time.perf_counter()

        def after_group(done: runner.GroupDone) -> None:
            nonlocal mark
            now = time.perf_counter()
            self._charge(now - mark)
            mark = now
            measured = sum(1 for r in done.results.values() if r.ok and r.latency is not None)
            if again:
                self.summary.kernels_rechecked += measured
            else:
                self.summary.kernels_measured += measured
            self._say(f"{self.summary.kernels_measured} kernels measured this run")

        items = runner.kernel_items(dict.fromkeys(specs), self.config.model_format)
        options = runner.RunOptions(group=self.group, passes=self.passes, again=again, limit=lambda: self.spent() >= limit_s,
                                    after_group=after_group, sentinel=self.sentinel, close_sentinel=False)
        run = runner.run(self.db, self.device, self.client, self.config, self.kernel_protocol, items, options)
        self.summary.failed += run.failed
        if run.lost is not None:
            self._charge(time.perf_counter() - mark)
            raise self._lost(run.lost)

    def _close_sentinel(self) -> None:
        """The sentinel check that ends the kernel measurements (when rows came since the last one)."""
        from edgelat.errors import AgentUnreachable, DeviceError

        if self.sentinel is None:
            return
        t0 = time.perf_counter()
        try:
            checked = self.sentinel.close()
        except (AgentUnreachable, DeviceError) as exc:
            self._charge(time.perf_counter() - t0)
            raise self._lost(exc) from None
        if checked is not None:
            self._charge(time.perf_counter() - t0)

    def _fusion(self) -> FusionRules:
        from edgelat.predictors.fusion import load_rules, verdict_rows
        from edgelat.predictors.fusion_probe import detect_fusion

        rules = load_rules(self.db, self.device, self.config)
        if rules.source == "default" and self.detect_fusion and self.left() > 0:
            self._phase = "fusion"
            self._say("measuring which operator pairs the runtime fuses")
            t0 = time.perf_counter()
            detect_fusion(self.db, self.device, self.client, self.config)
            self._charge(time.perf_counter() - t0)
            rules = load_rules(self.db, self.device, self.config)
        self.summary.fusion = {f"{r['op']}+{r['act']}": r["verdict"] for r in verdict_rows(self.db, self.device, self.config)}
        return rules

    def _layout(self) -> None:
        """The device's price of a layout conversion (:mod:`edgelat.predictors.layout_probe`),
        for runtimes that convert (:func:`edgelat.predictors.layout.converts`), measured in each
        run of the build that has budget left; a build rerun with none left reuses the one
        its last finished run kept, or calibrates without it."""
        from edgelat.errors import AgentUnreachable, DeviceError
        from edgelat.predictors.layout import LayoutCost, converts
        from edgelat.predictors.layout_probe import measure_layout_cost

        if not (self.measure_layout and converts(self.config)):
            return
        if self.left() <= 0:
            kept = json.loads(self.state.get("summary_json") or "{}").get("layout")
            if kept:
                self.summary.layout, self._layout_cost = kept, LayoutCost.from_dict(kept)
            return
        self._phase = "layout"
        self._say("measuring what a layout conversion costs (kernels alone and chained)")
        t0 = time.perf_counter()
        try:
            probe = measure_layout_cost(self.db, self.device, self.client, self.config)
        except (AgentUnreachable, DeviceError) as exc:
            self._charge(time.perf_counter() - t0)
            raise self._lost(exc) from None
        self._charge(time.perf_counter() - t0)
        self.summary.layout, self._layout_cost = probe.to_dict(), probe.cost

    def _whole_models(self, rules: FusionRules) -> None:
        from edgelat.predictors.calibration import record_model
        from edgelat.predictors.graph import split_model
        from edgelat.profiler.builders import build_model
        from edgelat.profiler.jobs import model_ref_for

        self._phase = "models"
        fmt = self.config.model_format
        warm, sustained = [], []
        for name, role, specs in self.models:
            data = build_model(specs, fmt, seed=0)
            ref = model_ref_for(data)
            split = split_model(data, fmt, rules)
            if split.unknown:  # cannot happen for catalog-built models; guard against a silent gap
                raise RuntimeError(f"{name}: split left unknown kernels {[u.op_type for u in split.unknown]}")
            # the model's kernels join the table too: a model's sum is then exact where measured
            self._profile(split.kernels, self.budget_s)
            record_model(self.db, self.device, self.config, ref, name, role, fmt, split.kernels)
            warm.append(runner.model_item(ref, data, fmt, name))
            sustained.append(runner.model_item(state_ref(ref, "sustained"), data, fmt, state_name(name, "sustained")))
        self._close_sentinel()
        todo = runner.todo_items(self.db, self.device, self.config, warm)
        todo_sustained = runner.todo_items(self.db, self.device, self.config, sustained)
        # Both states (edgelat.profiler.states): warm first, in a few passes right after the
        # lighter kernel load (as one 'profile model' sees a model), then, after settling,
        # sustained. One pass of each at least even when the last adaptive group overran into
        # the models' share of the budget: without whole models there is no calibration.
        if todo:
            self._say(f"measuring {len(todo)} whole models warm")
            limit = self.spent() + max(0.0, self.left() - self.model_settle_s) / 2
            self._measure_models(todo, "warm", self.passes, 0.0, limit)
        if todo_sustained:
            self._say(f"measuring {len(todo_sustained)} whole models sustained (first running them unmeasured for up to "
                      f"{self.model_settle_s:.0f} s while the budget lasts)")
            self._measure_models(todo_sustained, "sustained", self.model_passes, self.model_settle_s, self.budget_s)

    def _measure_models(self, todo: list[Any], state: str, passes: int, settle_s: float, limit_s: float) -> None:
        """Whole models in ``passes`` passes (after ``settle_s`` of unmeasured load), stored as
        measured in ``state``; passes after the first stop once ``limit_s`` of the budget is spent."""
        t0 = time.perf_counter()
        options = runner.RunOptions(group=len(todo), passes=passes, settle_s=settle_s,
                                    enough=lambda: self.spent() + time.perf_counter() - t0 >= limit_s,
                                    environment={"state": state, "settled_s": settle_s})
        run = runner.run(self.db, self.device, self.client, self.config, self.model_protocol, todo, options)
        self._charge(time.perf_counter() - t0)
        if run.lost is not None:
            raise self._lost(run.lost)
        names = {i.key: i.name for i in todo}
        self.summary.models_measured += run.measured
        self.summary.failed += [(names.get(ref, ref), error) for ref, error in run.failed]

    def _fit(self, select: bool = True):
        """Fit on the table. ``select=False`` keeps the regressor type each op got at the last
        selecting fit (only that one is cross-validated): adaptive rounds refit often."""
        from edgelat.predictors.kernel import KernelPredictor, table_specs

        t0 = time.perf_counter()
        specs, y = table_specs(self.db, self.device, self.config)
        predictor = None
        if specs:
            choice = None if select else self._choice
            predictor = KernelPredictor(choice=choice, random_state=self.seed).fit(specs, y)
            if select:
                self._choice, self._choice_rows = dict(predictor.choice_), len(specs)
        self.summary.fit_s += time.perf_counter() - t0
        return predictor, specs, y

    def _table_size(self) -> int:
        from edgelat.lut.store import measured_kernel_keys

        return len(measured_kernel_keys(self.db, self.device, self.config))

    def run(self) -> BuildSummary:
        try:
            rules = self._fusion()
            self._layout()
            sampler = KernelSampler(self.seed, rules)
            shares = sampler.type_shares()
            self._phase = "initial"
            self._profile(sampler.initial(self.initial_size), INITIAL_SHARE * self.budget_s)
            self._phase = "adaptive"
            reserve = MODELS_SHARE * self.budget_s if self.models else 0.0
            idle_rounds = 0  # rounds that measured nothing new: the sampler has run dry
            while self.left() > reserve and idle_rounds < 3:
                grown = self._choice is None or self._table_size() >= 1.5 * self._choice_rows
                predictor, specs, y = self._fit(select=grown)
                if predictor is None:
                    break
                round_no = self.state["rounds"] + 1
                size = max(MIN_ROUND, int(WORST_SHARE * len(specs)) * NEIGHBOURS)
                scored = worst_kernels(predictor, specs, y, max(1, size // NEIGHBOURS), shares)
                worst = [s for _, s in scored]
                # A measurement far off its neighbours' trend is measured once more first: a
                # burst of load (or thermal throttling) during one row looks exactly like it.
                suspects = [s for e, s in scored if e > self.recheck_error and s.key not in self._rechecked]
                self._rechecked.update(s.key for s in suspects)
                todo = sampler.around(worst, NEIGHBOURS, round_no) + sampler.fresh(size // 4, round_no)
                before = self.summary.kernels_measured
                self._say(f"round {round_no}: {len(worst)} worst kernels ({len(suspects)} rechecked), {len(todo)} candidates")
                self._profile(suspects, self.budget_s - reserve, again=True)
                self._profile(todo, self.budget_s - reserve)
                self.state["rounds"] = round_no
                self.summary.rounds += 1
                _save_state(self.db, self.state)
                if self.summary.kernels_measured == before:  # everything proposed was known: draw more next round
                    self._profile(sampler.fresh(size, round_no + 10_000), self.budget_s - reserve)
                idle_rounds = idle_rounds + 1 if self.summary.kernels_measured == before else 0
            # last, so that the calibration sees the device as the build leaves it
            self._whole_models(rules)
            self._close_sentinel()
        except _Stop:
            pass
        return self.finish()

    def finish(self) -> BuildSummary:
        from edgelat.predictors.calibration import fit_calibration

        self._phase = "fit"
        self._say("fitting the regressors")
        predictor, specs, _ = self._fit()
        self.summary.kernels_total = len(specs)
        if predictor is None:
            return self.summary
        predictor.save(self.db, self.device, self.config)
        self.summary.regressors = {
            op: {"rows": predictor.n_rows_[op], "model": predictor.choice_[op], "cv_mape": round(predictor.cv_[op][predictor.choice_[op]], 4)}
            for op in predictor.ops_
        }
        states = {}
        for state in STATES:
            cal = fit_calibration(self.db, self.device, self.config, predictor, state, self._layout_cost)
            if cal is not None:
                states[state] = {"form": cal.form_, "coef": [float(c) for c in cal.coef_], "models": cal.n_models_,
                                 "loo_mape": cal.loo_mape_}
        if states:  # the default state's at the top (what readers that know no states show), every state's below
            self.summary.calibration = {**states.get(DEFAULT_STATE, next(iter(states.values()))), "states": states}
        self.state["summary_json"] = json.dumps(self.summary.to_dict(), default=str)
        _save_state(self.db, self.state)
        self._phase = "done"
        self._say("done")
        return self.summary


class _Stop(Exception):
    """The device went away mid-build: what was measured is kept; the rerun resumes."""


def build_predictor(
    db: sqlite_utils.Database,
    device: str,
    client,
    config: RuntimeConfig,
    budget_s: float,
    **options: Any,
) -> BuildSummary:
    """Profile within ``budget_s`` seconds (total over reruns), fit, calibrate and store the
    kernel predictor of ``device`` + ``config``. Options: see :class:`Builder`."""
    return Builder(db, device, client, config, budget_s, **options).run()


def build_on_device(
    db: sqlite_utils.Database,
    device: str,
    config: RuntimeConfig,
    budget_s: float,
    **options: Any,
) -> BuildSummary:
    """:func:`build_predictor` on a registered device reached by name: what ``edgelat
    predictor build`` runs. The device is marked lost when the build was interrupted by
    losing it, available otherwise."""
    from edgelat.devices.registry import Registry

    registry = Registry(db)
    registry.get(device)  # UnknownDevice before connecting
    with registry.connect(device) as client:
        summary = build_predictor(db, device, client, config, budget_s, **options)
    registry.touch(device, "lost" if summary.interrupted else "available")
    return summary
