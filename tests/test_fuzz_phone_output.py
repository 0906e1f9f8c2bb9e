"""Property-based tests of what the ADB bridge parses from a phone (hypothesis).

The seed is the real text the facts script prints on the adbd double's fake
Pixel 7 (getprop, the sysfs dump, the runner probe, the Python probe); its
mutations, and arbitrary text, must parse without raising, into facts whose
every number is inside its bound and which serialise as JSON.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adbd_double import PIXEL7_PROPS, AdbdDouble, build_fake_phone
from edgelat.agents.adb.bridge import parse_samples, split_output
from edgelat.agents.adb.connection import AdbConnection, Timeouts
from edgelat.agents.adb.facts import (
    MAX_CPUS,
    RANGES,
    cpu_mask,
    facts_script,
    parse_facts,
    pin_cpus,
    snapshot_from_dump,
    parse_dump,
)
from edgelat.agents.adb.keys import public_key_text

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NASTY = ["0-4000000000", "4294967295", "-1", "9" * 400, "1e9", "nan", "", " ", "\u0663", "0-", "-", ",",
         "7-3", "x", "[", "]", "=", "/sys/devices/system/cpu/cpu99999999/cpufreq/related_cpus=0-1023",
         '{"version": [1], "modules": []}', "\x00", "\u2028"]


@pytest.fixture(scope="module")
def seed_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = build_fake_phone(tmp_path_factory.mktemp("phone"))
    with AdbdDouble(root, PIXEL7_PROPS, trusted_keys=[public_key_text()]) as phone:
        conn = AdbConnection(address=phone.address, timeouts=Timeouts(io_s=5))
        text = conn.shell(facts_script("python3"), timeout_s=60)
        conn.close()
    assert "[ro.product.model]: [Pixel 7]" in text and "related_cpus=" in text
    return text


def mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 8))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["value", "number", "drop", "dup", "insert"]))
        line = lines[i]
        if op == "value" and "=" in line:
            lines[i] = line.split("=", 1)[0] + "=" + data.draw(st.sampled_from(NASTY) | st.text(max_size=10))
        elif op == "number":
            nums = list(re.finditer(r"\d+", line))
            if nums:
                m = nums[data.draw(st.integers(0, len(nums) - 1))]
                lines[i] = line[: m.start()] + data.draw(st.sampled_from(NASTY)) + line[m.end():]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        else:
            lines.insert(i, data.draw(st.sampled_from(NASTY) | st.text(max_size=40)))
    return "\n".join(lines)


def check_facts(text: str) -> None:
    facts = parse_facts(text)
    json.dumps(facts, allow_nan=False)
    assert 0 <= facts["cores"] <= MAX_CPUS
    for cluster in facts["clusters"]:
        assert cluster["cpus"] and all(0 <= c < MAX_CPUS for c in cluster["cpus"])
        for key in ("min_khz", "max_khz"):
            assert cluster[key] is None or RANGES["khz"][0] <= cluster[key] <= RANGES["khz"][1]
    for zone in facts["thermal"].values():
        t = zone.get("temp_c")
        assert t is None or (math.isfinite(t) and -300 <= t <= 1000)
    bat = facts["battery"] or {}
    for key in ("current_now", "voltage_now"):
        v = bat.get(key)
        assert v is None or abs(v) <= 10**10
    assert len(facts.get("parse_notes", [])) <= 21
    assert facts["sdk"] is None or 1 <= facts["sdk"] <= 10_000
    cpus = pin_cpus(facts, 2)
    if cpus:
        assert len(cpu_mask(cpus)) <= MAX_CPUS // 4
    snapshot_from_dump(parse_dump(text))


def test_mutated_facts_output(seed_text: str) -> None:
    check_facts(seed_text)
    assert parse_facts(seed_text).get("parse_notes") is None  # the real output needs no notes

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        check_facts(mutate(seed_text, data))

    run()


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_facts_output(text: str) -> None:
    check_facts("@@EDGELAT getprop\n" + text + "\n@@EDGELAT sysfs\n" + text + "\n@@EDGELAT python\n" + text)


@FUZZ
@given(st.lists(st.sampled_from(["BAT", "MARK", "BAT 1.5", "MARK 2.0", "Discharging|1|", "-412000", "|3987000",
                                 " ", "nan", "1e999", "9" * 30, "\u0663"]) | st.text(max_size=8), max_size=8)
       .map("".join), )
def test_measurement_sample_lines(line: str) -> None:
    samples, marks = parse_samples(split_output(f"@@EDGELAT samples\n{line}\n")["samples"])
    for t, values in samples:
        assert math.isfinite(t) and t >= 0
        for key in ("current_now", "voltage_now"):
            assert values[key] == "" or abs(int(values[key].split()[0])) <= 10**10
    for t, n in marks:
        assert math.isfinite(t) and 0 <= n < 10**12
