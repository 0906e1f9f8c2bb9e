"""The ADB bridge backend: benchmark models on a phone through ``adb shell``.

Per item it pushes the model (named by its content hash, once), waits while the
phone is hot, then runs one shell script that records frequencies and
temperatures, starts an on-phone battery sampler, runs the benchmark runner
pinned to the fast cores, marks the lines where the measured phase starts and
ends, and records the state again. Sampling on the phone (not through a second
adb stream) keeps USB phones, which allow one connection, measurable and ties
each sample to the phone's own clock; the marks cut the samples to the
measured runs.

Safety: every shell word comes from a fixed template or a validated value
(hex hashes, numbers, names from fixed sets, quoted with :func:`shlex.join`),
never from a request; files are written and deleted only under
``/data/local/tmp/edgelat/``. A lost link is retried with a reconnect (backoff
in :class:`AdbConnection`); after the retry budget the item fails with a
DeviceError and the rest of the batch fails fast until the phone is back.

Files on the phone: pushed models are named by their content hash and kept
under a size cap (``model_cache_mb``): before a new model is pushed, the least
recently used ones are deleted until it fits (recency is this bridge's own use
order, then the files' modification times, which each run refreshes with
``touch``). Runner binaries and the Python runner's files are never evicted.
A runner binary is pushed again unless the phone's copy has the same SHA-256
(``sha256sum``, else ``md5sum``, as toybox has both); a phone with neither is
compared by size and modification time, and the bridge notes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import shlex
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgelat import __version__
from edgelat.agents.adb import facts as phone_facts
from edgelat.agents.adb.connection import AdbConnection, ConnectionLost, PhoneLost, Timeouts
from edgelat.agents.adb.runners import (
    DEVICE_DIR,
    BenchmarkModelRunner,
    DeviceRunner,
    OrtPerfTestRunner,
    RUNTIME_RUNNER,
    PythonRunner,
    check_device_path,
    check_runner,
)
from edgelat.agents.backend import Backend
from edgelat.agents.cache import check_sha
from edgelat.agents.client import DeviceClient, LocalClient, run_item
from edgelat.agents.energy.battery import CHARGING_NOTE, DEFAULT_BASE, integrate_energy_j, power_w, read_battery_sample
from edgelat.values import FORMATS, BenchmarkItem, BenchmarkResult, MeasurementProtocol, RuntimeConfig
from edgelat.errors import BadInput, DeviceError

SECTION = phone_facts.SECTION
MIN_ENERGY_WINDOW_S = 1.0  # battery fuel gauges refresh every 0.25-1 s
MIN_ENERGY_SAMPLES = 3
DEFAULT_MODEL_CACHE_MB = 1024.0  # pushed models kept on the phone (least recently used go first)
MODEL_FILE = re.compile(r"^[0-9a-f]{64}\.(?:onnx|tflite)$")  # the only names the cache may delete
_RM_BATCH = 64  # files per rm command


def remote_model_path(sha: str, model_format: str) -> str:
    """``/data/local/tmp/edgelat/<sha256>.<ext>``; anything but a hex digest is refused."""
    check_sha(sha)
    if model_format not in FORMATS:
        raise BadInput(f"unknown model format {model_format!r} (expected one of {', '.join(FORMATS)})")
    return f"{DEVICE_DIR}/{sha}.{model_format}"


def _inside_device_dir(path: str) -> str:
    if not path.startswith(DEVICE_DIR + "/") or ".." in path.split("/"):
        raise DeviceError(f"refusing to write {path!r} on the phone: edgelat writes only under {DEVICE_DIR}/")
    return path


def measure_script(
    command: str,
    mark_glob: str,
    battery: str | None,
    period_s: float,
    max_samples: int,
    helper_mask: str | None,
    snapshot_battery: str = DEFAULT_BASE,
    touch: str | None = None,
) -> str:
    """The one shell script of a measurement (see the module docstring); every input is trusted text.

    ``touch``: a file under the bridge's directory whose modification time is set to now
    (the model being run: its recency for the model cache).
    """
    snap = phone_facts.dump_script(phone_facts.snapshot_patterns(snapshot_battery))
    lines = [
        f"d={DEVICE_DIR}; s=$d/.energy.$$; rm -f $d/.energy.*",
        f"echo '{SECTION}env_before'",
        snap,
        f"echo '{SECTION}run'",
    ]
    if touch:
        lines.insert(1, f"touch -c {shlex.quote(_inside_device_dir(touch))} 2>/dev/null")
    if battery:
        b = battery
        lines.append(
            f"( i=0; while [ $i -lt {int(max_samples)} ] && kill -0 $$ 2>/dev/null; do "
            "read -r u _ < /proc/uptime; st=; pr=; cu=; vo=; "
            f"read -r st < {b}/status; read -r pr < {b}/present; "
            f"read -r cu < {b}/current_now; read -r vo < {b}/voltage_now; "
            f'echo "BAT $u $st|$pr|$cu|$vo"; i=$((i+1)); sleep {period_s:g}; done ) >> $s 2>/dev/null &'
        )
        lines.append("sp=$!")
        if helper_mask:
            lines.append(f"taskset -p {helper_mask} $sp >/dev/null 2>&1")
    lines.append(
        f"{{ {command} 2>&1; printf '\\nEDGELAT_RC=%d\\n' $?; }} | "
        '{ n=0; while IFS= read -r l || [ -n "$l" ]; do n=$((n+1)); '
        f'case "$l" in {mark_glob}) read -r u _ < /proc/uptime; echo "MARK $u $n" >> $s;; esac; '
        "printf '%s\\n' \"$l\"; done; }"
    )
    if battery:
        lines.append("kill $sp 2>/dev/null; wait $sp 2>/dev/null")
    lines += [f"echo '{SECTION}env_after'", snap, f"echo '{SECTION}samples'", "cat $s 2>/dev/null; rm -f $s"]
    return "\n".join(lines)


def split_output(text: str) -> dict[str, list[str]]:
    """Sections of the measurement output (lines split on \\n only, as the marks count them)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.split("\n"):
        if line.startswith(SECTION):
            current = out.setdefault(line[len(SECTION):].strip(), [])
        elif current is not None:
            current.append(line)
    run = out.get("run")
    if run and run[-1] == "":
        run.pop()  # the newline ending the last printed line
    return out


