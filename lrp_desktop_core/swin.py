"""Rewrites that make every operation of torchvision's Swin Transformer (V1) a module.

* ``ShiftedWindowAttention`` hands its input, its projections' parameters and its relative
  position bias to one function, so neither projection runs as a module. The rewrite gives each
  instance a forward that pads, shifts and partitions the feature map into windows as that
  function does, calls ``qkv`` and ``proj`` as the linear layers they are and attends through an
  :class:`~.attention.AttentionCore` (``canonizer_core``), whose additive mask is the relative
  position bias plus the mask that keeps shifted windows' regions apart, both constants.
* ``SwinTransformerBlock`` adds its two residual branches through :class:`~.layer.Sum` modules.

Swin Transformer V2 (``ShiftedWindowAttentionV2``, ``SwinTransformerBlockV2``, subclasses of the
above) scales cosine similarities by a learned factor instead; no rule explains that yet, so its
blocks are left alone. Parameters are never copied or written, and removing the rewrites leaves
the model as it was. :data:`SWIN_REWRITES` lists the rewrites; the ``"torchvision"`` canonizer set
includes them.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.swin_transformer import (
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    SwinTransformerBlock,
    SwinTransformerBlockV2,
)

from .attention import AttentionCore
from .layer import add_terms
from .mha import split_heads
from .vit import residual_sums

__all__ = ["SWIN_REWRITES", "window_attention_supported"]

_REGION_GAP = -100.0
"""The score torchvision adds between tokens of a window that come from different regions of the
shifted feature map: their attention weight is about ``exp(-100)``, not exactly zero."""


def window_attention_supported(module: nn.Module) -> bool:
    """Whether ``module`` is Swin V1's windowed attention, which the rewrite handles (not V2's)."""
    return isinstance(module, ShiftedWindowAttention) and not isinstance(
        module, ShiftedWindowAttentionV2
    )


def _partition(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, tokens per window, C), windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window[0], window[0], width // window[1], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)


def _merge(
    windows: torch.Tensor, window: list[int], batch: int, size: tuple[int, int]
) -> torch.Tensor:
    """Return the inverse of :func:`_partition`: (B * windows, tokens, C) -> (B, H, W, C)."""
    height, width = size
    channels = windows.shape[-1]
    x = windows.view(batch, height // window[0], width // window[1], window[0], window[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def _wrapped(size: int, shift: int) -> torch.Tensor:
    """Whether each position along one axis came round from the far side in the cyclic shift."""
    return torch.arange(size) >= size - shift


def _region_mask(
    size: tuple[int, int], window: list[int], shift: list[int], like: torch.Tensor
) -> torch.Tensor:
    """Return the additive mask (windows, 1, tokens, tokens) that keeps shifted regions apart.

    In the last windows along a shifted axis, tokens that the shift brought round from the far
    side of the map sit next to tokens that were not their neighbours; the two groups must not
    attend to each other (along both axes, four regions).
    """
    rows, columns = (_wrapped(n, s) for n, s in zip(size, shift))
    regions = (2 * rows[:, None] + columns[None, :]).to(like.device)
    regions = _partition(regions[None, :, :, None], window)[..., 0]  # (windows, tokens)
    apart = regions[:, None, :] != regions[:, :, None]
    zeros = torch.zeros(apart.shape, dtype=like.dtype, device=like.device)
    return zeros.masked_fill(apart, _REGION_GAP).unsqueeze(1)


def _attention_mask(
    self: ShiftedWindowAttention, size: tuple[int, int], shift: list[int], batch: int
) -> torch.Tensor:
    """Relative position bias plus region mask, broadcasting to (B * windows, heads, N, N)."""
    bias = self.get_relative_position_bias().detach()  # (1, heads, tokens, tokens)
    if not any(shift):
        return bias
    return (bias + _region_mask(size, self.window_size, shift, bias)).repeat(batch, 1, 1, 1)


def _window_attention_forward(self: ShiftedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    if self.training and self.attention_dropout > 0:
        raise ValueError("canonized window attention has no attention dropout: use eval()")
    batch, height, width, _ = x.shape
    window = self.window_size
    x = F.pad(x, (0, 0, 0, -width % window[1], 0, -height % window[0]))
    size = (x.shape[1], x.shape[2])
    # a window as large as the (padded) map sees all of it: no shift along that axis
    shift = [0 if w >= n else s for w, n, s in zip(window, size, self.shift_size)]
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    q, k, v = (split_heads(self, t) for t in self.qkv(_partition(x, window)).chunk(3, dim=-1))
    heads = self.canonizer_core(q, k, v, mask=_attention_mask(self, size, shift, batch))
    windows = F.dropout(self.proj(heads.transpose(1, 2).flatten(2)), self.dropout, self.training)
    x = _merge(windows, window, batch, size)
    if any(shift):
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width].contiguous()


def _window_attention(module: ShiftedWindowAttention) -> dict | None:
    if not window_attention_supported(module):
        return None
    return {
        "canonizer_core": AttentionCore(module.qkv.in_features // module.num_heads),
        "forward": types.MethodType(_window_attention_forward, module),
    }


def _block_forward(self: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    branch = self.stochastic_depth(self.attn(self.norm1(x)))
    x = add_terms(self.canonizer_attention_sum, x, branch)
    branch = self.stochastic_depth(self.mlp(self.norm2(x)))
    return add_terms(self.canonizer_mlp_sum, x, branch)


def _block(module: SwinTransformerBlock) -> dict | None:
    if isinstance(module, SwinTransformerBlockV2):
        return None
    return residual_sums(module, _block_forward)


SWIN_REWRITES: tuple[tuple[tuple[type, ...], Callable[[nn.Module], dict | None], str], ...] = (
    (
        (ShiftedWindowAttention,),
        _window_attention,
        "Swin window attention: projections called as layers, attention as AttentionCore",
    ),
    (
        (SwinTransformerBlock,),
        _block,
        "Swin Transformer block: residual additions as Sum",
    ),
)
"""The rewrites for Swin Transformer V1: ``(block classes, rewrite, description)``."""
