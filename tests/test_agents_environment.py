"""Environment snapshots and host facts read from fake kernel trees (missing means absent)."""

from __future__ import annotations

import json
import platform
import time

import pytest

from edgelat import __version__
from edgelat.agents.environment import snapshot
from edgelat.agents.facts import cpu_model, host_facts
from sysfs_helpers import (FakeNvml, make_arm_cpuinfo, no_gpu_nvml, make_cpuinfo, make_cpus, make_ina3221_hwmon, make_loadavg,
                           make_meminfo, make_rapl, make_thermal, write)


def test_snapshot_reads_every_source(tmp_path):
    make_cpus(tmp_path, [1800000, 600000, 2400000] + [300000] * 8, governor="performance")
    make_thermal(tmp_path, [("x86_pkg_temp", 45500), ("acpitz", 27800)])
    make_loadavg(tmp_path, "1.25 0.80 0.40 3/412 9876")
    t0 = time.time()
    snap = snapshot(tmp_path)
    assert t0 <= snap["timestamp"] <= time.time()
    cpus = snap["cpus"]
    assert list(cpus)[:3] == ["cpu0", "cpu1", "cpu2"] and list(cpus)[-1] == "cpu10"  # numeric order
    assert cpus["cpu0"] == {"cur_khz": 1800000, "governor": "performance"}  # cpu0: no 'online' file
    assert cpus["cpu2"] == {"cur_khz": 2400000, "governor": "performance", "online": True}
    assert snap["thermal"] == {"thermal_zone0": {"type": "x86_pkg_temp", "temp_c": 45.5},
                               "thermal_zone1": {"type": "acpitz", "temp_c": 27.8}}
    assert snap["loadavg"] == [1.25, 0.80, 0.40]
    json.dumps(snap)  # travels as JSON


def test_snapshot_leaves_missing_values_out(tmp_path):
    assert set(snapshot(tmp_path)) == {"timestamp"}  # empty tree: nothing invented
    make_cpus(tmp_path, [1000000, 1000000])
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq").unlink()  # offline CPU
    write(tmp_path, "/sys/devices/system/cpu/cpu1/online", 0)
    write(tmp_path, "/sys/class/thermal/thermal_zone0/type", "gpu-thermal")  # temp unreadable
    write(tmp_path, "/sys/class/thermal/thermal_zone1/temp", "")  # empty file
    snap = snapshot(tmp_path)
    assert snap["cpus"]["cpu1"] == {"governor": "schedutil", "online": False}
    assert snap["thermal"] == {"thermal_zone0": {"type": "gpu-thermal"}}
    assert "loadavg" not in snap


def test_snapshot_of_this_machine():
    snap = snapshot()
    assert len(snap["loadavg"]) == 3
    assert "cpu0" in snap["cpus"]


def test_host_facts_from_a_fake_x86_tree(tmp_path):
    make_cpus(tmp_path, [2000000] * 4, min_khz=800000, max_khz=3500000)
    make_cpuinfo(tmp_path, cpus=4)
    make_meminfo(tmp_path, total_kb=16_000_000)
    make_rapl(tmp_path, [5])
    write(tmp_path, "/etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\nID=ubuntu')
    facts = host_facts(tmp_path, nvml=no_gpu_nvml())
    gpu_eps = {"cuda", "tensorrt"} & set(facts["providers"]["onnxruntime"])
    assert facts["kind"] == ("gpu-host" if gpu_eps else "host")
    assert facts["cpu_model"] == "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz"
    assert facts["cores"] == 4
    assert facts["cpu_freq_khz"]["cpu3"] == {"min_khz": 800000, "max_khz": 3500000}
    assert facts["memory_total_bytes"] == 16_000_000 * 1024
    assert facts["energy_sensors"] == ["rapl"]
    assert facts["distro"] == "Ubuntu 22.04.4 LTS"
    assert facts["runtimes"]["onnxruntime"] and facts["runtimes"]["litert"]
    assert "cpu" in facts["providers"]["onnxruntime"]
    assert facts["arch"] == platform.machine()
    assert facts["python"] == platform.python_version()
    assert facts["agent_version"] == __version__
    assert facts["hostname"]
    json.dumps(facts)


def test_host_facts_of_a_board(tmp_path):
    make_arm_cpuinfo(tmp_path)
    write(tmp_path, "/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.1\x00")
    facts = host_facts(tmp_path, nvml=no_gpu_nvml())
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert facts["kind"] == "board"
    assert facts["board_model"] == "Raspberry Pi 4 Model B Rev 1.1"
    assert facts["cpu_model"] == "Raspberry Pi 4 Model B Rev 1.1"
    assert "memory_total_bytes" not in facts and "distro" not in facts  # not in the tree: absent


def test_gpu_host_when_nvml_has_a_gpu(tmp_path):
    make_ina3221_hwmon(tmp_path, {"VDD_IN": (5000, 1000)})
    facts = host_facts(tmp_path, nvml=FakeNvml())
    assert facts["kind"] == "gpu-host"
    assert facts["energy_sensors"] == ["nvml", "jetson-ina3221"]


def test_cpu_model_absent(tmp_path):
    assert cpu_model(tmp_path) is None
    write(tmp_path, "/proc/cpuinfo", "processor\t: 0\nBogoMIPS\t: 38.40")
    assert cpu_model(tmp_path) is None


@pytest.mark.parametrize("line", ["model name\t: AMD EPYC 7B13", "Hardware\t: Qualcomm Technologies, Inc SM8450"])
def test_cpu_model_keys(tmp_path, line):
    write(tmp_path, "/proc/cpuinfo", f"processor\t: 0\n{line}\n")
    assert cpu_model(tmp_path) == line.split(": ", 1)[1]
