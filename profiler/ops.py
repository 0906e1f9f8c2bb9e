"""The operator catalog: what a kernel is, its canonical key, and its features.

A :class:`KernelSpec` is the unit every table row, predictor and builder
agrees on. Its :attr:`~KernelSpec.key` is the one spelling of a kernel that is
stored in SQLite and sent over the wire, so it must be canonical (one spec, one
string) and must round-trip exactly through :meth:`KernelSpec.from_key`.

Shapes are batch 1 with NHWC semantics. Padding is "same" for convolutions
and pools: the output side is ``ceil(in / stride)``.

Fields that do not apply to an op are normalised when the spec is built
(``cout`` of a depthwise conv may be given as 0 or as ``cin``; it is stored as
0), so two specs that mean the same kernel compare equal and share a key. A
field set to a value that contradicts the op (``kernel=3`` on ``add``) is an
error rather than silently dropped.

FLOPs convention: 2 x multiply-accumulates for convolutions and fully
connected layers (biases, folded batch-norm and fused activations free);
one FLOP per output element for each element-wise primitive (activations,
add, mul, the SE gate) and ``k*k`` per output element for pools
(``h*w`` per channel for the global pool). Concat counts 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgelat.errors import BadInput

ACTIVATIONS: tuple[str, ...] = ("none", "relu", "relu6", "hswish", "hsigmoid", "sigmoid", "swish")
ACTIVATION_OPS: tuple[str, ...] = ACTIVATIONS[1:]
CONV_OPS: tuple[str, ...] = ("conv2d", "dwconv2d")
POOL_OPS: tuple[str, ...] = ("maxpool", "avgpool")
BINARY_OPS: tuple[str, ...] = ("add", "mul", "concat")

OP_TYPES: tuple[str, ...] = (
    "conv2d",
    "dwconv2d",
    "fc",
    "maxpool",
    "avgpool",
    "global-avgpool",
    "add",
    "mul",
    "concat",
    *ACTIVATION_OPS,
    "se",
    "mbconv",
)

# Which optional fields each op uses. Everything else must stay at its default.
_USES_COUT = frozenset({"conv2d", "fc", "mbconv", "concat"})
_USES_KERNEL = frozenset({"conv2d", "dwconv2d", "maxpool", "avgpool", "mbconv"})
_ODD_KERNEL = frozenset({"conv2d", "dwconv2d", "mbconv"})
_USES_ACT = frozenset({"conv2d", "dwconv2d", "fc", "mbconv"})
_USES_BN = frozenset({"conv2d", "dwconv2d"})

# Largest tensor (weights, an input, the output, mbconv's expanded activations) a kernel may have.
MAX_KERNEL_ELEMENTS = 1 << 28
# Largest value of an integer field (h, w, channels, kernel, stride): ONNX and TFLite hold int32 there.
MAX_FIELD = (1 << 31) - 1


def _shown(n: int) -> str:
    """A count as a message shows it: digits while short, 1.6e+23 beyond."""
    return str(n) if n < 10**12 else f"{float(n):.3g}"
SE_REDUCTION = 4  # squeeze channels = make_divisible(channels // 4, 8), as in MobileNetV3 / OFA
CHANNEL_DIVISOR = 8

FEATURE_NAMES: tuple[str, ...] = (
    "h",
    "w",
    "cin",
    "cout",  # output channels of the kernel (derived where the spec leaves it implicit)
    "cin2",  # channels of the second input (add, mul, concat), else 0
    "kernel",
    "stride",
    "expand",
    "mid",  # mbconv expanded channels, se squeeze channels, else 0
    "se",
    "bn",
    "hout",
    "wout",
    "flops",
    "params",
    "input_elems",
    "output_elems",
    "mem_elems",  # input + output + params elements: a proxy for memory traffic
    "cin_align",  # largest power of two up to 16 dividing cin: vectorised kernels block channels
    "cout_align",  # the same for the output channels
    *(f"act_{a}" for a in ACTIVATIONS),
    *(f"op_{o}" for o in OP_TYPES),
)


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def channel_alignment(channels: int) -> int:
    """The largest power of two, up to 16, that divides ``channels``.

    Runtimes block channels for their vector units (onnxruntime's NCHWc layout on x86,
    NEON's lanes of 4 on ARM): a count off that grid can take a much slower path (a pruned
    network's 58-channel depthwise conv), which nothing else in the features shows."""
    if channels <= 0:
        return 0
    return min(16, channels & -channels)


def se_channels(channels: int) -> int:
    """Squeeze width of an SE block on ``channels`` channels."""
    return make_divisible(channels // SE_REDUCTION)


def same_out(size: int, stride: int) -> int:
    """Output side under "same" padding."""
    return -(-size // stride)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis under TFLite/ONNX SAME_UPPER rules."""
    total = max((same_out(size, stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _fmt_float(x: float) -> str:
    """Shortest exact spelling: 6.0 -> "6", 2.5 -> "2.5"."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _as_int(name: str, value: Any, op: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInput(f"{op}: {name} must be an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class KernelSpec:
    """One kernel (operator or fused block) at one shape; see the module docstring."""

    op: str
    h: int
    w: int
    cin: int
    cout: int = 0
    kernel: int = 1
    stride: int = 1
    expand: float = 1.0
    se: bool = False
    act: str = "none"
    bn: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        op = self.op
        if op not in OP_TYPES:
            raise BadInput(f"unknown op {op!r}; valid ops: {', '.join(OP_TYPES)}")
        setf = lambda n, v: object.__setattr__(self, n, v)  # noqa: E731 (frozen dataclass)
        for name in ("h", "w", "cin", "cout", "kernel", "stride"):
            setf(name, _as_int(name, getattr(self, name), op))
        for name in ("h", "w", "cin", "kernel", "stride"):
            if getattr(self, name) <= 0:
                raise BadInput(f"{op}: {name} must be positive, got {getattr(self, name)}")
        for name in ("h", "w", "cin", "cout", "kernel", "stride"):  # model formats store them as int32
            if getattr(self, name) > MAX_FIELD:
                raise BadInput(f"{op}: {name} must be at most {MAX_FIELD}, got {_shown(getattr(self, name))}")
        if self.cout < 0:
            raise BadInput(f"{op}: cout must be positive, got {self.cout}")
        if isinstance(self.expand, bool) or not isinstance(self.expand, numbers.Real):
            raise BadInput(f"{op}: expand must be a number, got {self.expand!r}")
        setf("expand", float(self.expand))
        for name in ("se", "bn"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise BadInput(f"{op}: {name} must be true or false, got {v!r}")
            setf(name, bool(v))
        if self.act not in ACTIVATIONS:
            raise BadInput(f"{op}: unknown activation {self.act!r}; valid: {', '.join(ACTIVATIONS)}")

        # cout: required where it applies, implied (stored as 0) elsewhere
        if op in _USES_COUT:
            if self.cout <= 0:
                raise BadInput(f"{op}: cout must be positive, got {self.cout}")
        else:
            implied = self.cin
            if self.cout not in (0, implied):
                raise BadInput(f"{op}: cout is implied ({implied}) and cannot be {self.cout}")
            setf("cout", 0)
        if op in _USES_KERNEL:
            if op in _ODD_KERNEL and self.kernel % 2 == 0:
                raise BadInput(f"{op}: kernel must be odd, got {self.kernel}")
        elif self.kernel != 1 or self.stride != 1:
            raise BadInput(f"{op}: kernel/stride do not apply (got k{self.kernel}, s{self.stride})")
        if op == "mbconv":
            if not (self.expand > 0 and math.isfinite(self.expand)):
                raise BadInput(f"mbconv: expand must be a positive number, got {self.expand}")
            if self.cin * self.expand > MAX_KERNEL_ELEMENTS:  # before mid_channels rounds it (inf cannot be)
                raise BadInput(f"mbconv: expand {self.expand:g} gives {self.cin * self.expand:.3g} channels, over the "
                               f"cap of {MAX_KERNEL_ELEMENTS} elements per tensor; profile a smaller kernel")
            if self.mid_channels < 1:
                raise BadInput(f"mbconv: expand {self.expand} leaves no channels for cin {self.cin}")
        else:
            if self.expand != 1.0:
                raise BadInput(f"{op}: expand only applies to mbconv (got {self.expand})")
            if self.se:
                raise BadInput(f"{op}: se only applies to mbconv (use op 'se' for a standalone block)")
        if op not in _USES_ACT and self.act != "none":
            raise BadInput(f"{op}: no fused activation (got {self.act!r}); use a separate activation kernel")
        if op == "mbconv":
            setf("bn", False)  # batch-norm is always part of an mbconv block; not a choice
        elif op not in _USES_BN and self.bn:
            raise BadInput(f"{op}: bn only applies to conv2d/dwconv2d")
        if op == "fc" and (self.h, self.w) != (1, 1):
            raise BadInput(f"fc: input must be 1x1 (put global-avgpool before it), got {self.h}x{self.w}")
        self._check_size()

    def _check_size(self) -> None:
        """Refuse a kernel whose model could not be built or fed on a device (one line, not a MemoryError)."""
        sizes = {"weights": self.params(), "output": math.prod(self.output_shape())}
        for i, shape in enumerate(self.input_shapes()):
            sizes[f"input {i}" if i else "input"] = math.prod(shape)
        if self.op == "mbconv":
            sizes["expanded activations"] = self.h * self.w * self.mid_channels
        name, count = max(sizes.items(), key=lambda kv: kv[1])
        if count > MAX_KERNEL_ELEMENTS:
            raise BadInput(
                f"{self.op}: its {name} would have {_shown(count)} elements, over the cap of {MAX_KERNEL_ELEMENTS} "
                "(1 GiB of fp32) per tensor; profile a smaller kernel"
            )

    # ------------------------------------------------------------------ keys
    @property
    def key(self) -> str:
        """Canonical string, e.g. ``conv2d:h112,w112,cin32,cout64,k3,s2,bn,relu``."""
        parts = [f"h{self.h}", f"w{self.w}", f"cin{self.cin}"]
        if self.op in _USES_COUT:
            parts.append(f"cout{self.cout}")
        if self.op in _USES_KERNEL:
            parts += [f"k{self.kernel}", f"s{self.stride}"]
        if self.op == "mbconv":
            parts.append(f"e{_fmt_float(self.expand)}")
            if self.se:
                parts.append("se")
        if self.bn:
            parts.append("bn")
        if self.act != "none":
            parts.append(self.act)
        return f"{self.op}:{','.join(parts)}"

    @classmethod
    def from_key(cls, key: str) -> "KernelSpec":
        """Parse a canonical key; BadInput if malformed or not in canonical form."""
        if not isinstance(key, str) or ":" not in key:
            raise BadInput(f"malformed kernel key {key!r}: expected '<op>:h..,w..,cin..[,...]'")
        op, _, rest = key.partition(":")
        fields: dict[str, Any] = {"op": op}
        for tok in rest.split(",") if rest else []:
            if tok in ACTIVATION_OPS:
                name, value = "act", tok
            elif tok in ("se", "bn"):
                name, value = tok, True
            else:
                m = re.fullmatch(r"(h|w|cin|cout|k|s)(\d+)|e(\d+(?:\.\d+)?(?:e[+-]?\d+)?)", tok)
                if not m:
                    raise BadInput(f"malformed kernel key {key!r}: cannot read {tok!r}")
                if m.group(3) is not None:
                    name, value = "expand", float(m.group(3))
                else:
                    name = {"k": "kernel", "s": "stride"}.get(m.group(1), m.group(1))
                    value = int(m.group(2))
            if name in fields:
                raise BadInput(f"malformed kernel key {key!r}: {name} given twice")
            fields[name] = value
        missing = [n for n in ("h", "w", "cin") if n not in fields]
        if missing:
            raise BadInput(f"malformed kernel key {key!r}: missing {', '.join(missing)}")
        spec = cls(**fields)
        if spec.key != key:
            raise BadInput(f"kernel key {key!r} is not canonical; write it as {spec.key!r}")
        return spec

    def __str__(self) -> str:
        return self.key

    # ------------------------------------------------------------------ dicts
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "KernelSpec":
        """Build from a dict (e.g. a YAML entry); BadInput naming unknown or missing fields."""
        if not isinstance(d, dict):
            raise BadInput(f"a kernel spec must be a mapping, got {type(d).__name__}")
        if set(d) == {"key"}:
            return cls.from_key(d["key"])
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise BadInput(f"unknown spec field(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        missing = [n for n in ("op", "h", "w", "cin") if n not in d]
        if missing:
            raise BadInput(f"spec is missing {', '.join(missing)}")
        return cls(**d)

    # ------------------------------------------------------------------ shapes
    @property
    def mid_channels(self) -> int:
        """mbconv expanded channels (round half up of cin*expand); cin for the other ops."""
        if self.op != "mbconv":
            return self.cin
        return int(math.floor(self.cin * self.expand + 0.5))

    @property
    def out_channels(self) -> int:
        if self.op in ("conv2d", "fc", "mbconv"):
            return self.cout
        if self.op == "concat":
            return self.cin + self.cout
        return self.cin

    @property
    def has_residual(self) -> bool:
        """mbconv adds its input back when the shapes allow it."""
        return self.op == "mbconv" and self.stride == 1 and self.cin == self.cout

    def input_shapes(self) -> list[tuple[int, int, int, int]]:
        first = (1, self.h, self.w, self.cin)
        if self.op in ("add", "mul"):
            return [first, first]
        if self.op == "concat":
            return [first, (1, self.h, self.w, self.cout)]
        return [first]

    def output_shape(self) -> tuple[int, int, int, int]:
        if self.op in ("global-avgpool", "fc"):
            return (1, 1, 1, self.out_channels)
        if self.op in _USES_KERNEL:
            return (1, same_out(self.h, self.stride), same_out(self.w, self.stride), self.out_channels)
        return (1, self.h, self.w, self.out_channels)

    # ------------------------------------------------------------------ costs
    def params(self) -> int:
        """Weights + biases (batch-norm folded into the conv bias)."""
        k2, cin, cout = self.kernel * self.kernel, self.cin, self.cout
        if self.op == "conv2d":
            return k2 * cin * cout + cout
        if self.op == "dwconv2d":
            return k2 * cin + cin
        if self.op == "fc":
            return cin * cout + cout
        if self.op == "se":
            return _se_params(cin)
        if self.op == "mbconv":
            mid = self.mid_channels
            total = 0 if self.expand == 1.0 else cin * mid + mid
            total += k2 * mid + mid
            if self.se:
                total += _se_params(mid)
            return total + mid * cout + cout
        return 0

    def flops(self) -> int:
        """FLOPs under the module's convention (2 x MACs for conv/fc)."""
        op, k2, cin, cout = self.op, self.kernel * self.kernel, self.cin, self.cout
        _, ho, wo, co = self.output_shape()
        hw, ohw = self.h * self.w, ho * wo
        if op == "conv2d":
            return 2 * ohw * k2 * cin * cout
        if op == "dwconv2d":
            return 2 * ohw * k2 * cin
        if op == "fc":
            return 2 * cin * cout
        if op in POOL_OPS:
            return ohw * co * k2
        if op == "global-avgpool":
            return hw * cin
        if op in ("add", "mul") or op in ACTIVATION_OPS:
            return hw * cin
        if op == "concat":
            return 0
        if op == "se":
            return _se_flops(self.h, self.w, cin)
        # mbconv
        mid = self.mid_channels
        total = 0 if self.expand == 1.0 else 2 * hw * cin * mid
        total += 2 * ohw * k2 * mid
        if self.se:
            total += _se_flops(ho, wo, mid)
        total += 2 * ohw * mid * cout
        if self.has_residual:
            total += ohw * cout
        return total

    def features(self) -> np.ndarray:
        """Fixed-length float64 vector in :data:`FEATURE_NAMES` order."""
        _, ho, wo, co = self.output_shape()
        in_elems = sum(int(np.prod(s)) for s in self.input_shapes())
        out_elems = ho * wo * co
        params = self.params()
        mid = self.mid_channels if self.op == "mbconv" else se_channels(self.cin) if self.op == "se" else 0
        shapes = self.input_shapes()
        values = [
            self.h,
            self.w,
            self.cin,
            co,
            shapes[1][3] if len(shapes) > 1 else 0,
            self.kernel,
            self.stride,
            self.expand,
            mid,
            float(self.se),
            float(self.bn),
            ho,
            wo,
            self.flops(),
            params,
            in_elems,
            out_elems,
            in_elems + out_elems + params,
            channel_alignment(self.cin),
            channel_alignment(co),
            *(float(self.act == a) for a in ACTIVATIONS),
            *(float(self.op == o) for o in OP_TYPES),
        ]
        return np.asarray(values, dtype=np.float64)


def _se_params(c: int) -> int:
    r = se_channels(c)
    return c * r + r + r * c + c


def _se_flops(h: int, w: int, c: int) -> int:
    r = se_channels(c)
    # pool + reduce + relu + expand + hsigmoid + gate multiply
    return h * w * c + 2 * c * r + r + 2 * r * c + c + h * w * c


def spec_from_any(entry: Any) -> KernelSpec:
    """A spec from a KernelSpec, a key string or a dict."""
    if isinstance(entry, KernelSpec):
        return entry
    if isinstance(entry, str):
        return KernelSpec.from_key(entry)
    return KernelSpec.from_dict(entry)


def load_specs(path: str | Path) -> list[KernelSpec]:
    """Read a YAML or JSON list of spec dicts or key strings.

    BadInput names the file and the entry at fault; nothing is returned on error.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read spec file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {first}") from None
    if isinstance(data, dict) and set(data) == {"kernels"}:
        data = data["kernels"]
    if not isinstance(data, list) or not data:
        raise BadInput(f"{p}: expected a non-empty list of kernel specs (dicts or key strings)")
    specs = []
    for i, entry in enumerate(data):
        try:
            specs.append(spec_from_any(entry))
        except BadInput as exc:
            raise BadInput(f"{p}: entry {i}: {exc}") from None
        except TypeError as exc:
            raise BadInput(f"{p}: entry {i}: {exc}") from None
    return specs


def dedupe(specs: Iterable[KernelSpec]) -> list[KernelSpec]:
    """Drop repeated kernels (same key), keeping the first occurrence's order."""
    seen: set[str] = set()
    out = []
    for s in specs:
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out
