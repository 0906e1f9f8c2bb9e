"""The ADB bridge end to end against the adbd double.

The python runner really runs onnxruntime/LiteRT (the double's "python3" is
this machine's). ``benchmark_model`` and ``onnxruntime_perf_test`` cannot run
here, so the phone gets shell scripts that print real captured outputs of
those tools (``tests/data/benchmark-outputs``).
"""

from __future__ import annotations

import hashlib
import math
import shlex
import threading
import time
from pathlib import Path

import pytest

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone, set_sysfs, wait_until
from edgelat.agents.adb.bridge import (
    AdbBackend,
    AdbClient,
    backend_from_transport,
    client_for,
    remote_model_path,
)
from edgelat.agents.adb.keys import public_key_text
from edgelat.agents.energy.battery import CHARGING_NOTE
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, DeviceError
from edgelat.profiler.builders import build_model
from edgelat.profiler.ops import KernelSpec

OUTPUTS = Path(__file__).resolve().parent / "data" / "benchmark-outputs"
QUICK = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.5)
DIR = "/data/local/tmp/edgelat"
P_WATTS = 0.412 * 3.987  # the fake battery: -412000 uA at 3987000 uV
SESSION_MS_04 = 614.333  # "Init: 614333" (us) in capture 04


def model(fmt: str, seed: int = 0, cout: int = 8) -> bytes:
    return build_model(KernelSpec(op="conv2d", h=8, w=8, cin=4, cout=cout, kernel=3), fmt, seed=seed)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def phone(tmp_path: Path):
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as double:
        yield double


def transport(double: AdbdDouble, **extra) -> dict:
    t = {"type": "adb", "address": double.address, "runner": "python", "cooldown_poll_s": 0.05,
         "backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 5}
    t.update(extra)
    return t


def fake_tool(double: AdbdDouble, name: str, captured: str, pause_after: tuple[str, int, float] | None = None) -> Path:
    """A script on the phone that logs its argv and prints a real captured output.

    ``pause_after=(text, nth, seconds)`` sleeps after the nth line containing text,
    so the measured phase takes as long as a real run would.
    """
    out = OUTPUTS / captured
    argv_log = double.root / ".adbd" / f"{name}.argv"  # holds sandbox paths: see tool_argv
    pause = ""
    if pause_after:
        text, nth, secs = pause_after
        pause = f'case "$l" in *{shlex.quote(text)}*) n=$((n+1)); [ $n -eq {nth} ] && sleep {secs};; esac; '
    script = (
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {shlex.quote(str(argv_log))}\n'
        f'n=0; while IFS= read -r l || [ -n "$l" ]; do printf "%s\\n" "$l"; {pause}done < {shlex.quote(str(out))}\n'
    )
    path = double.root / "data/local/tmp/edgelat" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)
    return argv_log


def tool_argv(double: AdbdDouble, argv_log: Path) -> list[str]:
    """The argv the fake tool got, with the sandbox prefix taken off (as the phone would see it)."""
    return argv_log.read_text().replace(str(double.root), "").split("\n")


def run_one(client, data: bytes, fmt: str, config: RuntimeConfig, protocol: MeasurementProtocol = QUICK, tag: str = "t"):
    digest = client.put_model(data)
    return client.benchmark(BenchmarkItem(digest, fmt, tag=tag), config, protocol)


