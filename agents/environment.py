"""What the machine was doing around a measurement: clocks, governors, temperatures, load.

A latency is only comparable with the conditions it was taken under (a phone
at 45 degrees C throttles; a governor of "powersave" halves a clock). The local
backend takes :func:`snapshot` before and after every measurement. Every value
comes from a file the kernel exposes; a file that is missing or unreadable is
an absent key, never a guessed value. ``root`` lets tests point at a fake tree.

The small ``read_*`` helpers are shared with the energy meters and
:mod:`edgelat.agents.facts`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

_NUM = re.compile(r"(\d+)$")


def under(root: str | Path, path: str) -> Path:
    """``path`` (absolute, e.g. "/proc/loadavg") inside ``root``."""
    return Path(root) / path.lstrip("/")


def read_text(path: Path) -> str | None:
    """The stripped text of a sysfs/procfs file, or None if missing/unreadable."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(path: Path) -> int | None:
    """An integer file (sysfs units are the caller's business), or None."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def numbered(paths: list[Path]) -> list[Path]:
    """Sort ``cpu10`` after ``cpu9`` (glob order is lexicographic)."""
    def key(p: Path) -> tuple[int, str]:
        m = _NUM.search(p.name)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted(paths, key=key)


def cpu_dirs(root: str | Path) -> list[Path]:
    """``/sys/devices/system/cpu/cpuN`` directories, in numeric order."""
    base = under(root, "/sys/devices/system/cpu")
    return numbered([p for p in base.glob("cpu[0-9]*") if re.fullmatch(r"cpu\d+", p.name)])


def cpu_state(root: str | Path) -> dict[str, dict[str, Any]]:
    """Per CPU: current frequency (kHz), governor, online flag, where the kernel says."""
    cpus: dict[str, dict[str, Any]] = {}
    for d in cpu_dirs(root):
        entry: dict[str, Any] = {}
        cur = read_int(d / "cpufreq" / "scaling_cur_freq")
        if cur is not None:
            entry["cur_khz"] = cur
        gov = read_text(d / "cpufreq" / "scaling_governor")
        if gov:
            entry["governor"] = gov
        online = read_int(d / "online")
        if online is not None:
            entry["online"] = bool(online)
        cpus[d.name] = entry
    return cpus


def thermal_zones(root: str | Path) -> dict[str, dict[str, Any]]:
    """Per thermal zone: type and temperature in degrees C (the file holds millidegrees)."""
    base = under(root, "/sys/class/thermal")
    zones: dict[str, dict[str, Any]] = {}
    for d in numbered(list(base.glob("thermal_zone[0-9]*"))):
        entry: dict[str, Any] = {}
        kind = read_text(d / "type")
        if kind:
            entry["type"] = kind
        temp = read_int(d / "temp")
        if temp is not None:
            entry["temp_c"] = temp / 1000.0
        if entry:
            zones[d.name] = entry
    return zones


def load_average(root: str | Path) -> list[float] | None:
    """1, 5 and 15 minute load averages from ``/proc/loadavg``."""
    text = read_text(under(root, "/proc/loadavg"))
    if text is None:
        return None
    try:
        return [float(x) for x in text.split()[:3]]
    except ValueError:
        return None


def snapshot(root: str | Path = "/") -> dict[str, Any]:
    """The machine's state now: ``timestamp`` (Unix s), ``cpus``, ``thermal``, ``loadavg``.

    Sections with nothing readable are left out entirely.
    """
    snap: dict[str, Any] = {"timestamp": time.time()}
    cpus = cpu_state(root)
    if cpus:
        snap["cpus"] = cpus
    zones = thermal_zones(root)
    if zones:
        snap["thermal"] = zones
    load = load_average(root)
    if load is not None:
        snap["loadavg"] = load
    return snap
