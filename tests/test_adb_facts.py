"""Phone facts: parsing what a phone prints, reading them through the double, register-phone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone
from edgelat.agents.adb.connection import AdbConnection, Timeouts
from edgelat.agents.adb.facts import (
    clusters_of,
    cpu_mask,
    cpu_table,
    little_cpus,
    max_temp_c,
    parse_cpulist,
    parse_dump,
    parse_getprop,
    pin_cpus,
    read_facts,
    thermal_of,
)
from edgelat.agents.adb.keys import public_key_text
from edgelat.cli import main

GETPROP = """[ro.board.platform]: [lahaina]
[ro.build.version.release]: [13]
[ro.product.model]: [SM-G991B]
[ro.product.manufacturer]: [samsung]
[ro.vendor.product.cpu.abilist]: [arm64-v8a,armeabi-v7a]
[persist.sys.locale]: [en-GB]
[ro.empty]: []
"""

# Snapdragon 888 layout: 4x A55 + 3x A78 + 1x X1, related_cpus as the kernel prints it.
SD888_DUMP = "\n".join(
    [f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_min_freq=300000" for c in range(4)]
    + [f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq=1804800" for c in range(4)]
    + [f"/sys/devices/system/cpu/cpu{c}/cpufreq/related_cpus=0 1 2 3 " for c in range(4)]
    + [f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_min_freq=710400" for c in range(4, 7)]
    + [f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq=2419200" for c in range(4, 7)]
    + [f"/sys/devices/system/cpu/cpu{c}/cpufreq/related_cpus=4 5 6" for c in range(4, 7)]
    + ["/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_min_freq=844800",
       "/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq=2841600",
       "/sys/devices/system/cpu/cpu7/cpufreq/related_cpus=7",
       "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor=schedutil",
       "/sys/class/thermal/thermal_zone0/type=cpu-1-0-usr",
       "/sys/class/thermal/thermal_zone0/temp=48300",
       "/sys/class/thermal/thermal_zone1/type=pm8350b_tz",
       "/sys/class/thermal/thermal_zone1/temp=-273000",
       "/sys/class/thermal/thermal_zone2/type=battery",
       "/sys/class/thermal/thermal_zone2/temp=29100"]
)


def test_parse_getprop_and_cpulists() -> None:
    props = parse_getprop(GETPROP)
    assert props["ro.product.model"] == "SM-G991B"
    assert props["ro.empty"] == ""
    assert len(props) == 7
    assert parse_cpulist("0-3,6") == [0, 1, 2, 3, 6]
    assert parse_cpulist("4 5 6 ") == [4, 5, 6]


def test_three_cluster_layout_pinning_and_thermal() -> None:
    dump = parse_dump(SD888_DUMP)
    clusters = clusters_of(cpu_table(dump))
    assert [(c["cpus"], c["role"], c["max_khz"]) for c in clusters] == [
        ([0, 1, 2, 3], "little", 1804800),
        ([4, 5, 6], "mid", 2419200),
        ([7], "big", 2841600),
    ]
    facts = {"clusters": clusters}
    assert pin_cpus(facts, 1) == [7]
    assert pin_cpus(facts, 2) == [4, 5, 6, 7]  # whole clusters, fastest first
    assert pin_cpus(facts, 8) is None  # every core: nothing to pin
    assert cpu_mask([4, 5, 6, 7]) == "f0" and cpu_mask([7]) == "80"
    assert little_cpus(facts) == [0, 1, 2, 3]
    zones = thermal_of(dump)
    assert zones["thermal_zone1"]["temp_c"] == -273.0
    assert max_temp_c(zones) == (48.3, "cpu-1-0-usr")  # the -273 C placeholder is ignored
    # Without related_cpus the clusters come from the max frequencies.
    no_related = {k: v for k, v in dump.items() if "related_cpus" not in k}
    assert [c["cpus"] for c in clusters_of(cpu_table(no_related))] == [[0, 1, 2, 3], [4, 5, 6], [7]]


@pytest.fixture
def phone(tmp_path: Path):
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as double:
        yield double


def test_read_facts_through_the_double(phone: AdbdDouble) -> None:
    conn = AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5))
    facts = read_facts(conn)
    assert (facts["model"], facts["manufacturer"], facts["soc"], facts["board"]) == ("Pixel 7", "Google", "GS201", "gs201")
    assert (facts["android_version"], facts["sdk"], facts["abi"], facts["arch"]) == ("14", 34, "arm64-v8a", "aarch64")
    assert facts["cores"] == 8
    assert [(c["cpus"], c["role"], c["min_khz"], c["max_khz"]) for c in facts["clusters"]] == [
        ([0, 1, 2, 3], "little", 300000, 1803000),
        ([4, 5], "mid", 400000, 2348000),
        ([6, 7], "big", 500000, 2850000),
    ]
    assert facts["big_cores"] == [6, 7] and facts["governors"] == ["sched_pixel"]
    assert facts["thermal"]["thermal_zone0"] == {"type": "BIG", "temp_c": 41.25}
    bat = facts["battery"]
    assert (bat["present"], bat["status"], bat["level"], bat["temp_c"]) == (True, "Discharging", 78, 31.2)
    assert (bat["current_unit"], bat["voltage_unit"]) == ("uA", "uV")
    assert facts["energy_sensors"] == ["battery"]
    runners = facts["runners"]
    assert runners["benchmark_model"] is None and runners["taskset"]
    assert runners["python"]["modules"]["onnxruntime"] and runners["python"]["modules"]["ai_edge_litert"]
    assert set(facts["runtimes"]) >= {"onnxruntime", "litert"}
    # A few batched commands, not one per file.
    assert len(phone.commands) == 1


def test_facts_of_a_phone_without_battery_sensor_or_python(tmp_path: Path) -> None:
    root = build_fake_phone(tmp_path / "phone", battery={"current_now": ""})
    (root / "sys/class/power_supply/battery/current_now").unlink()
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as phone:
        facts = read_facts(AdbConnection(address=phone.address), python="/no/such/python3")
    assert facts["battery"]["energy_readable"] is False and facts["energy_sensors"] == []
    assert facts["runners"]["python"] is None and "onnxruntime" not in facts["runtimes"]


def test_register_phone_reads_facts_and_show_prints_them(phone: AdbdDouble) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["devices", "register-phone", "pixel7", "--address", phone.address, "--runner", "python"])
    assert r.exit_code == 0, r.output
    assert "registered phone pixel7: Google Pixel 7 (GS201), Android 14 (SDK 34), arm64-v8a, 8 cores" in r.output
    assert "4x little 0.30-1.80 GHz, 2x mid 0.40-2.35 GHz, 2x big 0.50-2.85 GHz" in r.output
    shown = runner.invoke(main, ["devices", "show", "pixel7", "--json"])
    assert shown.exit_code == 0, shown.output
    dev = json.loads(shown.output)
    assert dev["kind"] == "phone"
    assert dev["transport"] == {"type": "adb", "address": phone.address, "runner": "python"}
    assert dev["facts"]["big_cores"] == [6, 7]
    assert dev["facts"]["clusters"][0]["role"] == "little"
    text = runner.invoke(main, ["devices", "show", "pixel7"]).output
    assert "Pixel 7" in text and "clusters" in text


def test_register_phone_pushes_benchmark_model(phone: AdbdDouble, tmp_path: Path) -> None:
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake aarch64 binary")
    r = CliRunner().invoke(main, ["devices", "register-phone", "pixel7", "--address", phone.address,
                                  "--benchmark-model", str(binary), "--json"])
    assert r.exit_code == 0, r.output
    dev = json.loads(r.stdout)
    pushed = phone.root / "data/local/tmp/edgelat/benchmark_model"
    assert pushed.read_bytes() == binary.read_bytes() and pushed.stat().st_mode & 0o111
    assert dev["transport"]["benchmark_model"] == "/data/local/tmp/edgelat/benchmark_model"
    assert dev["facts"]["runners"]["benchmark_model"] == "/data/local/tmp/edgelat/benchmark_model"


def test_register_phone_bad_input_writes_nothing(phone: AdbdDouble, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["--address", phone.address, "--serial", "X"], "exactly one of --serial"),
        (["--address", "nohost:port"], "bad phone address"),
        (["--address", phone.address, "--benchmark-model", str(tmp_path / "missing")], "no benchmark_model binary"),
        (["--address", phone.address, "--python", "python3; rm -rf /"], "bad python path"),
    ]
    for args, message in cases:
        r = runner.invoke(main, ["devices", "register-phone", "pixel7", *args])
        assert r.exit_code == 1 and message in r.output, r.output
    r = runner.invoke(main, ["devices", "register-phone", "bad name!", "--address", phone.address])
    assert r.exit_code == 1 and "invalid device name" in r.output
    listed = runner.invoke(main, ["devices", "list", "--json"])
    assert "pixel7" not in listed.output
    assert phone.commands == []  # validation happened before the phone was touched


def test_register_phone_unauthorised(tmp_path: Path) -> None:
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[]) as phone:
        r = CliRunner().invoke(main, ["devices", "register-phone", "pixel7", "--address", phone.address,
                                      "--auth-timeout", "1"])
    assert r.exit_code == 1
    assert r.output.strip().endswith(
        "has not authorised this computer: unlock it and accept the 'Allow USB debugging' prompt, then retry"
    )
    assert r.output.startswith("error: phone ")
