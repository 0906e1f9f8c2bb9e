"""Linux RAPL package energy from the powercap sysfs interface.

``/sys/class/powercap/intel-rapl:N/energy_uj`` is a microjoule counter per CPU
package (also on AMD Zen, under the same name) that wraps at
``max_energy_range_uj``. Only top-level package domains are summed: the
subdomains ``intel-rapl:N:M`` (core, uncore, dram) are parts of a package, and
"psys" covers the whole platform including the packages, so adding either
would count energy twice. Since Linux 5.10 ``energy_uj`` is readable by root
only, so "permission denied" is the common reason for no number.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgelat.agents.energy.base import EnergyMeter
from edgelat.agents.environment import numbered, read_text, under

_TOP_LEVEL = re.compile(r"intel-rapl:\d+")


class RaplMeter(EnergyMeter):
    name = "rapl"
    scope = "cpu packages"
    # The counter updates about every millisecond; 10 updates keep the error < 10%.
    min_interval_s = 0.010

    def __init__(self, root: str | Path = "/") -> None:
        super().__init__()
        self.root = root
        self.domains = self._find()
        self._start: dict[Path, int] | None = None

    def _find(self) -> list[Path]:
        base = under(self.root, "/sys/class/powercap")
        found = []
        for d in numbered([p for p in base.glob("intel-rapl:*") if _TOP_LEVEL.fullmatch(p.name)]):
            name = read_text(d / "name") or ""
            if name.startswith("package"):
                found.append(d)
        return found

    @property
    def sensor_present(self) -> bool:
        return bool(self.domains)

    def _read(self, domain: Path, file: str) -> int:
        """One counter file; raises OSError/ValueError with the reason."""
        text = (domain / file).read_text().strip()
        return int(text)  # ValueError on an empty or garbled file

    def _read_all(self) -> dict[Path, int] | None:
        values = {}
        for d in self.domains:
            try:
                values[d] = self._read(d, "energy_uj")
            except PermissionError:
                self.note = (
                    f"RAPL {d.name}/energy_uj is not readable (permission denied); run the agent as "
                    f"root or make energy_uj readable (chmod o+r)"
                )
                return None
            except (OSError, ValueError) as exc:
                self.note = f"RAPL {d.name}/energy_uj unreadable: {exc}"
                return None
        return values

    def available(self) -> bool:
        if not self.domains:
            self.note = "no RAPL package domain under /sys/class/powercap"
            return False
        return self._read_all() is not None

    def _begin(self) -> None:
        if not self.domains:
            self.note = "no RAPL package domain under /sys/class/powercap"
            self._start = None
            return
        self._start = self._read_all()

    def _end(self) -> float | None:
        if self._start is None:
            return None
        end = self._read_all()
        if end is None:
            return None
        total_uj = 0
        for d, e0 in self._start.items():
            delta = end[d] - e0
            if delta < 0:  # the counter wrapped once during the interval
                try:
                    delta += self._read(d, "max_energy_range_uj")
                except (OSError, ValueError):
                    self.note = f"RAPL {d.name} counter wrapped and max_energy_range_uj is unreadable"
                    return None
            total_uj += delta
        return total_uj / 1e6
