"""edgelat: measure how fast neural networks really run on real devices.

The package is split by role (see DESIGN.md): ``edgelat.profiler`` (host side:
operator catalog, model builders, profiling jobs), ``edgelat.agents`` (device
side: gRPC agent, runtimes, ADB bridge, parsers, energy meters),
``edgelat.devices`` (registry), ``edgelat.lut`` (the SQLite tables),
``edgelat.predictors`` and ``edgelat.search``.
"""

__version__ = "0.1.0"
