"""Faithfulness and localisation scores of heatmaps.

Two families of scores, both free of Qt and usable on any classifier:

* **Region perturbation** (pixel flipping, after Samek et al., 2017, "Evaluating the visualization
  of what a deep neural network has learned"): the input is cut into square regions, the regions
  are ranked by their summed relevance and removed one after the other, and the explained class
  score is tracked.  Removing the most relevant regions first (MoRF) should make the score fall
  fast; removing the least relevant first (LeRF) should keep it up.  The area over the
  perturbation curve (AOPC) condenses a curve into one number, and every run is accompanied by the
  same curve for a random heatmap, the baseline any explanation has to beat.
* **Localisation** (after Arras et al., 2022, "CLEVR-XAI"): where an object mask exists, the
  relevance mass accuracy is the share of positive relevance inside the mask and the relevance
  rank accuracy the share of the ``k`` most relevant pixels inside it (``k`` = mask size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import names
from .explain import evaluation_mode, raise_if_cancelled
from .models import demo_mask

if TYPE_CHECKING:
    from .models import ModelSpec

FILLS = tuple(names.FILLS)
"""How a removed region is filled: the value zero, the image's per-channel mean, uniform noise
between the image's per-channel minimum and maximum (seeded), or a blurred copy of the image
(described in :data:`.names.FILLS`)."""

DEFAULT_FILL = names.FILLS.default
"""The default fill ("blur").

