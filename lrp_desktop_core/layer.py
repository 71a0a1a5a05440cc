"""Helper modules that canonizers insert, so that every operation has a module for a rule."""

from __future__ import annotations

import functools

import torch
from torch import nn


class Sum(nn.Module):
    """Sum a stacked tensor along one dimension, e.g. the two branches of a residual addition.

    Parameters
    ----------
    dim : int, optional
        The dimension along which the stacked summands lie (the last one by default).

    Examples
    --------
    >>> summed = Sum()(torch.stack([branch, shortcut], dim=-1))
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return the sum of ``input`` along ``self.dim``.

        The terms are added one after the other, as the addition this module stands for does (so
        the result is bit-identical to it); that is also several times faster than a reduction
        over a dimension of two or three entries.
        """
        terms = input.unbind(self.dim)
        if len(terms) < 2:
            return torch.sum(input, dim=self.dim)
        return functools.reduce(torch.add, terms)


def residual_sum() -> Sum:
    """Return the Sum a canonizer gives a residual addition: terms stacked along a new first axis.

    Stacked there, each term is one contiguous block of the stacked tensor, so stacking them
    (:func:`add_terms`) and taking them apart again are plain copies and views; stacked along
    the last axis, as ``Sum()`` expects, the terms interleave element by element.
    """
    return Sum(dim=0)


def add_terms(sum_module: Sum, *terms: torch.Tensor) -> torch.Tensor:
    """Return the sum of ``terms`` through ``sum_module``, stacked along its dimension."""
    return sum_module(torch.stack(terms, dim=sum_module.dim))


class Product(nn.Module):
    """Multiply a signal by a gate, e.g. the channel weights of a squeeze-and-excitation block.

    The two factors are separate inputs, so that a rule can decide how relevance is shared
    between them (see :class:`~lrp_desktop_core.rules.SignalTakesAll` and
    :class:`~lrp_desktop_core.rules.UniformSplit`).

    Examples
    --------
    >>> scaled = Product()(features, channel_weights)
    """

    def forward(self, signal: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Return ``signal * gate`` (broadcast as torch broadcasts)."""
        return signal * gate


class Scale(nn.Module):
    """Multiply the input by a fixed factor that belongs to another module, e.g. a layer scale.

    The factor is registered as this module's parameter ``weight`` (the very same object, never a
    copy), so a canonizer can give an inline multiplication a module of its own while the owner
    keeps its parameter.

    Parameters
    ----------
    weight : torch.Tensor
        The factor, broadcast against the input.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        if isinstance(weight, nn.Parameter):
            self.weight = weight
        else:
            self.register_buffer("weight", weight, persistent=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return ``weight * input``."""
        return self.weight * input


class ChannelAffine(nn.Module):
    """A fixed per-channel affine map ``scale[c] * x[:, c] + shift[c]``, e.g. an input transform.

    GoogLeNet and Inception v3 change the units of their input this way before the first
    convolution; as a module the change gets a rule like any other layer.

    Parameters
    ----------
    scale, shift : sequence of float
        One factor and one offset per channel.
    """

    def __init__(self, scale: list[float], shift: list[float]) -> None:
        super().__init__()
        if len(scale) != len(shift):
            raise ValueError(f"need one shift per scale, got {len(scale)} and {len(shift)}")
        # kept in float64, so that the map is exact in float64 too
        for name, values in (("scale", scale), ("shift", shift)):
            constants = torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)
            self.register_buffer(name, constants, persistent=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return the transformed input."""
        return input * self.scale.to(input) + self.shift.to(input)

    def map_bounds(
        self, low: torch.Tensor, high: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the bounds ``(low, high)`` of the input as they are after this map."""
        ends = (self.forward(low), self.forward(high))
        return torch.minimum(*ends), torch.maximum(*ends)


def _register_constant(module: nn.Module, constant: torch.Tensor) -> None:
    """Register ``constant`` as ``module.constant``: the same Parameter object, or a buffer."""
    if isinstance(constant, nn.Parameter):
        module.constant = constant
    else:
        module.register_buffer("constant", constant, persistent=False)


class ConstantSum(Sum):
    """Add a fixed tensor that belongs to another module, e.g. a position embedding.

    The constant is registered as this module's ``constant`` (the very same object, never a
    copy) and broadcast to the input's shape; as a :class:`Sum` it shares relevance in proportion
    to the summands, so the constant's share is absorbed, as a bias's is.

    Parameters
    ----------
    constant : torch.Tensor
        The summand, broadcast against the input.
    """

    def __init__(self, constant: torch.Tensor) -> None:
        super().__init__(dim=-1)
        _register_constant(self, constant)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return ``input + constant``."""
        return super().forward(torch.stack([input, self.constant.expand_as(input)], dim=-1))


class Prepend(nn.Module):
    """Put a fixed tensor in front of every sample along one dimension, e.g. a class token.

    The constant is registered as this module's ``constant`` (the very same object, never a
    copy). The concatenation itself moves relevance without changing it; the constant's
    positions are absorbed, as a bias is.

    Parameters
    ----------
    constant : torch.Tensor
        The tensor to prepend, with a batch dimension of size 1.
    dim : int, optional
        The dimension along which it is put in front (the tokens, 1, by default).
    """

    def __init__(self, constant: torch.Tensor, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        _register_constant(self, constant)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return ``cat([constant, input], dim)``, the constant repeated over the batch."""
        constant = self.constant.expand(input.shape[0], *self.constant.shape[1:])
        return torch.cat([constant, input], dim=self.dim)
