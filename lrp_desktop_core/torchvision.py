"""Canonizers for torchvision's image classifiers.

Each canonizer recognises building blocks by their class (torchvision's, or a subclass of it), so
that a model gets the same treatment whether it was built by name, loaded from a weights file or
unpickled from a user's file:

* batch norms are merged into the convolution before them (:class:`TorchvisionMergeBatchNorm`),
  MaxViT's pre-norms into the convolution after them (see :mod:`.maxvit`);
* multi-head attention, Vision Transformers and Swin Transformers (V1) get modules for every
  operation (see :mod:`.vit` and :mod:`.swin`);
* residual additions become :class:`~lrp_desktop_core.layer.Sum` modules (``canonizer_sum``);
* squeeze-and-excitation products become :class:`~lrp_desktop_core.layer.Product` modules
  (``canonizer_product``), ConvNeXt's layer scale a :class:`~lrp_desktop_core.layer.Scale`
  (``canonizer_scale``), GoogLeNet's and Inception's input transform a
  :class:`~lrp_desktop_core.layer.ChannelAffine` (``canonizer_transform``) and Inception's inline
  average pooling an ``nn.AvgPool2d`` (``canonizer_pool``),

so that every arithmetic operation on the relevance path happens in a module that gets a rule.
:class:`TorchvisionCanonizer` applies all of them; :class:`VGGCanonizer` and
:class:`ResNetCanonizer` are the subsets zennit users know.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.densenet import DenseNet
from torchvision.models.efficientnet import FusedMBConv, MBConv
from torchvision.models.googlenet import BasicConv2d as GoogLeNetConv2d
from torchvision.models.googlenet import GoogLeNet
from torchvision.models.inception import BasicConv2d as InceptionConv2d
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE
from torchvision.models.mnasnet import MNASNet
from torchvision.models.mnasnet import _InvertedResidual as MNASNetBlock
from torchvision.models.mobilenetv2 import InvertedResidual as MobileNetV2Block
from torchvision.models.mobilenetv3 import InvertedResidual as MobileNetV3Block
from torchvision.models.regnet import ResBottleneckBlock
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.ops import SqueezeExcitation

from .canonizers import (
    BlockCanonizer,
    BlockRewrite,
    CompositeCanonizer,
    SequentialMergeBatchNorm,
)
from .layer import ChannelAffine, Product, Scale, add_terms, residual_sum
from .maxvit import MAXVIT_REWRITES, MaxVitMergePreNorm
from .swin import SWIN_REWRITES
from .vit import VIT_REWRITES

__all__ = [
    "ResNetBasicBlockCanonizer",
    "ResNetBottleneckCanonizer",
    "ResNetCanonizer",
    "ResNetMergeBatchNorm",
    "TorchvisionCanonizer",
    "TorchvisionMergeBatchNorm",
    "VGGCanonizer",
]


class VGGCanonizer(CompositeCanonizer):
    """Canonizer for torchvision's VGG models: merges each batch norm into its convolution."""

    def __init__(self) -> None:
        super().__init__([SequentialMergeBatchNorm()])

    def copy(self) -> VGGCanonizer:
        """Return a fresh, unregistered VGGCanonizer."""
        return type(self)()


_RESNET_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


class ResNetMergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every batch norm of torchvision ResNets into the convolution before it.

    Besides the batch norms in Sequentials (the downsampling shortcuts), this merges the stem's
    ``bn1`` into ``conv1`` and, in every ``BasicBlock`` and ``Bottleneck``, each ``bnK`` into
    ``convK``: the pairs the ResNet forward passes connect directly.
    """

    attribute_pairs: tuple[tuple[tuple[type, ...], tuple[tuple[str, str], ...]], ...] = (
        ((ResNet, BasicBlock, Bottleneck), _RESNET_PAIRS),
    )

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield the Sequential pairs and the (convolution, batch norm) attribute pairs."""
        yield from super().merge_pairs(root_module)
        for module in root_module.modules():
            for block_types, pairs in self.attribute_pairs:
                if not isinstance(module, block_types):
                    continue
                for conv_name, bn_name in pairs:
                    conv = getattr(module, conv_name, None)
                    bn = getattr(module, bn_name, None)
                    if conv is not None and bn is not None:
                        yield [conv], bn


class TorchvisionMergeBatchNorm(ResNetMergeBatchNorm):
    """Merge the batch norms of every torchvision classifier that follow a convolution.

    Covers the Sequentials (``Conv2dNormActivation`` of EfficientNet, MobileNet, MNASNet, RegNet,
    ShuffleNet and the stems of DenseNet), ResNet's blocks and the ``BasicConv2d`` of GoogLeNet and
    Inception v3. Batch norms before a convolution (DenseNet's pre-activation) cannot be merged.
    """

    attribute_pairs = (
        *ResNetMergeBatchNorm.attribute_pairs,
        ((GoogLeNetConv2d, InceptionConv2d), (("conv", "bn"),)),
    )


