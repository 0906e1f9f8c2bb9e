"""What a phone is: ro.* properties, CPU clusters, thermal zones, battery, runners.

Read with two batched ``adb shell`` commands (``getprop`` plus one loop over
the sysfs files, then a probe for runners), not hundreds of round trips: over
USB each command costs milliseconds, over Wi-Fi tens of them. The parsing
functions are pure (text in, dict out) so they are tested on the exact text a
phone prints. Units are the kernel's: cpufreq in kHz, thermal in
millidegrees C, battery temperature in tenths of a degree.

Everything a phone prints is untrusted and bounded here (a broken or hostile
phone must not make the host hang or allocate without limit): at most
:data:`MAX_LINES` lines per section, :data:`MAX_VALUE_CHARS` characters per
value, CPU and thermal-zone numbers below :data:`MAX_CPUS`/:data:`MAX_ZONES`,
and each number inside a plausible range for what it measures. A value out of
bounds is dropped (never clipped into a made-up figure) and the facts say so
in ``parse_notes``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

from edgelat.agents.adb.connection import AdbConnection
from edgelat.agents.energy.battery import DEFAULT_BASE, read_battery_sample

DEVICE_DIR = "/data/local/tmp/edgelat"
CPU = "/sys/devices/system/cpu"
THERMAL = "/sys/class/thermal"
SECTION = "@@EDGELAT "

CPUFREQ_FILES = (
    "cpuinfo_min_freq",
    "cpuinfo_max_freq",
    "scaling_cur_freq",
    "scaling_governor",
    "related_cpus",
)
BATTERY_FILES = ("present", "status", "capacity", "health", "temp", "current_now", "voltage_now")
RUNNER_BINARIES = ("benchmark_model", "onnxruntime_perf_test")

# Bounds on what is parsed from a phone (see the module docstring).
MAX_LINES = 20_000  # lines read per section (a phone has ~1,500 properties, a few hundred sysfs files)
MAX_VALUE_CHARS = 1024  # one property or sysfs value (PROP_VALUE_MAX is 92; ro.* can be longer)
MAX_CPUS = 1024  # CPU numbers 0..1023 (arm64 kernels default to NR_CPUS=256; phones have <= 16)
MAX_ZONES = 1024  # thermal_zone numbers
MAX_NOTES = 20
MAX_PROBE_CHARS = 64 * 1024  # the python probe's JSON line
# Plausible ranges, in the kernel's units, of the numbers read from sysfs.
RANGES: dict[str, tuple[int, int]] = {
    "khz": (0, 100_000_000),  # cpufreq, kHz (100 GHz)
    "millic": (-300_000, 1_000_000),  # thermal, millidegrees C (-273000 is a common placeholder)
    "capacity": (0, 100),  # battery level, %
    "deci_c": (-1_000, 2_000),  # battery temp, tenths of a degree C
    "battery_raw": (-10**10, 10**10),  # current_now / voltage_now / power_now (uA, uV, uW or mA, mV)
    "present": (0, 1),
    "sdk": (1, 10_000),
    "mem_kb": (1, 2**40),
}
_BATTERY_NUMERIC = {"capacity": "capacity", "temp": "deci_c", "current_now": "battery_raw",
                    "voltage_now": "battery_raw", "power_now": "battery_raw", "present": "present"}
_INT_TOKEN = re.compile(r"-?[0-9]{1,20}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_PHONE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]{1,250}$")


def note(notes: list[str] | None, message: str) -> None:
    """Record why a value from the phone was dropped (at most MAX_NOTES, then a count)."""
    if notes is None:
        return
    if len(notes) < MAX_NOTES:
        notes.append(message)
    elif len(notes) == MAX_NOTES:
        notes.append("more values from the phone were dropped (notes stop here)")


def _short(value: str) -> str:
    return repr(value[:40] + ("..." if len(value) > 40 else ""))


def bounded_int(value: str | None, kind: str, what: str = "", notes: list[str] | None = None) -> int | None:
    """The first word of ``value`` as an int inside ``RANGES[kind]``, else None (with a note
    when the value was there but unusable)."""
    if value is None:
        return None
    words = value.split(None, 1)
    if not words:
        return None
    lo, hi = RANGES[kind]
    if not _INT_TOKEN.fullmatch(words[0]):
        note(notes, f"{what or kind}: {_short(value)} is not an integer; dropped")
        return None
    n = int(words[0])
    if not lo <= n <= hi:
        note(notes, f"{what or kind}: {_short(value)} is outside {lo}..{hi}; dropped")
        return None
    return n

# Python modules the python runner can use -> (distribution name, runtime name)
PY_MODULES = {
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "ai_edge_litert": ("ai-edge-litert", "litert"),
    "tflite_runtime": ("tflite-runtime", "tflite-runtime"),
    "numpy": ("numpy", None),
}

_PY_PROBE = (
    "import importlib.util as u, json, platform\n"
    "from importlib import metadata as m\n"
    "def v(d):\n"
    "    try:\n"
    "        return m.version(d)\n"
    "    except Exception:\n"
    "        return 'present'\n"
    f"mods = {json.dumps({k: d for k, (d, _) in PY_MODULES.items()})}\n"
    "out = {'version': platform.python_version(), 'machine': platform.machine(),\n"
    "       'modules': {k: (v(d) if u.find_spec(k) else None) for k, d in mods.items()}}\n"
    "print('EDGELAT_PY ' + json.dumps(out))\n"
)
_PY_PATH = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")
_BATTERY_PATH = re.compile(r"^/sys/class/power_supply/[A-Za-z0-9_.-]{1,64}$")


def check_python_path(path: str) -> str:
    """The device's Python interpreter (a bare name on PATH or an absolute path)."""
    from edgelat.errors import BadInput

    if not isinstance(path, str) or not _PY_PATH.match(path) or ".." in path.split("/"):
        raise BadInput(f"bad python path {path!r}: give an interpreter name like python3 or an absolute path")
    return path


