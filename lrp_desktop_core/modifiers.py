"""Parameter modifiers of the LRP rules (also importable from :mod:`.rules`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .core import ParamMod

__all__ = [
    "ClampMod",
    "GammaMod",
    "NoMod",
    "ZeroParams",
    "ones_param",
    "squared_param",
    "unchanged_param",
    "zero_bias",
]

ZeroParams = str | Sequence[str] | None


def zero_bias(zero_params: ZeroParams = None) -> list[str]:
    """Return ``zero_params`` as a list with ``'bias'`` added.

    Parameters
    ----------
    zero_params : str or list of str, optional
        Parameter names that are already to be treated as zero.

    Returns
    -------
    list of str
        The names, ending with ``'bias'``.
    """
    if zero_params is None:
        names: list[str] = []
    elif isinstance(zero_params, str):
        names = [zero_params]
    else:
        names = list(zero_params)
    return [*names, "bias"]


class NoMod(ParamMod):
    """A parameter modifier that leaves the parameters unchanged (apart from ``zero_params``).

    Parameters
    ----------
    **kwargs
        ``param_keys``, ``zero_params`` and ``require_params`` of :class:`~.core.ParamMod`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(unchanged_param, **kwargs)


class ClampMod(ParamMod):
    """A parameter modifier that clamps the parameters to ``[min, max]``.

    Parameters
    ----------
    min, max : float, optional
        The bounds; None leaves that side open. ``min=0.`` keeps the positive part.
    **kwargs
        ``param_keys``, ``zero_params`` and ``require_params`` of :class:`~.core.ParamMod`.
    """

    def __init__(self, min: float | None = None, max: float | None = None, **kwargs) -> None:
        def clamp(param: torch.Tensor, name: str) -> torch.Tensor:
            return param.clamp(min=min, max=max)

        super().__init__(clamp, **kwargs)


class GammaMod(ParamMod):
    """A parameter modifier that adds ``gamma`` times the clamped parameters to the parameters.

    Parameters
    ----------
    gamma : float, optional
        The factor of the added part.
    min, max : float, optional
        The clamping bounds of the added part; ``min=0.`` adds the positive part.
    **kwargs
        ``param_keys``, ``zero_params`` and ``require_params`` of :class:`~.core.ParamMod`.
    """

    def __init__(
        self,
        gamma: float = 0.25,
        min: float | None = None,
        max: float | None = None,
        **kwargs,
    ) -> None:
        def add_gamma_part(param: torch.Tensor, name: str) -> torch.Tensor:
            return param + gamma * param.clamp(min=min, max=max)

        super().__init__(add_gamma_part, **kwargs)


def unchanged_param(param: torch.Tensor, name: str) -> torch.Tensor:
    """Return the parameter as it is."""
    return param


def ones_param(param: torch.Tensor, name: str) -> torch.Tensor:
    """Return ones in the parameter's shape (the flat rule's weights)."""
    return torch.ones_like(param)


def squared_param(param: torch.Tensor, name: str) -> torch.Tensor:
    """Return the parameter squared (the w-square rule's weights)."""
    return param * param
