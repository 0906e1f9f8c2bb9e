"""Battery energy from fake ``/sys/class/power_supply`` trees with the real names and units.

Three real conventions: the kernel ABI (µA, µV; Pixel-style negative discharge
current), a milli-unit kernel (mA, mV; positive discharge) and the Samsung mix
(mA current with µV voltage). The meter samples real files in a real
background thread while a "fuel gauge" thread changes them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edgelat.agents.energy.base import EnergyMeter
from edgelat.agents.energy.battery import (
    CHARGING_NOTE,
    BatteryMeter,
    BatterySample,
    integrate_energy_j,
    power_w,
    read_battery_sample,
)


def write_battery(root: Path, *, current: int | None, voltage: int | None, status: str = "Discharging",
                  present: int = 1, power_now: int | None = None, name: str = "battery") -> str:
    """A power_supply directory as the kernel exposes it (values end with a newline)."""
    d = root / "sys" / "class" / "power_supply" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "type").write_text("Battery\n")
    (d / "status").write_text(status + "\n")
    (d / "present").write_text(f"{present}\n")
    for fname, value in (("current_now", current), ("voltage_now", voltage), ("power_now", power_now)):
        if value is not None:
            (d / fname).write_text(f"{value}\n")
        elif (d / fname).exists():
            (d / fname).unlink()
    return str(d)


def read_local(path: str) -> str:
    return Path(path).read_text()


# --- one reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, voltage, units, watts",
    [
        (-1_250_000, 3_871_000, ("uA", "uV"), 1.25 * 3.871),  # kernel ABI, negative while discharging
        (1_250_000, 3_871_000, ("uA", "uV"), 1.25 * 3.871),  # kernel ABI, positive while discharging
        (1250, 3871, ("mA", "mV"), 1.25 * 3.871),  # milli-unit kernel
        (-1250, 3871, ("mA", "mV"), 1.25 * 3.871),
        (850, 4_102_000, ("mA", "uV"), 0.85 * 4.102),  # Samsung: current in mA, voltage in µV
        (-15_000, 3_900_000, ("uA", "uV"), 0.015 * 3.9),  # 15 mA in µA is not 15 A in mA
        (9_000, 3_900_000, ("uA", "uV"), 0.009 * 3.9),  # 9 A would be 35 W: it is 9 mA
        (0, 3_900_000, ("mA", "uV"), 0.0),
    ],
)
def test_units_and_sign_conventions(tmp_path: Path, current: int, voltage: int, units, watts: float) -> None:
    base = write_battery(tmp_path, current=current, voltage=voltage)
    s = read_battery_sample(read_local, base)
    assert (s.current_unit, s.voltage_unit) == units
    assert s.status == "Discharging" and s.present is True and s.errors == ()
    assert power_w(s) == pytest.approx(watts)
    assert power_w(s) >= 0


def test_pinned_units_override_the_guess(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=9_000, voltage=3_900_000)
    s = read_battery_sample(read_local, base, current_unit="mA")
    assert s.current_a == pytest.approx(9.0) and s.current_unit == "mA"


@pytest.mark.parametrize("status", ["Charging", "Full", "Not charging", "Unknown"])
def test_power_is_none_unless_discharging(tmp_path: Path, status: str) -> None:
    base = write_battery(tmp_path, current=-900_000, voltage=4_300_000, status=status)
    s = read_battery_sample(read_local, base)
    assert s.status == status and s.current_a == pytest.approx(-0.9)
    assert power_w(s) is None


def test_power_now_only_battery(tmp_path: Path) -> None:
    """Some Linux laptop batteries report power_now (µW) and no current_now."""
    base = write_battery(tmp_path, current=None, voltage=11_400_000, power_now=7_250_000, name="BAT0")
    s = read_battery_sample(read_local, base)
    assert s.current_a is None and power_w(s) == pytest.approx(7.25)


def test_missing_files_are_recorded_not_raised(tmp_path: Path) -> None:
    s = read_battery_sample(read_local, str(tmp_path / "sys/class/power_supply/battery"))
    assert s.status is None and s.current_a is None and s.voltage_v is None
    assert any(e.startswith("current_now:") for e in s.errors)
    assert power_w(s) is None


def test_garbage_value_is_an_error(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-500_000, voltage=3_800_000)
    Path(base, "current_now").write_text("N/A\n")
    s = read_battery_sample(read_local, base)
    assert s.current_a is None and any("not an integer" in e for e in s.errors)


# --- integration ------------------------------------------------------------------------------------


def test_trapezoid_is_exact_for_linear_power() -> None:
    # P(t) = 2 + 3t W from 0 to 2 s -> 4 + 6 = 10 J
    pts = [(t / 10, 2 + 3 * t / 10) for t in range(21)]
    assert integrate_energy_j(pts) == pytest.approx(10.0)
    assert integrate_energy_j([(0.0, 5.0), (0.5, 5.0), (1.5, 5.0)]) == pytest.approx(7.5)
    assert integrate_energy_j([(1.0, 3.0)]) == 0.0 and integrate_energy_j([]) == 0.0


def test_trapezoid_rejects_time_going_backwards() -> None:
    with pytest.raises(ValueError):
        integrate_energy_j([(1.0, 1.0), (0.5, 1.0)])


# --- the meter --------------------------------------------------------------------------------------


class FuelGauge:
    """Rewrites current_now on a schedule, like a gauge refreshing every ``period`` seconds."""

    def __init__(self, base: str, currents: list[int], period: float) -> None:
        self.path = Path(base, "current_now")
        self.currents, self.period = currents, period
        self.changes: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for value in self.currents:
            self.path.write_text(f"{value}\n")
            self.changes.append((time.monotonic(), value))
            if self._stop.wait(self.period):
                return

    def __enter__(self) -> "FuelGauge":
        self._thread.start()
        while not self.changes:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_meter_is_an_energy_meter(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-1_000_000, voltage=4_000_000)
    meter = BatteryMeter(read_local, base)
    assert isinstance(meter, EnergyMeter) and meter.available() and meter.sensor_present


@pytest.mark.parametrize("sign", [-1, 1], ids=["negative-discharge", "positive-discharge"])
def test_meter_integrates_a_changing_current(tmp_path: Path, sign: int) -> None:
    volts = 4.0
    base = write_battery(tmp_path, current=0, voltage=4_000_000)
    amps = [0.5, 1.5, 1.0, 2.0, 0.8, 1.2, 0.6, 1.4]
    meter = BatteryMeter(read_local, base, sample_period_s=0.02, min_samples=10, min_interval_s=0.2)
    with FuelGauge(base, [sign * int(a * 1e6) for a in amps], period=0.05) as gauge:
        meter.start()
        time.sleep(0.4)
        joules = meter.stop()
    assert joules is not None, meter.note
    samples = meter.samples_
    assert len(samples) >= 10 and meter.details["current_unit"] == "uA"
    # Against the exact integral of the step function the gauge wrote, between the first and
    # last sample: the trapezoid may be off by at most one sample period per step.
    t_first, t_last = samples[0].t, samples[-1].t
    steps = gauge.changes + [(float("inf"), 0)]
    exact = 0.0
    for (t0, value), (t1, _) in zip(steps, steps[1:]):
        lo, hi = max(t0, t_first), min(t1, t_last)
        if hi > lo:
            exact += (hi - lo) * abs(value) / 1e6 * volts
    step_count = sum(1 for t, _ in gauge.changes if t_first < t < t_last)
    max_gap = max(b.t - a.t for a, b in zip(samples, samples[1:]))
    bound = (step_count + 1) * max_gap * max(amps) * volts
    assert joules == pytest.approx(exact, abs=bound)
    assert 0.5 * volts * (t_last - t_first) <= joules <= 2.0 * volts * (t_last - t_first)
    assert meter.mean_power_w == pytest.approx(joules / (t_last - t_first))


def test_meter_constant_draw_mA_mV_device(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=1500, voltage=3850)  # 1.5 A at 3.85 V, milli units
    meter = BatteryMeter(read_local, base, sample_period_s=0.02, min_samples=5, min_interval_s=0.1)
    meter.start()
    time.sleep(0.25)
    joules = meter.stop()
    assert joules is not None, meter.note
    span = meter.samples_[-1].t - meter.samples_[0].t
    assert joules == pytest.approx(1.5 * 3.85 * span, rel=1e-9)
    assert meter.mean_power_w == pytest.approx(1.5 * 3.85)
    assert (meter.details["current_unit"], meter.details["voltage_unit"]) == ("mA", "mV")


def test_meter_charging_gives_none_with_reason(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=1_800_000, voltage=4_350_000, status="Charging")
    meter = BatteryMeter(read_local, base, sample_period_s=0.02, min_samples=3, min_interval_s=0.05)
    meter.start()
    time.sleep(0.1)
    assert meter.stop() is None
    assert meter.note == CHARGING_NOTE


def test_meter_plugged_in_mid_run_gives_none(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-1_000_000, voltage=4_000_000)
    meter = BatteryMeter(read_local, base, sample_period_s=0.02, min_samples=3, min_interval_s=0.05)
    meter.start()
    time.sleep(0.06)
    Path(base, "status").write_text("Charging\n")  # cable plugged in during the runs
    time.sleep(0.06)
    assert meter.stop() is None and meter.note == CHARGING_NOTE


@pytest.mark.parametrize("status", ["Full", "Not charging"])
def test_meter_on_external_power(tmp_path: Path, status: str) -> None:
    base = write_battery(tmp_path, current=0, voltage=4_400_000, status=status)
    meter = BatteryMeter(read_local, base, sample_period_s=0.02, min_samples=3, min_interval_s=0.05)
    meter.start()
    time.sleep(0.1)
    assert meter.stop() is None
    assert "external power" in meter.note and status in meter.note


def test_meter_without_battery(tmp_path: Path) -> None:
    meter = BatteryMeter(read_local, str(tmp_path / "sys/class/power_supply/battery"), min_interval_s=0.0)
    assert not meter.available() and not meter.sensor_present
    assert "no battery current sensor" in meter.note
    meter.start()
    assert meter.stop() is None and "no battery current sensor" in meter.note


def test_meter_battery_not_present(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=0, voltage=0, present=0)
    meter = BatteryMeter(read_local, base, min_interval_s=0.0)
    assert not meter.available() and "no battery present" in meter.note
    meter.start()
    assert meter.stop() is None and "no battery present" in meter.note


def test_meter_too_few_samples(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-1_000_000, voltage=4_000_000)
    meter = BatteryMeter(read_local, base, sample_period_s=0.05, min_samples=50, min_interval_s=0.0)
    meter.start()
    time.sleep(0.12)
    assert meter.stop() is None
    assert meter.note.startswith("too few battery samples")


def test_meter_interval_below_gauge_resolution(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-1_000_000, voltage=4_000_000)
    meter = BatteryMeter(read_local, base, sample_period_s=0.01, min_samples=1)  # default 1 s minimum
    meter.start()
    time.sleep(0.05)
    assert meter.stop() is None and "too short" in meter.note
    assert meter.mean_power_w is None


def test_meter_survives_flaky_reads(tmp_path: Path) -> None:
    """An adb read that fails now and then loses that sample only."""
    base = write_battery(tmp_path, current=-2_000_000, voltage=4_000_000)
    calls = {"n": 0}

    def flaky(path: str) -> str:
        if path.endswith("current_now"):
            calls["n"] += 1
            if calls["n"] % 3 == 0:  # every third current read fails
                raise OSError("error: closed")
        return read_local(path)

    meter = BatteryMeter(flaky, base, sample_period_s=0.02, min_samples=5, min_interval_s=0.1)
    meter.start()
    time.sleep(0.3)
    joules = meter.stop()
    assert joules is not None, meter.note
    readable = meter.details["readable_samples"]
    assert 5 <= readable < meter.details["samples"]
    assert meter.mean_power_w == pytest.approx(8.0)


def test_meter_retries_a_failed_first_read(tmp_path: Path) -> None:
    base = write_battery(tmp_path, current=-1_000_000, voltage=4_000_000)
    failed = []

    def first_fails(path: str) -> str:
        if path.endswith("current_now") and not failed:
            failed.append(path)
            raise OSError("error: device offline")
        return read_local(path)

    meter = BatteryMeter(first_fails, base, sample_period_s=0.02, min_samples=3, min_interval_s=0.05)
    meter.start()
    time.sleep(0.1)
    assert meter.stop() == pytest.approx(4.0 * (meter.samples_[-1].t - meter.samples_[0].t))
    assert failed


def test_sample_is_plain_data() -> None:
    s = BatterySample(t=1.0, status="Discharging", present=True, current_a=-0.5, voltage_v=4.0,
                      power_now_w=None, current_unit="uA", voltage_unit="uV")
    assert power_w(s) == 2.0
