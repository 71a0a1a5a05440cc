"""Inside the model: relevance per layer and channel, and concept heatmaps.

LRP passes relevance backwards as the gradient, so the gradient arriving at a layer's output *is*
the relevance at that layer.  :func:`layer_relevance` reads it there, per channel (summed over
space) and as a spatial map (summed over channels).  :func:`concept_heatmaps` computes the
conditional relevance of concept relevance propagation (CRP; Achtibat et al. 2023, "From
attribution maps to human-understandable explanations through Concept Relevance Propagation"):
the relevance at the layer is masked to chosen channels and propagated on to the input.  Every rule
is linear in the relevance it receives, so the conditional heatmaps of all channels add up to the
plain heatmap.

Many channels run in batches from one image: the image is repeated once per batch row and run
forward once; each backward pass then starts at the layer (the relevance there is known from the
plain pass) with a different channel mask per row, so the graph above the layer is not run again.
On the CPU this gives 2 to 6 times the heatmaps per second of one forward pass and one whole
backward pass per channel with ``retain_graph`` (``bench/bench_concepts.py``).

Layer names are those of ``model.named_modules()`` while the rule map's canonizers are applied, so
layers a canonizer adds (e.g. ``...canonizer_sum``) can be chosen too.  A layer's channels are on
the axis :mod:`.channel_axis` finds as the model runs (1 for convolutional layers, the last one
for a transformer's tokens ``(N, L, D)`` or a Swin block's ``(N, H, W, C)``), unless the caller
names it; every result here puts them on axis 1.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .attribution import one_hot, resolve_target
from .channel_axis import followed_axes
from .explain import (
    Target,
    evaluation_mode,
    model_device,
    model_dtype,
    raise_if_cancelled,
)
from .hooks import Hook, records_released_after_use
from .input_check import check_input

if TYPE_CHECKING:
    from .rulemap import RuleMap

DEFAULT_BATCH_SIZE = 16
"""Conditional heatmaps computed per forward and backward pass by default."""


class LayerNotFoundError(ValueError):
    """Raised for a layer name the (canonized) model does not have; the message lists near ones."""


@dataclass(frozen=True)
class LayerRelevance:
    """The relevance at one layer for a batch of ``N`` inputs, as numpy arrays.

    Attributes
    ----------
    layer : str
        The layer's name.
    channels : np.ndarray
        Relevance per channel (on the layer's channel axis, see :mod:`.channel_axis`) summed over
        the other dimensions, float64, shape ``(N, C)``.
    spatial : np.ndarray
        Relevance per position summed over the channels, float64, shape ``(N, *S)`` with the
        positions in the order of the layer's output (``(N,)`` for a layer without positions);
        :func:`spatial_map` turns one into a picture.
    relevance : np.ndarray or None
        The plain input heatmap, shape ``(N, C_in, H, W)``, float32 (float64 for a float64 model);
        None where it was not asked for (see :func:`concept_heatmaps`).
    logits : np.ndarray
        Model outputs, shape ``(N, K)``.
    target : np.ndarray
        Explained class per sample, int64, shape ``(N,)``.
    """

    layer: str
    channels: np.ndarray
    spatial: np.ndarray
    relevance: np.ndarray | None
    logits: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class Concepts:
    """Conditional heatmaps of chosen channels of one layer, for one input.

    Attributes
    ----------
    layer : str
        The layer's name.
    channels : np.ndarray
        The channels, int64, shape ``(K,)``: by relevance at the layer, descending, when chosen by
        :func:`concept_heatmaps` as a count or "all", else in the given order.
    layer_relevance : np.ndarray
        Each of these channels' relevance at the layer, float64, shape ``(K,)``.
    relevance : np.ndarray
        The conditional input heatmaps, shape ``(K, C_in, H, W)``, float32 (float64 for a float64
        model).
    overview : LayerRelevance
        The relevance at the layer over all channels and the plain heatmap (batch of one).
    """

    channels: np.ndarray
    layer_relevance: np.ndarray
    relevance: np.ndarray
    overview: LayerRelevance

    @property
    def layer(self) -> str:
        """The layer's name."""
        return self.overview.layer

    @property
    def target(self) -> int:
        """The explained class."""
        return int(self.overview.target[0])

    def shares(self) -> np.ndarray:
        """Return each channel's relevance over the summed absolute relevance of all channels.

        The shares of all channels' absolute values add up to 1; a negative share is relevance
        against the explained class.
        """
        total = float(np.abs(self.overview.channels[0]).sum())
        return self.layer_relevance / total if total > 0 else np.zeros_like(self.layer_relevance)


def layer_names(model: nn.Module, rulemap: RuleMap) -> list[str]:
    """Return the names of all modules of ``model`` while the rule map's canonizers are applied.

    The model is restored before returning.
    """
    with rulemap.to_composite().context(model):
        return [name for name, _ in model.named_modules() if name]


def check_layer(model: nn.Module, rulemap: RuleMap, layer: str) -> None:
    """Raise :class:`LayerNotFoundError` (naming near matches) if the model lacks ``layer``.

    The name is looked up while the canonizers are applied; the model is restored afterwards.
    """
    with rulemap.to_composite().context(model):
        _find_layer(model, layer)


def layer_relevance(
    model: nn.Module,
    inputs: torch.Tensor,
    rulemap: RuleMap,
    layer: str,
    target: Target = None,
    *,
    axis: int | None = None,
) -> LayerRelevance:
    """Return the LRP relevance at ``layer`` per channel and per position, and the input heatmap.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits; returned unchanged.
    inputs : torch.Tensor
        Preprocessed inputs, shape ``(N, C, H, W)``.
    rulemap : RuleMap
        The rules, applied with their canonizers as :func:`~.explain.explain` does.
    layer : str
        A module name of the canonized model (see :func:`layer_names`); a module called more than
        once per forward pass gets the relevance of all its calls summed.
    target : int, sequence of int, or None
        The class to explain, as in :func:`~.explain.explain`.
    axis : int, optional
        The axis of the layer's output that holds its channels; found by :mod:`.channel_axis`
        when omitted.

    Raises
    ------
    LayerNotFoundError
        When the canonized model has no module of that name.
    """
    return _overview(plain_pass(model, _prepared(model, inputs), rulemap, layer, target, axis=axis))


def concept_heatmaps(
    model: nn.Module,
    inputs: torch.Tensor,
    rulemap: RuleMap,
    layer: str,
    channels: int | str | Sequence[int] = "all",
    target: Target = None,
    *,
    axis: int | None = None,
    heatmap: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Concepts:
    """Return the conditional heatmaps of channels of ``layer`` for one input.

    The heatmap of channel ``c`` is the relevance at the layer with every other channel set to
    zero, propagated to the input through the same rules.  The heatmaps of all channels add up to
    the relevance that flows through the layer: the plain heatmap for a layer that all of it
    passes (not one branch of a residual block, whose shortcut carries the rest).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits; returned unchanged, also when cancelled.
    inputs : torch.Tensor
        One preprocessed input, shape ``(1, C, H, W)`` or ``(C, H, W)``.
    rulemap : RuleMap
        The rules, applied with their canonizers as :func:`~.explain.explain` does.
    layer : str
        A module name of the canonized model (see :func:`layer_names`).
    channels : int, "all", or sequence of int
        The ``k`` channels of most relevance at the layer, all channels (both by relevance,
        descending), or the given channels in the given order.
    target : int or None
        The class to explain; None for the top class.
    axis : int, optional
        The axis of the layer's output that holds its channels; found by :mod:`.channel_axis`
        when omitted.
    heatmap : bool
        Also compute the plain input heatmap (``overview.relevance``).  Without it the first
        pass stops at the layer: for a caller that has the heatmap from :func:`~.explain.explain`.
    batch_size : int
        Heatmaps per backward pass (the image runs forward once, repeated this many times).
    cancel : callable, optional
        Polled between batches; when it returns True, :class:`~.explain.ExplainCancelled` is
        raised.
    progress : callable, optional
        Called with the finished share (0 to 1) after each pass.

    Raises
    ------
    LayerNotFoundError
        When the canonized model has no module of that name.
    ValueError
        For more than one input, a channel out of range or a batch size below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    batch = _prepared(model, inputs if inputs.dim() == 4 else inputs[None])
    if len(batch) != 1:
        raise ValueError(f"concept heatmaps explain one input at a time, not {len(batch)}")
    raise_if_cancelled(cancel)
    plain = plain_pass(model, batch, rulemap, layer, target, axis=axis, to_input=heatmap)
    overview = _overview(plain)
    per_channel = overview.channels[0]
    chosen = _chosen_channels(per_channel, channels)
    masks = torch.zeros(len(chosen), len(per_channel), dtype=batch.dtype, device=batch.device)
    masks[torch.arange(len(chosen)), torch.as_tensor(chosen, device=batch.device)] = 1
    heatmaps = conditional_relevance(
        model,
        batch,
        rulemap,
        plain,
        masks,
        batch_size=batch_size,
        cancel=cancel,
        progress=progress,
    )
    return Concepts(
        channels=chosen,
        layer_relevance=per_channel[chosen],
        relevance=_numpy(heatmaps),
        overview=overview,
    )


def token_grid(count: int) -> tuple[int, int] | None:
    """Return ``(leading, side)`` when ``count`` tokens are a square grid of patches.

    ``leading`` is 0, or 1 for a class token in front of the ``side`` x ``side`` patches; None
    when ``count`` tokens are no such grid.
    """
    for leading in (0, 1):
        side = math.isqrt(max(count - leading, 0))
        if side > 1 and side * side == count - leading:
            return leading, side
    return None


def spatial_map(spatial: np.ndarray) -> np.ndarray | None:
    """Return one sample's relevance per position as a 2-d map, or None where there is none.

    Parameters
    ----------
    spatial : np.ndarray
        One row of :attr:`LayerRelevance.spatial`: a 2-d map is returned as it is; a sequence of
        tokens that is a square grid of patches (see :func:`token_grid`) becomes that grid, its
        class token left out.
    """
    if spatial.ndim == 2:
        return spatial
    grid = token_grid(len(spatial)) if spatial.ndim == 1 else None
    if grid is None:
        return None
    leading, side = grid
    return spatial[leading:].reshape(side, side)


def _chosen_channels(per_channel: np.ndarray, channels: int | str | Sequence[int]) -> np.ndarray:
    count = len(per_channel)
    ranked = np.lexsort((np.arange(count), -per_channel))  # ties by channel number
    if isinstance(channels, str):
        if channels != "all":
            raise ValueError(f"channels: a count, 'all' or channel numbers, not {channels!r}")
        return ranked.astype(np.int64)
    if isinstance(channels, (int, np.integer)):
        if channels < 1:
            raise ValueError(f"need at least one channel, not {channels}")
        return ranked[: int(channels)].astype(np.int64)
    chosen = np.asarray(list(channels), dtype=np.int64)
    outside = chosen[(chosen < 0) | (chosen >= count)]
    if len(outside):
        raise ValueError(f"channel(s) {outside.tolist()} out of range 0..{count - 1}")
    return chosen


@dataclass
class LayerPass:
    """What one LRP pass gave at a layer and at the input, as tensors (for :mod:`.relmax`).

    Attributes
    ----------
    layer : str
        The layer's name.
    axis : int
        The axis of the layer's output that holds its channels (counted from the front).
    logits, targets : torch.Tensor
        Model outputs ``(N, K)`` and the explained class per sample ``(N,)``.
    input_relevance : torch.Tensor or None
        The plain heatmap ``(N, C_in, H, W)``; None for a pass that stopped at the layer.
    layer_calls : list of torch.Tensor
        The relevance at the layer's output as the layer gives it (channels on ``axis``), one
        tensor per call of the layer.
    activation : torch.Tensor
        The layer's output (of its last call), channels on axis 1: ``(N, C, *S)``.
    """

    layer: str
    axis: int
    logits: torch.Tensor
    targets: torch.Tensor
    input_relevance: torch.Tensor | None
    layer_calls: list[torch.Tensor]
    activation: torch.Tensor

    @property
    def layer_relevance(self) -> torch.Tensor:
        """The relevance at the layer, summed over its calls, channels on axis 1: ``(N, C, *S)``."""
        return torch.stack(self.layer_calls).sum(dim=0).movedim(self.axis, 1)


def _prepared(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    given = torch.as_tensor(inputs).detach()
    check_input(model, given, ndim=4)
    return given.to(device=model_device(model), dtype=model_dtype(model))


def plain_pass(
    model: nn.Module,
    batch: torch.Tensor,
    rulemap: RuleMap,
    layer: str,
    target: Target,
    *,
    axis: int | None = None,
    to_input: bool = True,
) -> LayerPass:
    """Run LRP on a prepared ``batch`` and read the relevance at ``layer`` on the way.

    The channel axis is ``axis`` or, when None, the one :mod:`.channel_axis` finds.  With
    ``to_input`` False the backward pass stops at the layer (no input heatmap).
    """
    with _tapped(model, rulemap, layer, axis) as tap:
        leaf = batch.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            targets = resolve_target(target, logits)
            start = one_hot(logits, targets) * logits.detach()
            _check_used(tap.outputs, layer)
            sources = [leaf] if to_input else []
            with records_released_after_use(tap.hooks):
                gradients = torch.autograd.grad(logits, [*sources, *tap.outputs], start)
    heatmap = gradients[0] if to_input else None
    activation = tap.outputs[-1].detach().movedim(tap.axis, 1)
    return LayerPass(
        layer,
        tap.axis,
        logits.detach(),
        targets,
        heatmap,
        list(gradients[len(sources) :]),
        activation,
    )


def conditional_relevance(
    model: nn.Module,
    image: torch.Tensor,
    rulemap: RuleMap,
    plain: LayerPass,
    masks: torch.Tensor,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Propagate masked copies of the relevance at ``layer`` to the input, many per pass.

    The image is repeated ``batch_size`` times and run forward once; each backward pass then
    starts at the layer (the graph above it is not needed again) with one mask per batch row.

    Parameters
    ----------
    image : torch.Tensor
        One prepared input ``(1, C_in, H, W)``.
    plain : LayerPass
        The plain pass of this image (from :func:`plain_pass`): the layer, its channel axis and
        the relevance there.
    masks : torch.Tensor
        ``(K, C)`` channel weights or ``(K, C, *S)`` weights per channel and position, channels on
        axis 1 whatever the layer's own channel axis.

    Returns
    -------
    torch.Tensor
        The ``K`` conditional heatmaps ``(K, C_in, H, W)``.
    """
    count = len(masks)
    rows = max(1, min(batch_size, count))
    passes = -(-count // rows)
    heatmaps = []
    with _tapped(model, rulemap, plain.layer, plain.axis) as tap:
        leaf = image.detach().expand(rows, *image.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            model(leaf)
            _check_used(tap.outputs, plain.layer)
            dims = tap.outputs[0].dim()
            for index in range(passes):
                raise_if_cancelled(cancel)
                group = masks[index * rows : (index + 1) * rows]
                padded = masks.new_zeros((rows, *masks.shape[1:]))
                padded[: len(group)] = group
                shape = (rows, *padded.shape[1:], *[1] * (dims - padded.dim()))
                weights = padded.reshape(shape).movedim(1, plain.axis)
                seeds = [call * weights for call in plain.layer_calls]
                (heatmap,) = torch.autograd.grad(tap.outputs, leaf, seeds, retain_graph=True)
                heatmaps.append(heatmap[: len(group)].detach())
                if progress is not None:
                    progress((index + 1) / passes)
    if not heatmaps:
        return torch.zeros((0, *image.shape[1:]), dtype=image.dtype, device=image.device)
    return torch.cat(heatmaps)


@dataclass
class _Tap:
    """The outputs of a layer, one per call, the axis of their channels, and the rules' hooks."""

    outputs: list[torch.Tensor] = field(default_factory=list)
    axis: int = 1
    hooks: list[Hook] = field(default_factory=list)


@contextmanager
def _tapped(model: nn.Module, rulemap: RuleMap, layer: str, axis: int | None) -> Iterator[_Tap]:
    """Apply the rules and collect the layer's outputs, one per call, while the context lasts.

    What is collected is a copy of the output: the gradient arriving there is the relevance at the
    layer before any hook of the layer's own rule (on the node that made the output) has
    seen it, and a gradient put there goes through those hooks as the relevance from above does.
    The layer passes a second copy on, so that an in-place operation after it leaves the
    collected copy (and its place in the graph) as it was.  The channel axis is ``axis`` or, when
    None, the one :mod:`.channel_axis` follows to the layer.
    """
    tap = _Tap()

    def on_output(module: nn.Module, args: tuple, output: object) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer {layer!r} returns {type(output).__name__}, not one tensor")
        if output.dim() < 2:
            raise ValueError(f"layer {layer!r} gives one number per sample: no channels")
        if axis is not None and not (-output.dim() < axis < output.dim() and axis % output.dim()):
            raise ValueError(
                f"channel axis {axis} does not fit layer {layer!r}, whose output has shape "
                f"{tuple(output.shape)}: give an axis from 1 to {output.dim() - 1} (or -1), "
                "not the batch axis"
            )
        tap.axis = (axes.of(output) if axis is None else axis) % output.dim()
        collected = output.clone()
        tap.outputs.append(collected)
        return collected.clone()

    composite = rulemap.to_composite()
    with evaluation_mode(model), composite.context(model):
        tap.hooks = composite.hooks
        found = _find_layer(model, layer)
        following = followed_axes(model) if axis is None else nullcontext()
        with following as axes, _forward_hook(found, on_output):
            yield tap


def _check_used(outputs: list[torch.Tensor], layer: str) -> None:
    if not outputs:
        raise LayerNotFoundError(f"layer {layer!r} is not used in the model's forward pass")
    if not all(output.requires_grad for output in outputs):
        raise ValueError(f"no relevance reaches layer {layer!r}: its output needs no gradient")


@contextmanager
def _forward_hook(module: nn.Module, hook: Callable) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _find_layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return modules[layer]
    near = difflib.get_close_matches(layer, [name for name in modules if name], n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise LayerNotFoundError(f"the model has no layer {layer!r}{hint}")


def _overview(result: LayerPass) -> LayerRelevance:
    relevance = result.layer_relevance.double()
    spatial_dims = tuple(range(2, relevance.dim()))
    per_channel = relevance.sum(dim=spatial_dims) if spatial_dims else relevance
    heatmap = result.input_relevance
    return LayerRelevance(
        layer=result.layer,
        channels=per_channel.cpu().numpy(),
        spatial=relevance.sum(dim=1).cpu().numpy(),
        relevance=None if heatmap is None else _numpy(heatmap),
        logits=result.logits.float().cpu().numpy(),
        target=result.targets.cpu().numpy(),
    )


def _numpy(relevance: torch.Tensor) -> np.ndarray:
    """Return relevance as numpy: float64 stays, other types become float32."""
    kept = relevance if relevance.dtype == torch.float64 else relevance.float()
    return kept.cpu().numpy()
