"""The rewrite that makes every operation of ``torch.nn.MultiheadAttention`` a module.

``nn.MultiheadAttention`` computes its projections from packed parameters inside one functional
call. The rewrite gives each instance a forward that calls the query, key and value projections as
:class:`PackedLinear` layers (whose parameters share the packed ones' memory), the
:class:`~.attention.AttentionCore` and ``out_proj``, each of which gets a rule. Parameters are never
copied or written, and removing the rewrite leaves the module as it was.

It needs nothing from torchvision, so a model of plain torch layers is canonized without importing
it; torchvision's transformers build on it (see :mod:`.vit`, :mod:`.swin` and :mod:`.maxvit`).
"""

from __future__ import annotations

import types

import torch
from torch import nn

from .attention import AttentionCore

__all__ = ["ATTENTION_REWRITE", "PackedLinear", "attention_supported", "split_heads"]


class PackedLinear(nn.Linear):
    """A linear layer whose weight and bias share memory with another module's parameters.

    ``weight`` and ``bias`` are given as slices of the packed parameters (e.g. the query rows of
    ``in_proj_weight``); they become this layer's parameters without a copy, so rules see a plain
    linear layer while the packed parameters keep their identity and values. Gradients for the
    parameters reach these slices, not the packed parameters.

    Parameters
    ----------
    weight : torch.Tensor
        The weight, (out_features, in_features).
    bias : torch.Tensor or None
        The bias, (out_features,), or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        nn.Module.__init__(self)  # nn.Linear's constructor would allocate new parameters
        self.out_features, self.in_features = weight.shape
        self.weight = _shared(weight)
        self.register_parameter("bias", None if bias is None else _shared(bias))


def _shared(tensor: torch.Tensor) -> nn.Parameter:
    """Return the tensor itself if it is a Parameter, else a Parameter over the same memory."""
    if isinstance(tensor, nn.Parameter):
        return tensor
    return nn.Parameter(tensor.detach(), requires_grad=tensor.requires_grad)


def attention_supported(module: nn.MultiheadAttention) -> bool:
    """Whether the rewrite handles this attention (not: ``add_bias_kv``, ``add_zero_attn``)."""
    return module.bias_k is None and module.bias_v is None and not module.add_zero_attn


def _projections(module: nn.MultiheadAttention) -> list[PackedLinear]:
    """Return the query, key and value projections of ``module`` as linear layers."""
    size = module.embed_dim
    if module._qkv_same_embed_dim:
        weights = [module.in_proj_weight[i * size : (i + 1) * size] for i in range(3)]
    else:
        weights = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
    biases = [None] * 3
    if module.in_proj_bias is not None:
        biases = [module.in_proj_bias[i * size : (i + 1) * size] for i in range(3)]
    return [PackedLinear(weight, bias) for weight, bias in zip(weights, biases)]


def _as_additive(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return a boolean mask (True hides) as ``-inf``/0, a float one as is, in ``like``'s dtype."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(like.dtype)


def _additive_mask(
    q: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
) -> torch.Tensor | None:
    """Return the masks of a call as one additive mask broadcasting to (N, heads, L, S)."""
    if is_causal and attn_mask is None:
        raise ValueError("multi-head attention: is_causal needs attn_mask (as torch requires)")
    batch, heads, length = q.shape[:3]
    mask = None
    if attn_mask is not None:
        shape = (1, 1, *attn_mask.shape) if attn_mask.dim() == 2 else (batch, heads, length, -1)
        mask = _as_additive(attn_mask, q).reshape(shape)
    if key_padding_mask is not None:
        padding = _as_additive(key_padding_mask, q).reshape(batch, 1, 1, -1)
        mask = padding if mask is None else mask + padding
    return mask


def split_heads(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, L, E) -> (N, heads, L, E / heads), with ``module.num_heads`` heads."""
    return x.unflatten(-1, (module.num_heads, -1)).transpose(1, 2)


def _attention_forward(
    self: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if query.dim() != 3:
        raise ValueError("canonized multi-head attention takes batched (3-D) inputs only")
    if self.training and self.dropout > 0:
        raise ValueError("canonized multi-head attention has no attention dropout: use eval()")
    if not self.batch_first:
        query, key, value = (tensor.transpose(0, 1) for tensor in (query, key, value))
    projections = (self.canonizer_q, self.canonizer_k, self.canonizer_v)
    q, k, v = (split_heads(self, p(x)) for p, x in zip(projections, (query, key, value)))
    mask = _additive_mask(q, key_padding_mask, attn_mask, is_causal)
    heads = self.canonizer_core(q, k, v, mask=mask)
    output = self.out_proj(heads.transpose(1, 2).flatten(2))
    if not self.batch_first:
        output = output.transpose(0, 1)
    if not need_weights:
        return output, None
    with torch.no_grad():  # returned for inspection, not on the relevance path
        weights = self.canonizer_core.attention(q, k, mask)
    return output, weights.mean(dim=1) if average_attn_weights else weights


def _attention(module: nn.MultiheadAttention) -> dict | None:
    if not attention_supported(module):
        return None
    q, k, v = _projections(module)
    return {
        "canonizer_q": q,
        "canonizer_k": k,
        "canonizer_v": v,
        "canonizer_core": AttentionCore(module.head_dim),
        "forward": types.MethodType(_attention_forward, module),
    }


ATTENTION_REWRITE = (
    (nn.MultiheadAttention,),
    _attention,
    "multi-head attention: projections as linear layers, attention as AttentionCore",
)
"""The rewrite of ``nn.MultiheadAttention``: ``(block classes, rewrite, description)``."""
