"""NVIDIA GPU energy from NVML's total-energy counter.

``nvmlDeviceGetTotalEnergyConsumption`` returns millijoules since the driver
was loaded (Volta and newer); the difference over an interval is the GPU
board's energy. ``pynvml`` (the nvidia-ml-py package) is imported only when a
meter is made, and tests inject a fake module with the same four functions.
"""

from __future__ import annotations

import os
from typing import Any

from edgelat.agents.energy.base import EnergyMeter


def default_gpu_index() -> int:
    """The first GPU CUDA will use: ``CUDA_VISIBLE_DEVICES``'s first entry when numeric, else 0.

    (NVML numbers GPUs by PCI order like ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.)
    """
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class NvmlMeter(EnergyMeter):
    name = "nvml"
    # NVML refreshes its energy counter far less often than RAPL does. 100 ms is
    # a conservative floor chosen by us, not a figure measured on a GPU yet;
    # the "counter did not advance" check catches anything slower.
    min_interval_s = 0.100

    def __init__(self, index: int | None = None, nvml: Any = None) -> None:
        super().__init__()
        self.index = default_gpu_index() if index is None else index
        self.scope = f"gpu{self.index}"
        self._nvml = nvml
        self._handle: Any = None
        self._ready: bool | None = None
        self._start_mj: int | None = None
        self._why_not = ""

    @property
    def sensor_present(self) -> bool:
        return self._handle is not None

    def _init(self) -> bool:
        """Load the library and the device handle once; ``note`` holds any failure."""
        if self._ready is not None:
            if not self._ready:
                self.note = self._why_not
            return self._ready
        self._ready = False
        self._why_not = ""
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self.note = self._why_not = "NVML not available: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
                return False
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded...
            self.note = self._why_not = f"NVML not available: {_reason(exc)}"
            return False
        try:
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # no such GPU, or pre-Volta: NotSupported
            self.note = f"NVML energy counter unavailable on GPU {self.index}: {_reason(exc)}"
            self._shutdown()
            self._why_not = self.note
            return False
        self._ready = True
        return True

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def available(self) -> bool:
        return self._init()

    def _read_mj(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as exc:
            self.note = f"NVML energy read failed on GPU {self.index}: {_reason(exc)}"
            return None

    def _begin(self) -> None:
        self._start_mj = self._read_mj() if self._init() else None

    def _end(self) -> float | None:
        if self._start_mj is None:
            return None
        end = self._read_mj()
        if end is None:
            return None
        return (end - self._start_mj) / 1000.0

    def close(self) -> None:
        if self._ready:
            self._shutdown()
        self._ready = None
