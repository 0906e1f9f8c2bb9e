"""Wake-ups for the hub's dispatchers, so they wait for work instead of polling the database.

Every event that may make a job leasable (a job queued or requeued, a device freed, back online or
out of quarantine) is announced for its device. Waiters for given devices are woken for those
only; waiters for any device are interchangeable, so one of them is woken per event and idle
dispatchers do not all rush at each new job.
"""

from __future__ import annotations

import collections
import contextlib
import threading


class WorkSignal:
    """Markers and waits: take ``marker()``, try a lease, and if it came back empty ``wait(marker)``.

    Nothing announced between the marker and the wait is missed (recent events are remembered)."""

    def __init__(self, remember: int = 4096) -> None:
        self._lock = threading.Lock()
        self._epoch = 0
        self._recent: collections.deque[tuple[int, str | None]] = collections.deque(maxlen=remember)
        self._any: collections.deque[threading.Event] = collections.deque()
        self._by_device: dict[str, set[threading.Event]] = {}
        # Devices whose agents are connected through this hub: events for others wake no dispatcher
        # waiting for "any device" here (another hub serves them).
        self._agent_devices: dict[str, set[str]] = {}
        self._local: set[str] = set()

    def marker(self) -> int:
        return self._epoch

    def set_agent_devices(self, agent_id: str, names: set[str]) -> None:
        """The devices an agent connected here serves now (empty: it went away)."""
        with self._lock:
            if names:
                self._agent_devices[agent_id] = set(names)
            else:
                self._agent_devices.pop(agent_id, None)
            self._local = set().union(*self._agent_devices.values())

    def wait(self, marker: int, timeout_s: float, devices: list[str] | None = None) -> int:
        """Block until something for ``devices`` (None: any) happened after ``marker``, or the timeout.
        Returns the new marker."""
        wanted = None if devices is None else set(devices)
        event = threading.Event()
        with self._lock:
            if self._missed(marker, wanted):
                return self._epoch
            if wanted is None:
                self._any.append(event)
            else:
                for name in wanted:
                    self._by_device.setdefault(name, set()).add(event)
        event.wait(max(0.0, float(timeout_s)))
        with self._lock:
            if wanted is None:
                with contextlib.suppress(ValueError):
                    self._any.remove(event)
            else:
                for name in wanted:
                    waiting = self._by_device.get(name)
                    if waiting is not None:
                        waiting.discard(event)
                        if not waiting:
                            del self._by_device[name]
            return self._epoch

    def since(self, marker: int) -> tuple[int, list[str] | None]:
        """The new marker and the devices announced after ``marker`` (None: any device may have work,
        or more happened than is remembered)."""
        with self._lock:
            if marker >= self._epoch:
                return self._epoch, []
            if not self._recent or self._recent[0][0] > marker + 1:
                return self._epoch, None
            devices: list[str] = []
            for epoch, device in self._recent:
                if epoch <= marker:
                    continue
                if device is None:
                    return self._epoch, None
                devices.append(device)
            return self._epoch, list(dict.fromkeys(devices))

    def _missed(self, marker: int, wanted: set[str] | None) -> bool:
        """Whether something for ``wanted`` happened after ``marker`` (called with the lock held)."""
        if marker >= self._epoch:
            return False
        if not self._recent or self._recent[0][0] > marker + 1:
            return True  # older than what is remembered: assume so
        for epoch, device in reversed(self._recent):
            if epoch <= marker:
                return False
            if wanted is None or device is None or device in wanted:
                return True
        return False

    def announce(self, devices: list[str] | None = None) -> None:
        """Work may be waiting for ``devices`` (None: any device): wake who waits for it."""
        with self._lock:
            for device in (None,) if devices is None else devices:
                self._epoch += 1
                self._recent.append((self._epoch, device))
                if device is None:
                    for waiting in self._by_device.values():
                        for event in waiting:
                            event.set()
                    for event in self._any:
                        event.set()
                    continue
                for event in self._by_device.get(device, ()):
                    event.set()
                if device not in self._local:
                    continue  # served through another hub: its dispatchers are told, not ours
                while self._any:
                    event = self._any.popleft()
                    if not event.is_set():
                        event.set()
                        break