def _sum(block: nn.Module, *terms: torch.Tensor) -> torch.Tensor:
    """Add ``terms`` through the block's ``canonizer_sum`` module."""
    return add_terms(block.canonizer_sum, *terms)


def _resnet_residual(block: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(_sum(block, identity, out))


def _basic_block_forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    return _resnet_residual(self, self.bn2(self.conv2(out)), x)


def _bottleneck_forward(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return _resnet_residual(self, self.bn3(self.conv3(out)), x)


def _mobilenet_v2_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.conv(x))


def _mobilenet_v3_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.block(x))


def _mnasnet_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.layers(x))


def _mbconv_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.stochastic_depth(self.block(x)))


def _regnet_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.proj is None else self.proj(x)
    return self.activation(_sum(self, shortcut, self.f(x)))


def _convnext_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _sum(self, x, self.stochastic_depth(self.canonizer_scale(self.block(x))))


def _squeeze_excitation_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.canonizer_product(x, self._scale(x))


def _transform_input(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.canonizer_transform(x)


def _densenet_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    pooled = self.canonizer_pool(self.canonizer_relu(self.features(x)))
    return self.classifier(torch.flatten(pooled, 1))


def _mnasnet_head_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.canonizer_pool(self.layers(x)), 1))


def _shufflenet_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = _chain(self, ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"), x)
    return self.fc(torch.flatten(self.canonizer_pool(x), 1))


def _chain(block: nn.Module, names: Iterable[str], x: torch.Tensor) -> torch.Tensor:
    """Apply the block's children ``names`` one after the other."""
    for name in names:
        x = getattr(block, name)(x)
    return x


def _fork(block: nn.Module, names: Iterable[str], x: torch.Tensor) -> torch.Tensor:
    """Apply each of the block's children ``names`` to ``x`` and concatenate the channels."""
    return torch.cat([getattr(block, name)(x) for name in names], 1)


def _pool_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block.branch_pool(block.canonizer_pool(x))


def _inception_a_forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [
        self.branch1x1(x),
        _chain(self, ("branch5x5_1", "branch5x5_2"), x),
        _chain(self, ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), x),
        _pool_branch(self, x),
    ]


def _inception_c_forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    double = [f"branch7x7dbl_{k}" for k in range(1, 6)]
    return [
        self.branch1x1(x),
        _chain(self, ("branch7x7_1", "branch7x7_2", "branch7x7_3"), x),
        _chain(self, double, x),
        _pool_branch(self, x),
    ]


def _inception_e_forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    single = self.branch3x3_1(x)
    double = _chain(self, ("branch3x3dbl_1", "branch3x3dbl_2"), x)
    return [
        self.branch1x1(x),
        _fork(self, ("branch3x3_2a", "branch3x3_2b"), single),
        _fork(self, ("branch3x3dbl_3a", "branch3x3dbl_3b"), double),
        _pool_branch(self, x),
    ]


# GoogLeNet's and Inception v3's change of input units: ImageNet normalisation to (x - 0.5) / 0.5
_TRANSFORM_SCALE = [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]
_TRANSFORM_SHIFT = [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5]


def _residual(forward: Callable, condition: str | None = None) -> BlockRewrite:
    """Return a rewrite giving a block a Sum module and ``forward``, where ``condition`` holds."""

    def rewrite(module: nn.Module) -> dict | None:
        if condition is not None and not getattr(module, condition):
            return None
        return {"canonizer_sum": residual_sum(), "forward": types.MethodType(forward, module)}

    return rewrite


def _convnext_block(module: nn.Module) -> dict:
    return {
        "canonizer_scale": Scale(module.layer_scale),
        **_residual(_convnext_forward)(module),
    }


def _squeeze_excitation(module: nn.Module) -> dict:
    return {
        "canonizer_product": Product(),
        "forward": types.MethodType(_squeeze_excitation_forward, module),
    }


def _input_transform(module: nn.Module) -> dict | None:
    if not module.transform_input:
        return None
    return {
        "canonizer_transform": ChannelAffine(_TRANSFORM_SCALE, _TRANSFORM_SHIFT),
        "_transform_input": types.MethodType(_transform_input, module),
    }


def _pooled_head(forward: Callable, relu: bool = False) -> BlockRewrite:
    """Return a rewrite for models whose forward pools (and maybe ReLUs) inline before the head."""

    def rewrite(module: nn.Module) -> dict:
        modules = {"canonizer_relu": nn.ReLU()} if relu else {}
        return {
            **modules,
            "canonizer_pool": nn.AdaptiveAvgPool2d(1),
            "forward": types.MethodType(forward, module),
        }

    return rewrite


def _inline_pool(forward: Callable) -> BlockRewrite:
    def rewrite(module: nn.Module) -> dict:
        return {
            "canonizer_pool": nn.AvgPool2d(kernel_size=3, stride=1, padding=1),
            "_forward": types.MethodType(forward, module),
        }

    return rewrite


