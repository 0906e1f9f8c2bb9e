"""What a phone is: ro.* properties, CPU clusters, thermal zones, battery, runners.

Read with two batched ``adb shell`` commands (``getprop`` plus one loop over
the sysfs files, then a probe for runners), not hundreds of round trips: over
USB each command costs milliseconds, over Wi-Fi tens of them. The parsing
functions are pure (text in, dict out) so they are tested on the exact text a
phone prints. Units are the kernel's: cpufreq in kHz, thermal in
millidegrees C, battery temperature in tenths of a degree.
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
def split_sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION) :].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


_PROP_LINE = re.compile(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$")


def parse_getprop(text: str) -> dict[str, str]:
    """``[ro.product.model]: [Pixel 7]`` lines -> dict."""
    props = {}
    for line in text.splitlines():
        m = _PROP_LINE.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def parse_dump(text: str) -> dict[str, str]:
    """``path=value`` lines -> dict (values stripped)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("/") and "=" in line:
            path, _, value = line.partition("=")
            out[path] = value.strip()
    return out


def parse_cpulist(text: str) -> list[int]:
    """``0-3,6`` or ``0 1 2 3`` (related_cpus) -> [0, 1, 2, 3, 6]."""
    cpus: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            if lo.isdigit() and hi.isdigit():
                cpus.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            cpus.append(int(part))
    return sorted(set(cpus))


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.split()[0])
    except (ValueError, IndexError):
        return None


_CPU_FILE = re.compile(rf"^{CPU}/cpu(\d+)/cpufreq/(\w+)$")
_ZONE_FILE = re.compile(rf"^{THERMAL}/thermal_zone(\d+)/(type|temp)$")


def cpu_table(dump: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Per CPU number: min_khz, max_khz, cur_khz, governor, related (list)."""
    cpus: dict[int, dict[str, Any]] = {}
    names = {"cpuinfo_min_freq": "min_khz", "cpuinfo_max_freq": "max_khz", "scaling_cur_freq": "cur_khz"}
    for path, value in dump.items():
        m = _CPU_FILE.match(path)
        if not m:
            continue
        entry = cpus.setdefault(int(m.group(1)), {})
        key = m.group(2)
        if key in names:
            n = _int(value)
            if n is not None:
                entry[names[key]] = n
        elif key == "scaling_governor" and value:
            entry["governor"] = value
        elif key == "related_cpus":
            entry["related"] = parse_cpulist(value)
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


def thermal_of(dump: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``thermal_zoneN`` -> type and temp_c (the file holds millidegrees; unreadable zones keep only a type)."""
    zones: dict[int, dict[str, Any]] = {}
    for path, value in dump.items():
        m = _ZONE_FILE.match(path)
        if not m:
            continue
        entry = zones.setdefault(int(m.group(1)), {})
        if m.group(2) == "type":
            entry["type"] = value
        else:
            n = _int(value)
            if n is not None:
                entry["temp_c"] = n / 1000.0
    return {f"thermal_zone{k}": v for k, v in sorted(zones.items())}


def battery_of(dump: dict[str, str], base: str = DEFAULT_BASE) -> dict[str, Any] | None:
    """Battery state, with the current/voltage units the energy module decides."""
    values = {p[len(base) + 1 :]: v for p, v in dump.items() if p.startswith(base + "/")}
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


def parse_runners(text: str, python_info: dict[str, Any] | None, python: str) -> dict[str, Any]:
    files: dict[str, str] = {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "file":
            files[parts[1].rsplit("/", 1)[-1]] = parts[1]
        elif len(parts) == 3 and parts[0] == "path":
            paths[parts[1]] = parts[2]
    runners: dict[str, Any] = {}
    for name in RUNNER_BINARIES:
        runners[name] = files.get(name) or paths.get(name)
    runners["taskset"] = paths.get("taskset")
    runners["python"] = None
    if python_info is not None:
        runners["python"] = {"path": python, **python_info}
    return runners


def parse_python_probe(text: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        if line.startswith("EDGELAT_PY "):
            try:
                return json.loads(line[len("EDGELAT_PY ") :])
            except ValueError:
                return None
    return None


_ABI_ARCH = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l", "armeabi": "armv7l", "x86_64": "x86_64", "x86": "i686"}


def parse_facts(text: str, python: str = "python3", battery: str = DEFAULT_BASE) -> dict[str, Any]:
    """The facts dict from the output of :func:`facts_script`."""
    sec = split_sections(text)
    props = parse_getprop(sec.get("getprop", ""))
    dump = parse_dump(sec.get("sysfs", ""))
    cpus = cpu_table(dump)
    clusters = clusters_of(cpus) if cpus else []
    thermal = thermal_of(dump)
    bat = battery_of(dump, battery)
    py = parse_python_probe(sec.get("python", ""))
    runners = parse_runners(sec.get("runners", ""), py, python)
    mem = re.search(r"MemTotal:\s+(\d+)\s*kB", sec.get("meminfo", ""))
    possible = dump.get(f"{CPU}/possible")
    ncores = len(parse_cpulist(possible)) if possible else len(cpus)
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
    sdk = _int(props.get("ro.build.version.sdk"))
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
        "memory_total_bytes": int(mem.group(1)) * 1024 if mem else None,
        "runners": runners,
        "runtimes": runtimes,
        "read_at": time.time(),
    }
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
    """taskset's hex mask (toybox and util-linux both take bare hex)."""
    mask = 0
    for c in cpus:
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
    bat = {p.rsplit("/", 1)[-1]: v for p, v in dump.items() if p.startswith(battery + "/")}
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