_UPTIME = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")  # /proc/uptime's "12345.67"
_LINE_NO = re.compile(r"[0-9]{1,12}")


def parse_samples(lines: list[str]) -> tuple[list[tuple[float, dict[str, str]]], list[tuple[float, int]]]:
    """``BAT uptime status|present|current|voltage`` and ``MARK uptime line`` records.

    Malformed records are skipped; numbers outside their plausible range (see
    :data:`edgelat.agents.adb.facts.RANGES`) are blanked, as an unreadable file is.
    """
    samples, marks = [], []
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) != 3 or len(line) > 512 or not _UPTIME.fullmatch(parts[1]):
            continue
        if parts[0] == "BAT":
            st, pr, cu, vo = (parts[2].split("|") + ["", "", "", ""])[:4]
            values = {"status": st[:64], "present": pr, "current_now": cu, "voltage_now": vo}
            for key, kind in (("present", "present"), ("current_now", "battery_raw"), ("voltage_now", "battery_raw")):
                if values[key] and phone_facts.bounded_int(values[key], kind) is None:
                    values[key] = ""
            samples.append((float(parts[1]), values))
        elif parts[0] == "MARK" and _LINE_NO.fullmatch(parts[2]):
            marks.append((float(parts[1]), int(parts[2])))
    return samples, marks


