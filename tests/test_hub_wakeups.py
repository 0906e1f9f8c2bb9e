"""The hub's wake-ups: what was announced since a marker."""

from __future__ import annotations

from edgelat.hub.wakeups import WorkSignal


def test_since_names_the_devices_announced_after_a_marker_once_each() -> None:
    signal = WorkSignal(remember=8)
    start = signal.marker()
    assert signal.since(start) == (start, [])
    signal.announce(["dev1", "dev2"])
    middle = signal.marker()
    signal.announce(["dev2", "dev3"])
    assert signal.since(start) == (signal.marker(), ["dev1", "dev2", "dev3"])
    assert signal.since(middle) == (signal.marker(), ["dev2", "dev3"])
    signal.announce(None)  # any device may have work
    assert signal.since(middle)[1] is None


def test_since_says_any_device_when_more_happened_than_it_remembers() -> None:
    signal = WorkSignal(remember=2)
    start = signal.marker()
    signal.announce(["a", "b", "c"])
    assert signal.since(start) == (signal.marker(), None)
    assert signal.since(signal.marker() - 1) == (signal.marker(), ["c"])