# ---- python runner: real onnxruntime / LiteRT runs -------------------------------------------
def test_python_runner_measures_onnx_and_tflite(phone: AdbdDouble) -> None:
    client = client_for(transport(phone), {})
    assert isinstance(client, AdbClient)
    onnx, tfl = model("onnx"), model("tflite")
    r1 = run_one(client, onnx, "onnx", RuntimeConfig(runtime="onnxruntime", threads=2))
    r2 = run_one(client, tfl, "tflite", RuntimeConfig(runtime="litert", threads=1))
    for r, rt in ((r1, "onnxruntime"), (r2, "litert")):
        assert r.ok, r.error
        assert r.config.runtime == rt and r.config.version
        assert r.latency.n >= 3 and 0 < r.latency.median < 1000 and r.latency.p10 <= r.latency.p90
        assert r.extra["runner"] == "python" and r.extra["model_pushed"] is True
        env = r.environment
        assert env["before"]["thermal"]["thermal_zone0"] == {"type": "BIG", "temp_c": 41.25}
        assert env["after"]["cpus"]["cpu6"]["cur_khz"] == 2850000
        assert env["device"]["model"] == "Pixel 7"
    assert r1.environment["affinity"] == {"pinned": True, "cpus": [6, 7], "mask": "c0"}
    assert "run c0 python3" in phone.taskset_log()
    assert phone.sync_writes.count(f"{DIR}/{sha(onnx)}.onnx") == 1
    # The same model again is not pushed again.
    again = run_one(client, onnx, "onnx", RuntimeConfig(runtime="onnxruntime", threads=2))
    assert again.ok and again.extra["model_pushed"] is False
    assert phone.sync_writes.count(f"{DIR}/{sha(onnx)}.onnx") == 1
    client.close()


def test_battery_energy_per_inference(phone: AdbdDouble) -> None:
    long = MeasurementProtocol(warmup=1, min_runs=10**6, max_runs=10**6, max_seconds=1.3)
    client = client_for(transport(phone), {})
    r = run_one(client, model("onnx"), "onnx", RuntimeConfig(), long)
    assert r.ok, r.error
    details = r.extra["energy"]
    assert details.get("samples", 0) >= 8 and details["statuses"] == ["Discharging"], (r.energy_note, details, r.latency)
    assert details["mean_power_w"] == pytest.approx(P_WATTS, rel=1e-6)
    expected_mj = P_WATTS * details["measured_s"] / r.latency.n * 1000
    assert r.energy_mj == pytest.approx(expected_mj, rel=1e-6) and r.energy_note == ""
    client.close()


def test_energy_with_ma_mv_units_and_while_charging(tmp_path: Path) -> None:
    long = MeasurementProtocol(warmup=1, min_runs=10**6, max_runs=10**6, max_seconds=1.2)
    root = build_fake_phone(tmp_path / "phone", battery={"current_now": "412", "voltage_now": "3987"})
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as phone:
        client = client_for(transport(phone), {})
        r = run_one(client, model("onnx"), "onnx", RuntimeConfig(), long)
        assert (r.extra["energy"]["current_unit"], r.extra["energy"]["voltage_unit"]) == ("mA", "mV")
        assert r.extra["energy"]["mean_power_w"] == pytest.approx(P_WATTS, rel=1e-6)
        assert r.energy_mj == pytest.approx(P_WATTS * r.extra["energy"]["measured_s"] / r.latency.n * 1000, rel=1e-6)
        set_sysfs(root, "/sys/class/power_supply/battery/status", "Charging")
        charging = run_one(client, model("onnx", seed=1), "onnx", RuntimeConfig(), long)
        assert charging.ok and charging.energy_mj is None and charging.energy_note == CHARGING_NOTE
        short = run_one(client, model("onnx", seed=2), "onnx", RuntimeConfig(), QUICK)
        assert short.energy_mj is None and "shorter than the battery gauge" in short.energy_note
        client.close()


def test_cooldown_waits_while_a_zone_is_hot(phone: AdbdDouble) -> None:
    client = client_for(transport(phone, cooldown_c=45), {})
    client.describe()  # facts first, so the timer below runs during the cool-down
    set_sysfs(phone.root, "/sys/class/thermal/thermal_zone0/temp", "58000")
    threading.Timer(0.4, set_sysfs, args=(phone.root, "/sys/class/thermal/thermal_zone0/temp", "40000")).start()
    r = run_one(client, model("onnx"), "onnx", RuntimeConfig())
    assert r.ok, r.error
    cool = r.environment["cooldown"]
    assert cool["waited_s"] >= 0.3 and cool["max_temp_c"] == 40.0 and cool["threshold_c"] == 45
    assert r.environment["before"]["thermal"]["thermal_zone0"]["temp_c"] == 40.0
    client.close()


