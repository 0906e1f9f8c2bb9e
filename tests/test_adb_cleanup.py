"""Files on the phone and what the phone prints, against the adbd double.

Pushed models stay under a size cap (least recently used go first; runner
binaries never go), runner binaries are compared by hash (with the fallback a
phone without ``sha256sum``/``md5sum`` needs), and everything read from the
phone is bounded: a ``related_cpus`` of ``0-4000000000``, a huge number, an
endless output or bytes that are not UTF-8 give a note or a one-line error,
never a hang or a host that allocates without limit.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from pathlib import Path

import pytest

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone, set_sysfs
from edgelat.agents.adb.bridge import AdbBackend, backend_from_transport, client_for, parse_samples
from edgelat.agents.adb.connection import AdbConnection, OutputTooLarge, Timeouts
from edgelat.agents.adb.facts import (
    MAX_CPUS,
    cpu_mask,
    cpu_table,
    parse_cpulist,
    parse_dump,
    parse_facts,
    read_facts,
)
from edgelat.agents.adb.keys import public_key_text
from edgelat.values import BenchmarkItem, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, DeviceError

SEEDS = Path(__file__).parent / "data" / "fuzz-seeds"
DIR = "/data/local/tmp/edgelat"
QUICK = MeasurementProtocol(warmup=1, min_runs=3, max_runs=20, max_seconds=0.5)
KB = 1024


@pytest.fixture
def phone(tmp_path: Path):
    root = build_fake_phone(tmp_path / "phone")
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as double:
        yield double


def transport(double: AdbdDouble, **extra) -> dict:
    t = {"type": "adb", "address": double.address, "runner": "benchmark_model", "cooldown_poll_s": 0.05,
         "backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 5}
    t.update(extra)
    return t


def fake_benchmark_model(double: AdbdDouble) -> Path:
    """The phone's benchmark_model: a script printing a real captured output (it never reads the model)."""
    captured = SEEDS / "benchmark_model/04_ti-processor-sdk-doc_2026_am62x_xnnpack.txt"
    path = double.root / "data/local/tmp/edgelat/benchmark_model"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat {shlex.quote(str(captured))}\n")
    path.chmod(0o755)
    return path


def blob(seed: int, size: int = 40 * KB) -> bytes:
    """A "model" of ``size`` bytes (the fake tool does not read it; only its name and size matter)."""
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def on_phone(double: AdbdDouble) -> set[str]:
    return set(os.listdir(double.root / "data/local/tmp/edgelat"))


