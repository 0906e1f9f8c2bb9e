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

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


def _pin(threads: int) -> tuple[dict[str, Any], Callable[[], None]]:
    """Pin the calling thread (and the runtime threads it creates later) to ``threads`` cores.

    The last ``threads`` cores this process may use are chosen (cpu0 takes most
    interrupts on Linux); with no spare core there is nothing to choose and the
    record says so.
    """
    if not hasattr(os, "sched_setaffinity"):
        return {"pinned": False, "note": "not controlled: this platform has no sched_setaffinity"}, lambda: None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) <= threads:
        return ({"pinned": False, "allowed_cpus": allowed,
                 "note": f"not controlled: {len(allowed)} CPU(s) allowed for {threads} thread(s), none to spare"},
                lambda: None)
    cpus = allowed[-threads:]
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        return {"pinned": False, "note": f"not controlled: sched_setaffinity refused ({exc.strerror or exc})"}, lambda: None

    def restore() -> None:
        try:
            os.sched_setaffinity(0, allowed)
        except OSError:
            pass

    return {"pinned": True, "cpus": cpus, "method": "sched_setaffinity"}, restore


def _governor(root: str | Path, cpus: list[int] | None, want: str | None) -> tuple[dict[str, Any], Callable[[], None]]:
    """Read (and with ``want``, try to set) the cpufreq governor of ``cpus`` (all CPUs when None)."""
    dirs = [d for d in cpu_dirs(root) if cpus is None or int(d.name[3:]) in cpus]
    read = {d.name: g for d in dirs if (g := read_text(d / "cpufreq" / "scaling_governor"))}
    if not read:
        return {"controlled": False, "note": "not controlled: no cpufreq governor in sysfs (scaling_governor missing)"}, lambda: None
    record: dict[str, Any] = {"read": read}
    if want is None:
        record.update(controlled=False, note="not controlled: fixing the governor was not asked")
        return record, lambda: None
    changed: list[tuple[Path, str]] = []

    def restore() -> None:
        for path, old in reversed(changed):
            try:
                path.write_text(old)
            except OSError:
                pass

    for d in dirs:
        name = d.name
        if name not in read:
            continue
        avail = (read_text(d / "cpufreq" / "scaling_available_governors") or "").split()
        if avail and want not in avail:
            restore()
            record.update(controlled=False, note=f"not controlled: {name} offers no {want!r} governor ({' '.join(avail)})")
            return record, lambda: None
        if read[name] == want:
            continue
        path = d / "cpufreq" / "scaling_governor"
        try:
            path.write_text(want)
        except OSError as exc:
            restore()
            record.update(controlled=False,
                          note=f"not controlled: the device refused setting {want!r} on {name} ({exc.strerror or exc})")
            return record, lambda: None
        changed.append((path, read[name]))
    record.update(controlled=True, set=want, changed=[p.parent.parent.name for p, _ in changed])
    return record, restore


def _max_temp(root: str | Path) -> tuple[float | None, str | None]:
    best: tuple[float | None, str | None] = (None, None)
    for name, zone in thermal_zones(root).items():
        t = zone.get("temp_c")
        if t is not None and (best[0] is None or t > best[0]):
            best = (t, zone.get("type", name))
    return best


def _cool(root: str | Path, max_temp_c: float | None, max_wait_s: float, poll_s: float,
          sleep: Callable[[float], None]) -> dict[str, Any]:
    temp, zone = _max_temp(root)
    if temp is None:
        return {"controlled": False, "note": "not controlled: no thermal sensor found"}
    if max_temp_c is None:
        return {"controlled": False, "max_temp_c": temp, "zone": zone, "note": "not controlled: no cool-down threshold set"}
    waited = 0.0
    while temp is not None and temp > max_temp_c and waited < max_wait_s:
        sleep(poll_s)
        waited += poll_s
        temp, zone = _max_temp(root)
    record = {"controlled": True, "threshold_c": max_temp_c, "waited_s": round(waited, 3), "max_temp_c": temp, "zone": zone}
    if temp is not None and temp > max_temp_c:
        record.update(controlled=False, note=f"not controlled: still {temp:g} C after {waited:g} s of cool-down")
    return record


@contextmanager
def defined_state(
    root: str | Path = "/",
    threads: int = 1,
    pin: bool = True,
    governor: str | None = "performance",
    max_temp_c: float | None = None,
    max_wait_s: float = 120.0,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Put the machine in a defined state for a measurement, where it allows it, and say what held.

    Pins the calling thread to ``threads`` cores, sets the cpufreq governor of
    those cores to ``governor`` where sysfs lets us (restored on exit), and
    waits while a thermal zone is above ``max_temp_c``. Yields the record kept
    in each row's environment (``control``): for ``affinity``, ``governor`` and
    ``temperature``, what was in force, or ``"not controlled: <why>"``. A
    missing sensor or a refused write is recorded, never papered over.
    """
    restores: list[Callable[[], None]] = []
    try:
        if pin:
            affinity, undo = _pin(max(1, threads))
            restores.append(undo)
        else:
            affinity = {"pinned": False, "note": "not controlled: pinning was not asked"}
        gov, undo = _governor(root, affinity.get("cpus"), governor)
        restores.append(undo)
        temperature = _cool(root, max_temp_c, max_wait_s, poll_s, sleep)
        yield {"affinity": affinity, "governor": gov, "temperature": temperature}
    finally:
        for undo in reversed(restores):
            undo()
