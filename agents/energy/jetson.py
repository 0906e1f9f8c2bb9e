"""NVIDIA Jetson board power from its INA3221 monitors, integrated to energy.

Jetsons expose instantaneous power, not an energy counter, in one of two
layouts (both read with the kernel's own file names and units):

* L4T <= 32 (TX2, Nano, Xavier): ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/``
  with ``rail_name_N`` and ``in_power{N}_input`` in milliwatts.
* L4T >= 34 (Orin): hwmon ``/sys/class/hwmon/hwmon*/`` with ``name`` == "ina3221",
  ``in{N}_label``, ``in{N}_input`` (bus millivolts), ``curr{N}_input`` (milliamps).

A background thread samples the rails during the interval and the samples are
integrated with the trapezoid rule. When the board has an input rail
(``VDD_IN``, ``POM_5V_IN``: the whole module) only that one is counted,
otherwise every rail is summed; the other rails are parts of the input.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

from edgelat.agents.energy.base import EnergyMeter, SamplingThread, integrate_energy_j
from edgelat.agents.environment import numbered, read_text, under

_INPUT_RAIL = re.compile(r"(^|_)IN$|^VIN", re.IGNORECASE)
_RAIL_NAME = re.compile(r"rail_name_(\d+)$")
_HWMON_LABEL = re.compile(r"in(\d+)_label$")


class Rail:
    """One monitored power rail: a label and a function reading milliwatts."""

    def __init__(self, label: str, read_mw: Callable[[], float]) -> None:
        self.label = label
        self.read_mw = read_mw


def _int_file(path: Path) -> int:
    return int(path.read_text().strip())  # ValueError on an empty or garbled file


def find_rails(root: str | Path = "/") -> list[Rail]:
    """Every INA3221 rail in either layout (unconnected "NC" channels skipped)."""
    rails: list[Rail] = []
    legacy = under(root, "/sys/bus/i2c/drivers/ina3221x")
    for dev in sorted(legacy.glob("*/iio:device*")):
        for name_file in sorted(dev.glob("rail_name_*")):
            m = _RAIL_NAME.search(name_file.name)
            label = read_text(name_file)
            power = dev / f"in_power{m.group(1)}_input" if m else None
            if not m or not label or label.upper() == "NC" or not power.exists():
                continue
            rails.append(Rail(label, lambda p=power: float(_int_file(p))))
    for hw in numbered(list(under(root, "/sys/class/hwmon").glob("hwmon*"))):
        if read_text(hw / "name") != "ina3221":
            continue
        for label_file in sorted(hw.glob("in*_label")):
            m = _HWMON_LABEL.search(label_file.name)
            label = read_text(label_file)
            if not m or not label or label.upper() == "NC":
                continue
            volt, curr = hw / f"in{m.group(1)}_input", hw / f"curr{m.group(1)}_input"
            if not (volt.exists() and curr.exists()):
                continue  # shunt-sum and shunt-voltage channels have no current
            rails.append(Rail(label, lambda v=volt, c=curr: _int_file(v) * _int_file(c) / 1000.0))
    return rails


class JetsonMeter(EnergyMeter):
    name = "jetson-ina3221"

    def __init__(self, root: str | Path = "/", period_s: float = 0.005, min_samples: int = 5) -> None:
        super().__init__()
        self.root = root
        self.period_s = period_s
        self.min_samples = min_samples
        all_rails = find_rails(root)
        inputs = [r for r in all_rails if _INPUT_RAIL.search(r.label)]
        self.rails = inputs or all_rails
        self.scope = "board " + "+".join(r.label for r in self.rails) if self.rails else ""
        #: (perf_counter s, total mW) of the last interval, kept for inspection
        self.samples: list[tuple[float, float]] = []
        self._error = ""
        self._sampler = SamplingThread(self._sample, period_s, "edgelat-jetson-power")

    @property
    def sensor_present(self) -> bool:
        return bool(self.rails)

    def available(self) -> bool:
        if not self.rails:
            self.note = "no INA3221 power rails (ina3221x iio or ina3221 hwmon) found"
            return False
        try:
            self._power_mw()
        except (OSError, ValueError) as exc:
            self.note = f"INA3221 rails unreadable: {exc}"
            return False
        return True

    def _power_mw(self) -> float:
        return sum(r.read_mw() for r in self.rails)

    def _sample(self) -> None:
        try:
            self.samples.append((time.perf_counter(), self._power_mw()))
        except (OSError, ValueError) as exc:
            self._error = f"INA3221 read failed during the interval: {exc}"

    def _begin(self) -> None:
        self.samples = []
        self._error = "" if self.rails else "no INA3221 power rails found"
        if not self.rails:
            return
        self._sample()
        self._sampler.start()

    def _end(self) -> float | None:
        if self._sampler.stop():
            self._sample()
        if self._error:
            self.note = self._error
            return None
        if len(self.samples) < self.min_samples:
            self.note = (
                f"only {len(self.samples)} power samples over the interval (need {self.min_samples}); "
                f"interval too short for INA3221 sampling"
            )
            return None
        return integrate_energy_j([(t, mw / 1000.0) for t, mw in self.samples])

    def close(self) -> None:
        self._sampler.stop()
