"""Energy meters: joules over an interval from whatever sensor a device has.

One small ABC so the local backend, the gRPC agent and the ADB bridge meter
energy the same way: ``start()`` before the steady-state loop, ``stop()`` after
it. ``stop()`` returns joules or None, and when it is None ``note`` says why
(no sensor, permission denied, interval shorter than the counter resolution).
A meter never guesses: no reading means no number.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Callable


class EnergyMeter(ABC):
    """Measures the energy used between :meth:`start` and :meth:`stop`.

    Subclasses implement :meth:`available`, :meth:`_begin` and :meth:`_end`;
    the base class times the interval and refuses intervals shorter than
    ``min_interval_s`` (the counter's update period times a margin) or over
    which the counter did not move, because those readings are quantization
    noise rather than energy.
    """

    name: str = ""
    #: What the joules cover, e.g. "cpu packages", "gpu0", "board input rail".
    scope: str = ""
    #: Intervals shorter than this are below the sensor's resolution.
    min_interval_s: float = 0.0

    def __init__(self) -> None:
        self.note = ""
        self.interval_s: float | None = None
        self._t0: float | None = None

    @property
    def sensor_present(self) -> bool:
        """True when the sensor exists, even if it cannot be read (then ``note`` is the reason)."""
        return False

    @abstractmethod
    def available(self) -> bool:
        """True if the sensor can be read here; otherwise ``note`` says why."""

    @abstractmethod
    def _begin(self) -> None:
        """Take the starting reading (record a failure in ``note``, don't raise)."""

    @abstractmethod
    def _end(self) -> float | None:
        """Joules since :meth:`_begin`, or None with ``note`` set."""

    def start(self) -> None:
        self.note = ""
        self.interval_s = None
        self._begin()
        self._t0 = time.perf_counter()

    def stop(self) -> float | None:
        """Joules over the interval, or None with ``note`` saying why."""
        if self._t0 is None:
            raise RuntimeError("EnergyMeter.stop() called without start()")
        elapsed = time.perf_counter() - self._t0
        self._t0 = None
        self.interval_s = elapsed
        joules = self._end()
        if joules is None:
            return None
        if elapsed < self.min_interval_s:
            self.note = (
                f"interval of {elapsed * 1e3:.1f} ms is too short for the {self.name} counter "
                f"resolution (needs >= {self.min_interval_s * 1e3:.0f} ms); no energy recorded"
            )
            return None
        if joules <= 0.0:
            self.note = (
                f"{self.name} counter did not advance over {elapsed * 1e3:.1f} ms "
                f"(interval too short for its resolution); no energy recorded"
            )
            return None
        return joules

    def close(self) -> None:
        """Release the sensor (library handles, threads)."""


class NullMeter(EnergyMeter):
    """No sensor: every interval is None with the same reason."""

    name = "none"

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self.note = reason

    def available(self) -> bool:
        return False

    def _begin(self) -> None:
        pass

    def _end(self) -> float | None:
        self.note = self.reason
        return None


def integrate_energy_j(samples: list[tuple[float, float]]) -> float:
    """Energy in J from ``(t_seconds, watts)`` pairs by the trapezoid rule (0 for < 2 pairs)."""
    energy = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:]):
        if t1 < t0:
            raise ValueError(f"sample times go backwards ({t0} then {t1})")
        energy += (t1 - t0) * (p0 + p1) / 2.0
    return energy


class SamplingThread:
    """Calls ``sample`` every ``period_s`` in a daemon thread between :meth:`start` and
    :meth:`stop`: the meters whose sensor reads power, not a cumulative energy counter
    (battery gauge, INA3221 rails), integrate samples taken this way."""

    def __init__(self, sample: Callable[[], None], period_s: float, name: str) -> None:
        self.sample, self.period_s, self.name = sample, period_s, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        """Stop and join; True when it was running."""
        if self._thread is None:
            return False
        self._stop.set()
        self._thread.join()
        self._thread = None
        return True