def energy_per_inference(
    samples: list[tuple[float, dict[str, str]]],
    window: tuple[float, float] | None,
    runs: int,
    steady_s: float | None,
    base: str = DEFAULT_BASE,
    current_unit: str | None = None,
    voltage_unit: str | None = None,
) -> tuple[float | None, str, dict[str, Any]]:
    """mJ per inference from the battery samples inside the measured window, or None and why.

    Mean power over the window (trapezoid integral of |I|·V over the samples,
    divided by their span) times the measured phase's duration, over the runs.
    """
    if window is None:
        return None, "the runner's output did not mark its measured phase; no energy recorded", {}
    t0, t1 = window
    duration = steady_s if steady_s else (t1 - t0)
    details: dict[str, Any] = {"window_s": round(t1 - t0, 3), "measured_s": duration}
    if duration is None or duration < MIN_ENERGY_WINDOW_S:
        return None, (
            f"measured phase of {duration or 0:.2f} s is shorter than the battery gauge's update period "
            f"(needs >= {MIN_ENERGY_WINDOW_S:g} s); raise --max-seconds for an energy figure"
        ), details
    inside = [(t, v) for t, v in samples if t0 <= t <= t1]
    points: list[tuple[float, float]] = []
    statuses: set[str] = set()
    for t, values in inside:
        def read(path: str, values: dict[str, str] = values) -> str:
            v = values.get(path.rsplit("/", 1)[-1], "")
            if not v:
                raise OSError("not readable")
            return v

        s = read_battery_sample(read, base, current_unit=current_unit, voltage_unit=voltage_unit, clock=lambda t=t: t)
        statuses.add(str(s.status))
        current_unit = current_unit or s.current_unit
        voltage_unit = voltage_unit or s.voltage_unit
        p = power_w(s)
        if p is not None:
            points.append((s.t, p))
    details.update(samples=len(inside), statuses=sorted(statuses), current_unit=current_unit,
                   voltage_unit=voltage_unit)
    if "Charging" in statuses:
        return None, CHARGING_NOTE, details
    odd = sorted(statuses - {"Discharging"})
    if odd:
        return None, (f"battery status {odd[0]!r} during the run, not 'Discharging': battery current does not "
                      "measure inference energy"), details
    if len(points) < MIN_ENERGY_SAMPLES or points[-1][0] <= points[0][0]:
        return None, (f"too few battery samples in the measured phase ({len(points)} readable, need "
                      f">= {MIN_ENERGY_SAMPLES})"), details
    joules = integrate_energy_j(points)
    mean_w = joules / (points[-1][0] - points[0][0])
    details["mean_power_w"] = mean_w
    if runs <= 0:
        return None, "the runner reported no run count; cannot divide energy per inference", details
    return mean_w * duration / runs * 1000.0, "", details