def check_battery_path(path: str) -> str:
    from edgelat.errors import BadInput

    if not isinstance(path, str) or not _BATTERY_PATH.match(path):
        raise BadInput(f"bad battery path {path!r}: expected /sys/class/power_supply/<name>")
    return path


# ---- shell text (fixed templates; the only inserted values are validated and quoted) ----
def dump_script(patterns: list[str]) -> str:
    """Shell that prints ``path=value`` (first line of each readable file) for the globs."""
    globs = " ".join(patterns)
    return (
        f"for f in {globs}; do v=; "
        'if { read -r v || [ -n "$v" ]; } 2>/dev/null < "$f"; then printf "%s=%s\\n" "$f" "$v"; fi; done'
    )


def sysfs_patterns(battery: str = DEFAULT_BASE) -> list[str]:
    pats = [f"{CPU}/possible", f"{CPU}/present", f"{CPU}/online"]
    pats += [f"{CPU}/cpu[0-9]*/cpufreq/{name}" for name in CPUFREQ_FILES]
    pats += [f"{CPU}/cpu[0-9]*/online"]
    pats += [f"{THERMAL}/thermal_zone[0-9]*/type", f"{THERMAL}/thermal_zone[0-9]*/temp"]
    pats += [f"{battery}/{name}" for name in BATTERY_FILES]
    return pats


def snapshot_patterns(battery: str = DEFAULT_BASE) -> list[str]:
    """The state recorded before and after each measurement."""
    return [
        f"{CPU}/cpu[0-9]*/cpufreq/scaling_cur_freq",
        f"{CPU}/cpu[0-9]*/cpufreq/scaling_governor",
        f"{THERMAL}/thermal_zone[0-9]*/type",
        f"{THERMAL}/thermal_zone[0-9]*/temp",
        f"{battery}/status",
        f"{battery}/capacity",
        f"{battery}/temp",
    ]


