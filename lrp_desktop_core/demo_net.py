"""The bundled demo classifier: a small CNN for the synthetic shapes of :mod:`.shapes`.

The architecture is laid out so that LRP works well on it without model surgery:

* every ``Conv2d`` is immediately followed by its ``BatchNorm2d`` inside an ``nn.Sequential``, so a
  sequential BatchNorm-merging canonizer finds every pair;
* the one residual addition is a :class:`~lrp_desktop_core.layer.Sum` module applied to
  ``torch.stack([shortcut, branch], dim=-1)``, so the addition is a layer that gets a rule;
* no activation works in place, so forward and backward hooks see untouched tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .layer import Sum

DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
"""Folder of the bundled demos (package data): weights, class names (in the weights' metadata) and
samples."""

DEMO_WEIGHTS = DEMO_DIR / "demo_net.safetensors"
"""The trained weights, written by ``python -m lrp_desktop_core.train_demo``."""

DEMO_SAMPLES_DIR = DEMO_DIR / "samples"
"""Sample images (``<shape>_<nn>.png``) with their object masks (``<shape>_<nn>_mask.png``)."""

DEMO_INPUT_SIZE = 64
"""Height and width of the demo's input images in pixels."""


def conv_bn_relu(in_channels: int, out_channels: int) -> list[tuple[str, nn.Module]]:
    """Return the named layers of one 3x3 convolution followed by BatchNorm and ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels entering and leaving the convolution.

    Returns
    -------
    list of (str, nn.Module)
        ``conv``, ``bn`` and ``relu`` layers, in that order.
    """
    return [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels)),
        ("relu", nn.ReLU()),
    ]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm whose output is added to the block's input.

    Parameters
    ----------
    channels : int
        Channels of the input, which the block keeps.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(channels, channels, 3, padding=1, bias=False)),
                    ("bn1", nn.BatchNorm2d(channels)),
                    ("relu1", nn.ReLU()),
                    ("conv2", nn.Conv2d(channels, channels, 3, padding=1, bias=False)),
                    ("bn2", nn.BatchNorm2d(channels)),
                ]
            )
        )
        self.sum = Sum(dim=-1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(x + branch(x))``, the addition done by the ``Sum`` module."""
        return self.relu(self.sum(torch.stack([x, self.branch(x)], dim=-1)))


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return conv-bn-relu followed by 2x2 max pooling, halving height and width."""
    layers = [*conv_bn_relu(in_channels, out_channels), ("pool", nn.MaxPool2d(2))]
    return nn.Sequential(OrderedDict(layers))


class DemoNet(nn.Module):
    """The demo CNN: three conv stages, one residual block, global average pooling, a linear head.

    Parameters
    ----------
    num_classes : int, optional
        Number of output logits (five shapes by default).
    width : int, optional
        Channels of the first stage; later stages use ``2 * width`` and ``4 * width``.

    Notes
    -----
    With the defaults the network has about 43k parameters (about 0.17 MB in float32). For a
    64x64 input the feature maps are 32x32 after ``stage1``, 16x16 after ``stage2`` (and in
    ``residual``) and 8x8 after ``stage3``.
    """

    def __init__(self, num_classes: int = 5, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("stage1", _stage(3, width)),
                    ("stage2", _stage(width, 2 * width)),
                    ("residual", ResidualBlock(2 * width)),
                    ("stage3", _stage(2 * width, 4 * width)),
                ]
            )
        )
        self.head = nn.Sequential(
            OrderedDict(
                [
                    ("pool", nn.AdaptiveAvgPool2d(1)),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(4 * width, num_classes)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits of a batch of normalised images, shape (N, num_classes)."""
        return self.head(self.features(x))


def build_demo_net(num_classes: int = 5) -> DemoNet:
    """Return a freshly initialised :class:`DemoNet` (in training mode, random weights)."""
    return DemoNet(num_classes=num_classes)
