"""A phone end to end: register-phone, profile ops (with a cable pull mid-batch), agent adb over gRPC."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone, wait_until
from edgelat.agents.adb.keys import public_key_text
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.cli import main
from edgelat.profiler.builders import build_model
from edgelat.profiler.ops import KernelSpec
from edgelat.profiler.presets import get_preset

QUICK_FLAGS = ["--warmup", "1", "--min-runs", "3", "--max-runs", "20", "--max-seconds", "0.2"]


@pytest.fixture
def phone(tmp_path: Path):
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as double:
        yield double


def register(double: AdbdDouble, name: str = "pixel7") -> None:
    r = CliRunner().invoke(main, ["devices", "register-phone", name, "--address", double.address, "--runner", "python"])
    assert r.exit_code == 0, r.output


def test_profile_ops_on_a_phone_survives_a_cable_pull(phone: AdbdDouble) -> None:
    register(phone)
    specs = get_preset("smoke")
    victim = hashlib.sha256(build_model(specs[5], "onnx")).hexdigest()
    phone.hang(victim, seconds=5)

    def pull_the_cable() -> None:
        wait_until(lambda: any(victim in c and "runner.py" in c for c in phone.commands), timeout=60)
        phone.clear_hangs()
        phone.refuse_connections(0.3)

    threading.Thread(target=pull_the_cable, daemon=True).start()
    r = CliRunner().invoke(main, ["profile", "ops", "--device", "pixel7", "--preset", "smoke", "--runner", "python",
                                  *QUICK_FLAGS, "--json"])
    assert r.exit_code == 0, r.output
    assert "dropped 1" in phone.events and "listening again" in phone.events

    from edgelat.lut.store import kernel_rows, open_db

    rows = kernel_rows(open_db(), "pixel7")
    assert len(rows) == len(specs) == len({row["kernel_key"] for row in rows})
    assert {row["runtime"] for row in rows} == {"onnxruntime"}
    from edgelat.profiler.sentinel import SENTINEL_SPECS  # the drift sentinel's checks run between chunks

    sentinel = [hashlib.sha256(build_model(s, "onnx")).hexdigest() for s in SENTINEL_SPECS]
    runs = [c for c in phone.commands if "runner.py" in c and not any(s in c for s in sentinel)]
    assert len(runs) == len(specs) + 1  # every kernel once, the interrupted one twice
    assert sum(victim in c for c in runs) == 2
    env = json.loads(rows[0]["environment_json"])
    assert env["device"]["model"] == "Pixel 7" and env["affinity"]["mask"] == "c0"  # 1 thread: the big cluster (cpus 6-7)

    # A rerun measures nothing again: every row is already in the table.
    before = len(phone.commands)
    again = CliRunner().invoke(main, ["profile", "ops", "--device", "pixel7", "--preset", "smoke", "--runner", "python",
                                      *QUICK_FLAGS])
    assert again.exit_code == 0, again.output
    assert not any("runner.py" in c for c in phone.commands[before:])


def test_agent_adb_serves_the_phone_over_grpc(phone: AdbdDouble, edgelat_home: Path) -> None:
    register(phone)
    token = edgelat_home / "token"
    token.write_text("s3cret\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgelat.cli import main; main()", "agent", "adb", "--device", "pixel7",
         "--listen", "127.0.0.1:0", "--token-file", str(token)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        line = proc.stdout.readline()
        assert "edgelat agent adb serving phone pixel7 on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        from edgelat.agents.remote import GrpcClient

        with GrpcClient(f"127.0.0.1:{port}", token="s3cret") as client:
            facts = client.describe()
            assert facts["kind"] == "phone" and facts["model"] == "Pixel 7"
            spec = KernelSpec(op="conv2d", h=8, w=8, cin=4, cout=8, kernel=3)
            onnx, tfl = build_model(spec, "onnx"), build_model(spec, "tflite")
            protocol = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.3)
            items = [BenchmarkItem(client.put_model(onnx), "onnx", tag="a"),
                     BenchmarkItem(client.put_model(onnx), "onnx", tag="b")]
            results = list(client.benchmark_batch(items, RuntimeConfig(runtime="onnxruntime", threads=2), protocol))
            assert [r.tag for r in results] == ["a", "b"] and all(r.ok for r in results), [r.error for r in results]
            assert results[0].environment["affinity"]["mask"] == "c0"
            assert results[0].extra["model_pushed"] is True and results[1].extra["model_pushed"] is False
            lite = client.benchmark(BenchmarkItem(client.put_model(tfl), "tflite", tag="t"),
                                    RuntimeConfig(runtime="litert"), protocol)
            assert lite.ok and lite.config.runtime == "litert" and lite.latency.n >= 3
        with GrpcClient(f"127.0.0.1:{port}", token="wrong") as bad:
            with pytest.raises(Exception, match="token"):
                bad.describe()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()


def test_agent_adb_bad_input(phone: AdbdDouble, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["agent", "adb"])
    assert r.exit_code == 1 and "exactly one of --device" in r.output
    r = runner.invoke(main, ["agent", "adb", "--device", "nosuch"])
    assert r.exit_code == 1 and "unknown device 'nosuch'" in r.output
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    r = runner.invoke(main, ["agent", "adb", "--address", phone.address, "--token-file", str(empty)])
    assert r.exit_code == 1 and "is empty" in r.output
    r = runner.invoke(main, ["agent", "adb", "--device", "local"])
    assert r.exit_code == 1 and "not a phone reached over ADB" in r.output


def test_benchmark_model_runner_from_the_cli(phone: AdbdDouble, tmp_path: Path) -> None:
    """--runner benchmark_model builds TFLite models and files rows under the tool's own runtime;
    statistics the tool does not print stay unknown in the JSON and the table."""
    from test_adb_bridge import fake_tool

    fake_tool(phone, "benchmark_model", "benchmark_model/04_ti-processor-sdk-doc_2026_am62x_xnnpack.txt")
    register(phone)
    net = tmp_path / "net.tflite"
    net.write_bytes(build_model(get_preset("smoke")[0], "tflite"))
    r = CliRunner().invoke(main, ["profile", "model", str(net), "--device", "pixel7", "--runner", "benchmark_model",
                                  "--json", *QUICK_FLAGS])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["runtime"] == "tflite-benchmark"
    assert out["latency_ms"]["median"] == pytest.approx(899.281)  # the tool printed 899281 us
    assert out["latency_ms"]["p10"] is None and out["latency_ms"]["p90"] is None
    assert out["stable"] is False

    specs = get_preset("smoke")[:3]
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps([s.key for s in specs]))
    r = CliRunner().invoke(main, ["profile", "ops", "--device", "pixel7", "--ops", str(ops),
                                  "--runner", "benchmark_model", "--json", *QUICK_FLAGS])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["measured"] == 3
    shown = CliRunner().invoke(main, ["lut", "show", "--device", "pixel7"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(CliRunner().invoke(main, ["lut", "show", "--device", "pixel7", "--json"]).stdout)
    assert {r["runtime"] for r in rows} == {"tflite-benchmark"} and all(r["p10_ms"] is None for r in rows)

    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(build_model(get_preset("smoke")[0], "onnx"))
    r = CliRunner().invoke(main, ["profile", "model", str(onnx_file), "--device", "pixel7",
                                  "--runner", "benchmark_model", *QUICK_FLAGS])
    assert r.exit_code != 0 and "runs tflite models" in r.stderr
    r = CliRunner().invoke(main, ["profile", "model", str(net), "--device", "local", "--runner", "python"])
    assert r.exit_code != 0 and "applies to phones" in r.stderr
