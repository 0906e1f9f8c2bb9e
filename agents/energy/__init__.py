"""Energy meters (RAPL, NVML, Jetson INA3221; Android battery in ``battery``)."""

from edgelat.agents.energy.base import EnergyMeter, NullMeter
from edgelat.agents.energy.detect import detect_meter, sensors_found

__all__ = ["EnergyMeter", "NullMeter", "detect_meter", "sensors_found"]