def test_corrupt_model_is_a_per_item_error(phone: AdbdDouble) -> None:
    client = client_for(transport(phone), {})
    good = model("onnx")
    items = [BenchmarkItem(client.put_model(b"not an onnx model"), "onnx", tag="bad"),
             BenchmarkItem(client.put_model(good), "onnx", tag="good")]
    results = list(client.benchmark_batch(items, RuntimeConfig(), QUICK))
    assert [r.tag for r in results] == ["bad", "good"]
    assert "on the phone: onnxruntime cannot load" in results[0].error
    assert results[1].ok
    client.close()


# ---- command-line runners with captured outputs ------------------------------------------------
def test_fake_benchmark_model_output_is_parsed(phone: AdbdDouble) -> None:
    argv_log = fake_tool(phone, "benchmark_model", "benchmark_model/04_ti-processor-sdk-doc_2026_am62x_xnnpack.txt")
    client = client_for(transport(phone, runner="benchmark_model"), {})
    data = model("tflite")
    r = run_one(client, data, "tflite", RuntimeConfig(runtime="litert", threads=4, provider="xnnpack"))
    assert r.ok, r.error
    assert r.config.runtime == "tflite-benchmark"
    lat = r.latency
    assert (lat.median, lat.mean, lat.std, lat.n) == (899.281, 899.641, 1.549, 50)
    assert math.isnan(lat.p10) and math.isnan(lat.p90)  # not printed by the tool, not invented
    assert lat.stable is False and lat.rel_ci == math.inf
    assert "no confidence interval" in r.extra["stable_note"]
    assert r.extra["median_source"] == "median" and r.extra["printed_us"]["p5_us"] == 898333
    assert r.session_ms == pytest.approx(SESSION_MS_04) and r.first_run_ms == pytest.approx(905.463)
    assert r.peak_memory_bytes == int(150.141 * 1024 * 1024)
    argv = tool_argv(phone, argv_log)
    assert f"--graph={DIR}/{sha(data)}.tflite" in argv
    assert "--num_threads=4" in argv and "--use_xnnpack=true" in argv and "--max_secs=0.5" in argv
    assert r.environment["affinity"]["mask"] == "f0"  # 4 threads: the 2 big + 2 mid cores
    assert "run f0 /data/local/tmp/edgelat/benchmark_model" in phone.taskset_log()
    client.close()


def test_benchmark_model_without_median_and_with_op_profiling(phone: AdbdDouble) -> None:
    fake_tool(phone, "benchmark_model", "benchmark_model/01_meta-tensorflow-lite_riscv_opprof.txt")
    client = client_for(transport(phone, runner="benchmark_model", op_profiling=True), {})
    r = run_one(client, model("tflite"), "tflite", RuntimeConfig(runtime="litert"))
    assert r.ok, r.error
    assert r.latency.median == r.latency.mean == pytest.approx(2950.34)
    assert r.extra["median_source"] == "avg" and "prints no median" in r.extra["median_note"]
    assert len(r.extra["ops"]) == 31 and r.extra["op_nodes_executed"] == 31
    assert r.first_run_ms == pytest.approx(3512.391)
    client.close()


def test_benchmark_model_energy_uses_the_marked_phase(phone: AdbdDouble) -> None:
    fake_tool(phone, "benchmark_model", "benchmark_model/03_ti-processor-sdk-doc_2025_am62x_cpu.txt",
              pause_after=("Running benchmark for at least", 2, 1.3))
    client = client_for(transport(phone, runner="benchmark_model"), {})
    r = run_one(client, model("tflite"), "tflite", RuntimeConfig(runtime="tflite-benchmark"))
    assert r.ok, r.error
    assert r.latency.n == 50 and r.latency.mean == pytest.approx(971.535)
    window = r.extra["energy"]["window_s"]
    assert 1.25 <= window <= 1.6
    assert r.energy_mj == pytest.approx(P_WATTS * window / 50 * 1000, rel=1e-6)
    client.close()


