"""Attributors: run a model and compute an attribution of its input, optionally under a composite.

Every attributor is a context manager that registers its composite (if any) to the model on
entering and removes it on exiting; called outside a ``with`` block, it registers the composite
for the duration of the call only. Calling an attributor returns ``(output, attribution)``.

The output attribution ``attr_output`` says what to explain. It may be

* None: the model output itself is the gradient seed;
* a tensor: the seed itself (broadcast to the output's shape);
* a callable ``output -> seed``;
* an ``int`` class index or a list of class indices (one per sample): a one-hot seed of those
  classes (for :class:`Occlusion`, the output of those classes).

Examples
--------
>>> with Gradient(model, composite) as attributor:
...     output, relevance = attributor(images, attr_output=207)
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import torch
from torch import nn

from .core import Composite
from .input_check import check_input

__all__ = [
    "Attributor",
    "Gradient",
    "IntegratedGradients",
    "Occlusion",
    "SmoothGrad",
    "check_input",
    "occlude_independent",
]

OutputFunction = Callable[[torch.Tensor], torch.Tensor]
AttrOutput = torch.Tensor | OutputFunction | int | Sequence[int] | None


def _identity(output: torch.Tensor) -> torch.Tensor:
    return output


class _Constant:
    """Output function returning a fixed seed tensor."""

    def __init__(self, seed: torch.Tensor) -> None:
        self.seed = seed

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.seed


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class _OneHot:
    """Output function returning a one-hot seed for the given class index or indices."""

    def __init__(self, classes: int | Sequence[int]) -> None:
        self.classes = classes

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 2:
            raise ValueError(
                f"A class index needs a model output of shape (batch, classes), not "
                f"{tuple(output.shape)}; pass attr_output as a tensor or callable instead."
            )
        batch, count = output.shape
        if _is_index(self.classes):
            indices = [int(self.classes)] * batch
        else:
            indices = [int(index) for index in self.classes]
            if len(indices) != batch:
                raise ValueError(
                    f"Got {len(indices)} class indices for a batch of {batch} samples; "
                    "give one index per sample, or a single int for all."
                )
        wrong = [index for index in indices if not 0 <= index < count]
        if wrong:
            raise ValueError(
                f"Class index {wrong[0]} is out of range: the model has {count} outputs "
                f"(0 to {count - 1})."
            )
        seed = torch.zeros_like(output)
        seed[torch.arange(batch, device=output.device), indices] = 1
        return seed


class _SelectedOutput(_OneHot):
    """Output function returning the output of the given classes and zero elsewhere."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output * super().__call__(output)


