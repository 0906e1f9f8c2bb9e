"""User-defined stage spaces from a YAML file.

A YAML space is a :class:`~edgelat.profiler.spaces.mobile.MobileStageSpace`:
a stem conv, an optional fixed first block, stages of inverted-residual
(``mbconv``) blocks, and a head. Format (an example ships as
``profiler/spaces/data/example_space.yaml``)::

    name: tiny-mbv3              # required; letters, digits, '-', '_', '.'
    resolutions: [128, 160, 192]  # required: input sizes to choose from
    in_channels: 3                # optional (default 3)
    stem: {width: 16, act: hswish, stride: 2}     # required; stride optional (2)
    first_block: {width: 16, act: relu}           # optional fixed mbconv k3 e1
    stages:                       # required, at least one
      - widths: [24, 32]          # output channel choices (one value: fixed width)
        depths: [1, 2, 3]         # number-of-blocks choices
        kernels: [3, 5]           # depthwise kernel choices (odd)
        expands: [3, 6]           # expand-ratio choices
        stride: 2                 # stride of the stage's first block (default 1)
        se: false                 # squeeze-excite in every block (default false)
        act: relu                 # relu | relu6 | hswish | swish | sigmoid | hsigmoid
    head:                         # optional (default: [gap, fc 1000])
      - {op: conv, cout: 960, act: hswish}   # 1x1 conv + bn
      - {op: gap}                             # global average pool
      - {op: fc, cout: 1000}                  # fully connected (after gap)

Architecture strings: ``{"ks": [...], "e": [...], "d": [...], "w": [...], "r": 160}``
(``w`` only when some stage has several widths), one ``ks``/``e`` entry per
block position up to each stage's largest depth.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgelat.errors import BadInput
from edgelat.profiler.ops import ACTIVATIONS
from edgelat.profiler.spaces.mobile import HeadLayer, MobileStageSpace, Stage

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_STAGE_KEYS = {"widths", "depths", "kernels", "expands", "stride", "se", "act"}
_TOP_KEYS = {"name", "resolutions", "in_channels", "stem", "first_block", "stages", "head"}


def example_path() -> Path:
    """The example YAML space shipped with the package."""
    return Path(__file__).resolve().parent / "data" / "example_space.yaml"


def _ints(where: str, value: Any, positive: bool = True, odd: bool = False) -> tuple[int, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: expected a non-empty list of integers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
            raise BadInput(f"{where}: {v!r} is not an integer")
        v = int(v)
        if positive and v <= 0:
            raise BadInput(f"{where}: {v} must be positive")
        if odd and v % 2 == 0:
            raise BadInput(f"{where}: kernel {v} must be odd")
        out.append(v)
    if len(set(out)) != len(out):
        raise BadInput(f"{where}: duplicate values in {out}")
    return tuple(out)


def _act(where: str, value: Any) -> str:
    if value not in ACTIVATIONS or value == "none":
        raise BadInput(f"{where}: unknown activation {value!r} (use one of {', '.join(ACTIVATIONS[1:])})")
    return str(value)


def _int(where: str, value: Any) -> int:
    if isinstance(value, list):
        raise BadInput(f"{where}: expected one integer, got a list")
    return _ints(where, value)[0]


def parse_space(data: Any, source: str) -> MobileStageSpace:
    """Build a space from the parsed YAML mapping; BadInput naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise BadInput(f"{source}: a space file is a mapping with name, resolutions, stem, stages")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise BadInput(f"{source}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("name", "resolutions", "stem", "stages"):
        if key not in data:
            raise BadInput(f"{source}: missing '{key}'")
    name = str(data["name"])
    if not _NAME.match(name):
        raise BadInput(f"{source}: invalid name {name!r} (letters, digits, '.', '_', '-')")
    resolutions = _ints(f"{source}: resolutions", data["resolutions"])
    stem = data["stem"]
    if not isinstance(stem, dict) or "width" not in stem:
        raise BadInput(f"{source}: stem must be a mapping with width (and act, stride)")
    first = data.get("first_block")
    first_block = None
    if first is not None:
        if not isinstance(first, dict) or "width" not in first:
            raise BadInput(f"{source}: first_block must be a mapping with width and act")
        first_block = (_int(f"{source}: first_block.width", first["width"]),
                       _act(f"{source}: first_block.act", first.get("act", "relu")))
    if not isinstance(data["stages"], list) or not data["stages"]:
        raise BadInput(f"{source}: stages must be a non-empty list")
    stages = []
    for i, st in enumerate(data["stages"]):
        where = f"{source}: stages[{i}]"
        if not isinstance(st, dict):
            raise BadInput(f"{where}: expected a mapping")
        bad = sorted(set(st) - _STAGE_KEYS)
        if bad:
            raise BadInput(f"{where}: unknown key(s) {', '.join(bad)} (valid: {', '.join(sorted(_STAGE_KEYS))})")
        for key in ("widths", "depths", "kernels", "expands"):
            if key not in st:
                raise BadInput(f"{where}: missing '{key}'")
        expands = st["expands"] if isinstance(st["expands"], list) else [st["expands"]]
        if not expands or any(isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0 for e in expands):
            raise BadInput(f"{where}.expands: expected a non-empty list of positive numbers")
        se = st.get("se", False)
        if not isinstance(se, bool):
            raise BadInput(f"{where}.se: expected true or false, got {se!r}")
        stride = _int(f"{where}.stride", st.get("stride", 1))
        if stride not in (1, 2):
            raise BadInput(f"{where}.stride: {stride} (use 1 or 2)")
        stages.append(Stage(
            widths=_ints(f"{where}.widths", st["widths"]),
            depths=_ints(f"{where}.depths", st["depths"]),
            kernels=_ints(f"{where}.kernels", st["kernels"], odd=True),
            expands=tuple(expands),
            stride=stride,
            se=se,
            act=_act(f"{where}.act", st.get("act", "relu")),
        ))
    head_data = data.get("head", [{"op": "gap"}, {"op": "fc", "cout": 1000}])
    if not isinstance(head_data, list) or not head_data:
        raise BadInput(f"{source}: head must be a non-empty list of layers")
    head, pooled = [], False
    for i, layer in enumerate(head_data):
        where = f"{source}: head[{i}]"
        if not isinstance(layer, dict) or layer.get("op") not in ("conv", "gap", "fc"):
            raise BadInput(f"{where}: expected {{op: conv|gap|fc, ...}}")
        op = layer["op"]
        if op == "gap":
            if pooled:
                raise BadInput(f"{where}: the head pools only once")
            pooled = True
            head.append(HeadLayer("gap"))
            continue
        if op == "conv" and pooled:
            raise BadInput(f"{where}: a conv after the pool; use fc")
        if op == "fc" and not pooled:
            raise BadInput(f"{where}: fc needs a gap layer before it")
        act = layer.get("act", "none")
        if act != "none":
            act = _act(f"{where}.act", act)
        if "cout" not in layer:
            raise BadInput(f"{where}: missing 'cout'")
        head.append(HeadLayer(op, _int(f"{where}.cout", layer["cout"]), act))
    return MobileStageSpace(
        name=name,
        stages=stages,
        resolutions=resolutions,
        stem_width=_int(f"{source}: stem.width", stem["width"]),
        stem_act=_act(f"{source}: stem.act", stem.get("act", "relu")),
        stem_stride=_int(f"{source}: stem.stride", stem.get("stride", 2)),
        head=head,
        first_block=first_block,
        in_channels=_int(f"{source}: in_channels", data.get("in_channels", 3)),
    )


def load_yaml_space(path: Path) -> MobileStageSpace:
    """Read and validate a YAML space file."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"cannot read space file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise BadInput(f"{path}: not valid YAML: {first}") from None
    space = parse_space(data, str(path))
    # build the vocabulary now so an impossible shape fails here, with the file named
    try:
        space.kernel_vocabulary()
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None
    return space