def name(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.tflite"


def run(client, data: bytes):
    digest = client.put_model(data)
    r = client.benchmark(BenchmarkItem(digest, "tflite", tag="t"), RuntimeConfig(runtime="litert"), QUICK)
    assert r.ok, r.error
    return r


# ---- the model cache ---------------------------------------------------------------------------
def test_models_are_evicted_least_recently_used_first_and_the_runner_stays(phone: AdbdDouble) -> None:
    fake_benchmark_model(phone)
    # An earlier session left two models: the older one (by mtime) must go first.
    stale_old, stale_new = blob(100), blob(101)
    for data, age in ((stale_old, 3600), (stale_new, 60)):
        p = phone.root / "data/local/tmp/edgelat" / name(data)
        p.write_bytes(data)
        os.utime(p, (time.time() - age, time.time() - age))
    cap_mb = 130 * KB / (1024 * 1024)  # room for three 40 KiB models
    client = client_for(transport(phone, model_cache_mb=cap_mb), {})
    a, b, c, d = blob(1), blob(2), blob(3), blob(4)

    r = run(client, a)  # 2 stale + a = 120 KiB: fits
    assert r.extra["model_cache"]["evicted"] == [] and name(stale_old) in on_phone(phone)
    r = run(client, b)  # would be 160 KiB: the oldest stale model goes
    assert r.extra["model_cache"]["evicted"] == [name(stale_old)]
    r = run(client, c)
    assert r.extra["model_cache"]["evicted"] == [name(stale_new)]
    assert {name(a), name(b), name(c)} <= on_phone(phone)
    again = run(client, a)  # a is used again: b is now the least recently used
    assert again.extra["model_pushed"] is False and "model_cache" not in again.extra
    r = run(client, d)
    assert r.extra["model_cache"]["evicted"] == [name(b)]
    assert r.extra["model_cache"]["freed_bytes"] == len(b)
    files = on_phone(phone)
    assert {name(a), name(c), name(d)} <= files and name(b) not in files
    assert "benchmark_model" in files  # the runner binary is never evicted
    models = [f for f in files if f.endswith(".tflite")]
    assert sum((phone.root / "data/local/tmp/edgelat" / f).stat().st_size for f in models) <= 130 * KB
    # The evicted model is pushed again when it is needed again.
    r = run(client, b)
    assert r.extra["model_pushed"] is True and name(b) in on_phone(phone)
    client.close()


def test_each_run_refreshes_the_models_time_on_the_phone(phone: AdbdDouble) -> None:
    """Recency survives the bridge: the run touches its model, so a later session's order is right."""
    fake_benchmark_model(phone)
    client = client_for(transport(phone), {})
    data = blob(7)
    run(client, data)
    p = phone.root / "data/local/tmp/edgelat" / name(data)
    os.utime(p, (1, 1))
    run(client, data)
    assert p.stat().st_mtime > time.time() - 60
    assert any("touch -c" in c and name(data) in c for c in phone.commands)
    client.close()


def test_a_model_larger_than_the_cap_is_pushed_alone(phone: AdbdDouble) -> None:
    fake_benchmark_model(phone)
    client = client_for(transport(phone, model_cache_mb=50 * KB / (1024 * 1024)), {})
    small, big = blob(1, 20 * KB), blob(2, 80 * KB)
    run(client, small)
    r = run(client, big)
    cache = r.extra["model_cache"]
    assert cache["evicted"] == [name(small)] and "larger than the phone's model cache" in cache["note"]
    assert name(big) in on_phone(phone) and "benchmark_model" in on_phone(phone)
    client.close()


def test_model_cache_setting_is_checked(phone: AdbdDouble) -> None:
    with pytest.raises(BadInput, match="model_cache_mb"):
        backend_from_transport(transport(phone, model_cache_mb="lots"))
    with pytest.raises(BadInput, match="model_cache_mb"):
        backend_from_transport(transport(phone, model_cache_mb=-1))


def test_only_content_hash_model_names_are_ever_deleted(phone: AdbdDouble) -> None:
    d = phone.root / "data/local/tmp/edgelat"
    d.mkdir(parents=True, exist_ok=True)
    keep = ["benchmark_model", "onnxruntime_perf_test", "notes.txt", "ABCDEF.tflite", "py-0123456789abcdef"]
    for k in keep[:-1]:
        (d / k).write_bytes(b"x" * 10 * KB)
    (d / keep[-1]).mkdir()
    (d / keep[-1] / "runner.py").write_text("print()\n")
    for i in range(3):
        (d / name(blob(i))).write_bytes(blob(i))
    backend = AdbBackend(AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5)), model_cache_mb=0)
    record = backend.make_room(keep="", incoming=1)
    assert sorted(record["evicted"]) == sorted(name(blob(i)) for i in range(3))
    assert set(os.listdir(d)) == set(keep)
    backend.close()


# ---- runner binaries compared by hash -----------------------------------------------------------
def _binary(tmp_path: Path, content: bytes, mtime: int = 1_700_000_000) -> Path:
    p = tmp_path / "benchmark_model"
    p.write_bytes(content)
    os.utime(p, (mtime, mtime))
    return p


def test_a_rebuilt_runner_of_the_same_size_is_pushed_again(phone: AdbdDouble, tmp_path: Path) -> None:
    backend = AdbBackend(AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5)))
    remote = f"{DIR}/benchmark_model"
    host = _binary(tmp_path, b"\x7fELF build 1" + b"\0" * 1000)
    assert backend.push_binary(host, "benchmark_model") == remote
    assert phone.sync_writes.count(remote) == 1
    backend.push_binary(host, "benchmark_model")  # same content: not pushed again
    assert phone.sync_writes.count(remote) == 1
    rebuilt = _binary(tmp_path, b"\x7fELF build 2" + b"\0" * 1000)  # same size, same mtime
    backend.push_binary(rebuilt, "benchmark_model")
    assert phone.sync_writes.count(remote) == 2
    assert (phone.root / remote.lstrip("/")).read_bytes() == rebuilt.read_bytes()
    assert any(c.startswith("sha256sum ") for c in phone.commands)
    assert backend.phone_digest(remote) == ("sha256", hashlib.sha256(rebuilt.read_bytes()).hexdigest())
    assert not backend.notes
    backend.close()


def test_md5sum_when_the_phone_has_no_sha256sum(phone: AdbdDouble, tmp_path: Path) -> None:
    phone.hide_command("sha256sum")
    backend = AdbBackend(AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5)))
    remote = f"{DIR}/benchmark_model"
    backend.push_binary(_binary(tmp_path, b"one" + b"\0" * 500), "benchmark_model")
    assert backend.phone_digest(remote) == ("md5", hashlib.md5(b"one" + b"\0" * 500).hexdigest())
    backend.push_binary(_binary(tmp_path, b"two" + b"\0" * 500), "benchmark_model")
    assert phone.sync_writes.count(remote) == 2 and not backend.notes
    backend.close()


