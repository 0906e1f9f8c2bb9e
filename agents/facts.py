"""Facts about this machine that make its measurements interpretable.

Collected once when a device is registered or described: what hardware, what
software, which runtimes and providers can run, which energy sensors can be
read. Values come from the kernel's files under ``root`` (so tests can use a
fake tree) and from the Python runtime; a value that cannot be read is left
out rather than guessed.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from edgelat import __version__
from edgelat.agents.energy.detect import GPU_PROVIDERS, sensors_found
from edgelat.agents.environment import cpu_dirs, read_int, read_text, under
from edgelat.agents.runtimes.registry import available_runtimes, runtime_providers

# /proc/cpuinfo keys that name the CPU, most specific first (x86, then ARM boards)
_CPU_MODEL_KEYS = ("model name", "Hardware", "Model", "cpu model", "Processor")


def cpu_model(root: str | Path = "/") -> str | None:
    """The CPU's name from ``/proc/cpuinfo``."""
    text = read_text(under(root, "/proc/cpuinfo"))
    if not text:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields and value.strip():
            fields[key.strip()] = value.strip()
    for key in _CPU_MODEL_KEYS:
        if key in fields:
            return fields[key]
    return None


def memory_total_bytes(root: str | Path = "/") -> int | None:
    """``MemTotal`` from ``/proc/meminfo`` (given in kB) in bytes."""
    text = read_text(under(root, "/proc/meminfo"))
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def cpu_frequencies(root: str | Path = "/") -> dict[str, dict[str, int]]:
    """Per CPU: ``min_khz``/``max_khz`` from ``cpufreq/cpuinfo_{min,max}_freq``."""
    freqs: dict[str, dict[str, int]] = {}
    for d in cpu_dirs(root):
        entry = {}
        for key, file in (("min_khz", "cpuinfo_min_freq"), ("max_khz", "cpuinfo_max_freq")):
            value = read_int(d / "cpufreq" / file)
            if value is not None:
                entry[key] = value
        if entry:
            freqs[d.name] = entry
    return freqs


def os_release(root: str | Path = "/") -> str | None:
    """``PRETTY_NAME`` from ``/etc/os-release``."""
    for line in (read_text(under(root, "/etc/os-release")) or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def host_facts(root: str | Path = "/", nvml: object = None) -> dict[str, Any]:
    """Everything :meth:`Backend.describe` reports for a machine running the agent.

    ``kind`` is "gpu-host" when a CUDA/TensorRT provider or an NVML GPU is
    present, "board" when the device tree names a board model (Raspberry Pi,
    Jetson without GPU providers...), else "host".
    """
    runtimes = available_runtimes()
    providers = runtime_providers()
    sensors = sensors_found(root, nvml=nvml)
    gpu = "nvml" in sensors or any(p in GPU_PROVIDERS for ps in providers.values() for p in ps)
    board_model = read_text(under(root, "/proc/device-tree/model"))
    if board_model:
        board_model = board_model.rstrip("\x00")
    kind = "gpu-host" if gpu else ("board" if board_model else "host")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    facts: dict[str, Any] = {
        "kind": kind,
        "arch": platform.machine(),
        "os": platform.system(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(root),
        "cores": len(cpu_dirs(root)) or os.cpu_count(),
        "cores_usable": usable,
        "cpu_freq_khz": cpu_frequencies(root),
        "memory_total_bytes": memory_total_bytes(root),
        "runtimes": runtimes,
        "providers": providers,
        "energy_sensors": sensors,
        "python": platform.python_version(),
        "agent_version": __version__,
        "hostname": socket.gethostname(),
    }
    distro = os_release(root)
    if distro:
        facts["distro"] = distro
    if board_model:
        facts["board_model"] = board_model
    return {k: v for k, v in facts.items() if v is not None}
