"""Canonizers for torchvision's VGG and ResNet families.

``VGGCanonizer`` merges the batch norms of ``vgg*_bn`` into their convolutions. ``ResNetCanonizer``
merges every batch norm of a ResNet (stem, blocks and downsampling shortcuts) and turns each
residual addition into a :class:`~lrp_desktop_core.layer.Sum` module, attached to its block as
``canonizer_sum`` while applied, so that a rule can be assigned to it.
"""

from __future__ import annotations

import types
from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .canonizers import (
    AttributeCanonizer,
    Canonizer,
    CompositeCanonizer,
    SequentialMergeBatchNorm,
)
from .layer import Sum

__all__ = [
    "ResNetBasicBlockCanonizer",
    "ResNetBottleneckCanonizer",
    "ResNetCanonizer",
    "ResNetMergeBatchNorm",
    "VGGCanonizer",
]


class VGGCanonizer(CompositeCanonizer):
    """Canonizer for torchvision's VGG models: merges each batch norm into its convolution."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm()])

    def copy(self) -> VGGCanonizer:
        """Return a fresh, unregistered VGGCanonizer."""
        return type(self)()


_CONV_BN_NAMES = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


class ResNetMergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every batch norm of torchvision ResNets into the convolution before it.

    Besides the batch norms in Sequentials (the downsampling shortcuts), this merges the stem's
    ``bn1`` into ``conv1`` and, in every ``BasicBlock`` and ``Bottleneck``, each ``bnK`` into
    ``convK``: the pairs the ResNet forward passes connect directly.
    """

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield the Sequential pairs and the stem's and blocks' (convK, bnK) pairs."""
        yield from super().merge_pairs(root_module)
        for module in root_module.modules():
            if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
                for conv_name, bn_name in _CONV_BN_NAMES:
                    conv = getattr(module, conv_name, None)
                    bn = getattr(module, bn_name, None)
                    if conv is not None and bn is not None:
                        yield [conv], bn


def _residual_sum(block: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Add the shortcut to ``out`` through the block's ``canonizer_sum``, then apply the ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(block.canonizer_sum(torch.stack([identity, out], dim=-1)))


def _basic_block_forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """BasicBlock forward with the residual addition done by a Sum module."""
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return _residual_sum(self, out, x)


def _bottleneck_forward(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """Bottleneck forward with the residual addition done by a Sum module."""
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return _residual_sum(self, out, x)


class _ResidualBlockCanonizer(AttributeCanonizer):
    """Give every block of ``block_type`` a Sum module and a forward that uses it."""

    block_type: type[nn.Module]
    block_forward: staticmethod

    def __init__(self) -> None:
        super().__init__(self._attributes)

    def copy(self) -> Canonizer:
        """Return a fresh, unregistered canonizer of the same kind."""
        return type(self)()

    def _attributes(self, name: str, module: nn.Module) -> dict | None:
        if not isinstance(module, self.block_type):
            return None
        return {
            "canonizer_sum": Sum(),
            "forward": types.MethodType(self.block_forward, module),
        }


class ResNetBasicBlockCanonizer(_ResidualBlockCanonizer):
    """Make the residual addition of every torchvision ``BasicBlock`` a ``Sum`` module."""

    block_type = BasicBlock
    block_forward = staticmethod(_basic_block_forward)


class ResNetBottleneckCanonizer(_ResidualBlockCanonizer):
    """Make the residual addition of every torchvision ``Bottleneck`` a ``Sum`` module."""

    block_type = Bottleneck
    block_forward = staticmethod(_bottleneck_forward)


class ResNetCanonizer(CompositeCanonizer):
    """Canonizer for torchvision's ResNets: merges all batch norms and makes residual additions
    ``Sum`` modules (``canonizer_sum`` of each block)."""

    def __init__(self) -> None:
        super().__init__(
            [ResNetMergeBatchNorm(), ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
        )

    def copy(self) -> ResNetCanonizer:
        """Return a fresh, unregistered ResNetCanonizer."""
        return type(self)()
