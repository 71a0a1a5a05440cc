"""The attention core of a transformer as a module, and the LRP rules that explain it.

A canonizer (see :mod:`.vit`) splits multi-head attention into its projections, which are linear
layers with the usual rules, and the :class:`AttentionCore` ``softmax(q k^T * scale + mask) v``,
which gets one of two rules:

* :class:`AttentionConservative` (CP-LRP, Ali et al. 2022): the attention matrix ``A`` is held
  constant, so the core is the linear map ``v -> A v``; relevance flows through the values only
  and is conserved.
* :class:`AttentionAttnLRP` (AttnLRP, Achtibat et al. 2024): the products ``A v`` and ``q k^T``
  share their relevance uniformly between their factors and the softmax passes on gradient times
  input; queries and keys get relevance too. The softmax absorbs part of the relevance, so this
  rule does not conserve it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layer_rules import OutputRatioRule

__all__ = ["AttentionAttnLRP", "AttentionConservative", "AttentionCore"]


class AttentionCore(nn.Module):
    """Scaled dot-product attention per head: ``softmax(q k^T * scale + mask) v``.

    Parameters
    ----------
    head_dim : int
        The size ``d`` of one head's queries and keys; the scale is ``1 / sqrt(d)``.
    scale : float, optional
        A scale to use instead of ``1 / sqrt(d)`` (MaxViT's is ``1 / sqrt(heads * d)``).

    Examples
    --------
    >>> core = AttentionCore(head_dim=64)
    >>> output = core(q, k, v)  # each (batch, heads, tokens, 64)
    """

    def __init__(self, head_dim: int, scale: float | None = None) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the attention matrix ``A = softmax(q k^T * scale + mask)``, (N, heads, L, S)."""
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        return torch.softmax(scores, dim=-1)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``A v`` for queries (N, heads, L, d), keys and values (N, heads, S, d).

        ``mask`` is added to the scores (``-inf`` hides a key); it broadcasts to (N, heads, L, S).
        """
        return self.attention(q, k, mask) @ v


class _AttentionRule(OutputRatioRule):
    """What both attention rules share: the stored call, the stabilized ratio ``g = R / s(o)``."""

    def backward(self, module: nn.Module, grad_input, grad_output):
        """Return the relevance of each hooked input among ``(q, k, v)``."""
        record = self.stored_tensors
        args = record["input"]
        q, k, v = (tensor.detach() for tensor in args[:3])
        mask = args[3] if len(args) > 3 else record["kwargs"].get("mask")
        ratio = grad_output[0] / self.stabilizer(record["output"].detach())
        relevance = self.relevance(module, q, k, v, mask, ratio)
        return tuple(relevance[index] for index in record["positions"])

    def relevance(
        self,
        module: AttentionCore,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        ratio: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(R_q, R_k, R_v)`` from the inputs and the ratio ``g = R / s(o)``."""
        raise NotImplementedError


class AttentionConservative(_AttentionRule):
    """CP-LRP: the attention matrix is held constant and the values take all relevance.

    With ``A`` fixed the core is linear in ``v``, and the epsilon rule on it gives
    ``R_v = v * (A^T g)`` with ``g = R / s(o)``, ``o = A v``; queries and keys get none. Relevance
    is conserved up to the stabilizer. ``A`` is recomputed from the stored queries and keys in the
    backward pass, so no matrix of size tokens x tokens is kept between the passes.

    Parameters
    ----------
    epsilon : float or callable, optional
        The stabilizer of the denominator ``s(o)``.
    """

    def relevance(self, module, q, k, v, mask, ratio):
        """Return ``(0, 0, v * A^T g)``."""
        attention = module.attention(q, k, mask)
        values = v * (attention.transpose(-2, -1) @ ratio)
        return torch.zeros_like(q), torch.zeros_like(k), values


class AttentionAttnLRP(_AttentionRule):
    """AttnLRP: relevance for queries, keys and values.

    With ``S = <o, g>``, ``g = R / s(o)`` held constant: ``R_v = v * (A^T g) / 2``,
    ``R_q = q * dS/dq / 4`` and ``R_k = k * dS/dk / 4``. The product ``A v`` gives half its
    relevance to each factor, the softmax passes gradient times input to its scores, and the
    product ``q k^T`` gives half of that to each factor. The softmax's share is not conserved (it
    behaves like a bias), so the sum of the inputs' relevance differs from the output's.

    Parameters
    ----------
    epsilon : float or callable, optional
        The stabilizer of the denominator ``s(o)``.
    """

    def relevance(self, module, q, k, v, mask, ratio):
        """Return ``(q dS/dq / 4, k dS/dk / 4, v A^T g / 2)``."""
        with torch.enable_grad():
            queries, keys = q.requires_grad_(), k.requires_grad_()
            attention = module.attention(queries, keys, mask)
            score = (attention @ v * ratio).sum()
            grad_q, grad_k = torch.autograd.grad(score, (queries, keys))
        values = v * (attention.detach().transpose(-2, -1) @ ratio)
        return q.detach() * grad_q / 4, k.detach() * grad_k / 4, values / 2