def test_size_and_mtime_fallback_is_said(phone: AdbdDouble, tmp_path: Path) -> None:
    phone.hide_command("sha256sum")
    phone.hide_command("md5sum")
    conn = AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5))
    backend = AdbBackend(conn)
    remote = f"{DIR}/benchmark_model"
    backend.push_binary(_binary(tmp_path, b"one" + b"\0" * 500, mtime=1_700_000_000), "benchmark_model")
    assert conn.stat(remote)[2] == 1_700_000_000  # pushed with the host file's time
    backend.push_binary(_binary(tmp_path, b"one" + b"\0" * 500, mtime=1_700_000_000), "benchmark_model")
    assert phone.sync_writes.count(remote) == 1
    assert backend.phone_digest(remote) is None
    assert "neither sha256sum nor md5sum" in backend.notes[0]
    backend.push_binary(_binary(tmp_path, b"two" + b"\0" * 500, mtime=1_700_000_100), "benchmark_model")
    assert phone.sync_writes.count(remote) == 2  # a newer build of the same size still goes
    facts = backend.describe()
    assert any("size and modification time" in n for n in facts["bridge"]["notes"])
    backend.close()


# ---- everything parsed from a phone is bounded --------------------------------------------------
def test_huge_cpu_range_from_the_phone_is_dropped_with_a_note(tmp_path: Path) -> None:
    root = build_fake_phone(tmp_path / "phone")
    set_sysfs(root, "/sys/devices/system/cpu/cpu7/cpufreq/related_cpus", "0-4000000000")
    set_sysfs(root, "/sys/devices/system/cpu/possible", "0-4294967295")
    set_sysfs(root, "/sys/devices/system/cpu/cpu6/cpufreq/cpuinfo_max_freq", "9" * 5000)
    set_sysfs(root, "/sys/class/thermal/thermal_zone0/temp", "123456789012345678901234567890")
    set_sysfs(root, "/sys/class/power_supply/battery/current_now", "1" + "0" * 400)
    huge = root / "sys/devices/system/cpu/cpu4000000000/cpufreq"
    huge.mkdir(parents=True)
    (huge / "cpuinfo_max_freq").write_text("2000000\n")
    with AdbdDouble(root, {**PIXEL7_PROPS, "ro.build.version.sdk": "9" * 50,
                           "ro.build.description": "x" * 5000}, trusted_keys=[public_key_text()]) as phone:
        t0 = time.monotonic()
        facts = read_facts(AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5)))
        assert time.monotonic() - t0 < 30
    notes = " | ".join(facts["parse_notes"])
    assert "related_cpus" in notes and "0-4000000000" in notes
    assert "cpu4000000000" in notes and "cpuinfo_max_freq" in notes
    assert "thermal_zone0/temp" in notes and "current_now" in notes and "ro.build.version.sdk" in notes
    assert "cpu/possible" in notes and facts["sdk"] is None
    assert facts["cores"] == 8  # the bogus 'possible' list is dropped: the CPUs that were read count
    assert all(max(c["cpus"]) < 8 for c in facts["clusters"])
    assert "temp_c" not in facts["thermal"]["thermal_zone0"]
    assert facts["battery"]["current_now"] is None and facts["battery"]["energy_readable"] is False
    assert facts["model"] == "Pixel 7"  # the rest of the facts are still read


def test_cpu_lists_are_bounded() -> None:
    notes: list[str] = []
    assert parse_cpulist("0-4000000000", notes) == [] and "outside CPUs" in notes[0]
    assert parse_cpulist("0-3,7-5,x,²,6", notes) == [0, 1, 2, 3, 6]  # reversed range, junk, a unicode digit
    assert len(notes) == 4
    assert parse_cpulist(",".join(f"0-{MAX_CPUS - 1}" for _ in range(10))) == list(range(MAX_CPUS))
    assert parse_cpulist("0 " * 10_000) == []  # longer than any real list: dropped, not parsed
    with pytest.raises(DeviceError, match="re-register"):
        cpu_mask([4_000_000_000])  # facts stored by an older version cannot build a huge mask


