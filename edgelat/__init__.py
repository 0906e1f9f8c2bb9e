"""edgelat: measure how fast neural networks really run on real devices.

The package is split by role: ``edgelat.profiler`` (host side:
operator catalog, model builders, profiling jobs), ``edgelat.agents`` (device
side: gRPC agent, runtimes, ADB bridge, parsers, energy meters),
``edgelat.devices`` (registry), ``edgelat.lut`` (the SQLite tables),
``edgelat.predictors`` and ``edgelat.search``; ``edgelat.api`` is the Python API,
whose names are also reachable here (``edgelat.device("local").profile_model(...)``).
"""

__version__ = "0.1.0"

# The Python API (see edgelat.api), loaded on first use: an agent-only install on a board
# imports this package without the host-side libraries the API needs.
_API = ("Device", "Predictor", "device", "list_devices", "predictor", "search", "export",
        "Latency", "ModelProfile", "Prediction", "SearchResults")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from edgelat import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgelat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
