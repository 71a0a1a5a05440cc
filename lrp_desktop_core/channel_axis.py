"""Which axis of a layer's output holds its channels.

Convolutional networks put channels on axis 1, ``(N, C, H, W)``; transformers put them last: a
Vision Transformer's encoder block gives ``(N, L, D)`` (tokens, then features) and a Swin block
``(N, H, W, C)``.  An activation or a residual sum has no layout of its own: a ReLU after a
convolution is channels-first, a GELU inside a transformer's MLP channels-last.  So the axis is
followed through the forward pass, module by module, as it runs:

* a module that fixes the layout says where the channels are: convolutions, batch, group and
  instance norms, local response norm, pooling and ``Flatten`` put them on axis 1; linear layers,
  ``LayerNorm`` (its own forward, not a subclass that overrides it, such as torchvision's
  channels-first ``LayerNorm2d``), multi-head attention, embeddings and :class:`~.layer.Prepend`
  (which puts a class token in front of the tokens) put them last; torchvision's ``Permute`` moves
  them where its ``dims`` send the axis they were on;
* any other module (activations, sums, dropout, attention cores, and containers such as an encoder
  block or a residual block) keeps the layout of the module that finished just before it: for an
  element-wise module the one that made its input, for a container its last child;
* before any module has said otherwise, the channels are on axis 1.

Where this rule guesses wrong, :func:`~.concepts.concept_heatmaps` and the other entry points take
the axis as an argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layer import Prepend
from .torchvision_types import torchvision_types
from .types import BatchNorm

CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,  # batch and instance norms
    BatchNorm,  # and torchvision's FrozenBatchNorm2d
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Flatten,
)
"""Module types whose output has its channels on axis 1."""

CHANNELS_LAST: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.MultiheadAttention,
    nn.Embedding,
    Prepend,
)
"""Module types whose output has its channels on the last axis."""


def declared_axis(module: nn.Module, before: int) -> int | None:
    """Return the channel axis that ``module`` gives its output, or None if it keeps the layout.

    Parameters
    ----------
    module : nn.Module
        The module that has just run.
    before : int
        The channel axis of the output of the module that finished before it (1 or negative,
        counted from the end, so that it survives a change in the number of dimensions).
    """
    if isinstance(module, CHANNELS_FIRST):
        return 1
    if isinstance(module, CHANNELS_LAST):
        return -1
    if isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward:
        return -1
    if isinstance(module, torchvision_types("ops.misc", "Permute")):
        moved = list(module.dims).index(before % len(module.dims))
        return -1 if moved == len(module.dims) - 1 else moved
    return None


class ChannelAxes:
    """Follow the channel axis through a forward pass (a forward hook for every module).

    Attributes
    ----------
    current : int
        The channel axis of the output of the module that finished last (see
        :func:`declared_axis`).
    """

    def __init__(self) -> None:
        self.current = 1

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        """Update :attr:`current` after ``module`` has run."""
        if isinstance(output, (tuple, list)) and output:
            output = output[0]  # multi-head attention returns (output, weights)
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            declared = declared_axis(module, self.current)
            if declared is not None:
                self.current = declared

    def of(self, output: torch.Tensor) -> int:
        """Return the channel axis of ``output`` (the last module's), counted from the front."""
        return self.current % output.dim()


@contextmanager
def followed_axes(model: nn.Module) -> Iterator[ChannelAxes]:
    """Follow the channel axis through the forward passes of ``model`` while the context lasts.

    Hooks are registered on every module now, so enter this after canonizers have added theirs,
    and before any hook that reads :attr:`ChannelAxes.current` for its own module's output.
    """
    axes = ChannelAxes()
    handles = [module.register_forward_hook(axes) for module in model.modules()]
    try:
        yield axes
    finally:
        for handle in handles:
            handle.remove()