def facts_script(python: str, battery: str = DEFAULT_BASE) -> str:
    py = shlex.quote(check_python_path(python))
    bins = " ".join(f"{DEVICE_DIR}/{b}" for b in RUNNER_BINARIES)
    names = " ".join(RUNNER_BINARIES + ("taskset",))
    return "\n".join(
        [
            f"echo '{SECTION}getprop'",
            "getprop",
            f"echo '{SECTION}sysfs'",
            dump_script(sysfs_patterns(battery)),
            f"echo '{SECTION}meminfo'",
            "grep -m1 MemTotal /proc/meminfo 2>/dev/null",
            f"echo '{SECTION}runners'",
            f'for b in {bins}; do [ -x "$b" ] && echo "file $b"; done',
            f'for n in {names}; do p=$(command -v "$n" 2>/dev/null) && echo "path $n $p"; done',
            f"echo '{SECTION}python'",
            f"{py} -c {shlex.quote(_PY_PROBE)} 2>&1 | tail -n 3",
            "true",
        ]
    )


# ---- parsing ----------------------------------------------------------------------
def split_sections(text: str, notes: list[str] | None = None) -> dict[str, str]:
    """Sections of a batched output; at most MAX_LINES lines kept per section."""
    out: dict[str, list[str]] = {}
    full: set[str] = set()
    current = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION) :].strip()[:64]
            out[current] = []
        elif current is not None:
            if len(out[current]) < MAX_LINES:
                out[current].append(line)
            elif current not in full:
                full.add(current)
                note(notes, f"section {current!r} has more than {MAX_LINES} lines; the rest was ignored")
    return {k: "\n".join(v) for k, v in out.items()}


_PROP_LINE = re.compile(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$")


def parse_getprop(text: str, notes: list[str] | None = None) -> dict[str, str]:
    """``[ro.product.model]: [Pixel 7]`` lines -> dict (at most MAX_LINES; over-long values dropped)."""
    props: dict[str, str] = {}
    for i, line in enumerate(text.splitlines()):
        if i >= MAX_LINES:
            note(notes, f"getprop printed more than {MAX_LINES} lines; the rest was ignored")
            break
        if len(line) > MAX_VALUE_CHARS + 300:
            note(notes, f"a getprop line of {len(line)} characters was dropped")
            continue
        m = _PROP_LINE.match(line.strip())
        if m:
            if len(m.group(2)) > MAX_VALUE_CHARS or len(m.group(1)) > 256:
                note(notes, f"property {m.group(1)[:60]!r} is longer than {MAX_VALUE_CHARS} characters; dropped")
                continue
            props[m.group(1)] = m.group(2)
    return props


def parse_dump(text: str, notes: list[str] | None = None) -> dict[str, str]:
    """``path=value`` lines -> dict (values stripped; at most MAX_LINES, over-long values dropped)."""
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines()):
        if i >= MAX_LINES:
            note(notes, f"the sysfs dump has more than {MAX_LINES} lines; the rest was ignored")
            break
        if line.startswith("/") and "=" in line:
            path, _, value = line.partition("=")
            if len(path) > 256 or len(value) > MAX_VALUE_CHARS:
                note(notes, f"{path[:80]}: value longer than {MAX_VALUE_CHARS} characters; dropped")
                continue
            out[path] = value.strip()
    return out


