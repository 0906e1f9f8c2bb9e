"""Energy from the battery fuel gauge: Android (and Linux) ``power_supply`` sysfs.

``/sys/class/power_supply/<battery>/`` has ``current_now``, ``voltage_now``,
``status`` and ``present``. Vendors disagree on units and sign:

* current in µA (the kernel ABI; most devices) or in mA (some Samsung and
  MediaTek kernels); voltage in µV (most) or mV;
* discharge current negative on some devices, positive on others.

So units are read from the magnitudes (a battery is 2.5-20 V; a phone running
inference draws 0.05-7.5 A) unless the caller pins them, and the sign is not
trusted at all: the ``status`` file says whether the battery is discharging,
and only then is ``|I| * V`` the power the device draws. While charging, full
or "Not charging" (on external power), the battery current says nothing about
inference energy, so no number is produced and the note says why. Some Linux
batteries have no ``current_now`` but a ``power_now`` in µW; that is used then.

Standard library only: the ADB bridge reads the same files with ``adb shell
cat`` through the ``read_file`` callable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from edgelat.agents.energy.base import EnergyMeter, SamplingThread, integrate_energy_j

__all__ = ["BatterySample", "read_battery_sample", "power_w", "integrate_energy_j", "BatteryMeter",
           "DEFAULT_BASE", "CHARGING_NOTE"]

DEFAULT_BASE = "/sys/class/power_supply/battery"
CHARGING_NOTE = "device is charging: battery current does not measure inference energy"

# Plausibility bounds that decide the units when a device does not say.
_MICROVOLT_MIN = 100_000  # 0.1 V in µV; no battery reads below this in µV, none above in mV
_MILLIAMP_MAX = 20_000  # |current| >= 20000 is µA (20 mA); below may be mA
_MAX_DEVICE_POWER_W = 30.0  # a reading that would exceed this in mA must be µA


@dataclass(frozen=True)
class BatterySample:
    """One reading of the battery files, converted to SI units.

    ``current_a`` keeps the device's own sign; :func:`power_w` decides with
    ``status``. ``errors`` lists the files that could not be read and why.
    """

    t: float  # clock seconds (monotonic) at the middle of the reads
    status: str | None
    present: bool | None
    current_a: float | None
    voltage_v: float | None
    power_now_w: float | None  # from power_now (µW) where current_now is absent
    current_unit: str | None  # "uA" | "mA"
    voltage_unit: str | None  # "uV" | "mV"
    errors: tuple[str, ...] = ()


def _voltage(raw: int, unit: str | None) -> tuple[float | None, str | None]:
    if raw <= 0:
        return None, unit
    unit = unit or ("uV" if raw >= _MICROVOLT_MIN else "mV")
    return raw / (1e6 if unit == "uV" else 1e3), unit


def _current(raw: int, unit: str | None, voltage_v: float | None) -> tuple[float, str]:
    if unit is None:
        if abs(raw) >= _MILLIAMP_MAX:
            unit = "uA"
        else:
            # mA unless that would mean an impossible power draw (then a small µA reading).
            volts = voltage_v if voltage_v is not None else 4.0
            unit = "mA" if abs(raw) / 1e3 * volts <= _MAX_DEVICE_POWER_W else "uA"
    return raw / (1e6 if unit == "uA" else 1e3), unit


def read_battery_sample(
    read_file: Callable[[str], str],
    base: str = DEFAULT_BASE,
    *,
    current_unit: str | None = None,
    voltage_unit: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BatterySample:
    """Read ``status``, ``present``, ``current_now`` and ``voltage_now`` under ``base``.

    ``read_file(path)`` returns the file's text and raises when it cannot
    (missing file, permission, lost connection); such failures are recorded in
    ``errors`` and leave the value None, they never raise from here.
    ``current_unit``/``voltage_unit`` ("uA"/"mA", "uV"/"mV") pin the units of a
    device known to use them; otherwise they are decided from the magnitudes.
    """
    errors: list[str] = []

    def read(name: str) -> str | None:
        try:
            return read_file(f"{base.rstrip('/')}/{name}").strip()
        except Exception as exc:  # any reader failure is a missing value, with its reason
            errors.append(f"{name}: {' '.join(str(exc).split()) or type(exc).__name__}")
            return None

    def read_int(name: str) -> int | None:
        text = read(name)
        if text is None:
            return None
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            errors.append(f"{name}: not an integer ({text[:40]!r})")
            return None

    t0 = clock()
    status = read("status")
    present_raw = read_int("present")
    current_raw = read_int("current_now")
    voltage_raw = read_int("voltage_now")
    power_raw = read_int("power_now") if current_raw is None else None
    t1 = clock()

    voltage_v, v_unit = (None, voltage_unit)
    if voltage_raw is not None:
        voltage_v, v_unit = _voltage(voltage_raw, voltage_unit)
        if voltage_v is None:
            errors.append(f"voltage_now: implausible value {voltage_raw}")
    current_a, c_unit = (None, current_unit)
    if current_raw is not None:
        current_a, c_unit = _current(current_raw, current_unit, voltage_v)
    return BatterySample(
        t=(t0 + t1) / 2.0,
        status=status,
        present=None if present_raw is None else present_raw != 0,
        current_a=current_a,
        voltage_v=voltage_v,
        power_now_w=None if power_raw is None else abs(power_raw) / 1e6,
        current_unit=c_unit if current_raw is not None else None,
        voltage_unit=v_unit if voltage_v is not None else None,
        errors=tuple(errors),
    )


def power_w(sample: BatterySample) -> float | None:
    """Power drawn from the battery in W (>= 0), or None when it does not measure the device.

    Only a "Discharging" battery powers the device; the sign of ``current_now``
    differs between vendors, so its magnitude is used.
    """
    if sample.status != "Discharging" or sample.present is False:
        return None
    if sample.current_a is not None and sample.voltage_v is not None:
        return abs(sample.current_a) * sample.voltage_v
    return sample.power_now_w


def _local_read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


class BatteryMeter(EnergyMeter):
    """Samples the battery in a background thread between ``start()`` and ``stop()``.

    Fuel gauges refresh ``current_now`` every 0.25-1 s on most phones, so the
    default ``min_interval_s`` of 1 s refuses intervals too short to hold more
    than one gauge update. ``read_file`` must be callable from the sampling
    thread while the benchmark runs (over adb: its own stream, or a lock).
    After :meth:`stop`, ``samples_`` holds the raw readings and ``details`` the
    summary (units, sample count, mean power) for the environment record.
    """

    name = "battery"
    scope = "whole device (battery discharge)"

    def __init__(
        self,
        read_file: Callable[[str], str] = _local_read,
        base: str = DEFAULT_BASE,
        sample_period_s: float = 0.1,
        min_samples: int = 5,
        min_interval_s: float = 1.0,
        current_unit: str | None = None,
        voltage_unit: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.read_file = read_file
        self.base = base
        self.sample_period_s = sample_period_s
        self.min_samples = min_samples
        self.min_interval_s = min_interval_s
        self.current_unit = current_unit
        self.voltage_unit = voltage_unit
        self.clock = clock
        self.samples_: list[BatterySample] = []
        self.details: dict[str, object] = {}
        self.mean_power_w: float | None = None
        self._present: bool | None = None
        self._problem = ""
        self._sampler = SamplingThread(lambda: self.samples_.append(self._sample()), sample_period_s, "edgelat-battery")

    # -- sensor checks --------------------------------------------------------------------------

    def _sample(self) -> BatterySample:
        s = read_battery_sample(self.read_file, self.base, current_unit=self.current_unit,
                                voltage_unit=self.voltage_unit, clock=self.clock)
        # Pin the units the first readable sample showed, so later readings cannot flip them.
        if self.current_unit is None and s.current_unit is not None:
            self.current_unit = s.current_unit
        if self.voltage_unit is None and s.voltage_unit is not None:
            self.voltage_unit = s.voltage_unit
        return s

    def _sensor_problem(self, s: BatterySample) -> str:
        """Why this sample cannot measure energy at all ("" when the sensor is usable)."""
        where = self.base.rstrip("/")
        if s.present is False:
            return f"no battery present ({where}/present is 0)"
        if s.current_a is None and s.power_now_w is None:
            why = "; ".join(s.errors) or "no reading"
            return f"no battery current sensor at {where} ({why})"
        if s.current_a is not None and s.voltage_v is None:
            why = "; ".join(e for e in s.errors if e.startswith("voltage_now")) or "no reading"
            return f"no battery voltage reading at {where} ({why})"
        return ""

    @property
    def sensor_present(self) -> bool:
        if self._present is None:
            self.available()
        return bool(self._present)

    def available(self) -> bool:
        s = self._sample()
        problem = self._sensor_problem(s)
        self._present = not problem or s.present is True
        if problem:
            self.note = problem
            return False
        return True

    # -- the interval ---------------------------------------------------------------------------

    def _begin(self) -> None:
        self.samples_ = []
        self.details = {}
        self.mean_power_w = None
        first = self._sample()
        if self._sensor_problem(first) and first.present is not False:
            first = self._sample()  # one retry: a single failed adb read is not a missing sensor
        self.samples_.append(first)
        self._problem = self._sensor_problem(first)
        if self._problem:
            return  # nothing to sample; _end reports why
        self._sampler.start()

    def _end(self) -> float | None:
        self._sampler.stop()
        if self._problem:
            self.note = self._problem
            return None
        self.samples_.append(self._sample())
        samples = self.samples_
        statuses = [s.status for s in samples]
        self.details = {
            "samples": len(samples),
            "statuses": sorted({str(x) for x in statuses}),
            "current_unit": self.current_unit,
            "voltage_unit": self.voltage_unit,
        }
        if "Charging" in statuses:
            self.note = CHARGING_NOTE
            return None
        external = [x for x in statuses if x in ("Full", "Not charging")]
        if external:
            self.note = (f"device is on external power (battery status {external[0]!r}): "
                         f"battery current does not measure inference energy")
            return None
        odd = [x for x in statuses if x != "Discharging"]
        if odd:
            self.note = (f"battery status is {odd[0]!r}, not 'Discharging': cannot tell discharge "
                         f"from charge, no energy recorded")
            return None
        points = [(s.t, p) for s in samples if (p := power_w(s)) is not None]
        if len(points) < self.min_samples:
            self.note = (f"too few battery samples over the interval ({len(points)} readable, need "
                         f">= {self.min_samples}); run longer for an energy figure")
            return None
        joules = integrate_energy_j(points)
        span = points[-1][0] - points[0][0]
        self.mean_power_w = joules / span if span > 0 else None
        self.details.update(readable_samples=len(points), span_s=span, mean_power_w=self.mean_power_w,
                            distinct_currents=len({s.current_a for s in samples}))
        return joules

    def stop(self) -> float | None:
        joules = super().stop()
        if joules is None:  # refused after integration (interval too short): no power figure either
            self.mean_power_w = None
        return joules

    def close(self) -> None:
        self._sampler.stop()
