"""Attention rollout (Abnar and Zuidema 2020).

How much each image patch flows into a Vision Transformer's class token through all its attention
layers.

Every layer's attention matrix ``A_l`` (heads averaged, the paper's choice) is mixed with the
identity for the residual connection around it and its rows are normalised again,
``A'_l = norm(0.5 A_l + 0.5 I)``; the rolled-out matrix is the product over the layers in the
order they run, ``A'_n ... A'_2 A'_1``. Its class-token row over the patch tokens, on the patch
grid, is the map: non-negative, and the same for every class, since attention does not depend
on the explained class (the method is class-agnostic).

The attention matrices come from one forward pass during which every ``nn.MultiheadAttention`` of
the Vision Transformer runs through an :class:`~.attention.AttentionCore` (the rewrite of
:mod:`.vit`) with a forward hook on it; rewrite and hooks are removed afterwards, also when the
forward pass fails, so the model is exactly as before.

Examples
--------
>>> logits, heat = attention_rollout(vit.eval(), images)  # heat: (N, H, W), one value per patch
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.vision_transformer import VisionTransformer

from .attention import AttentionCore
from .canonizers import AttributeCanonizer, Canonizer
from .explain import UnsupportedModelError
from .mha import attention_supported
from .vit import VIT_REWRITES

__all__ = [
    "attention_matrices",
    "attention_rollout",
    "check_rollout_model",
    "patch_map",
    "rollout",
]

_OTHER_METHODS = "use LRP, Gradient, SmoothGrad, Integrated Gradients or Occlusion instead"


def check_rollout_model(model: nn.Module) -> VisionTransformer:
    """Return the Vision Transformer in ``model`` whose attention is rolled out.

    Checks the structure only (no forward pass): the model must hold exactly one torchvision
    ``VisionTransformer`` (a subclass counts), whose class token attends to all patches in every
    layer, and whose attention the rewrite of :mod:`.vit` handles.

    Raises
    ------
    UnsupportedModelError
        Naming what is missing and what to use instead.
    """
    found = [module for module in model.modules() if isinstance(module, VisionTransformer)]
    name = type(model).__name__
    if not found:
        raise UnsupportedModelError(
            "Attention rollout needs a Vision Transformer with a class token (torchvision's "
            f"VisionTransformer); this {name} {_what_it_has(model)}, so there is no attention of "
            f"a class token to all patches to roll out: {_OTHER_METHODS}."
        )
    if len(found) > 1:
        raise UnsupportedModelError(
            f"Attention rollout needs one Vision Transformer; this {name} holds {len(found)}, and "
            f"which one to roll out is unclear: {_OTHER_METHODS}."
        )
    unsupported = [
        module
        for module in found[0].modules()
        if isinstance(module, nn.MultiheadAttention) and not attention_supported(module)
    ]
    if unsupported:
        raise UnsupportedModelError(
            "Attention rollout cannot read the attention of multi-head attention with add_bias_kv "
            f"or add_zero_attn, which this {name} uses: {_OTHER_METHODS}."
        )
    return found[0]


def _what_it_has(model: nn.Module) -> str:
    """Say what the model has in place of global attention with a class token."""
    if any("attention" in type(module).__name__.lower() for module in model.modules()):
        return "attends only within windows or without a class token (as Swin and MaxViT do)"
    return "has no attention at all (a CNN, say)"


def _attention_canonizer() -> Canonizer:
    """Return the :mod:`.vit` rewrite running ``nn.MultiheadAttention`` through an AttentionCore."""
    types, rewrite, _ = next(entry for entry in VIT_REWRITES if nn.MultiheadAttention in entry[0])
    return AttributeCanonizer(
        lambda name, module: rewrite(module) if isinstance(module, types) else None
    )


def attention_matrices(
    model: nn.Module, inputs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model`` once and return its logits and its Vision Transformer's attention matrices.

    Parameters
    ----------
    model : nn.Module
        A model that passes :func:`check_rollout_model`, in evaluation mode (attention dropout
        cannot be rewritten); it is left exactly as it was, also when the forward pass fails.
    inputs : torch.Tensor
        The batch, on the model's device and of its floating point type.

    Returns
    -------
    logits : torch.Tensor
        The model's output.
    attentions : list of torch.Tensor
        One matrix ``softmax(q k^T * scale + mask)`` per attention call, in the order they ran,
        each (N, heads, L, S).
    """
    vit = check_rollout_model(model)
    attentions: list[torch.Tensor] = []

    def record(core: AttentionCore, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        mask = args[3] if len(args) > 3 else kwargs.get("mask")
        attentions.append(core.attention(args[0], args[1], mask))

    instances = _attention_canonizer().apply(vit)
    handles = []
    try:
        for module in vit.modules():
            if isinstance(module, AttentionCore):
                handles.append(module.register_forward_hook(record, with_kwargs=True))
        with torch.no_grad():
            logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for instance in reversed(instances):
            instance.remove()
    return logits, attentions


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Roll attention out through the layers: ``A'_n ... A'_1``, ``A'_l = norm(0.5 A_l + 0.5 I)``.

    Parameters
    ----------
    attentions : sequence of torch.Tensor
        Each layer's self-attention, (N, heads, L, L), in the order the layers run.

    Returns
    -------
    torch.Tensor
        The rolled-out matrix, (N, L, L): how much each token (column) flows into each token (row)
        through all layers; every row sums to 1.
    """
    if not attentions:
        raise ValueError("attention rollout needs at least one attention layer")
    count, _, length, keys = attentions[0].shape
    if length != keys:
        raise ValueError(f"attention rollout needs self-attention, not {length} x {keys} matrices")
    first = attentions[0]
    identity = torch.eye(length, dtype=first.dtype, device=first.device)
    result = identity.expand(count, length, length)
    for attention in attentions:
        mixed = 0.5 * attention.mean(dim=1) + 0.5 * identity
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    return result


def patch_map(matrix: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Return the class token's row over the patches, (N, H, W), each pixel its patch's value.

    Parameters
    ----------
    matrix : torch.Tensor
        A rolled-out matrix (N, L, L) whose token 0 is the class token and whose tokens 1 to L - 1
        are the patches in row-major order.
    grid : tuple of int
        The patch grid (rows, columns); ``rows * columns`` must be ``L - 1``.
    size : tuple of int
        The input's (H, W); the grid is upsampled to it by nearest neighbours, so every pixel gets
        the value of the patch it lies in (no smoothing across patch borders).
    """
    patches = matrix[:, 0, 1:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise UnsupportedModelError(
            f"Attention rollout expects a class token and {grid[0]} x {grid[1]} patch tokens, but "
            f"the Vision Transformer has {matrix.shape[1]} tokens: {_OTHER_METHODS}."
        )
    on_grid = patches.reshape(-1, 1, *grid)
    return F.interpolate(on_grid, size=size, mode="nearest")[:, 0]


def attention_rollout(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the logits and the attention rollout map of a Vision Transformer.

    The map is class-agnostic: it shows where the class token gathers information from, whatever
    class is explained.

    Parameters
    ----------
    model : nn.Module
        A classifier holding one torchvision ``VisionTransformer`` (see
        :func:`check_rollout_model`, which runs before any computation), in evaluation mode.
    inputs : torch.Tensor
        Images (N, C, H, W) on the model's device and of its floating point type.

    Returns
    -------
    logits : torch.Tensor
        The model's output, (N, K).
    heat : torch.Tensor
        The rollout of each patch, non-negative, (N, H, W).

    Raises
    ------
    UnsupportedModelError
        When the model holds no Vision Transformer with a class token.
    """
    vit = check_rollout_model(model)
    logits, attentions = attention_matrices(model, inputs)
    side = vit.image_size // vit.patch_size
    heat = patch_map(rollout(attentions), (side, side), tuple(inputs.shape[-2:]))
    return logits, heat