def parse_cpulist(text: str, notes: list[str] | None = None, what: str = "cpu list") -> list[int]:
    """``0-3,6`` or ``0 1 2 3`` (related_cpus) -> [0, 1, 2, 3, 6].

    CPU numbers are bounded by MAX_CPUS: a part naming a CPU beyond it (``0-4000000000``),
    a reversed range or a non-number is dropped with a note, so the list never grows
    past MAX_CPUS entries whatever the phone prints.
    """
    cpus: set[int] = set()
    if len(text) > MAX_VALUE_CHARS:
        note(notes, f"{what}: {len(text)} characters is too long for a CPU list; dropped")
        return []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not _DIGITS.fullmatch(lo) or (dash and not _DIGITS.fullmatch(hi)):
            note(notes, f"{what}: {_short(part)} is not a CPU number or range; dropped")
            continue
        first, last = int(lo), int(hi) if dash else int(lo)
        if first > last or last >= MAX_CPUS:
            note(notes, f"{what}: {_short(part)} is outside CPUs 0..{MAX_CPUS - 1}; dropped")
            continue
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def _int(value: str | None) -> int | None:
    """The first word as a 64-bit-sized int, else None (no bounds beyond that)."""
    if value is None:
        return None
    words = value.split(None, 1)
    if not words or not _INT_TOKEN.fullmatch(words[0]):
        return None
    return int(words[0])


_CPU_FILE = re.compile(rf"^{CPU}/cpu(\d+)/cpufreq/(\w+)$")
_ZONE_FILE = re.compile(rf"^{THERMAL}/thermal_zone(\d+)/(type|temp)$")


def cpu_table(dump: dict[str, str], notes: list[str] | None = None) -> dict[int, dict[str, Any]]:
    """Per CPU number (below MAX_CPUS): min_khz, max_khz, cur_khz, governor, related (list)."""
    cpus: dict[int, dict[str, Any]] = {}
    names = {"cpuinfo_min_freq": "min_khz", "cpuinfo_max_freq": "max_khz", "scaling_cur_freq": "cur_khz"}
    for path, value in dump.items():
        m = _CPU_FILE.match(path)
        if not m:
            continue
        if len(m.group(1)) > 6 or int(m.group(1)) >= MAX_CPUS:
            note(notes, f"{path[:80]}: CPU number beyond {MAX_CPUS - 1}; dropped")
            continue
        entry = cpus.setdefault(int(m.group(1)), {})
        key = m.group(2)
        if key in names:
            n = bounded_int(value, "khz", path, notes)
            if n is not None:
                entry[names[key]] = n
        elif key == "scaling_governor" and value:
            if len(value) <= 64:
                entry["governor"] = value
            else:
                note(notes, f"{path}: governor name longer than 64 characters; dropped")
        elif key == "related_cpus":
            entry["related"] = parse_cpulist(value, notes, path)
    return dict(sorted(cpus.items()))


