"""Rewrites that make every operation of torchvision's MaxViT a module.

* ``MBConv`` adds its shortcut and its branch through a :class:`~.layer.Sum`; its
  squeeze-and-excitation is torchvision's ``SqueezeExcitation``, which the ``"torchvision"``
  canonizer set already turns into a :class:`~.layer.Product`, and the batch norms after its
  convolutions sit in ``Conv2dNormActivation`` Sequentials, which the Sequential merge covers.
* Its ``pre_norm`` batch norm comes *before* the 1x1 convolution ``conv_a``;
  :class:`MaxVitMergePreNorm` merges it into that convolution, which is exact because a
  convolution without padding sees only normalised values.
* ``PartitionAttentionLayer`` adds its two residual branches through :class:`~.layer.Sum` modules;
  the window partition and the axis swaps only move values.
* ``RelativePositionalMultiHeadAttention`` gets a forward that calls ``to_qkv``, an
  :class:`~.attention.AttentionCore` (``canonizer_core``) with the relative position bias as its
  additive mask and MaxViT's own scale ``1 / sqrt(channels)``, and ``merge``, each a module with
  a rule.

Parameters are never copied, and removing the rewrites leaves the model as it was.
:data:`MAXVIT_REWRITES` lists the block rewrites; the ``"torchvision"`` canonizer set includes
them and :class:`MaxVitMergePreNorm`.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torchvision.models.maxvit import MBConv as MaxVitMBConv
from torchvision.models.maxvit import (
    PartitionAttentionLayer,
    RelativePositionalMultiHeadAttention,
)

from .attention import AttentionCore
from .canonizers import MergeBatchNorm
from .layer import add_terms, residual_sum
from .types import ConvolutionStandard
from .vit import residual_sums

__all__ = ["MAXVIT_REWRITES", "MaxVitMergePreNorm"]


class MaxVitMergePreNorm(MergeBatchNorm):
    """Merge the ``pre_norm`` batch norm of MaxViT's ``MBConv`` into the convolution after it.

    With ``bn(x) = s x + t`` per input channel, a convolution ``W`` without padding computes
    ``W bn(x) + b = (W s) x + (b + W t)``, where ``W t`` sums ``W`` times ``t`` over the input
    channels and the kernel; padding would put unnormalised zeros at the borders, so only
    convolutions without padding and groups (MaxViT's 1x1 ``conv_a``) are merged. While
    registered, the convolution computes with the merged weight and bias (new tensors) and the
    batch norm passes its input through; :meth:`remove` puts the original objects back.
    """

    def merge_pairs(self, root_module: nn.Module) -> Iterable[tuple[list[nn.Module], nn.Module]]:
        """Yield ``([conv_a's convolution], pre_norm)`` of every MaxViT ``MBConv``."""
        for module in root_module.modules():
            if isinstance(module, MaxVitMBConv):
                yield [module.layers.conv_a[0]], module.layers.pre_norm

    @staticmethod
    def _check_linear(layer: nn.Module, batch_norm: nn.Module, channels: int) -> None:
        if not isinstance(layer, ConvolutionStandard) or "weight" not in layer._parameters:
            raise TypeError(f"Cannot merge a batch norm into a following {type(layer).__name__}.")
        padding = layer.padding
        unpadded = padding == "valid" or (padding != "same" and not any(padding))
        if layer.groups != 1 or not unpadded:
            raise ValueError(
                "Only a convolution without padding and groups can take the batch norm before it."
            )
        if layer.in_channels != channels:
            raise ValueError(
                f"The convolution takes {layer.in_channels} channels but the "
                f"{type(batch_norm).__name__} normalises {channels}: they do not belong together."
            )

    def _merge_into(self, layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
        weight, bias = layer.weight.detach(), layer.bias
        with torch.no_grad():
            per_input = (1, -1, *(1,) * (weight.ndim - 2))
            factors = scale.to(weight).reshape(per_input)
            offsets = (weight * shift.to(weight).reshape(per_input)).flatten(1).sum(dim=1)
            merged_weight = weight * factors
            merged_bias = offsets if bias is None else bias.detach() + offsets
        self._set_merged(layer, merged_weight, merged_bias)


def _mbconv_forward(self: MaxVitMBConv, x: torch.Tensor) -> torch.Tensor:
    branch = self.stochastic_depth(self.layers(x))
    return add_terms(self.canonizer_sum, self.proj(x), branch)


def _mbconv(module: MaxVitMBConv) -> dict:
    return {"canonizer_sum": residual_sum(), "forward": types.MethodType(_mbconv_forward, module)}


def _partition_attention_forward(self: PartitionAttentionLayer, x: torch.Tensor) -> torch.Tensor:
    x = self.partition_swap(self.partition_op(x, self.p))
    attended = self.stochastic_dropout(self.attn_layer(x))
    x = add_terms(self.canonizer_attention_sum, x, attended)
    x = add_terms(self.canonizer_mlp_sum, x, self.stochastic_dropout(self.mlp_layer(x)))
    height, width = (size // self.p for size in self.grid_size)
    return self.departition_op(self.departition_swap(x), self.p, height, width)


def _partition_attention(module: PartitionAttentionLayer) -> dict:
    return residual_sums(module, _partition_attention_forward)


def _relative_attention_forward(
    self: RelativePositionalMultiHeadAttention, x: torch.Tensor
) -> torch.Tensor:
    """(B, windows, tokens, channels) -> the same; heads as (B, windows, heads, tokens, d)."""
    q, k, v = (
        part.unflatten(-1, (self.n_heads, self.head_dim)).transpose(-3, -2)
        for part in self.to_qkv(x).chunk(3, dim=-1)
    )
    heads = self.canonizer_core(q, k, v, mask=self.get_relative_positional_bias())
    return self.merge(heads.transpose(-3, -2).flatten(-2))


def _relative_attention(module: RelativePositionalMultiHeadAttention) -> dict:
    return {
        "canonizer_core": AttentionCore(module.head_dim, scale=module.scale_factor),
        "forward": types.MethodType(_relative_attention_forward, module),
    }


MAXVIT_REWRITES: tuple[tuple[tuple[type, ...], Callable[[nn.Module], dict | None], str], ...] = (
    (
        (MaxVitMBConv,),
        _mbconv,
        "MaxViT MBConv: residual addition as Sum",
    ),
    (
        (PartitionAttentionLayer,),
        _partition_attention,
        "MaxViT partition attention: residual additions as Sum",
    ),
    (
        (RelativePositionalMultiHeadAttention,),
        _relative_attention,
        "MaxViT relative-position attention: attention as AttentionCore, the bias as its mask",
    ),
)
"""The rewrites for MaxViT: ``(block classes, rewrite, description)``."""
