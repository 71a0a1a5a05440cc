"""Numerical building blocks of the rules: stabilisation, expansion and parameter modification.

All names here are part of the reference API and are imported from :mod:`lrp_desktop_core.core`.
Parameters are modified by substitution, never in place, so a model's ``nn.Parameter`` objects
keep their identity and bit-identical values, also when an error interrupts the computation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "ParamMod",
    "Stabilizer",
    "expand",
    "plus",
    "stabilize",
    "substituted_parameters",
    "uncompress",
    "zero_wrap",
]


def stabilize(
    input: torch.Tensor,
    epsilon: float | torch.Tensor = 1e-6,
    clip: bool = False,
    norm_scale: bool = False,
    dim: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Stabilize input for safe division.

    Parameters
    ----------
    input : torch.Tensor
        Tensor to stabilize.
    epsilon : float, optional
        Value by which to shift/clip elements of input.
    clip : bool, optional
        If False (default), add ``epsilon`` multiplied by each entry's sign (+1 for 0 and -0.0).
        If True, clip the absolute value of input to at least ``epsilon`` and multiply it by each
        entry's sign.
    norm_scale : bool, optional
        If True, scale ``epsilon`` by the square root of the mean of the squared elements over
        ``dim``.
    dim : int or tuple[int], optional
        The dimension(s) of the norm for ``norm_scale`` (all except dimension 0 by default).

    Returns
    -------
    torch.Tensor
        A new tensor with every entry moved away from zero.
    """
    if norm_scale:
        if dim is None:
            dim = tuple(range(1, input.ndim))
        elif isinstance(dim, int):
            dim = (dim,)
        if len(dim) == 0:
            epsilon = epsilon * input.abs()
        else:
            epsilon = epsilon * input.pow(2).mean(dim=tuple(dim), keepdim=True).sqrt()
    if isinstance(epsilon, torch.Tensor):
        epsilon = epsilon.to(dtype=input.dtype, device=input.device)
    else:
        epsilon = input.new_full((), epsilon)
    # the sign of each entry, 0 and -0.0 counting as positive (-0.0 + 0.0 is 0.0); copysign is
    # several times faster than a torch.where on the CPU
    signs = input + 0.0
    if clip:
        return torch.copysign(torch.clamp(input.abs(), min=epsilon), signs)
    if torch.is_grad_enabled() and (input.requires_grad or epsilon.requires_grad):
        return input + torch.copysign(epsilon, signs)  # copysign keeps its result for backward
    return torch.copysign(epsilon, signs, out=signs).add_(input)  # one new tensor, no more


def plus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return ``a + b``, skipping a 0-dim zero added to a larger tensor.

    The fast paths stand in a 0-dim zero for a branch that contributes nothing (e.g. the negative
    part of a nonnegative input); adding it would only copy the other term.
    """
    if b.dim() == 0 and a.dim() > 0 and not bool(b.any()):
        return a
    if a.dim() == 0 and b.dim() > 0 and not bool(a.any()):
        return b
    return a + b


class Stabilizer:
    """Class to create a stabilizer callable.

    Parameters
    ----------
    epsilon : float, optional
        Value by which to shift/clip elements of input.
    clip : bool, optional
        Clip the magnitude instead of shifting it (see :func:`stabilize`).
    norm_scale : bool, optional
        Scale ``epsilon`` by the root mean square over ``dim`` (see :func:`stabilize`).
    dim : int or tuple[int], optional
        Dimensions of the norm for ``norm_scale``; all except dimension 0 by default.
    """

    def __init__(
        self,
        epsilon: float = 1e-6,
        clip: bool = False,
        norm_scale: bool = False,
        dim: int | Sequence[int] | None = None,
    ) -> None:
        self.epsilon = epsilon
        self.clip = clip
        self.norm_scale = norm_scale
        self.dim = dim

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        """Stabilize ``input`` with this instance's settings."""
        return stabilize(
            input, epsilon=self.epsilon, clip=self.clip, norm_scale=self.norm_scale, dim=self.dim
        )

    def __repr__(self) -> str:
        return (
            f"Stabilizer(epsilon={self.epsilon!r}, clip={self.clip!r}, "
            f"norm_scale={self.norm_scale!r}, dim={self.dim!r})"
        )

    @classmethod
    def ensure(cls, value: float | int | Callable[[torch.Tensor], torch.Tensor]):
        """Return a stabilizer for ``value``.

        Parameters
        ----------
        value : float, int, or callable
            A number becomes a :class:`Stabilizer` with that epsilon; a callable is used as it is.

        Returns
        -------
        callable or Stabilizer
            A callable to be used as a stabilizer.

        Raises
        ------
        TypeError
            If no valid stabilizer could be produced from ``value``.
        """
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            return cls(epsilon=value)
        if callable(value):
            return value
        raise TypeError(
            f"Cannot make a stabilizer from {value!r} (of type {type(value).__name__}): "
            "pass a number (the epsilon) or a callable tensor -> tensor."
        )


