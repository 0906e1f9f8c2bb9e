"""The search spaces by name, plus user-defined spaces from YAML files.

The spaces and their contract (:mod:`~edgelat.profiler.spaces.space`) are a vocabulary that
the predictors and the search share, so they live below both (DESIGN.md, "Layers").

``get_space("ofa-mbv3")`` returns a (cached) built-in space; a path ending in
``.yaml``/``.yml`` loads a user-defined stage space (format in
:mod:`edgelat.profiler.spaces.yaml_space`).
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path

from edgelat.errors import BadInput
from edgelat.profiler.spaces.space import SearchSpace

# name -> (module, class); imported on first use so the CLI starts fast
BUILTIN = {
    "ofa-mbv3": ("edgelat.profiler.spaces.ofa_mbv3", "OFAMobileNetV3"),
    "proxyless": ("edgelat.profiler.spaces.proxyless", "ProxylessNAS"),
    "fbnet": ("edgelat.profiler.spaces.fbnet", "FBNetSpace"),
    "nasbench201": ("edgelat.profiler.spaces.nasbench201", "NASBench201"),
}
SPACE_NAMES = tuple(BUILTIN)


@lru_cache(maxsize=None)
def _builtin(name: str) -> SearchSpace:
    module, cls = BUILTIN[name]
    return getattr(importlib.import_module(module), cls)()


def get_space(name_or_yaml_path: str) -> SearchSpace:
    """A space by name, or a YAML space by file path; BadInput listing the valid names."""
    name = (name_or_yaml_path or "").strip()
    if name in BUILTIN:
        return _builtin(name)
    if name.lower().endswith((".yaml", ".yml")):
        from edgelat.profiler.spaces.yaml_space import load_yaml_space

        return load_yaml_space(Path(name))
    raise BadInput(
        f"unknown search space {name!r} (valid: {', '.join(SPACE_NAMES)}, or a path to a *.yaml space file)"
    )