class AdbBackend(Backend):
    """Runs models on one phone through an :class:`AdbConnection`.

    ``runner`` is the default for in-process runtime names (``onnxruntime``,
    ``litert``); a config whose runtime is ``tflite-benchmark`` or
    ``ort-perf-test`` picks that runner. Cool-down: before each item, wait in
    ``cooldown_poll_s`` steps while any thermal zone is above ``cooldown_c``
    (at most ``cooldown_max_s``).
    """

    def __init__(
        self,
        conn: AdbConnection,
        runner: str = "benchmark_model",
        *,
        python: str = "python3",
        benchmark_model: str | None = None,
        ort_perf_test: str | None = None,
        facts: dict[str, Any] | None = None,
        op_profiling: bool = False,
        cooldown_c: float = 45.0,
        cooldown_max_s: float = 120.0,
        cooldown_poll_s: float = 5.0,
        retries: int = 3,
        energy_period_s: float = 0.1,
        battery: str = DEFAULT_BASE,
        command_timeout_s: float | None = None,
        model_cache_mb: float = DEFAULT_MODEL_CACHE_MB,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = conn
        self.runner = check_runner(runner)
        self.python = phone_facts.check_python_path(python)
        self.benchmark_model = benchmark_model and check_device_path(benchmark_model, "benchmark_model")
        self.ort_perf_test = ort_perf_test and check_device_path(ort_perf_test, "onnxruntime_perf_test")
        self.op_profiling = op_profiling
        self.cooldown_c = float(cooldown_c)
        self.cooldown_max_s = float(cooldown_max_s)
        self.cooldown_poll_s = float(cooldown_poll_s)
        self.retries = int(retries)
        self.energy_period_s = float(energy_period_s)
        self.battery = phone_facts.check_battery_path(battery)
        self.command_timeout_s = command_timeout_s
        if not math.isfinite(float(model_cache_mb)) or model_cache_mb < 0:
            raise BadInput(f"model cache size must be a finite number of MB >= 0, got {model_cache_mb!r}")
        self.model_cache_bytes = int(float(model_cache_mb) * 1024 * 1024)
        self._used: dict[str, int] = {}  # model file name -> when this bridge last used it (a counter)
        self._use_clock = 0
        self.evicted: list[str] = []  # model files this bridge deleted to stay under the cap
        self.notes: list[str] = []  # what the user should know about files on the phone
        self._sleep = sleep
        self._facts = dict(facts) if facts else None
        self._fresh = False  # facts read by this backend (not only the registry's copy)
        self.lost_reason: str | None = None  # set when the phone stayed unreachable for a whole retry budget
        self.runs_started = 0  # runner invocations (a retried item counts twice)

    # ---- facts ----
    def describe(self) -> dict[str, Any]:
        if not self._fresh:
            self._facts = phone_facts.read_facts(self.conn, self.python, self.battery)
            self._fresh = True
        facts = dict(self._facts or {})
        facts["bridge"] = {"runner": self.runner, "agent_version": __version__,
                           "model_cache_bytes": self.model_cache_bytes}
        if self.notes:
            facts["bridge"]["notes"] = list(self.notes)
        return facts

    @property
    def facts(self) -> dict[str, Any]:
        if self._facts is None:
            self.describe()
        return self._facts or {}

    # ---- runners ----
    def runner_for(self, config: RuntimeConfig, model_format: str) -> DeviceRunner:
        name = RUNTIME_RUNNER.get(config.runtime, self.runner)
        if name == "benchmark_model":
            runner: DeviceRunner = BenchmarkModelRunner(
                self.benchmark_model or self._found("benchmark_model"), op_profiling=self.op_profiling
            )
        elif name == "ort-perf-test":
            runner = OrtPerfTestRunner(self.ort_perf_test or self._found("onnxruntime_perf_test"))
        else:
            runner = PythonRunner(self.python)
        if model_format not in runner.formats:
            raise BadInput(
                f"runner {runner.name} runs {'/'.join(runner.formats)} models, not {model_format}: "
                f"pick another runner (--runner) or convert the model"
            )
        return runner

    def _found(self, binary: str) -> str:
        found = ((self._facts or {}).get("runners") or {}).get(binary)
        return found if isinstance(found, str) and found else f"{DEVICE_DIR}/{binary}"

    # ---- files on the phone ----
    def _ensure_file(self, remote: str, data: bytes, mode: int = 0o644) -> bool:
        """Push ``data`` unless the phone already has it; True when it was pushed.

        For files named by their content (models, the Python runner's hashed
        directory) a file of the same size is the same file.
        """
        _inside_device_dir(remote)
        st_mode, size, _ = self.conn.stat(remote)
        if st_mode and size == len(data):
            return False
        self.conn.push(data, remote, mode=mode)
        return True

    def phone_digest(self, remote: str) -> tuple[str, str] | None:
        """(algorithm, hex digest) of a file on the phone: ``sha256sum``, else ``md5sum``;
        None when the phone has neither (or the file is missing)."""
        q = shlex.quote(_inside_device_dir(remote))
        out = self.conn.shell(f"sha256sum {q} 2>/dev/null || md5sum {q} 2>/dev/null; true",
                              what=f"hashing {remote}", timeout_s=120, max_bytes=4096)
        words = out.split(None, 1)
        word = words[0].lower() if words else ""
        if re.fullmatch(r"[0-9a-f]{64}", word):
            return "sha256", word
        if re.fullmatch(r"[0-9a-f]{32}", word):
            return "md5", word
        return None

    def _ensure_binary(self, remote: str, data: bytes, mtime: int) -> tuple[bool, str]:
        """Push a runner binary unless the phone's copy has the same content; (pushed, how compared)."""
        _inside_device_dir(remote)
        st_mode, size, phone_mtime = self.conn.stat(remote)
        if not st_mode:
            self.conn.push(data, remote, mode=0o755, mtime=mtime)
            return True, "absent"
        if size != len(data):  # a different size is a different file: no need to hash
            self.conn.push(data, remote, mode=0o755, mtime=mtime)
            return True, "size"
        digest = self.phone_digest(remote)
        if digest is not None:
            algo, value = digest
            same = hashlib.new(algo, data).hexdigest() == value
            how = algo
        else:
            same = phone_mtime == mtime
            how = "size+mtime"
            self.notes.append(
                f"the phone has neither sha256sum nor md5sum: {remote} was compared by size and "
                "modification time only (a rebuilt binary with the same size and time would not be pushed)"
            )
        if not same:
            self.conn.push(data, remote, mode=0o755, mtime=mtime)
        return not same, how

    def push_binary(self, host_path: str | Path, name: str) -> str:
        """Push a runner binary (benchmark_model...) into the bridge's directory; returns its device path.

        It is pushed again whenever its content differs from the phone's copy
        (compared by hash; see :meth:`phone_digest`), whatever the sizes.
        """
        if name not in ("benchmark_model", "onnxruntime_perf_test"):
            raise BadInput(f"unknown runner binary {name!r}")
        try:
            data = Path(host_path).read_bytes()
            mtime = int(Path(host_path).stat().st_mtime)
        except OSError as exc:
            raise BadInput(f"cannot read {host_path}: {exc.strerror}") from exc
        remote = f"{DEVICE_DIR}/{name}"
        self._ensure_binary(remote, data, mtime)
        return remote

    def _touch_model(self, name: str) -> None:
        self._use_clock += 1
        self._used[name] = self._use_clock

    def make_room(self, keep: str, incoming: int) -> dict[str, Any]:
        """Delete least recently used models until the cached ones plus ``incoming`` bytes fit the cap.

        ``keep`` (a file name) is never deleted, nor is anything but a content-hash
        model file (runner binaries, the Python runner). Returns what was done.
        """
        entries = self.conn.list(DEVICE_DIR)
        models = [(name, size, mtime) for name, mode, size, mtime in entries
                  if MODEL_FILE.match(name) and stat.S_ISREG(mode) and name != keep]
        total = sum(size for _, size, _ in models) + incoming
        record: dict[str, Any] = {"cap_bytes": self.model_cache_bytes, "cached_bytes": total - incoming,
                                  "evicted": [], "freed_bytes": 0}
        if total <= self.model_cache_bytes:
            return record
        # Oldest first: models this bridge has not used (by the phone's mtime), then its own by use order.
        order = sorted(models, key=lambda m: (self._used.get(m[0], 0), m[2], m[0]))
        victims: list[tuple[str, int]] = []
        for name, size, _ in order:
            if total <= self.model_cache_bytes:
                break
            victims.append((name, size))
            total -= size
        for i in range(0, len(victims), _RM_BATCH):
            paths = [_inside_device_dir(f"{DEVICE_DIR}/{n}") for n, _ in victims[i : i + _RM_BATCH]]
            self.conn.run(["rm", "-f", *paths], what="removing cached models", timeout_s=60)
        for name, _ in victims:
            self._used.pop(name, None)
            self.evicted.append(name)
        record["evicted"] = [n for n, _ in victims]
        record["freed_bytes"] = sum(size for _, size in victims)
        if total > self.model_cache_bytes:
            record["note"] = (f"the model alone ({incoming} bytes) is larger than the phone's model cache "
                              f"({self.model_cache_bytes} bytes): pushed anyway, every other model removed")
        return record

    def remove_model(self, sha: str, model_format: str) -> None:
        """Delete a pushed model (only ever a content-hash name under the bridge's directory)."""
        remote = _inside_device_dir(remote_model_path(sha, model_format))
        self.conn.run(["rm", "-f", remote], what="removing a model", timeout_s=30)

    # ---- noise control ----
    def _cool_down(self) -> dict[str, Any]:
        script = phone_facts.dump_script([f"{phone_facts.THERMAL}/thermal_zone[0-9]*/type",
                                          f"{phone_facts.THERMAL}/thermal_zone[0-9]*/temp"])
        waited = 0.0
        while True:
            dump = phone_facts.parse_dump(self.conn.shell(script, what="reading temperatures", timeout_s=30))
            temp, zone = phone_facts.max_temp_c(phone_facts.thermal_of(dump))
            record = {"threshold_c": self.cooldown_c, "waited_s": round(waited, 3), "max_temp_c": temp, "zone": zone}
            if temp is None or temp <= self.cooldown_c:
                return record
            if waited >= self.cooldown_max_s:
                record["note"] = f"still {temp:g} C ({zone}) after {waited:g} s of cool-down; measured anyway"
                return record
            self._sleep(self.cooldown_poll_s)
            waited += self.cooldown_poll_s

    def _affinity(self, threads: int) -> tuple[str | None, str | None, dict[str, Any]]:
        facts = self.facts
        if not (facts.get("runners") or {}).get("taskset"):
            return None, None, {"pinned": False, "note": "no taskset on the phone: runs unpinned"}
        cpus = phone_facts.pin_cpus(facts, threads)
        if cpus is None:
            return None, None, {"pinned": False, "note": "one CPU cluster or every core needed: no pinning"}
        little = phone_facts.little_cpus(facts)
        helper = phone_facts.cpu_mask(little) if little and not set(little) & set(cpus) else None
        return phone_facts.cpu_mask(cpus), helper, {"pinned": True, "cpus": cpus, "mask": phone_facts.cpu_mask(cpus)}

    # ---- benchmarking ----
    def benchmark(
        self, model_path: Path, model_format: str, config: RuntimeConfig, protocol: MeasurementProtocol
    ) -> BenchmarkResult:
        if model_format not in FORMATS:
            raise BadInput(f"unknown model format {model_format!r} (expected one of {', '.join(FORMATS)})")
        try:
            data = Path(model_path).read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read model {model_path}: {exc.strerror}") from exc
        sha = hashlib.sha256(data).hexdigest()
        runner = self.runner_for(config, model_format)
        argv = runner.argv(remote_model_path(sha, model_format), config, protocol)  # validates before any I/O

        if self.lost_reason is not None:
            try:  # one quick try: fail fast while the phone is gone, resume when it is back
                self.conn.connect(attempts=1)
            except DeviceError:
                raise DeviceError(self.lost_reason) from None
            self.lost_reason = None
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(data, sha, model_format, runner, argv, config, protocol, attempt)
            except ConnectionLost as exc:
                last = exc
            except PhoneLost as exc:
                self.lost_reason = str(exc)
                raise
        self.lost_reason = (
            f"lost phone {self.conn.label} {self.retries + 1} times while measuring model {sha[:12]} ({last}); "
            "check the cable or network and rerun (finished work is kept)"
        )
        raise DeviceError(self.lost_reason)

    def _attempt(
        self,
        data: bytes,
        sha: str,
        model_format: str,
        runner: DeviceRunner,
        argv: list[str],
        config: RuntimeConfig,
        protocol: MeasurementProtocol,
        attempt: int,
    ) -> BenchmarkResult:
        facts = self.facts
        for remote, content in runner.files().items():
            self._ensure_file(remote, content)
        remote_model = _inside_device_dir(remote_model_path(sha, model_format))
        model_name = remote_model.rsplit("/", 1)[-1]
        st_mode, size, _ = self.conn.stat(remote_model)
        cache: dict[str, Any] | None = None
        pushed = not (st_mode and size == len(data))  # named by content: the same size is the same file
        if pushed:
            cache = self.make_room(keep=model_name, incoming=len(data))
            self.conn.push(data, remote_model)
        self._touch_model(model_name)
        cooldown = self._cool_down()
        mask, helper_mask, affinity = self._affinity(config.threads)
        command = " ".join(p for p in (runner.env_prefix(), f"taskset {mask}" if mask else "", shlex.join(argv)) if p)
        bat = facts.get("battery") or {}
        energy_ok = bool(bat.get("energy_readable"))
        timeout = self.command_timeout_s or (120.0 + 3.0 * protocol.max_seconds)
        script = measure_script(
            command,
            runner.mark_glob,
            self.battery if energy_ok else None,
            self.energy_period_s,
            max_samples=int(timeout / max(self.energy_period_s, 0.01)) + 10,
            helper_mask=helper_mask,
            snapshot_battery=self.battery,
            touch=remote_model,
        )
        self.runs_started += 1
        text = self.conn.shell(script, timeout_s=timeout, what=f"{runner.name} run of model {sha[:12]}")
        sections = split_output(text)
        run_lines = sections.get("run", [])
        out = runner.parse("\n".join(run_lines), config)
        samples, marks = parse_samples(sections.get("samples", []))
        marks = [(t, n) for t, n in marks if 0 < n <= len(run_lines)]  # a garbled mark names no line
        if energy_ok:
            window = runner.window(run_lines, marks)
            energy_mj, energy_note, energy_details = energy_per_inference(
                samples, window, out.latency.n, out.steady_s, self.battery,
                bat.get("current_unit"), bat.get("voltage_unit"),
            )
        else:
            energy_mj, energy_details = None, {}
            energy_note = (
                f"no readable battery current/voltage at {self.battery} on this phone"
                if bat else f"no battery found at {self.battery} on this phone"
            )
        before = phone_facts.snapshot_from_dump(phone_facts.parse_dump("\n".join(sections.get("env_before", []))),
                                                self.battery)
        after = phone_facts.snapshot_from_dump(phone_facts.parse_dump("\n".join(sections.get("env_after", []))),
                                               self.battery)
        extra = dict(out.extra)
        extra.update(energy_meter="battery", energy_scope="whole phone (battery discharge)", energy=energy_details,
                     model_pushed=pushed, attempts=attempt + 1)
        if cache is not None:
            extra["model_cache"] = cache
        return BenchmarkResult(
            model_sha256=sha,
            config=dataclasses.replace(config, runtime=out.runtime, version=out.version),
            latency=out.latency,
            session_ms=out.session_ms,
            first_run_ms=out.first_run_ms,
            energy_mj=energy_mj,
            energy_note=energy_note,
            peak_memory_bytes=out.peak_memory_bytes,
            environment={
                "before": before,
                "after": after,
                "cooldown": cooldown,
                "affinity": affinity,
                "control": phone_control(affinity, cooldown, before),
                "device": {k: facts.get(k) for k in ("model", "manufacturer", "soc", "android_version", "sdk")},
                "transport": self.conn.label,
                "reconnects": self.conn.reconnects,
            },
            agent_version=__version__,
            extra=extra,
        )

    def close(self) -> None:
        self.conn.close()


def phone_control(affinity: dict[str, Any], cooldown: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What held for a phone run, shaped like the local backend's ``control`` record. The bridge
    pins with taskset and waits for cooling; it never changes a phone's governor (that needs root)."""
    governors = {cpu: e["governor"] for cpu, e in (before.get("cpus") or {}).items() if e.get("governor")}
    governor: dict[str, Any] = {"controlled": False, "note": "not controlled: the bridge does not change a phone's "
                                "governor (it needs root)" if governors else
                                "not controlled: no cpufreq governor readable on the phone"}
    if governors:
        governor["read"] = governors
    if cooldown.get("max_temp_c") is None:
        temperature: dict[str, Any] = {"controlled": False, "note": "not controlled: no thermal sensor found"}
    else:
        temperature = {"controlled": "note" not in cooldown, **cooldown}
        if "note" in cooldown:
            temperature["note"] = f"not controlled: {cooldown['note']}"
    pinned = {"pinned": True, "cpus": affinity["cpus"], "method": "taskset"} if affinity.get("pinned") else \
        {"pinned": False, "note": f"not controlled: {affinity.get('note', 'not pinned')}"}
    return {"affinity": pinned, "governor": governor, "temperature": temperature}


class AdbClient(LocalClient):
    """The in-process client of a phone: a batch stops with DeviceError once the phone is lost."""

    backend: AdbBackend

    def benchmark_batch(
        self, items: Sequence[BenchmarkItem], config: RuntimeConfig, protocol: MeasurementProtocol,
        rounds: int = 0,
    ) -> Iterator[BenchmarkResult]:
        for item in items:
            result = run_item(self.backend, self.cache, item, config, protocol)
            if result.error and self.backend.lost_reason is not None:
                raise DeviceError(self.backend.lost_reason)
            if rounds > 1 and result.ok:  # a phone runner is one process per model: no interleaving
                result.extra["rounds"] = f"ignored: this device measures each model in one go (asked for {rounds})"
            yield result


def _float(transport: dict[str, Any], key: str, default: float) -> float:
    value = transport.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"transport setting {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise BadInput(f"transport setting {key!r} must be a finite number >= 0, got {value!r}")
    return out


def backend_from_transport(transport: dict[str, Any], facts: dict[str, Any] | None = None) -> AdbBackend:
    """An :class:`AdbBackend` from a registry transport ``{"type": "adb", "serial"|"address": ..., ...}``.

    Optional keys: ``runner``, ``python``, ``benchmark_model``, ``ort_perf_test`` (device paths),
    ``op_profiling``, ``cooldown_c``, ``cooldown_max_s``, ``cooldown_poll_s``, ``retries``,
    ``timeout_s`` (one socket exchange), ``auth_timeout_s``, ``command_timeout_s``,
    ``energy_period_s``, ``battery``, ``key_path``, ``model_cache_mb`` (pushed models kept
    on the phone, least recently used removed first; default 1024).
    """
    serial, address = transport.get("serial"), transport.get("address")
    if not serial and not address:
        raise BadInput("the phone's transport has neither a serial nor an address: re-register it")
    timeouts = Timeouts(
        io_s=_float(transport, "timeout_s", Timeouts.io_s),
        auth_s=_float(transport, "auth_timeout_s", Timeouts.auth_s),
        backoff_s=_float(transport, "backoff_s", Timeouts.backoff_s),
        backoff_max_s=_float(transport, "backoff_max_s", Timeouts.backoff_max_s),
        attempts=int(_float(transport, "reconnect_attempts", Timeouts.attempts)) or 1,
    )
    conn = AdbConnection(serial=serial or None, address=None if serial else address,
                         key_path=transport.get("key_path"), timeouts=timeouts)
    command_timeout = _float(transport, "command_timeout_s", 0.0) or None
    return AdbBackend(
        conn,
        runner=transport.get("runner") or "benchmark_model",
        python=transport.get("python") or "python3",
        benchmark_model=transport.get("benchmark_model") or None,
        ort_perf_test=transport.get("ort_perf_test") or None,
        facts=facts,
        op_profiling=bool(transport.get("op_profiling", False)),
        cooldown_c=_float(transport, "cooldown_c", 45.0),
        cooldown_max_s=_float(transport, "cooldown_max_s", 120.0),
        cooldown_poll_s=_float(transport, "cooldown_poll_s", 5.0),
        retries=int(_float(transport, "retries", 3)),
        energy_period_s=_float(transport, "energy_period_s", 0.1) or 0.1,
        battery=transport.get("battery") or DEFAULT_BASE,
        command_timeout_s=command_timeout,
        model_cache_mb=_float(transport, "model_cache_mb", DEFAULT_MODEL_CACHE_MB),
    )


def client_for(transport: dict[str, Any], facts: dict[str, Any]) -> DeviceClient:
    """The registry's way to a phone: an in-process bridge, or a running ``agent adb`` (``agent`` key)."""
    if transport.get("agent"):
        from edgelat.agents.remote import GrpcClient

        return GrpcClient.from_transport({"address": transport["agent"], "token_file": transport.get("token_file")})
    return AdbClient(backend_from_transport(transport, facts))
