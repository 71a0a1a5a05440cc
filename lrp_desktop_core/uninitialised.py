"""Building a network without drawing random weights that a weights file replaces at once.

A torchvision constructor fills every parameter through ``torch.nn.init``: 0.2 s for ResNet-50,
0.9 s for VGG-16 on two cores. When a file's state dict then overwrites all of them,
that work is lost. :func:`initialisers_skipped` makes the in-place initialisers of
``torch.nn.init`` leave their tensor as it is while a network is built. Everything else about the
construction is real (buffers computed in ``__init__``, plain tensor attributes), so only
parameters and buffers that the initialisers would have filled hold arbitrary values, and loading a
complete state dict overwrites every one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["INITIALISERS", "initialisers_skipped"]

INITIALISERS = tuple(
    name for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")
)
"""The in-place initialisers of ``torch.nn.init`` (``kaiming_uniform_``, ``zeros_``...)."""
_LOCK = threading.Lock()


def _unchanged(tensor: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return tensor


@contextmanager
def initialisers_skipped() -> Iterator[None]:
    """Leave tensors as they are where ``torch.nn.init`` would fill them, inside the block.

    The functions are replaced in the ``torch.nn.init`` module, for the whole process, and put
    back on leaving the block (also on an error). Use it only around building a network whose
    parameters and buffers a complete state dict replaces next; nothing else should initialise
    tensors meanwhile. Blocks in several threads run one after another.
    """
    with _LOCK:
        originals = {name: getattr(nn.init, name) for name in INITIALISERS}
        try:
            for name in INITIALISERS:
                setattr(nn.init, name, _unchanged)
            yield
        finally:
            for name, function in originals.items():
                setattr(nn.init, name, function)
