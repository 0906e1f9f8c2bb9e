"""Fake kernel trees (sysfs/procfs) with the real file names, formats and units.

Also a fake ``pynvml`` module (NVML has no files to fake), raising the real
``pynvml.NVMLError`` codes.

Each builder writes under a test's ``root`` exactly what the kernel exposes on
a real machine, so the code under test reads them through the same paths it
uses on a device (``root`` = "/"). Values are the kernel's units: kHz for
cpufreq, millidegrees C for thermal zones, microjoules for RAPL, milliwatts /
millivolts / milliamps for INA3221.
"""

from __future__ import annotations

import os
from pathlib import Path

import pynvml


def write(root: Path, path: str, value: object) -> Path:
    """Write ``value`` and a newline (as sysfs does) to ``root/path``.

    Atomically (temp file + rename): a sysfs read never sees a half-written
    value, and meters sample while tests change values.
    """
    p = Path(root) / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, p)
    return p


def make_cpus(root: Path, freqs_khz: list[int], governor: str = "schedutil",
              min_khz: int = 300000, max_khz: int = 2400000) -> None:
    """``/sys/devices/system/cpu/cpuN`` with cpufreq files (all in kHz)."""
    for i, cur in enumerate(freqs_khz):
        base = f"/sys/devices/system/cpu/cpu{i}"
        write(root, f"{base}/cpufreq/scaling_cur_freq", cur)
        write(root, f"{base}/cpufreq/scaling_governor", governor)
        write(root, f"{base}/cpufreq/cpuinfo_min_freq", min_khz)
        write(root, f"{base}/cpufreq/cpuinfo_max_freq", max_khz)
        if i > 0:  # cpu0 has no 'online' file on most kernels
            write(root, f"{base}/online", 1)
    # non-CPU entries that share the directory and must not be taken for CPUs
    write(root, "/sys/devices/system/cpu/online", f"0-{len(freqs_khz) - 1}")
    (Path(root) / "sys/devices/system/cpu/cpufreq").mkdir(parents=True, exist_ok=True)
    (Path(root) / "sys/devices/system/cpu/cpuidle").mkdir(parents=True, exist_ok=True)


def make_thermal(root: Path, zones: list[tuple[str, int]]) -> None:
    """``/sys/class/thermal/thermal_zoneN`` with ``type`` and ``temp`` (millidegrees C)."""
    for i, (kind, milli_c) in enumerate(zones):
        write(root, f"/sys/class/thermal/thermal_zone{i}/type", kind)
        write(root, f"/sys/class/thermal/thermal_zone{i}/temp", milli_c)
    (Path(root) / "sys/class/thermal/cooling_device0").mkdir(parents=True, exist_ok=True)
    write(root, "/sys/class/thermal/cooling_device0/type", "Processor")


def make_loadavg(root: Path, text: str = "0.52 0.58 0.59 2/1181 12345") -> None:
    write(root, "/proc/loadavg", text)


def make_cpuinfo(root: Path, model: str = "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", cpus: int = 2) -> None:
    blocks = [f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\ncpu MHz\t\t: 2300.000\n"
              for i in range(cpus)]
    write(root, "/proc/cpuinfo", "\n".join(blocks))


def make_arm_cpuinfo(root: Path) -> None:
    """An aarch64 board's cpuinfo: no 'model name', a 'Model' line at the end (Raspberry Pi 4)."""
    text = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
            "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
            "Revision\t: c03111\nSerial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1")
    write(root, "/proc/cpuinfo", text)


def make_meminfo(root: Path, total_kb: int = 8029152) -> None:
    write(root, "/proc/meminfo", f"MemTotal:       {total_kb} kB\nMemFree:         1234567 kB\n"
                                 f"MemAvailable:    5432100 kB")