def expand(
    tensor: float | int | torch.Tensor, shape: Sequence[int], cut_batch_dim: bool = False
) -> torch.Tensor:
    """Expand a scalar value or tensor to a shape.

    Parameters
    ----------
    tensor : int, float or torch.Tensor
        Scalar or tensor to expand; a Python number becomes a new tensor. Missing trailing
        dimensions are appended as singletons before expanding.
    shape : tuple[int]
        The shape to expand to.
    cut_batch_dim : bool, optional
        If True, take only the first ``shape[0]`` entries of a larger dimension 0.

    Returns
    -------
    torch.Tensor
        A tensor of shape ``shape``.

    Raises
    ------
    RuntimeError
        If ``tensor`` cannot be expanded to ``shape``.
    """
    if not isinstance(tensor, torch.Tensor):
        tensor = torch.tensor(tensor)
    shape = tuple(shape)
    if tensor.ndim > len(shape):
        raise RuntimeError(
            f"Cannot expand a tensor of shape {tuple(tensor.shape)} to the shape {shape} "
            "with fewer dimensions."
        )
    tensor = tensor.reshape(tuple(tensor.shape) + (1,) * (len(shape) - tensor.ndim))
    if cut_batch_dim and tensor.ndim > 0 and tensor.shape[0] > shape[0]:
        tensor = tensor[: shape[0]]
    return tensor.expand(shape)


def zero_wrap(zero_params: str | Sequence[str] | None):
    """Create a decorator that zeroes the parameters named in ``zero_params``.

    The decorated function is a parameter modifier ``modifier(tensor, name) -> tensor``; the
    wrapper returns ``torch.zeros_like(tensor)`` when ``name`` equals ``zero_params`` (a string) or
    is in it (a list), and calls the modifier otherwise.

    Parameters
    ----------
    zero_params : str or list[str]
        Name or names of the parameters to zero.

    Returns
    -------
    function
        The decorator.
    """
    names = {zero_params} if isinstance(zero_params, str) else set(zero_params or ())

    def decorator(modifier):
        @functools.wraps(modifier)
        def wrapped(tensor: torch.Tensor, name: str) -> torch.Tensor:
            if name in names:
                return torch.zeros_like(tensor)
            return modifier(tensor, name)

        return wrapped

    return decorator


def uncompress(data: Iterable, selector: Iterable[bool], compressed: Iterable) -> Generator:
    """Undo :func:`itertools.compress`, filling the unselected places from ``data``.

    Parameters
    ----------
    data : iterable
        The (original or similar) data; a False selector yields its element, a True selector
        skips it.
    selector : iterable of bool
        The selector that was given to ``itertools.compress``.
    compressed : iterable
        The values to yield in the selected places, in order.

    Yields
    ------
    object
        An element of ``data`` where the selector is False, else the next element of
        ``compressed``.
    """
    compressed = iter(compressed)
    for element, selected in zip(data, selector):
        yield next(compressed) if selected else element


