"""Hardware-aware architecture search against a named device.

The spaces it searches, and the :class:`SearchSpace` contract they follow, are a
vocabulary the predictors share: they live below both, in :mod:`edgelat.profiler.spaces`.

- :mod:`~edgelat.search.objective`: the accuracy side (proxy, CSV, function);
- :mod:`~edgelat.search.evaluate`: batch metrics and constraints;
- :mod:`~edgelat.search.evolution` / :mod:`~edgelat.search.pareto`: the strategies;
- :mod:`~edgelat.search.sources`, :mod:`~edgelat.search.validate`,
  :mod:`~edgelat.search.job`, :mod:`~edgelat.search.report`: device figures,
  on-device validation, the end-to-end job and its outputs.
"""

import sys as _sys
import types as _types


class _SearchPackage(_types.ModuleType):
    """``edgelat.search`` is this package and, called, the API's search: once the package is
    imported the name ``edgelat.search`` is the package, so the package itself answers
    ``edgelat.search("ofa-mbv3", device=..., max_latency_ms=...)`` (see :func:`edgelat.api.search`)."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from edgelat.api import search

        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _SearchPackage
