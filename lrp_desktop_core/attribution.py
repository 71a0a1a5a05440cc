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

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from itertools import islice, product
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import Composite
from .hooks import records_released_after_use
from .input_check import check_input

__all__ = [
    "Attributor",
    "Gradient",
    "IntegratedGradients",
    "Occlusion",
    "SmoothGrad",
    "check_input",
    "constant",
    "expand_targets",
    "identity",
    "occlude_independent",
    "one_hot",
    "resolve_target",
]

OutputFunction = Callable[[torch.Tensor], torch.Tensor]
AttrOutput = torch.Tensor | OutputFunction | int | Sequence[int] | None
StepCallback = Callable[[int, int], None]
"""``(done, total) -> None``, called after each step (a model pass or a gradient) of an
attributor; raise in it to stop the computation (e.g. to cancel it)."""


def identity(obj: Any) -> Any:
    """Return ``obj`` unchanged: the default output attribution (the model output itself)."""
    return obj


def constant(obj: Any) -> Callable[..., Any]:
    """Return a function that returns ``obj`` whatever it is called with."""

    def wrapped_constant(*args: Any, **kwargs: Any) -> Any:
        return obj

    return wrapped_constant


class _Constant:
    """Output function returning a fixed seed tensor."""

    def __init__(self, seed: torch.Tensor) -> None:
        self.seed = seed

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.seed


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def expand_targets(target: Any, count: int, classes: int | None = None) -> torch.Tensor:
    """Return one class index per sample (int64, shape ``(count,)``) from a target.

    Parameters
    ----------
    target : int, sequence of int, numpy array or tensor
        One class for every sample (a scalar), or one per sample (a sequence).
    count : int
        The number of samples.
    classes : int, optional
        The number of classes, to check the indices against.

    Raises
    ------
    ValueError
        When the number of indices is neither 1 nor ``count``, or an index is out of range.
    """
    if isinstance(target, torch.Tensor):
        given = target.detach().to(device="cpu", dtype=torch.long)
    else:
        given = torch.as_tensor(np.asarray(target), dtype=torch.long)
    targets = given.reshape(-1).repeat(count) if given.ndim == 0 else given.reshape(-1)
    if targets.numel() != count:
        raise ValueError(
            f"need one target per sample ({count}), got {targets.numel()}: give one index per "
            "sample, or a single int for all"
        )
    if classes is not None:
        wrong = targets[(targets < 0) | (targets >= classes)].tolist()
        if wrong:
            raise ValueError(
                f"target class {wrong[0]} is out of range: the model has {classes} outputs "
                f"(0 to {classes - 1})"
            )
    return targets