class Attributor(ABC):
    """Base class of attributors.

    Parameters
    ----------
    model : torch.nn.Module
        The model to attribute.
    composite : Composite, optional
        The composite registered to the model while attributing; None for the plain model.
    attr_output : torch.Tensor, callable, int or list[int], optional
        The default output attribution (see the module documentation).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
    ) -> None:
        self.model = model
        self.composite = composite
        self.attr_output = attr_output
        self._entered = False

    def __enter__(self) -> Attributor:
        if self.composite is not None:
            self.composite.register(self.model)
        self._entered = True
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        self._entered = False
        if self.composite is not None:
            self.composite.remove()
        return False

    def __call__(
        self,
        input: torch.Tensor,  # noqa: A002 - zennit's name
        attr_output: AttrOutput = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the model output and the attribution of ``input``.

        Parameters
        ----------
        input : torch.Tensor
            The input, batch first.
        attr_output : torch.Tensor, callable, int or list[int], optional
            The output attribution for this call; the instance's default if None.

        Returns
        -------
        output : torch.Tensor
            The model output.
        attribution : torch.Tensor
            The attribution, of the input's shape.

        Raises
        ------
        ValueError
            When the input does not fit the model's first layer (see :func:`check_input`).
        """
        check_input(self.model, input)
        chosen = self.attr_output if attr_output is None else attr_output
        output_fn = self._output_function(chosen)
        if self.composite is None or self._entered:
            return self.forward(input, output_fn)
        with self:
            return self.forward(input, output_fn)

    def _output_function(self, attr_output: AttrOutput) -> OutputFunction:
        if attr_output is None:
            return _identity
        if isinstance(attr_output, torch.Tensor):
            return _Constant(attr_output)
        if callable(attr_output):
            return attr_output
        if _is_index(attr_output) or (
            isinstance(attr_output, Sequence)
            and not isinstance(attr_output, str)
            and all(_is_index(index) for index in attr_output)
        ):
            return self._class_function(attr_output)
        raise TypeError(
            f"attr_output must be None, a tensor, a callable, a class index or a list of class "
            f"indices, not {type(attr_output).__name__}."
        )

    def _class_function(self, classes: int | Sequence[int]) -> OutputFunction:
        """Return the output function explaining the given classes (a one-hot seed)."""
        return _OneHot(classes)

    @abstractmethod
    def forward(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute ``(output, attribution)`` with the output function ``attr_output_fn``."""


def _seed_for(output: torch.Tensor, attr_output_fn: OutputFunction) -> torch.Tensor:
    """Return the gradient seed for ``output``, broadcast to its shape, with a clear error."""
    seed = attr_output_fn(output.detach())
    if not isinstance(seed, torch.Tensor):
        raise TypeError(
            f"The output attribution function returned a {type(seed).__name__}; it must return "
            "a tensor of the model output's shape."
        )
    try:
        return seed.to(device=output.device, dtype=output.dtype).expand_as(output)
    except RuntimeError:
        raise ValueError(
            f"The output attribution has shape {tuple(seed.shape)}, which does not fit the model "
            f"output of shape {tuple(output.shape)}."
        ) from None


class Gradient(Attributor):
    """The gradient of the output attribution with respect to the input.

    Under a composite this is the modified gradient, i.e. the LRP relevance.

    Parameters
    ----------
    model, composite, attr_output
        See :class:`Attributor`.
    create_graph : bool, optional
        Build a graph of the gradient computation, so the attribution can be differentiated.
    retain_graph : bool, optional
        Keep the forward graph after the gradient (default: ``create_graph``).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        create_graph: bool = False,
        retain_graph: bool | None = None,
    ) -> None:
        super().__init__(model=model, composite=composite, attr_output=attr_output)
        self.create_graph = create_graph
        self.retain_graph = retain_graph

    def grad(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the model output at ``input`` and the gradient of the output attribution."""
        with torch.enable_grad():
            input = input.detach().requires_grad_(True)  # noqa: A001
            output = self.model(input)
            (gradient,) = torch.autograd.grad(
                (output,),
                (input,),
                grad_outputs=(_seed_for(output, attr_output_fn),),
                create_graph=self.create_graph,
                retain_graph=self.retain_graph,
            )
        return output, gradient

    def forward(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the output and the gradient at ``input``."""
        return self.grad(input, attr_output_fn)


class SmoothGrad(Gradient):
    """The mean gradient over noisy copies of the input (SmoothGrad).

    The noise is Gaussian with a standard deviation of ``noise_level`` times the value range
    (max - min) of each sample. The last of the ``n_iter`` gradients is taken at the input itself,
    so ``n_iter=1`` gives the plain gradient; the returned output is the one at the input.

    Parameters
    ----------
    model, composite, attr_output, create_graph, retain_graph
        See :class:`Gradient`.
    noise_level : float, optional
        Standard deviation of the noise relative to each sample's value range.
    n_iter : int, optional
        The number of gradients averaged.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        create_graph: bool = False,
        retain_graph: bool | None = None,
        noise_level: float = 0.1,
        n_iter: int = 20,
    ) -> None:
        super().__init__(model, composite, attr_output, create_graph, retain_graph)
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, not {n_iter}.")
        self.noise_level = noise_level
        self.n_iter = n_iter

    def forward(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Average the gradients at ``n_iter - 1`` noisy inputs and at the input itself."""
        input = input.detach()  # noqa: A001
        dims = tuple(range(1, input.ndim))
        spread = input.amax(dims, keepdim=True) - input.amin(dims, keepdim=True)
        std = self.noise_level * spread
        result = torch.zeros_like(input)
        for step in range(self.n_iter):
            if step < self.n_iter - 1:
                noisy = input + torch.randn_like(input) * std
            else:
                noisy = input + torch.zeros_like(input)
            output, gradient = self.grad(noisy, attr_output_fn)
            result += gradient / self.n_iter
        return output, result


class IntegratedGradients(Gradient):
    """Integrated gradients along the straight path from a baseline to the input.

    The gradient is taken at ``baseline + k / n_iter * (input - baseline)`` for
    ``k = 1, ..., n_iter``; their mean times ``input - baseline`` is the attribution. The returned
    output is the one at the input (``k = n_iter``).

    Parameters
    ----------
    model, composite, attr_output, create_graph, retain_graph
        See :class:`Gradient`.
    baseline_fn : callable, optional
        ``input -> baseline``; zeros by default.
    n_iter : int, optional
        The number of points on the path.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        create_graph: bool = False,
        retain_graph: bool | None = None,
        baseline_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        n_iter: int = 20,
    ) -> None:
        super().__init__(model, composite, attr_output, create_graph, retain_graph)
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, not {n_iter}.")
        self.baseline_fn = baseline_fn if baseline_fn is not None else torch.zeros_like
        self.n_iter = n_iter

    def forward(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate the gradient from the baseline to ``input``."""
        input = input.detach()  # noqa: A001
        baseline = self.baseline_fn(input)
        difference = input - baseline
        result = torch.zeros_like(input)
        for step in range(1, self.n_iter + 1):
            point = baseline + (step / self.n_iter) * difference
            output, gradient = self.grad(point, attr_output_fn)
            result += gradient / self.n_iter
        return output, result * difference


def occlude_independent(
    input: torch.Tensor,  # noqa: A002
    mask: torch.Tensor,
    fill_fn: Callable[[torch.Tensor], torch.Tensor] = torch.zeros_like,
    invert: bool = False,
) -> torch.Tensor:
    """Keep ``input`` inside ``mask`` and replace it by ``fill_fn(input)`` outside.

    Parameters
    ----------
    input : torch.Tensor
        The input.
    mask : torch.Tensor
        Boolean mask, True inside the window.
    fill_fn : callable, optional
        ``input -> tensor`` of the replacement values; zeros by default.
    invert : bool, optional
        If True, replace the inside of the mask and keep the outside instead.

    Returns
    -------
    torch.Tensor
        The occluded input.
    """
    keep = ~mask if invert else mask
    return torch.where(keep, input, fill_fn(input))


def _per_dim(value: int | Sequence[int], shape: Sequence[int], what: str) -> tuple[int, ...]:
    """Expand a window or stride to one entry per non-batch dimension.

    An int applies to every dimension; a shorter tuple applies to the last dimensions, and the
    leading ones are covered whole.
    """
    if _is_index(value):
        values = (int(value),) * len(shape)
    else:
        values = tuple(int(entry) for entry in value)
        if len(values) > len(shape):
            raise ValueError(
                f"The occlusion {what} {values} has more entries than the input has non-batch "
                f"dimensions {tuple(shape)}."
            )
        values = tuple(shape[: len(shape) - len(values)]) + values
    if any(entry < 1 for entry in values):
        raise ValueError(f"The occlusion {what} must be positive, not {values}.")
    return values


def _window_masks(
    shape: Sequence[int],
    window: int | Sequence[int],
    stride: int | Sequence[int],
    device: torch.device,
):
    """Yield a boolean mask (of ``shape``) for every window position.

    Windows start at multiples of the stride in every dimension and wrap around the end.
    """
    windows = _per_dim(window, shape, "window")
    strides = _per_dim(stride, shape, "stride")
    base = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    base[tuple(slice(0, size) for size in windows)] = True
    dims = tuple(range(len(shape)))
    starts = [range(0, size, step) for size, step in zip(shape, strides)]
    for offsets in product(*starts):
        yield base.roll(offsets, dims)


class Occlusion(Attributor):
    """Attribution by the model's response to windows of the input.

    For every window position, the model is evaluated on ``occlusion_fn(input, mask)``; the sum
    of the output attribution of that output is the window's score, added to every input element
    inside the window. With the default ``occlusion_fn``, only the window is kept and the rest of
    the input is zero. A tensor ``attr_output`` is a constant here; give a callable (e.g.
    ``lambda out: out * one_hot``) or a class index to score by the model output.

    Parameters
    ----------
    model, composite, attr_output
        See :class:`Attributor`.
    occlusion_fn : callable, optional
        ``(input, mask) -> occluded input``, ``mask`` boolean and True inside the window;
        :func:`occlude_independent` by default.
    window : int or tuple[int], optional
        The window size: an int for every non-batch dimension, or a tuple for the last dimensions
        (the leading ones are covered whole).
    stride : int or tuple[int], optional
        The step between windows, expanded like ``window``.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        occlusion_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        window: int | Sequence[int] = 8,
        stride: int | Sequence[int] = 8,
    ) -> None:
        super().__init__(model=model, composite=composite, attr_output=attr_output)
        self.occlusion_fn = occlusion_fn if occlusion_fn is not None else occlude_independent
        self.window = window
        self.stride = stride

    def _class_function(self, classes: int | Sequence[int]) -> OutputFunction:
        """Score a window by the output of the given classes."""
        return _SelectedOutput(classes)

    def forward(
        self,
        input: torch.Tensor,  # noqa: A002
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every window of ``input``; returns the output at ``input`` and the scores."""
        input = input.detach()  # noqa: A001
        batch_shape = (-1,) + (1,) * (input.ndim - 1)
        with torch.no_grad():
            output = self.model(input)
            result = torch.zeros_like(input)
            for mask in _window_masks(input.shape[1:], self.window, self.stride, input.device):
                batch_mask = mask.expand_as(input)
                score = attr_output_fn(self.model(self.occlusion_fn(input, batch_mask)))
                result += batch_mask * score.reshape(score.shape[0], -1).sum(1).reshape(batch_shape)
        return output, result
