"""The compute devices this machine offers, described for a menu."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
            devices.append(DeviceInfo(f"cuda:{index}",
                                      f"cuda:{index}: {properties.name} ({memory:.1f} GiB)"))
    return devices


def check_device(name: str) -> torch.device:
    """Turn ``name`` into a device that exists here, or raise ValueError saying what is wrong.

    Parameters
    ----------
    name
        "cpu", "cuda" (the first CUDA device) or "cuda:N".
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{name!r} is not a device name; use cpu, cuda or cuda:N") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but no CUDA device is available here "
                         "(torch sees none); the model stays on the CPU")
    index = 0 if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {name!r} does not exist: this machine has {count} CUDA "
                         f"device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)