def make_rapl(root: Path, packages: list[int], max_range_uj: int = 262143328850,
              with_subdomains: bool = True, with_psys: bool = True) -> None:
    """``/sys/class/powercap/intel-rapl:N`` package domains (``energy_uj`` in microjoules),
    their core/dram subdomains, a psys platform domain and the mmio duplicate, like a real laptop."""
    for i, energy in enumerate(packages):
        base = f"/sys/class/powercap/intel-rapl:{i}"
        write(root, f"{base}/name", f"package-{i}")
        write(root, f"{base}/energy_uj", energy)
        write(root, f"{base}/max_energy_range_uj", max_range_uj)
        write(root, f"{base}/enabled", 1)
        if with_subdomains:
            for j, sub in enumerate(("core", "dram")):
                write(root, f"{base}/intel-rapl:{i}:{j}/name", sub)
                write(root, f"{base}/intel-rapl:{i}:{j}/energy_uj", 999_000_000)
                write(root, f"{base}/intel-rapl:{i}:{j}/max_energy_range_uj", max_range_uj)
                os.symlink(f"intel-rapl:{i}/intel-rapl:{i}:{j}",
                           Path(root) / f"sys/class/powercap/intel-rapl:{i}:{j}")
    if with_psys:
        n = len(packages)
        write(root, f"/sys/class/powercap/intel-rapl:{n}/name", "psys")
        write(root, f"/sys/class/powercap/intel-rapl:{n}/energy_uj", 777_000_000)
        write(root, f"/sys/class/powercap/intel-rapl:{n}/max_energy_range_uj", max_range_uj)
    write(root, "/sys/class/powercap/intel-rapl-mmio:0/name", "package-0")
    write(root, "/sys/class/powercap/intel-rapl-mmio:0/energy_uj", 555_000_000)


def set_rapl(root: Path, package: int, energy_uj: int) -> None:
    write(root, f"/sys/class/powercap/intel-rapl:{package}/energy_uj", energy_uj)


def make_ina3221_iio(root: Path, rails: dict[str, int], address: str = "1-0040") -> Path:
    """L4T 32 layout: ``ina3221x/<bus-addr>/iio:device0`` with ``rail_name_N`` and
    ``in_power{N}_input`` (mW), plus the current/voltage files a real one has."""
    dev = f"/sys/bus/i2c/drivers/ina3221x/{address}/iio:device0"
    for n, (label, mw) in enumerate(rails.items()):
        write(root, f"{dev}/rail_name_{n}", label)
        write(root, f"{dev}/in_power{n}_input", mw)
        write(root, f"{dev}/in_voltage{n}_input", 5000)
        write(root, f"{dev}/in_current{n}_input", mw // 5)
    return Path(root) / dev.lstrip("/")


def make_ina3221_hwmon(root: Path, rails: dict[str, tuple[int, int]], hwmon: int = 1) -> Path:
    """L4T 34+ layout: hwmon ``name`` "ina3221", ``in{N}_label``, ``in{N}_input`` (mV),
    ``curr{N}_input`` (mA) for N = 1..3, plus the shunt-sum channel (no current) and
    another hwmon chip that must be ignored."""
    write(root, "/sys/class/hwmon/hwmon0/name", "acpitz")
    write(root, "/sys/class/hwmon/hwmon0/temp1_input", 41000)
    base = f"/sys/class/hwmon/hwmon{hwmon}"
    write(root, f"{base}/name", "ina3221")
    for n, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        write(root, f"{base}/in{n}_label", label)
        write(root, f"{base}/in{n}_input", mv)
        write(root, f"{base}/curr{n}_input", ma)
        write(root, f"{base}/in{n + 3}_input", 12)  # shunt voltage channel
    write(root, f"{base}/in7_label", "sum of shunt voltages")
    write(root, f"{base}/in7_input", 36)
    return Path(root) / base.lstrip("/")


class FakeNvml:
    """The four pynvml functions the meter uses, over a scripted millijoule counter."""

    def __init__(self, gpus: int = 1, energy_error: int | None = None, init_error: Exception | None = None):
        self.gpus = gpus
        self.energy_error = energy_error
        self.init_error = init_error
        self.counter_mj = 123_456_789
        self.inits = self.shutdowns = 0
        self.asked: list[int] = []

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        if index >= self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.asked.append(index)
        return ("handle", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy_error is not None:
            raise pynvml.NVMLError(self.energy_error)
        return self.counter_mj


def no_gpu_nvml() -> FakeNvml:
    """NVML on a machine without the NVIDIA driver."""
    return FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
