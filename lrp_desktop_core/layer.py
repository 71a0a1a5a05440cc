"""Helper modules that canonizers insert, so that every operation has a module for a rule."""

from __future__ import annotations

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

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's own name
        """Return the sum of ``input`` along ``self.dim``."""
        return torch.sum(input, dim=self.dim)