def test_fake_onnxruntime_perf_test_output_is_parsed(phone: AdbdDouble) -> None:
    argv_log = fake_tool(phone, "onnxruntime_perf_test", "onnxruntime_perf_test/07_arm-learning-paths_sme2_resnet50.txt")
    client = client_for(transport(phone, runner="ort-perf-test"), {})
    data = model("onnx")
    r = run_one(client, data, "onnx", RuntimeConfig(runtime="onnxruntime", threads=1))
    assert r.ok, r.error
    assert r.config.runtime == "ort-perf-test"
    assert r.latency.median == pytest.approx(99.5086) and r.latency.n == 5 and r.latency.p90 == pytest.approx(101.519)
    assert r.session_ms == pytest.approx(217.932) and r.first_run_ms == 196
    assert r.peak_memory_bytes == 271122432
    argv = tool_argv(phone, argv_log)
    assert argv[:4] == ["-e", "cpu", "-x", "1"] and f"{DIR}/{sha(data)}.onnx" in argv
    client.close()


def test_runner_format_and_delegate_are_validated_before_running(phone: AdbdDouble) -> None:
    client = client_for(transport(phone, runner="benchmark_model"), {})
    r = run_one(client, model("onnx"), "onnx", RuntimeConfig(runtime="onnxruntime"))
    assert "runner benchmark_model runs tflite models, not onnx" in r.error
    r = run_one(client, model("tflite"), "tflite", RuntimeConfig(runtime="litert", provider="gpu; reboot"))
    assert "no delegate 'gpu; reboot'" in r.error
    assert phone.commands == []  # nothing reached the phone
    client.close()


# ---- faults --------------------------------------------------------------------------------
def test_disconnect_mid_batch_reconnects_and_measures_each_item_once(phone: AdbdDouble) -> None:
    client = client_for(transport(phone), {})
    models = [model("onnx", seed=i) for i in range(3)]
    items = [BenchmarkItem(client.put_model(m), "onnx", tag=f"k{i}") for i, m in enumerate(models)]
    victim = sha(models[1])
    phone.hang(victim, seconds=5)  # item 1 stalls on the phone...

    def pull_the_cable() -> None:
        wait_until(lambda: any(victim in c and "runner.py" in c for c in phone.commands), timeout=20)
        phone.clear_hangs()
        phone.refuse_connections(0.5)  # ...the link dies and adbd comes back half a second later

    threading.Thread(target=pull_the_cable, daemon=True).start()
    results = list(client.benchmark_batch(items, RuntimeConfig(), QUICK))
    assert [r.tag for r in results] == ["k0", "k1", "k2"]
    assert all(r.ok for r in results), [r.error for r in results]
    runs = [c for c in phone.commands if "runner.py" in c]
    assert [sum(sha(m) in c for c in runs) for m in models] == [1, 2, 1]  # only the interrupted one ran again
    assert results[1].extra["attempts"] == 2 and results[1].environment["reconnects"] >= 1
    assert results[0].environment["reconnects"] == 0
    client.close()