A blurred copy keeps removed regions close to natural image statistics, so the score falls because
evidence is lost rather than because flat or noisy patches look like nothing the model has seen
(with "zeros", a random heatmap can score as high as a good one)."""

DEFAULT_REGION_SIZE = 8
DEFAULT_MAX_STEPS = 100

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PerturbationResult:
    """Curves of a region perturbation run.

    Every curve array has the shape ``(N, K + 1)``: the explained class score (logit) of each of the
    ``N`` samples before any removal (column 0) and after each of the ``K`` steps.

    Attributes
    ----------
    morf : np.ndarray
        Most relevant regions removed first.
    lerf : np.ndarray
        Least relevant regions removed first.
    random : np.ndarray
        Regions removed in the order of a random heatmap (seeded), the baseline.
    region_size : int
        Side length of a square region in pixels.
    regions_per_step : int
        Regions removed per step.
    fill : str
        One of :data:`FILLS`.
    seed : int
        Seed of the random heatmap and of the uniform noise fill.
    """

    morf: np.ndarray
    lerf: np.ndarray
    random: np.ndarray
    region_size: int
    regions_per_step: int
    fill: str
    seed: int

    @property
    def steps(self) -> int:
        """Number of removal steps ``K``."""
        return self.morf.shape[1] - 1

    @property
    def morf_aopc(self) -> np.ndarray:
        """AOPC of the MoRF curve per sample, shape ``(N,)``; higher is better."""
        return aopc(self.morf)

    @property
    def lerf_aopc(self) -> np.ndarray:
        """AOPC of the LeRF curve per sample, shape ``(N,)``; lower is better."""
        return aopc(self.lerf)

    @property
    def random_aopc(self) -> np.ndarray:
        """AOPC of the random-heatmap curve per sample, shape ``(N,)``."""
        return aopc(self.random)

    def summary(self) -> dict[str, float]:
        """Return the AOPC values averaged over the samples.

        Returns
        -------
        dict[str, float]
            ``morf_aopc``, ``lerf_aopc`` and ``random_aopc``.
        """
        return {
            "morf_aopc": float(self.morf_aopc.mean()),
            "lerf_aopc": float(self.lerf_aopc.mean()),
            "random_aopc": float(self.random_aopc.mean()),
        }


def aopc(curves: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Area over the perturbation curve, per sample.

    ``AOPC = 1 / (K + 1) * sum_{k=0..K} (f(x_0) - f(x_k))``, as in Samek et al. (2017), so the
    unperturbed step 0 counts (with a drop of zero).

    Parameters
    ----------
    curves : np.ndarray
        Scores of shape ``(N, S)`` with the unperturbed score in column 0.
    steps : int, optional
        Use only the first ``steps`` removal steps (``K``); all by default.

    Returns
    -------
    np.ndarray
        AOPC per sample, shape ``(N,)``.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] < 1:
        raise ValueError(f"curves must have shape (N, K + 1), got {curves.shape}")
    if steps is not None:
        if not 0 <= steps < curves.shape[1]:
            raise ValueError(f"steps must lie in 0..{curves.shape[1] - 1}, got {steps}")
        curves = curves[:, : steps + 1]
    return (curves[:, :1] - curves).mean(axis=1)


def region_perturbation(
    model: nn.Module,
    inputs: ArrayLike,
    relevance: ArrayLike,
    target: int | Sequence[int] | np.ndarray,
    *,
    region_size: int = DEFAULT_REGION_SIZE,
    steps: int | None = None,
    regions_per_step: int = 1,
    fill: str = DEFAULT_FILL,
    seed: int = 0,
    batch_size: int | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> PerturbationResult:
    """Remove regions in the order of a heatmap and track the explained class score.

    The MoRF, LeRF and random-heatmap variants of all samples go through the model together: one
    forward pass per step for the whole batch (split into chunks of ``batch_size`` if given).
    The model runs in evaluation mode (each module's own mode is restored afterwards), on the
    device of its parameters, and the inputs are cast to its parameter dtype.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape ``(N, classes)``.
    inputs : np.ndarray or torch.Tensor
        Preprocessed inputs, shape ``(N, C, H, W)``.
    relevance : np.ndarray or torch.Tensor
        Heatmaps, shape ``(N, C, H, W)`` or ``(N, H, W)``; channels are summed.
    target : int or sequence of int
        Explained class per sample (one int for all).
    region_size : int, optional
        Side length of the square regions in pixels (8 by default); regions at the right and
        bottom border are smaller where the size does not divide the image.
    steps : int, optional
        Number of removal steps ``K``; by default all regions, but at most 100 steps.
    regions_per_step : int, optional
        Regions removed per step (1 by default).
    fill : str, optional
        One of :data:`FILLS`; :data:`DEFAULT_FILL` ("blur") by default.
    seed : int, optional
        Seed of the random heatmap and of the "uniform" fill.
    batch_size : int, optional
        Largest number of perturbed inputs per forward pass; all ``3 N`` at once by default.
    cancel : callable, optional
        Called before each step; when it returns True, :class:`~.explain.ExplainCancelled` is
        raised.
    progress : callable, optional
        Called with the finished share (0 to 1) after each step.

    Returns
    -------
    PerturbationResult
        Curves of shape ``(N, K + 1)`` for MoRF, LeRF and the random heatmap.
    """
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    if region_size < 1 or regions_per_step < 1:
        raise ValueError("region_size and regions_per_step must be positive")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    images = torch.as_tensor(inputs).detach().to(device=device, dtype=dtype)
    if images.ndim != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W), got {tuple(images.shape)}")
    count, _, height, width = images.shape
    heat = _spatial_relevance(relevance, count, height, width)
    targets = _targets(target, count)

    region_of_pixel, region_count = _region_index(height, width, region_size)
    max_steps = math.ceil(region_count / regions_per_step)
    steps = min(DEFAULT_MAX_STEPS, max_steps) if steps is None else steps
    if not 1 <= steps <= max_steps:
        raise ValueError(f"steps must lie in 1..{max_steps} for this image and region size")

    rng = np.random.default_rng(seed)
    region_scores = _region_sums(heat, region_of_pixel, region_count)
    random_scores = rng.random((count, region_count))
    removal_steps = np.concatenate(
        [
            _removal_step(-region_scores, regions_per_step),
            _removal_step(region_scores, regions_per_step),
            _removal_step(-random_scores, regions_per_step),
        ]
    )
    removal_pixels = torch.from_numpy(removal_steps[:, region_of_pixel]).to(device)[:, None]
    filled = fill_values(images, fill, region_size=region_size, rng=rng).repeat(3, 1, 1, 1)
    originals = images.repeat(3, 1, 1, 1)
    all_targets = torch.from_numpy(np.tile(targets, 3)).to(device)

    curves = np.empty((3 * count, steps + 1), dtype=np.float64)
    with torch.no_grad(), evaluation_mode(model):
        curves[:, 0] = np.tile(_class_scores(model, images, all_targets[:count], batch_size), 3)
        for step in range(1, steps + 1):
            raise_if_cancelled(cancel)
            perturbed = torch.where(removal_pixels <= step, filled, originals)
            curves[:, step] = _class_scores(model, perturbed, all_targets, batch_size)
            if progress is not None:
                progress(step / steps)
    morf, lerf, rand = np.split(curves, 3)
    return PerturbationResult(morf, lerf, rand, region_size, regions_per_step, fill, seed)


def fill_values(
    images: torch.Tensor,
    fill: str,
    *,
    region_size: int = DEFAULT_REGION_SIZE,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Return the values that replace removed regions, one full image per input.

    Parameters
    ----------
    images : torch.Tensor
        Inputs of shape ``(N, C, H, W)``.
    fill : str
        One of :data:`FILLS`.
    region_size : int, optional
        Sets the blur width of the "blur" fill (Gaussian, sigma = region_size / 2).
    rng : np.random.Generator, optional
        Source of the "uniform" noise (seed 0 if not given).

    Returns
    -------
    torch.Tensor
        Tensor of the shape, dtype and device of ``images``.
    """
    if fill == "zeros":
        return torch.zeros_like(images)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    if fill == "uniform":
        rng = np.random.default_rng(0) if rng is None else rng
        noise = torch.from_numpy(rng.random(tuple(images.shape))).to(images)
        low = images.amin(dim=(2, 3), keepdim=True)
        high = images.amax(dim=(2, 3), keepdim=True)
        return low + noise * (high - low)
    if fill == "blur":
        return _gaussian_blur(images, sigma=region_size / 2)
    raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")


def relevance_mass_accuracy(relevance: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Share of the positive relevance that lies inside the object mask.

    Parameters
    ----------
    relevance : np.ndarray or torch.Tensor
        Heatmaps, shape ``(N, C, H, W)`` or ``(N, H, W)``; channels are summed first.
    mask : np.ndarray or torch.Tensor
        Boolean object masks, shape ``(N, H, W)`` or one ``(H, W)`` mask for all.

    Returns
    -------
    np.ndarray
        Score in [0, 1] per sample, shape ``(N,)``; NaN where a heatmap has no positive relevance.
    """
    heat, masks = _heat_and_masks(relevance, mask)
    positive = np.clip(heat, 0.0, None)
    inside = (positive * masks).sum(axis=(1, 2))
    total = positive.sum(axis=(1, 2))
    return _safe_ratio(inside, total)


def relevance_rank_accuracy(relevance: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Share of the ``k`` most relevant pixels that lie inside the mask, ``k`` = mask size.

    Parameters
    ----------
    relevance : np.ndarray or torch.Tensor
        Heatmaps, shape ``(N, C, H, W)`` or ``(N, H, W)``; channels are summed first.
    mask : np.ndarray or torch.Tensor
        Boolean object masks, shape ``(N, H, W)`` or one ``(H, W)`` mask for all.

    Returns
    -------
    np.ndarray
        Score in [0, 1] per sample, shape ``(N,)``; NaN where a mask is empty.  Ties in the
        relevance are broken by pixel order (row-major).
    """
    heat, masks = _heat_and_masks(relevance, mask)
    flat_heat = heat.reshape(len(heat), -1)
    flat_masks = masks.reshape(len(masks), -1)
    sizes = flat_masks.sum(axis=1)
    order = np.argsort(-flat_heat, axis=1, kind="stable")
    hits = np.take_along_axis(flat_masks, order, axis=1)
    top_hits = np.array([hits[row, :size].sum() for row, size in enumerate(sizes)], dtype=float)
    return _safe_ratio(top_hits, sizes.astype(float))


@dataclass(frozen=True)
class LocalisationScores:
    """Localisation scores per sample, each of shape ``(N,)`` (see the two score functions)."""

    mass_accuracy: np.ndarray
    rank_accuracy: np.ndarray


def localisation_scores(relevance: ArrayLike, mask: ArrayLike) -> LocalisationScores:
    """Return both localisation scores of heatmaps against object masks.

    Parameters
    ----------
    relevance : np.ndarray or torch.Tensor
        Heatmaps, shape ``(N, C, H, W)`` or ``(N, H, W)``.
    mask : np.ndarray or torch.Tensor
        Boolean object masks, shape ``(N, H, W)`` or ``(H, W)``.

    Returns
    -------
    LocalisationScores
        Relevance mass accuracy and relevance rank accuracy.
    """
    return LocalisationScores(
        relevance_mass_accuracy(relevance, mask), relevance_rank_accuracy(relevance, mask)
    )


def object_mask(image_path: str | Path, spec: ModelSpec) -> np.ndarray | None:
    """Load the object mask stored beside an image as ``<stem>_mask.png``, at the input geometry.

    The mask goes through the same resize and centre crop as the image (``spec.fit``), so it lines
    up with the heatmaps; pixels of at least half intensity count as object.

    Parameters
    ----------
    image_path : str or Path
        The image whose mask to load.
    spec : ModelSpec
        The model whose input geometry to use.

    Returns
    -------
    np.ndarray or None
        Boolean mask of shape ``spec.input_size``, or None where no mask file exists.
    """
    mask = demo_mask(image_path)
    if mask is None:
        return None
    fitted = spec.fit(Image.fromarray(mask.astype(np.uint8) * 255))
    return np.asarray(fitted) >= 128


def _to_numpy(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _spatial_relevance(relevance: ArrayLike, count: int, height: int, width: int) -> np.ndarray:
    heat = _to_numpy(relevance).astype(np.float64)
    if heat.ndim == 4:
        heat = heat.sum(axis=1)
    if heat.shape != (count, height, width):
        raise ValueError(
            f"relevance must have shape ({count}, C, {height}, {width}) or "
            f"({count}, {height}, {width}) to match the inputs, got {_to_numpy(relevance).shape}"
        )
    return heat


def _heat_and_masks(relevance: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    heat = _to_numpy(relevance).astype(np.float64)
    if heat.ndim == 4:
        heat = heat.sum(axis=1)
    if heat.ndim != 3:
        raise ValueError(
            f"relevance must have shape (N, C, H, W) or (N, H, W), got {_to_numpy(relevance).shape}"
        )
    masks = _to_numpy(mask).astype(bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[1:] != heat.shape[1:] or len(masks) not in (1, len(heat)):
        raise ValueError(
            f"mask shape {masks.shape} does not match the heatmaps' {heat.shape}; resize the mask "
            "to the model's input geometry"
        )
    return heat, np.broadcast_to(masks, heat.shape)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _targets(target: int | Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    from .attribution import expand_targets

    return expand_targets(target, count).numpy()


def _region_index(height: int, width: int, region_size: int) -> tuple[np.ndarray, int]:
    """Map every pixel to the index of its region (row-major over the region grid)."""
    columns = math.ceil(width / region_size)
    rows = math.ceil(height / region_size)
    row_of = np.arange(height) // region_size
    column_of = np.arange(width) // region_size
    return row_of[:, None] * columns + column_of[None, :], rows * columns


def _region_sums(heat: np.ndarray, region_of_pixel: np.ndarray, region_count: int) -> np.ndarray:
    sums = np.zeros((len(heat), region_count))
    for sample, sample_heat in enumerate(heat):
        sums[sample] = np.bincount(
            region_of_pixel.ravel(), weights=sample_heat.ravel(), minlength=region_count
        )
    return sums


def _removal_step(keys: np.ndarray, regions_per_step: int) -> np.ndarray:
    """Return, per sample and region, the 1-based step at which the region is removed.

    Regions are removed in ascending order of ``keys``; ties keep the region order.
    """
    order = np.argsort(keys, axis=1, kind="stable")
    steps = np.empty_like(order)
    ranks = np.arange(keys.shape[1]) // regions_per_step + 1
    np.put_along_axis(steps, order, np.broadcast_to(ranks, order.shape), axis=1)
    return steps


def _class_scores(
    model: nn.Module, batch: torch.Tensor, targets: torch.Tensor, batch_size: int | None
) -> np.ndarray:
    size = len(batch) if batch_size is None else batch_size
    scores = []
    for start in range(0, len(batch), size):
        logits = model(batch[start : start + size])
        chunk_targets = targets[start : start + size, None]
        scores.append(logits.gather(1, chunk_targets)[:, 0].double().cpu())
    return torch.cat(scores).numpy()


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(blurred, vertical, groups=channels)