def clusters_of(cpus: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU clusters (from ``related_cpus``; by max frequency where that is missing),
    slowest first, each with a role: little / mid / big (one cluster: "all")."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for cpu, entry in cpus.items():
        key = tuple(entry.get("related") or ()) or ("max", entry.get("max_khz"))  # type: ignore[assignment]
        groups.setdefault(key, []).append(cpu)
    clusters = []
    for members in groups.values():
        members = sorted(members)
        first = cpus[members[0]]
        clusters.append(
            {
                "cpus": members,
                "min_khz": first.get("min_khz"),
                "max_khz": first.get("max_khz"),
                "governor": first.get("governor"),
            }
        )
    clusters.sort(key=lambda c: (c["max_khz"] or 0, c["cpus"][0]))
    for i, c in enumerate(clusters):
        if len(clusters) == 1:
            c["role"] = "all"
        elif i == 0:
            c["role"] = "little"
        elif i == len(clusters) - 1:
            c["role"] = "big"
        else:
            c["role"] = "mid"
    return clusters


def thermal_of(dump: dict[str, str], notes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``thermal_zoneN`` -> type and temp_c (the file holds millidegrees; unreadable zones keep only a type)."""
    zones: dict[int, dict[str, Any]] = {}
    for path, value in dump.items():
        m = _ZONE_FILE.match(path)
        if not m:
            continue
        if len(m.group(1)) > 6 or int(m.group(1)) >= MAX_ZONES:
            note(notes, f"{path[:80]}: thermal zone number beyond {MAX_ZONES - 1}; dropped")
            continue
        entry = zones.setdefault(int(m.group(1)), {})
        if m.group(2) == "type":
            if len(value) <= 128:
                entry["type"] = value
            else:
                note(notes, f"{path}: zone type longer than 128 characters; dropped")
        else:
            n = bounded_int(value, "millic", path, notes)
            if n is not None:
                entry["temp_c"] = n / 1000.0
    return {f"thermal_zone{k}": v for k, v in sorted(zones.items())}


def battery_values(dump: dict[str, str], base: str = DEFAULT_BASE,
                   notes: list[str] | None = None) -> dict[str, str]:
    """The battery files under ``base`` (name -> text), numbers outside their plausible range dropped."""
    values: dict[str, str] = {}
    for p, v in dump.items():
        if not p.startswith(base + "/"):
            continue
        name = p[len(base) + 1 :]
        kind = _BATTERY_NUMERIC.get(name)
        if kind is not None and v.split() and bounded_int(v, kind, p, notes) is None:
            continue
        if kind is None and len(v) > 64:
            note(notes, f"{p}: value longer than 64 characters; dropped")
            continue
        values[name] = v
    return values


def battery_of(dump: dict[str, str], base: str = DEFAULT_BASE,
               notes: list[str] | None = None) -> dict[str, Any] | None:
    """Battery state, with the current/voltage units the energy module decides."""
    values = battery_values(dump, base, notes)
    if not values:
        return None

    def read(path: str) -> str:
        name = path.rsplit("/", 1)[-1]
        if name not in values:
            raise FileNotFoundError("not readable")
        return values[name]

    sample = read_battery_sample(read, base)
    level = _int(values.get("capacity"))
    temp = _int(values.get("temp"))
    out: dict[str, Any] = {
        "path": base,
        "present": sample.present,
        "status": sample.status,
        "level": level,
        "health": values.get("health"),
        "temp_c": None if temp is None else temp / 10.0,
        "current_now": _int(values.get("current_now")),
        "voltage_now": _int(values.get("voltage_now")),
        "current_unit": sample.current_unit,
        "voltage_unit": sample.voltage_unit,
        "energy_readable": sample.current_a is not None and sample.voltage_v is not None,
    }
    return out


def _phone_path(path: str, notes: list[str] | None) -> bool:
    if _PHONE_PATH.match(path) and ".." not in path.split("/"):
        return True
    note(notes, f"runner path {_short(path)} is not a plain absolute path; ignored")
    return False


def parse_runners(text: str, python_info: dict[str, Any] | None, python: str,
                  notes: list[str] | None = None) -> dict[str, Any]:
    """Where the runner binaries and taskset are (only safe absolute paths are kept)."""
    files: dict[str, str] = {}
    paths: dict[str, str] = {}
    known = set(RUNNER_BINARIES) | {"taskset"}
    for line in text.splitlines()[:100]:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "file":
            name = parts[1].rsplit("/", 1)[-1]
            if name in known and _phone_path(parts[1], notes):
                files[name] = parts[1]
        elif len(parts) == 3 and parts[0] == "path" and parts[1] in known:
            if _phone_path(parts[2], notes):
                paths[parts[1]] = parts[2]
    runners: dict[str, Any] = {}
    for name in RUNNER_BINARIES:
        runners[name] = files.get(name) or paths.get(name)
    runners["taskset"] = paths.get("taskset")
    runners["python"] = None
    if python_info is not None:
        runners["python"] = {"path": python, **python_info}
    return runners


def parse_python_probe(text: str, notes: list[str] | None = None) -> dict[str, Any] | None:
    """The probe's ``{"version", "machine", "modules": {name: version|None}}``; None when absent or malformed."""
    for line in text.splitlines():
        if not line.startswith("EDGELAT_PY "):
            continue
        if len(line) > MAX_PROBE_CHARS:
            note(notes, f"the python probe printed {len(line)} characters; ignored")
            return None
        try:
            data = json.loads(line[len("EDGELAT_PY ") :])
        except (ValueError, RecursionError):
            note(notes, "the python probe printed malformed JSON; ignored")
            return None
        return _check_probe(data, notes)
    return None


def _check_probe(data: Any, notes: list[str] | None) -> dict[str, Any] | None:
    def text(v: Any) -> bool:
        return isinstance(v, str) and len(v) <= 128

    if not isinstance(data, dict) or not isinstance(data.get("modules", {}), dict):
        note(notes, "the python probe printed something that is not its JSON object; ignored")
        return None
    out: dict[str, Any] = {}
    for key in ("version", "machine"):
        if text(data.get(key)):
            out[key] = data[key]
    modules: dict[str, str | None] = {}
    for mod in PY_MODULES:
        v = data.get("modules", {}).get(mod)
        if v is None or text(v):
            modules[mod] = v
        else:
            note(notes, f"the python probe's version of {mod} is not a short string; ignored")
            modules[mod] = None
    out["modules"] = modules
    return out


_ABI_ARCH = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l", "armeabi": "armv7l", "x86_64": "x86_64", "x86": "i686"}


def parse_facts(text: str, python: str = "python3", battery: str = DEFAULT_BASE) -> dict[str, Any]:
    """The facts dict from the output of :func:`facts_script`."""
    notes: list[str] = []
    sec = split_sections(text, notes)
    props = parse_getprop(sec.get("getprop", ""), notes)
    dump = parse_dump(sec.get("sysfs", ""), notes)
    cpus = cpu_table(dump, notes)
    clusters = clusters_of(cpus) if cpus else []
    thermal = thermal_of(dump, notes)
    bat = battery_of(dump, battery, notes)
    py = parse_python_probe(sec.get("python", ""), notes)
    runners = parse_runners(sec.get("runners", ""), py, python, notes)
    mem = re.search(r"MemTotal:\s+([0-9]{1,20})\s*kB", sec.get("meminfo", "")[:MAX_VALUE_CHARS])
    mem_kb = bounded_int(mem.group(1), "mem_kb", "MemTotal", notes) if mem else None
    possible = dump.get(f"{CPU}/possible")
    ncores = (len(parse_cpulist(possible, notes, f"{CPU}/possible")) if possible else 0) or len(cpus)
    abi = props.get("ro.product.cpu.abi")
    runtimes: dict[str, str] = {}
    if py:
        for mod, (_, rt) in PY_MODULES.items():
            if rt and py.get("modules", {}).get(mod):
                runtimes.setdefault(rt, py["modules"][mod])
    if runners.get("benchmark_model"):
        runtimes["tflite-benchmark"] = ""
    if runners.get("onnxruntime_perf_test"):
        runtimes["ort-perf-test"] = ""
    sdk = bounded_int(props.get("ro.build.version.sdk"), "sdk", "ro.build.version.sdk", notes)
    facts: dict[str, Any] = {
        "kind": "phone",
        "name": props.get("ro.product.model"),
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "brand": props.get("ro.product.brand"),
        "device": props.get("ro.product.device"),
        "soc": props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
        "soc_manufacturer": props.get("ro.soc.manufacturer"),
        "board": props.get("ro.board.platform"),
        "hardware": props.get("ro.hardware"),
        "android_version": props.get("ro.build.version.release"),
        "sdk": sdk,
        "fingerprint": props.get("ro.build.fingerprint"),
        "abi": abi,
        "abilist": [a for a in (props.get("ro.product.cpu.abilist") or "").split(",") if a],
        "arch": _ABI_ARCH.get(abi or "", abi),
        "cpu_model": props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
        "cores": ncores,
        "cpu_freq_khz": {
            f"cpu{n}": {k: e[k] for k in ("min_khz", "max_khz") if k in e} for n, e in cpus.items()
        },
        "clusters": clusters,
        "big_cores": clusters[-1]["cpus"] if clusters else [],
        "governors": sorted({c["governor"] for c in clusters if c.get("governor")}),
        "thermal": thermal,
        "battery": bat,
        "energy_sensors": ["battery"] if bat and bat.get("energy_readable") else [],
        "memory_total_bytes": mem_kb * 1024 if mem_kb is not None else None,
        "runners": runners,
        "runtimes": runtimes,
        "read_at": time.time(),
    }
    if notes:
        facts["parse_notes"] = notes
    return facts


def read_facts(conn: AdbConnection, python: str = "python3", battery: str = DEFAULT_BASE) -> dict[str, Any]:
    """Read the facts of the phone behind ``conn`` (one shell round trip)."""
    text = conn.shell(facts_script(python, battery), what="reading phone facts", timeout_s=60)
    facts = parse_facts(text, python, battery)
    facts["transport"] = {"serial": conn.serial} if conn.serial else {"address": conn.address}
    return facts


# ---- noise control helpers ---------------------------------------------------------
def pin_cpus(facts: dict[str, Any], threads: int) -> list[int] | None:
    """The fastest cores enough for ``threads`` threads (whole clusters, fastest first).

    None when pinning would not restrict anything (one cluster, or every core needed).
    """
    clusters = facts.get("clusters") or []
    if len(clusters) < 2:
        return None
    chosen: list[int] = []
    for c in sorted(clusters, key=lambda c: -(c.get("max_khz") or 0)):
        chosen += list(c["cpus"])
        if len(chosen) >= max(1, threads):
            break
    total = sum(len(c["cpus"]) for c in clusters)
    return None if len(chosen) >= total else sorted(chosen)


def little_cpus(facts: dict[str, Any]) -> list[int] | None:
    """The slowest cluster (where helper loops run, away from the measured cores)."""
    clusters = facts.get("clusters") or []
    if len(clusters) < 2:
        return None
    return list(clusters[0]["cpus"])


def cpu_mask(cpus: list[int]) -> str:
    """taskset's hex mask (toybox and util-linux both take bare hex); CPUs are 0..MAX_CPUS-1."""
    from edgelat.errors import DeviceError

    mask = 0
    for c in cpus:
        if not isinstance(c, int) or not 0 <= c < MAX_CPUS:
            raise DeviceError(f"CPU number {c!r} in the phone's facts is outside 0..{MAX_CPUS - 1}: "
                              "re-register the phone to read its facts again")
        mask |= 1 << c
    return format(mask, "x")


def snapshot_from_dump(dump: dict[str, str], battery: str = DEFAULT_BASE) -> dict[str, Any]:
    """The environment record, shaped like :func:`edgelat.agents.environment.snapshot`."""
    snap: dict[str, Any] = {"timestamp": time.time()}
    cpus: dict[str, dict[str, Any]] = {}
    for n, entry in cpu_table(dump).items():
        cpus[f"cpu{n}"] = {k: entry[k] for k in ("cur_khz", "governor") if k in entry}
    if cpus:
        snap["cpus"] = cpus
    zones = thermal_of(dump)
    if zones:
        snap["thermal"] = zones
    bat = battery_values(dump, battery)
    if bat:
        level, temp = _int(bat.get("capacity")), _int(bat.get("temp"))
        snap["battery"] = {
            "status": bat.get("status"),
            "level": level,
            "temp_c": None if temp is None else temp / 10.0,
        }
    return snap


def max_temp_c(thermal: dict[str, dict[str, Any]]) -> tuple[float | None, str | None]:
    """Hottest plausible zone (readings outside 0-150 C are sensor placeholders)."""
    best: tuple[float | None, str | None] = (None, None)
    for name, z in thermal.items():
        t = z.get("temp_c")
        if t is None or not 0.0 < t < 150.0:
            continue
        if best[0] is None or t > best[0]:
            best = (t, z.get("type") or name)
    return best
