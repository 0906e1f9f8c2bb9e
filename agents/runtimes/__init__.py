"""In-process inference runtimes (onnxruntime, LiteRT) behind one small ABC."""

from edgelat.agents.runtimes.base import Runtime, Session
from edgelat.agents.runtimes.registry import available_runtimes, get_runtime, runtime_providers

__all__ = ["Runtime", "Session", "available_runtimes", "get_runtime", "runtime_providers"]
