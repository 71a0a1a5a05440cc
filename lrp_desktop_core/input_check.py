"""Whether an input fits a model: dimensions, floating point type and channels.

:func:`check_input` compares an input with the layer that takes it and names what that layer
needs, instead of the raw error torch gives deep inside a convolution. ``explain`` and every
attributor call it; ``attribution`` re-exports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["check_input"]


_CONVOLUTIONS = {nn.Conv1d: "(N, {}, L)", nn.Conv2d: "(N, {}, H, W)", nn.Conv3d: "(N, {}, D, H, W)"}
"""The input layout each convolution takes, to be filled in with its channels."""


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """Return the name and module of the layer that takes the input, if it can be checked.

    That layer is taken to be the first leaf module with parameters in module order (the order
    of ``model.named_modules()``, which is definition order); it is returned only when it is an
    initialised ``Conv1d``, ``Conv2d``, ``Conv3d`` or ``Linear``, the layers whose input is known.
    """
    for name, module in model.named_modules():
        parameters = list(module.parameters(recurse=False))
        if next(module.children(), None) is not None or not parameters:
            continue
        known = isinstance(module, (nn.Linear, *_CONVOLUTIONS))
        lazy = any(nn.parameter.is_lazy(parameter) for parameter in parameters)
        return (name, module) if known and not lazy else None
    return None


def _layout(ndim: int) -> str:
    """Return the batch-first layout of ``ndim`` dimensions, e.g. ``(N, C, H, W)``."""
    for layout in _CONVOLUTIONS.values():
        if layout.count(",") + 1 == ndim:
            return layout.format("C")
    return f"a {ndim}-D tensor, batch first"


def check_input(model: nn.Module, input: torch.Tensor, ndim: int | None = None) -> None:
    """Raise a ``ValueError`` naming the input ``model`` expects when ``input`` does not fit.

    The layer that takes the input is taken to be the first leaf module with parameters in module
    order (see ``model.named_modules()``); when it is a convolution or a linear layer, the input
    must be floating point, of the convolution's number of dimensions (batch first), with its
    ``in_channels`` along dimension 1, or, for a linear layer, ``in_features`` values along the last
    dimension or per sample. A model that starts with another layer (an embedding, say) is checked
    for ``ndim`` only.

    Parameters
    ----------
    model : torch.nn.Module
        The model the input is for.
    input : torch.Tensor
        The input, batch first.
    ndim : int, optional
        The number of dimensions the caller needs; by default the first convolution's.

    Raises
    ------
    ValueError
        When the input's number of dimensions, floating point type or channels do not fit.
    """
    found = _first_layer(model)
    layout = None if found is None else _CONVOLUTIONS.get(type(found[1]))
    if ndim is None and layout is not None:
        ndim = layout.count(",") + 1
    shape = tuple(input.shape)
    if ndim is not None and input.ndim != ndim:
        advice = ", e.g. add a batch dimension with x[None]" if input.ndim == ndim - 1 else ""
        raise ValueError(f"Inputs have shape {shape}, but {_layout(ndim)} is needed{advice}.")
    if found is None:
        return
    name, layer = found
    where = f"the model's first layer (`{name}`, {type(layer).__name__})"
    if not input.is_floating_point():
        raise ValueError(
            f"Inputs are {input.dtype}, but {where} computes in floating point: convert them "
            "with x.float() and normalise them as the model expects (for images: scale 0..255 "
            "to 0..1, then apply the model's mean and std)."
        )
    if isinstance(layer, nn.Linear):
        features = layer.in_features
        if features in (shape[-1], math.prod(shape[1:])):
            return
        raise ValueError(
            f"Inputs have shape {shape}, but {where} takes {features} features: give (N, "
            f"{features}), or inputs of {features} values per sample."
        )
    channels = layer.in_channels
    if shape[1] != channels:
        plural = "" if shape[1] == 1 else "s"
        raise ValueError(
            f"Inputs have {shape[1]} channel{plural}, but {where} takes {channels}: give "
            f"{layout.format(channels)}."
        )
