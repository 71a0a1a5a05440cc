"""Rewrites that make every operation of multi-head attention and of Vision Transformers a module.

* ``torch.nn.MultiheadAttention`` gets the rewrite of :mod:`.mha`.
* torchvision's ``EncoderBlock`` adds its two residual branches through
  :class:`~.layer.Sum` modules, ``Encoder`` adds the position embedding through a
  :class:`~.layer.ConstantSum` and ``VisionTransformer`` puts the class token in front through a
  :class:`~.layer.Prepend`.

Parameters are never copied or written, and removing the rewrites leaves the model as it was.
:data:`VIT_REWRITES` lists the rewrites; the ``"torchvision"`` canonizer set includes them.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.vision_transformer import Encoder, EncoderBlock, VisionTransformer

from .layer import ConstantSum, Prepend, add_terms, residual_sum
from .mha import ATTENTION_REWRITE

__all__ = ["VIT_REWRITES"]


def _encoder_block_forward(self: EncoderBlock, input: torch.Tensor) -> torch.Tensor:
    x = self.ln_1(input)
    x = self.dropout(self.self_attention(x, x, x, need_weights=False)[0])
    x = add_terms(self.canonizer_attention_sum, x, input)
    return add_terms(self.canonizer_mlp_sum, x, self.mlp(self.ln_2(x)))


def residual_sums(module: nn.Module, forward: Callable[..., torch.Tensor]) -> dict:
    """Return the rewrite of a transformer block with an attention and an MLP residual.

    ``forward`` replaces the block's own and adds the attention branch through
    ``canonizer_attention_sum`` and the MLP branch through ``canonizer_mlp_sum``; both are new
    :class:`~.layer.Sum` modules.
    """
    return {
        "canonizer_attention_sum": residual_sum(),
        "canonizer_mlp_sum": residual_sum(),
        "forward": types.MethodType(forward, module),
    }


def _encoder_block(module: EncoderBlock) -> dict:
    return residual_sums(module, _encoder_block_forward)


def _encoder_forward(self: Encoder, input: torch.Tensor) -> torch.Tensor:
    return self.ln(self.layers(self.dropout(self.canonizer_position(input))))


def _encoder(module: Encoder) -> dict:
    return {
        "canonizer_position": ConstantSum(module.pos_embedding),
        "forward": types.MethodType(_encoder_forward, module),
    }


def _vision_transformer_forward(self: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    x = self.encoder(self.canonizer_token(self._process_input(x)))
    return self.heads(x[:, 0])


def _vision_transformer(module: VisionTransformer) -> dict:
    return {
        "canonizer_token": Prepend(module.class_token),
        "forward": types.MethodType(_vision_transformer_forward, module),
    }


VIT_REWRITES: tuple[tuple[tuple[type, ...], Callable[[nn.Module], dict | None], str], ...] = (
    ATTENTION_REWRITE,
    (
        (EncoderBlock,),
        _encoder_block,
        "Vision Transformer block: residual additions as Sum",
    ),
    (
        (Encoder,),
        _encoder,
        "Vision Transformer encoder: position embedding added by a ConstantSum",
    ),
    (
        (VisionTransformer,),
        _vision_transformer,
        "Vision Transformer: class token put in front by a Prepend",
    ),
)
"""The rewrites for attention and Vision Transformers: ``(block classes, rewrite, description)``."""