def one_hot(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the one-hot seed of ``targets``: 1 at each sample's class, 0 elsewhere.

    Parameters
    ----------
    output : torch.Tensor
        The model output of shape ``(N, K)``, whose shape, dtype and device the seed takes.
    targets : torch.Tensor
        The class of each sample, shape ``(N,)``, on the output's device.

    Returns
    -------
    torch.Tensor
        A new tensor like ``output``.
    """
    return torch.zeros_like(output).scatter_(1, targets[:, None], 1.0)


def resolve_target(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """Return the explained class of every sample, on the logits' device.

    Parameters
    ----------
    target : None, int, sequence of int, numpy array or tensor
        None for the top-1 class of each sample, one index for all samples, or one per sample.
    logits : torch.Tensor
        Model outputs of shape ``(N, K)``.

    Raises
    ------
    ValueError
        When the logits are not of shape ``(N, K)``, or the target does not fit them (see
        :func:`expand_targets`).
    """
    if logits.ndim != 2:
        raise ValueError(
            f"A class index needs a model output of shape (batch, classes), not "
            f"{tuple(logits.shape)}; pass attr_output as a tensor or callable instead."
        )
    if target is None:
        return logits.detach().argmax(dim=1)
    count, classes = logits.shape
    return expand_targets(target, count, classes).to(logits.device)


class _OneHot:
    """Output function returning a one-hot seed for the given class index or indices."""

    def __init__(self, classes: int | Sequence[int]) -> None:
        self.classes = classes

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return one_hot(output, resolve_target(self.classes, output))


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
    callback : callable, optional
        ``(done, total) -> None``, called after each step (a model pass or a gradient); raise in
        it to stop (see :data:`StepCallback`). Keyword only; not in zennit.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        *,
        callback: StepCallback | None = None,
    ) -> None:
        self.model = model
        self.composite = composite
        self.attr_output = attr_output
        self.callback = callback
        self._entered = False

    @property
    def attr_output_fn(self) -> OutputFunction:
        """The default output attribution as a function of the model output."""
        return self._output_function(self.attr_output)

    @property
    def inactive(self):
        """The composite's :meth:`~.core.Composite.inactive` context: the plain gradient flows."""
        if self.composite is None:
            raise AttributeError("an attributor without a composite has no inactive context")
        return self.composite.inactive

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
        input: torch.Tensor,
        attr_output: AttrOutput = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the model output and the attribution of ``input``.

        Parameters
        ----------
        input : torch.Tensor
            The input, batch first. If it requires a gradient and ``create_graph`` is set, the
            attribution is differentiable with respect to it.
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
        if self.composite is None or self._entered or self.composite.handles:
            return self.forward(input, output_fn)
        with self:
            return self.forward(input, output_fn)

    def _output_function(self, attr_output: AttrOutput) -> OutputFunction:
        if attr_output is None:
            return identity
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

    def _step(self, done: int, total: int) -> None:
        """Report a finished step to the callback, if any."""
        if self.callback is not None:
            self.callback(done, total)

    @abstractmethod
    def forward(
        self,
        input: torch.Tensor,
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


def _check_iterations(n_iter: Any) -> int:
    if not _is_index(n_iter) or n_iter < 1:
        raise ValueError(f"n_iter must be an int of at least 1, not {n_iter!r}.")
    return int(n_iter)


class Gradient(Attributor):
    """The gradient of the output attribution with respect to the input.

    Under a composite this is the modified gradient, i.e. the LRP relevance.

    Parameters
    ----------
    model, composite, attr_output, callback
        See :class:`Attributor`.
    create_graph : bool, optional
        Build a graph of the gradient computation, so the attribution can be differentiated
        (with respect to the parameters, and to the input where that requires a gradient).
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
        *,
        callback: StepCallback | None = None,
    ) -> None:
        super().__init__(
            model=model, composite=composite, attr_output=attr_output, callback=callback
        )
        self.create_graph = create_graph
        self.retain_graph = retain_graph

    def grad(
        self,
        input: torch.Tensor,
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the model output at ``input`` and the gradient of the output attribution.

        An input that requires a gradient stays in its graph (so that, with ``create_graph``,
        the gradient is differentiable with respect to it); any other is a fresh leaf.
        """
        with torch.enable_grad():
            if input.requires_grad:
                point = input.view_as(input)
            else:
                point = input.detach().requires_grad_(True)
            output = self.model(point)
            retained = self.create_graph if self.retain_graph is None else self.retain_graph
            hooks = self.composite.hooks if self.composite is not None and not retained else ()
            with records_released_after_use(hooks):
                (gradient,) = torch.autograd.grad(
                    (output,),
                    (point,),
                    grad_outputs=(_seed_for(output, attr_output_fn),),
                    create_graph=self.create_graph,
                    retain_graph=self.retain_graph,
                )
        return output, gradient

    def forward(
        self,
        input: torch.Tensor,
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the output and the gradient at ``input``."""
        result = self.grad(input, attr_output_fn)
        self._step(1, 1)
        return result


class SmoothGrad(Gradient):
    """The mean gradient over noisy copies of the input (SmoothGrad).

    The noise is Gaussian with a standard deviation of ``noise_level`` times the value range
    (max - min) of each sample. The last of the ``n_iter`` gradients is taken at the input itself,
    so ``n_iter=1`` gives the plain gradient; the returned output is the one at the input.

    Parameters
    ----------
    model, composite, attr_output, create_graph, retain_graph, callback
        See :class:`Gradient`.
    noise_level : float, optional
        Standard deviation of the noise relative to each sample's value range.
    n_iter : int, optional
        The number of gradients averaged.
    seed : int, optional
        Keyword only (not in zennit): draw the noise from a generator seeded with this on the
        input's device, so that every call gives the same result; None draws from torch's global
        generator, as zennit does.
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
        *,
        seed: int | None = None,
        callback: StepCallback | None = None,
    ) -> None:
        super().__init__(
            model, composite, attr_output, create_graph, retain_graph, callback=callback
        )
        self.noise_level = noise_level
        self.n_iter = _check_iterations(n_iter)
        self.seed = seed

    def forward(
        self,
        input: torch.Tensor,
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Average the gradients at ``n_iter - 1`` noisy inputs and at the input itself."""
        dims = tuple(range(1, input.ndim))
        std = self.noise_level * (input.amax(dims, keepdim=True) - input.amin(dims, keepdim=True))
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=input.device).manual_seed(int(self.seed))
        result = torch.zeros_like(input)
        for step in range(self.n_iter):
            if step == self.n_iter - 1:
                noise = torch.zeros_like(input)
            elif generator is None:
                noise = torch.randn_like(input) * std
            else:
                noise = torch.randn(
                    input.shape, generator=generator, dtype=input.dtype, device=input.device
                )
                noise = noise * std
            output, gradient = self.grad(input + noise, attr_output_fn)
            result += gradient / self.n_iter
            self._step(step + 1, self.n_iter)
        return output, result


class IntegratedGradients(Gradient):
    """Integrated gradients along the straight path from a baseline to the input.

    The gradient is taken at ``baseline + alpha * (input - baseline)`` for ``n_iter`` values of
    ``alpha`` evenly spaced from ``1 / n_iter`` to 1; their mean times ``input - baseline`` is
    the attribution. The returned output is the one at the input (``alpha = 1``).

    Parameters
    ----------
    model, composite, attr_output, create_graph, retain_graph, callback
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
        *,
        callback: StepCallback | None = None,
    ) -> None:
        super().__init__(
            model, composite, attr_output, create_graph, retain_graph, callback=callback
        )
        self.baseline_fn = baseline_fn if baseline_fn is not None else torch.zeros_like
        self.n_iter = _check_iterations(n_iter)

    def forward(
        self,
        input: torch.Tensor,
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate the gradient from the baseline to ``input``."""
        baseline = self.baseline_fn(input)
        difference = input - baseline
        result = torch.zeros_like(input)
        alphas = torch.linspace(1.0 / self.n_iter, 1.0, self.n_iter)
        for step, alpha in enumerate(alphas):
            output, gradient = self.grad(baseline + alpha * difference, attr_output_fn)
            result += gradient / self.n_iter
            self._step(step + 1, self.n_iter)
        return output, result * difference


def occlude_independent(
    input: torch.Tensor,
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


def _check_extent(value: Any, what: str) -> None:
    """Raise TypeError unless ``value`` is an int or a tuple (or list) of ints, as zennit does."""
    if _is_index(value):
        entries: tuple = (value,)
    elif isinstance(value, (tuple, list)) and all(_is_index(entry) for entry in value):
        entries = tuple(value)
    else:
        raise TypeError(f"The occlusion {what} must be an int or a tuple of ints, not {value!r}.")
    if any(entry < 1 for entry in entries):
        raise ValueError(f"The occlusion {what} must be positive, not {value!r}.")


def _window_and_stride(
    window: int | Sequence[int], stride: int | Sequence[int], shape: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Expand window and stride to one entry per dimension of ``shape`` (batch included).

    An int applies to every non-batch dimension (at most that dimension's size) and the window
    covers the whole batch. A tuple applies to the last dimensions; as many entries as ``shape``
    has dimensions include the batch. Leading dimensions the window does not name are covered
    whole, and the stride steps over them by the window.
    """
    ndim = len(shape)

    def expanded(value: int | Sequence[int], what: str) -> tuple[int, ...]:
        if _is_index(value):
            return tuple(min(int(value), size) for size in shape[1:])
        values = tuple(int(entry) for entry in value)
        if len(values) > ndim:
            raise ValueError(
                f"The occlusion {what} {values} has more entries than the input has dimensions "
                f"{tuple(shape)}."
            )
        return values

    windows = expanded(window, "window")
    windows = tuple(shape[: ndim - len(windows)]) + windows
    strides = expanded(stride, "stride")
    strides = windows[: ndim - len(strides)] + strides
    return windows, strides


class Occlusion(Attributor):
    """Attribution by the model's response to windows of the input.

    For every window position, the model is evaluated on ``occlusion_fn(input, mask)``; the sum
    of the output attribution of that output is the window's score, added to every input element
    inside the window. With the default ``occlusion_fn``, only the window is kept and the rest of
    the input is zero. Windows start at multiples of the stride and wrap around the end. The
    output returned is the model's at the unoccluded input, computed after the windows.

    A tensor ``attr_output`` is a constant here; give a callable (e.g. ``lambda out: out *
    one_hot``) or a class index to score by the model output.

    Parameters
    ----------
    model, composite, attr_output, callback
        See :class:`Attributor`.
    occlusion_fn : callable, optional
        ``(input, mask) -> occluded input``, ``mask`` boolean and True inside the window;
        :func:`occlude_independent` by default.
    window : int or tuple[int], optional
        The window size: an int for every non-batch dimension (at most its size), or a tuple for
        the last dimensions (the leading ones are covered whole); a tuple with an entry for every
        input dimension includes the batch dimension.
    stride : int or tuple[int], optional
        The step between windows, expanded like ``window``.
    batch_size : int, optional
        Keyword only (not in zennit): how many occluded inputs go through the model in one pass
        (concatenated along the batch). 1 by default.

    Raises
    ------
    TypeError
        When window or stride is not an int or a tuple of ints.
    ValueError
        When an entry of window or stride is less than 1.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite | None = None,
        attr_output: AttrOutput = None,
        occlusion_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        window: int | Sequence[int] = 8,
        stride: int | Sequence[int] = 8,
        *,
        batch_size: int = 1,
        callback: StepCallback | None = None,
    ) -> None:
        super().__init__(
            model=model, composite=composite, attr_output=attr_output, callback=callback
        )
        _check_extent(window, "window")
        _check_extent(stride, "stride")
        if not _is_index(batch_size) or batch_size < 1:
            raise ValueError(f"The occlusion batch_size must be at least 1, not {batch_size!r}.")
        self.occlusion_fn = occlusion_fn if occlusion_fn is not None else occlude_independent
        self.window = window
        self.stride = stride
        self.batch_size = int(batch_size)

    def _class_function(self, classes: int | Sequence[int]) -> OutputFunction:
        """Score a window by the output of the given classes."""
        return _SelectedOutput(classes)

    def masks(self, input: torch.Tensor) -> list[torch.Tensor]:
        """Return the boolean mask (of the input's shape) of every window position, in order."""
        return list(self._masks(input)[1])

    def _masks(self, input: torch.Tensor) -> tuple[int, Iterator[torch.Tensor]]:
        """Return the number of window positions and their masks, made one at a time."""
        windows, strides = _window_and_stride(self.window, self.stride, input.shape)
        base = torch.zeros(input.shape, dtype=torch.bool, device=input.device)
        base[tuple(slice(0, size) for size in windows)] = True
        dims = tuple(range(input.ndim))
        starts = [range(0, size, step) for size, step in zip(input.shape, strides, strict=True)]
        count = math.prod(len(positions) for positions in starts)
        return count, (base.roll(offsets, dims) for offsets in product(*starts))

    def forward(
        self,
        input: torch.Tensor,
        attr_output_fn: OutputFunction,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every window of ``input``; returns the output at ``input`` and the scores."""
        total, masks = self._masks(input)
        count = len(input)
        per_sample = (slice(None),) + (None,) * (input.ndim - 1)
        result = torch.zeros_like(input)
        for first in range(0, total, self.batch_size):
            chunk = list(islice(masks, self.batch_size))
            occluded = [self.occlusion_fn(input, mask) for mask in chunk]
            with torch.no_grad():
                outputs = self.model(torch.cat(occluded) if len(occluded) > 1 else occluded[0])
            for index, mask in enumerate(chunk):
                output = outputs[index * count : (index + 1) * count]
                score = attr_output_fn(output)
                score = score.sum(tuple(range(1, score.ndim)))
                result += mask * score[per_sample]
            self._step(first + len(chunk), total)
        output = self.model(input)
        return output, result