class ResNetBasicBlockCanonizer(BlockCanonizer):
    """Make the residual addition of every torchvision ``BasicBlock`` a ``Sum`` module."""

    def __init__(self) -> None:
        super().__init__(BasicBlock, *BLOCK_REWRITES[0][1:])

    def copy(self) -> ResNetBasicBlockCanonizer:
        """Return a fresh, unregistered canonizer."""
        return type(self)()


class ResNetBottleneckCanonizer(BlockCanonizer):
    """Make the residual addition of every torchvision ``Bottleneck`` a ``Sum`` module."""

    def __init__(self) -> None:
        super().__init__(Bottleneck, *BLOCK_REWRITES[1][1:])

    def copy(self) -> ResNetBottleneckCanonizer:
        """Return a fresh, unregistered canonizer."""
        return type(self)()


class ResNetCanonizer(CompositeCanonizer):
    """Canonizer for torchvision's ResNets.

    It merges all batch norms and makes residual additions ``Sum`` modules (``canonizer_sum`` of
    each block).
    """

    def __init__(self) -> None:
        super().__init__(
            [ResNetMergeBatchNorm(), ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
        )

    def copy(self) -> ResNetCanonizer:
        """Return a fresh, unregistered ResNetCanonizer."""
        return type(self)()


BLOCK_REWRITES: tuple[tuple[tuple[type, ...], BlockRewrite, str], ...] = (
    ((BasicBlock,), _residual(_basic_block_forward), "ResNet block: residual addition as Sum"),
    ((Bottleneck,), _residual(_bottleneck_forward), "ResNet bottleneck: residual addition as Sum"),
    (
        (MobileNetV2Block,),
        _residual(_mobilenet_v2_forward, "use_res_connect"),
        "MobileNetV2 inverted residual: addition as Sum",
    ),
    (
        (MobileNetV3Block,),
        _residual(_mobilenet_v3_forward, "use_res_connect"),
        "MobileNetV3 inverted residual: addition as Sum",
    ),
    (
        (MNASNetBlock,),
        _residual(_mnasnet_forward, "apply_residual"),
        "MNASNet inverted residual: addition as Sum",
    ),
    (
        (MBConv, FusedMBConv),
        _residual(_mbconv_forward, "use_res_connect"),
        "EfficientNet MBConv: addition as Sum (stochastic depth is the identity in eval)",
    ),
    (
        (ResBottleneckBlock,),
        _residual(_regnet_forward),
        "RegNet bottleneck: residual addition as Sum",
    ),
    (
        (CNBlock,),
        _convnext_block,
        "ConvNeXt block: layer scale as Scale, residual addition as Sum",
    ),
    (
        (SqueezeExcitation,),
        _squeeze_excitation,
        "squeeze-and-excitation: gated product as Product",
    ),
    (
        (GoogLeNet, Inception3),
        _input_transform,
        "input transform as ChannelAffine",
    ),
    (
        (DenseNet,),
        _pooled_head(_densenet_forward, relu=True),
        "DenseNet head: inline ReLU and average pooling as modules",
    ),
    (
        (MNASNet,),
        _pooled_head(_mnasnet_head_forward),
        "MNASNet head: inline mean as AdaptiveAvgPool2d",
    ),
    (
        (ShuffleNetV2,),
        _pooled_head(_shufflenet_forward),
        "ShuffleNetV2 head: inline mean as AdaptiveAvgPool2d",
    ),
    (
        (InceptionA,),
        _inline_pool(_inception_a_forward),
        "Inception block: inline average pooling as AvgPool2d",
    ),
    (
        (InceptionC,),
        _inline_pool(_inception_c_forward),
        "Inception block: inline average pooling as AvgPool2d",
    ),
    (
        (InceptionE,),
        _inline_pool(_inception_e_forward),
        "Inception block: inline average pooling as AvgPool2d",
    ),
    *VIT_REWRITES,
    *MAXVIT_REWRITES,
    *SWIN_REWRITES,
)
"""Every block rewrite: ``(block classes, rewrite, what it does)``."""


class TorchvisionCanonizer(CompositeCanonizer):
    """Canonizer for every torchvision CNN classifier and Vision Transformer.

    It merges batch norms and rewrites each known block (see :data:`BLOCK_REWRITES`) so that every
    operation on the relevance path is a module.

    Blocks are recognised by class, subclasses included; a model without such blocks is left as
    it is apart from Sequential batch-norm merging.
    """

    def __init__(self) -> None:
        super().__init__(
            [
                TorchvisionMergeBatchNorm(),
                MaxVitMergePreNorm(),
                *(BlockCanonizer(*entry) for entry in BLOCK_REWRITES),
            ]
        )

    def copy(self) -> TorchvisionCanonizer:
        """Return a fresh, unregistered TorchvisionCanonizer."""
        return type(self)()