def test_parsing_caps_lines_and_value_lengths() -> None:
    notes: list[str] = []
    dump = "\n".join(f"/sys/devices/system/cpu/cpu{i % 8}/cpufreq/cpuinfo_max_freq=1000" for i in range(100_000))
    assert len(parse_dump(dump, notes)) == 8 and "more than" in notes[0]
    table = cpu_table(parse_dump("/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor=" + "g" * 100))
    assert "governor" not in table[1]
    text = "@@EDGELAT getprop\n" + "\n".join(f"[p.{i}]: [v]" for i in range(50_000)) + "\n@@EDGELAT python\n" \
        "EDGELAT_PY [1, 2, 3]\n"
    facts = parse_facts(text)
    assert any("more than 20000 lines" in n for n in facts["parse_notes"])
    assert any("python probe" in n for n in facts["parse_notes"]) and facts["runners"]["python"] is None
    facts = parse_facts('@@EDGELAT python\nEDGELAT_PY {"version": "3.11", "modules": {"onnxruntime": {"x": 1}}}\n'
                        "@@EDGELAT runners\npath taskset /bin/sh;reboot\nfile /data/../x/benchmark_model\n")
    assert facts["runners"]["python"]["modules"]["onnxruntime"] is None
    assert facts["runners"]["taskset"] is None and facts["runners"]["benchmark_model"] is None
    assert "onnxruntime" not in facts["runtimes"]


def test_battery_samples_out_of_range_are_blanked() -> None:
    samples, marks = parse_samples([
        "BAT 10.5 Discharging|1|-412000|3987000",
        "BAT 10.6 Discharging|1|" + "9" * 400 + "|3987000",
        "BAT nan Discharging|1|-412000|3987000",
        "BAT 1e999 Discharging|1|-412000|3987000",
        "MARK 10.7 " + "9" * 5000,
        "MARK 10.8 12",
    ])
    assert [t for t, _ in samples] == [10.5, 10.6]
    assert samples[1][1]["current_now"] == "" and samples[1][1]["voltage_now"] == "3987000"
    assert marks == [(10.8, 12)]


def test_endless_output_is_stopped_and_the_link_recovers(phone: AdbdDouble) -> None:
    conn = AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5))
    with pytest.raises(OutputTooLarge, match="printed more than"):
        conn.shell("yes edgelat", max_bytes=1024 * 1024, timeout_s=30)
    assert conn.shell("echo back") == "back\n"  # reconnects after the drop
    conn.close()


def test_output_that_is_not_utf8_is_read_not_a_lost_link(phone: AdbdDouble) -> None:
    conn = AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5))
    out = conn.shell(r"printf 'a\377\376b\n'")
    assert out == "a\ufffd\ufffdb\n"
    assert conn.reconnects == 0
    conn.close()


def test_register_phone_says_when_the_runner_was_compared_by_size_and_time(phone: AdbdDouble, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgelat.cli import main

    phone.hide_command("sha256sum")
    phone.hide_command("md5sum")
    binary = _binary(tmp_path, b"\x7fELF fake aarch64 binary")
    args = ["devices", "register-phone", "pixel7", "--address", phone.address, "--benchmark-model", str(binary)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "note:" not in first.output  # nothing on the phone yet: nothing to compare
    again = CliRunner().invoke(main, [*args[:2], "pixel7b", *args[3:]])
    assert again.exit_code == 0, again.output
    assert "note: the phone has neither sha256sum nor md5sum" in again.output


def test_marks_naming_lines_that_do_not_exist_are_dropped(phone: AdbdDouble) -> None:
    """A MARK line number past the output used to index past the runner's lines (IndexError)."""
    from edgelat.agents.adb import bridge

    fake_benchmark_model(phone)
    original = bridge.parse_samples

    def garbled(lines):
        samples, marks = original(lines)
        return samples, marks + [(1.0, 10**9), (2.0, 0)]

    bridge.parse_samples = garbled
    try:
        client = client_for(transport(phone), {})
        r = run(client, blob(9))
        assert r.latency.median == 899.281
        client.close()
    finally:
        bridge.parse_samples = original


def test_register_phone_sets_the_model_cache_size(phone: AdbdDouble) -> None:
    from click.testing import CliRunner

    from edgelat.cli import main
    from edgelat.devices.registry import Registry
    from edgelat.lut.store import open_db

    runner = CliRunner()
    bad = runner.invoke(main, ["devices", "register-phone", "p", "--address", phone.address, "--model-cache-mb", "-5"])
    assert bad.exit_code != 0 and "--model-cache-mb" in bad.output
    r = runner.invoke(main, ["devices", "register-phone", "p", "--address", phone.address, "--model-cache-mb", "0.5"])
    assert r.exit_code == 0, r.output
    device = Registry(open_db()).get("p")
    assert device.transport["model_cache_mb"] == 0.5
    assert backend_from_transport(device.transport).model_cache_bytes == 512 * 1024
    help_text = runner.invoke(main, ["devices", "register-phone", "--help"]).output
    assert "--model-cache-mb" in help_text and "least recently used" in help_text
