"""Which compute device a name means: the one parser of ``cpu``, ``cuda`` and ``cuda:N``.

The command line (``--device``) and the app (its device menu and ``--device``) both read device
names through :func:`parse_device`, so they accept the same names and say the same when one is
wrong.
"""

from __future__ import annotations

import torch

__all__ = ["parse_device"]


def parse_device(name: str | torch.device) -> torch.device:
    """Turn ``name`` into a device that exists here, or raise ValueError saying what is wrong.

    Parameters
    ----------
    name : str or torch.device
        "cpu", "cuda" (the first CUDA device) or "cuda:N".

    Returns
    -------
    torch.device
        The CPU, or a CUDA device with its index.

    Raises
    ------
    ValueError
        When ``name`` is no device name, names a device type other than CPU and CUDA, or a CUDA
        device this machine does not have.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name!r} is not a device name; use cpu, cuda or cuda:N") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {str(name)!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {str(name)!r} was asked for, but no CUDA device is available here "
            "(torch sees none); use cpu"
        )
    index = 0 if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {str(name)!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)