class ParamMod:
    """Temporarily modify the parameters of a module, by substitution, never in place.

    Use an instance as ``with param_mod(module): ...``: inside, the module computes with the
    modified values; on exit (also on an exception) its original ``nn.Parameter`` objects are back,
    untouched.

    Parameters
    ----------
    modifier : callable
        ``modifier(tensor, name) -> tensor`` computing the modified value of parameter ``name``.
    param_keys : list[str], optional
        The parameters to modify: None (default) means every parameter of the module itself (not of
        its children); ``[]`` means none.
    zero_params : str or list[str], optional
        Parameters to set to zero instead.
    require_params : bool, optional
        Whether a named parameter must exist (default). An attribute that exists but is None is not
        missing; it is left alone.
    """

    def __init__(
        self,
        modifier: Callable[[torch.Tensor, str], torch.Tensor],
        param_keys: Sequence[str] | None = None,
        zero_params: str | Sequence[str] | None = None,
        require_params: bool = True,
    ) -> None:
        self.modifier = modifier
        self.param_keys = param_keys
        self.zero_params = zero_params
        self.require_params = require_params

    def _keys(self, module: nn.Module) -> list[str]:
        if self.param_keys is None:
            keys = [name for name, _ in module.named_parameters(recurse=False)]
        else:
            keys = list(self.param_keys)
        zeroed = [self.zero_params] if isinstance(self.zero_params, str) else self.zero_params
        return keys + [name for name in zeroed or () if name not in keys and hasattr(module, name)]

    def state_dicts(
        self, module: nn.Module
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Return the original and the modified parameters of ``module``.

        Parameters
        ----------
        module : torch.nn.Module
            The module whose parameters are modified.

        Returns
        -------
        original_state : dict of torch.Tensor
            The original, unmodified parameters.
        modified_state : dict of torch.Tensor
            The modified parameters (detached from the parameters).

        Raises
        ------
        RuntimeError
            If a parameter is missing and ``require_params`` is True.
        """
        keys = self._keys(module)
        missing = [key for key in keys if not hasattr(module, key)]
        if missing and self.require_params:
            raise RuntimeError(
                f"{type(module).__name__} has no parameter(s) {', '.join(missing)} that this "
                "rule modifies; give the layer another rule or pass require_params=False."
            )
        modifier = zero_wrap(self.zero_params)(self.modifier)
        original, modified = {}, {}
        for key in keys:
            value = getattr(module, key, None)
            if value is None:
                continue
            original[key] = value
            modified[key] = modifier(value.detach(), key)
        return original, modified

    @contextmanager
    def __call__(self, module: nn.Module) -> Iterator[nn.Module]:
        """Context manager in which ``module`` computes with the modified parameters."""
        _, modified = self.state_dicts(module)
        with substituted_parameters(module, modified):
            yield module

    @classmethod
    def ensure(cls, modifier: ParamMod | Callable[[torch.Tensor, str], torch.Tensor]) -> ParamMod:
        """Return ``modifier`` if it is a ParamMod, else a ParamMod around the callable.

        Raises
        ------
        TypeError
            If ``modifier`` is neither a ParamMod nor callable.
        """
        if isinstance(modifier, cls):
            return modifier
        if callable(modifier):
            return cls(modifier)
        raise TypeError(
            f"A parameter modifier must be a ParamMod or a callable (tensor, name) -> tensor, "
            f"not {type(modifier).__name__}."
        )


@contextmanager
def substituted_parameters(
    module: nn.Module, values: dict[str, torch.Tensor]
) -> Iterator[nn.Module]:
    """Let ``module`` compute with ``values`` in place of its parameters, then restore them.

    The original objects (parameters, buffers or plain attributes) are put back exactly as they
    were, also when the body raises; their values are never written.
    """
    saved: list[tuple[dict[str, Any] | None, str, Any]] = []
    try:
        for key, value in values.items():
            for slots in (module._parameters, module._buffers):
                if key in slots:
                    saved.append((slots, key, slots[key]))
                    slots[key] = value
                    break
            else:
                saved.append((None, key, module.__dict__[key]))
                module.__dict__[key] = value
        yield module
    finally:
        for slots, key, original in reversed(saved):
            if slots is None:
                module.__dict__[key] = original
            else:
                slots[key] = original