def test_phone_gone_for_good_stops_the_batch_with_device_error(phone: AdbdDouble) -> None:
    client = client_for(transport(phone, reconnect_attempts=3, backoff_s=0.05, backoff_max_s=0.1), {})
    items = [BenchmarkItem(client.put_model(model("onnx", seed=i)), "onnx", tag=f"k{i}") for i in range(3)]
    first = sha(model("onnx", seed=1))
    phone.hang(first, seconds=5)

    def unplug() -> None:
        wait_until(lambda: any(first in c and "runner.py" in c for c in phone.commands), timeout=20)
        phone.refuse_connections(60)

    threading.Thread(target=unplug, daemon=True).start()
    got = []
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="no ADB connection after 3 attempts"):
        for r in client.benchmark_batch(items, RuntimeConfig(), QUICK):
            got.append(r)
    assert time.monotonic() - t0 < 15
    assert [r.tag for r in got] == ["k0"] and got[0].ok  # what was measured is delivered
    backend = client.backend
    assert backend.lost_reason
    # While the phone is gone, the next item fails at once instead of backing off again.
    t1 = time.monotonic()
    with pytest.raises(DeviceError):
        next(client.benchmark_batch(items[2:], RuntimeConfig(), QUICK))
    assert time.monotonic() - t1 < 1.0
    client.close()


def test_hanging_runner_is_killed_by_the_timeout(phone: AdbdDouble) -> None:
    # 4 s: long enough for the healthy item on a loaded 2-core machine, short next to the hang.
    client = client_for(transport(phone, command_timeout_s=4.0), {})
    stuck, fine = model("onnx", seed=1), model("onnx", seed=2)
    phone.hang(sha(stuck))  # never runs
    items = [BenchmarkItem(client.put_model(stuck), "onnx", tag="stuck"),
             BenchmarkItem(client.put_model(fine), "onnx", tag="fine")]
    t0 = time.monotonic()
    results = list(client.benchmark_batch(items, RuntimeConfig(), QUICK))
    assert time.monotonic() - t0 < 20
    assert results[0].error.endswith(
        f"python run of model {sha(stuck)[:12]} on phone {phone.address} did not finish within 4 s and was killed"
    )
    assert results[1].ok  # the batch went on over a fresh connection
    client.close()


# ---- safety --------------------------------------------------------------------------------
def test_remote_names_are_content_hashes_and_writes_stay_in_the_bridge_dir(phone: AdbdDouble, tmp_path: Path) -> None:
    for bad in ("../../system/bin/sh", "model.onnx", "a" * 63, "A" * 64, "x; rm -rf /"):
        with pytest.raises(BadInput, match="not a sha256"):
            remote_model_path(bad, "onnx")
    with pytest.raises(BadInput, match="unknown model format"):
        remote_model_path("a" * 64, "sh")

    backend = backend_from_transport(transport(phone), {})
    data = model("onnx")
    weird = tmp_path / "evil name; rm -rf $HOME.onnx"
    weird.write_bytes(data)
    r = backend.benchmark(weird, "onnx", RuntimeConfig(), QUICK)
    assert r.ok, r.error
    assert r.model_sha256 == sha(data)
    assert all("evil" not in c for c in phone.commands)
    assert phone.sync_writes and all(p.startswith(DIR + "/") for p in phone.sync_writes)
    backend.remove_model(sha(data), "onnx")
    assert not (phone.root / f"data/local/tmp/edgelat/{sha(data)}.onnx").exists()
    assert any(c.startswith(f"rm -f {DIR}/{sha(data)}.onnx") for c in phone.commands)
    with pytest.raises(BadInput):
        backend.remove_model("../../../sdcard/DCIM", "onnx")
    with pytest.raises(BadInput, match="bad python path"):
        backend_from_transport(transport(phone, python="python3 -c 'import os'"), {})
    with pytest.raises(BadInput, match="bad benchmark_model path"):
        backend_from_transport(transport(phone, benchmark_model="/data/local/tmp/x;reboot"), {})
    with pytest.raises(BadInput, match="unknown runner"):
        backend_from_transport(transport(phone, runner="sh"), {})
    backend.close()


def test_backend_describe_is_the_phone_facts(phone: AdbdDouble) -> None:
    backend = backend_from_transport(transport(phone), {})
    assert isinstance(backend, AdbBackend)
    facts = backend.describe()
    assert facts["kind"] == "phone" and facts["model"] == "Pixel 7" and facts["bridge"]["runner"] == "python"
    backend.close()
