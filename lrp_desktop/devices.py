"""The compute devices this machine offers, described for a menu."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lrp_desktop_core.devices import parse_device


@dataclass(frozen=True)
class DeviceInfo:
    """A device a model can run on.

    Attributes
    ----------
    name
        The torch device string ("cpu", "cuda:0").
    label
        What a menu shows ("CPU", "cuda:0: NVIDIA H100 (80.0 GiB)").
    """

    name: str
    label: str


def available_devices() -> list[DeviceInfo]:
    """Return the CPU and every CUDA device torch can see, with name and memory."""
    devices = [DeviceInfo("cpu", "CPU")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            memory = properties.total_memory / 2**30
            devices.append(
                DeviceInfo(f"cuda:{index}", f"cuda:{index}: {properties.name} ({memory:.1f} GiB)")
            )
    return devices


def check_device(name: str) -> torch.device:
    """Turn ``name`` into a device that exists here, or raise ValueError saying what is wrong.

    The engine's :func:`~lrp_desktop_core.devices.parse_device`, which the command line uses too.

    Parameters
    ----------
    name
        "cpu", "cuda" (the first CUDA device) or "cuda:N".
    """
    return parse_device(name)
