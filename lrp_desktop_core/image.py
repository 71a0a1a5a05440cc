"""Turning relevance into pictures: zennit-style image helpers and heatmap overlays.

The first half mirrors the names and meaning of ``zennit.image`` (:func:`imgify`, :func:`gridify`,
:func:`imsave`, :func:`palette`, :func:`interval_norm_bounds`, :func:`get_cmap`) and works with
current Pillow: single-channel data becomes a palette (``"P"``) image built from an 8-bit index
image and a palette of bytes, three-channel data an RGB image. A constant input (for example an
all-zero heatmap) has a zero-width interval; it maps to the middle of the colour map instead of
dividing by zero.

The second half serves the viewer and the exports. :func:`relevance_map` sums relevance over its
channels; :func:`heatmap_bounds` picks the colour scale; :func:`colorize` draws the heatmap alone
and :func:`overlay` draws it over the input picture. The display modes are

``"signed"``
    relevance itself, on a scale symmetric around zero, so that zero sits at the centre of a
    diverging map (``coldnhot``: positive evidence hot, negative cold);
``"positive"``
    only positive relevance; negative relevance counts as zero;
``"negative"``
    only negative relevance, shown as its magnitude;
``"absolute"``
    the magnitude of relevance, whatever its sign.

In the three magnitude modes a diverging map (see :attr:`ColorMap.diverging`) is used from its
centre outwards, towards its positive end for ``"positive"`` and ``"absolute"`` and towards its
negative end for ``"negative"``, so a colour means the same in every mode; a sequential map such as
``hot`` is used whole.

:func:`overlay` lays the heatmap over the picture in one of the :data:`OVERLAY_STYLES`:

``"greyscale"`` (the default)
    the picture desaturated to grey, the whole heatmap over it at a uniform ``opacity``: every
    colour on it is relevance, positive and negative alike, whatever the colours of the photo;
``"weighted"``
    the picture in colour, each heatmap pixel at opacity ``opacity * s``, ``s`` in [0, 1] being
    its normalised strength (``|R| / bound`` in the signed mode, the normalised magnitude
    otherwise): only strong evidence shows, where relevance is about zero the picture is unchanged;
``"contour"``
    the greyscale picture with opaque lines around the regions whose (locally averaged) strength
    reaches each of :data:`CONTOUR_LEVELS`, in the colour of that level, for print.

:func:`side_by_side` puts the input, the heatmap and the overlay in one row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from os import PathLike
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cmap import ColorMap, get_cmap

__all__ = [
    "CONTOUR_LEVELS",
    "DEFAULT_CLIP_PERCENTILE",
    "MODES",
    "OVERLAY_STYLES",
    "ImageShapeError",
    "bar_colors",
    "bar_range",
    "colorize",
    "get_cmap",
    "gridify",
    "heatmap_bounds",
    "imgify",
    "imsave",
    "interval_norm_bounds",
    "overlay",
    "palette",
    "relevance_map",
    "side_by_side",
    "side_by_side_column",
]


class ImageShapeError(ValueError, TypeError):
    """Data of a shape that is no image, or grid arguments that do not fit.

    A TypeError too, as zennit raises.
    """


ArrayLike = np.ndarray | torch.Tensor

_SHOWN: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "signed": lambda relevance: relevance,
    "positive": lambda relevance: np.maximum(relevance, 0.0),
    "negative": lambda relevance: np.maximum(-relevance, 0.0),
    "absolute": np.abs,
}
MODES = tuple(_SHOWN)
"""The display modes of :func:`heatmap_bounds`, :func:`colorize` and :func:`overlay`."""
#: Percentile of |R| that overlays and exports map to the ends of the colour scale by default,
#: so that a few extreme pixels do not wash out the rest.
DEFAULT_CLIP_PERCENTILE = 99.5
#: How :func:`overlay` lays the heatmap over the picture; the first is the default.
OVERLAY_STYLES = ("greyscale", "weighted", "contour")
#: Strengths (fractions of the colour scale's bound) whose outlines the contour style draws.
CONTOUR_LEVELS = (0.25, 0.5, 0.75)
#: White columns between the pictures of :func:`side_by_side`.
SIDE_BY_SIDE_GAP = 8
#: Colours in a colour bar (:func:`bar_colors`), as many as a palette has.
BAR_STEPS = 256
_LUMA = np.array([0.299, 0.587, 0.114])


def _as_array(obj: Any) -> np.ndarray:
    """Return a numpy view of an array, a tensor (detached, on the CPU) or an array-like."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    return np.asarray(obj)


def _as_float(obj: Any) -> np.ndarray:
    """``obj`` as a float64 array, refusing NaN and infinite values."""
    array = _as_array(obj).astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("the data holds NaN or infinite values; check the relevance computation")
    return array


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) as rounded 8-bit values."""
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _safe_ratio(numerator: np.ndarray, denominator: Any, fill: float) -> np.ndarray:
    """``numerator / denominator`` where the denominator is positive, ``fill`` elsewhere."""
    numerator, denominator = np.broadcast_arrays(numerator, np.asarray(denominator, np.float64))
    ratio = np.full(numerator.shape, fill, dtype=np.float64)
    np.divide(numerator, denominator, out=ratio, where=denominator > 0)
    return ratio


def _to_nhwc(array: np.ndarray, batched: bool) -> np.ndarray:
    """Bring a sample or a batch into the layout (N, H, W, C) with C of 1 or 3."""
    layouts = "(N, H, W), (N, C, H, W), (N, H, W, C)" if batched else "(H, W), (C, H, W), (H, W, C)"
    batch = array if batched else array[None]
    if batch.ndim == 3:
        return batch[..., None]
    if batch.ndim == 4:
        if batch.shape[-1] in (1, 3):
            return batch
        if batch.shape[1] in (1, 3):
            return batch.transpose(0, 2, 3, 1)
    hint = "" if batched or array.ndim != 4 else "; for a batch, pass grid=True"
    raise ImageShapeError(
        f"cannot read data of shape {array.shape} as an image: expected {layouts} with C = 1 or 3 "
        f"(channels first or last){hint}"
    )


def palette(cmap: str | ColorMap = "bwr", level: float = 1.0) -> np.ndarray:
    """Return the 256 x 3 uint8 colour table of a colour map.

    Parameters
    ----------
    cmap : str or ColorMap
        A map, a name in :data:`lrp_desktop_core.cmap.CMAPS` or a source string.
    level : float
        Contrast around the centre of the map (see :meth:`ColorMap.palette`).

    Returns
    -------
    numpy.ndarray
        Shape (256, 3), dtype uint8.
    """
    return get_cmap(cmap).palette(level)


def interval_norm_bounds(
    input: ArrayLike, symmetric: bool = False, dim: int | tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds for normalising data, per sample by default.

    Parameters
    ----------
    input : numpy.ndarray or torch.Tensor
        The data; its first axis counts samples.
    symmetric : bool
        If True, the bounds are ``-max|x|`` and ``+max|x|``; otherwise the minimum and maximum.
    dim : int or tuple of int, optional
        Axes to reduce; by default every axis but the first (all axes of 1-d data).

    Returns
    -------
    tuple of numpy.ndarray
        ``(vmin, vmax)``, float64, with the reduced axes kept at length 1 for broadcasting.
    """
    array = _as_float(input)
    if dim is None:
        dim = tuple(range(1, array.ndim)) or None
    if symmetric:
        top = np.abs(array).max(axis=dim, keepdims=True)
        return -top, top
    return array.min(axis=dim, keepdims=True), array.max(axis=dim, keepdims=True)


def gridify(
    obj: ArrayLike, shape: tuple[int, int] | None = None, fill_value: float | None = None
) -> np.ndarray:
    """Tile a batch of images into one image.

    Parameters
    ----------
    obj : numpy.ndarray or torch.Tensor
        A batch of shape (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3 (a last axis of
        1 or 3 is read as channels first).
    shape : tuple of int, optional
        ``(rows, columns)`` of the grid; by default ``floor(sqrt(N))`` columns and as many rows as
        needed, filled row by row.
    fill_value : float, optional
        Value of the unused cells; by default the batch's minimum.

    Returns
    -------
    numpy.ndarray
        Shape (rows * H, columns * W, C), dtype of the input.
    """
    batch = _to_nhwc(_as_array(obj), batched=True)
    count, height, width, channels = batch.shape
    if count == 0:
        raise ImageShapeError("cannot make a grid of an empty batch")
    if shape is None:
        columns = math.isqrt(count)
        shape = (math.ceil(count / columns), columns)
    if len(shape) != 2:
        raise ImageShapeError(f"a grid shape is (rows, columns), not {tuple(shape)}")
    rows, columns = shape
    if rows * columns < count:
        raise ImageShapeError(f"a grid of {rows} x {columns} cells cannot hold {count} images")
    fill = batch.min() if fill_value is None else fill_value
    cells = np.full((rows * columns, height, width, channels), fill, dtype=batch.dtype)
    cells[:count] = batch
    grid = cells.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * height, columns * width, channels)


def imgify(
    obj: ArrayLike,
    vmin: float | np.ndarray | None = None,
    vmax: float | np.ndarray | None = None,
    cmap: str | ColorMap = "bwr",
    level: float = 1.0,
    symmetric: bool = False,
    grid: bool | tuple[int, int] = False,
    gridfill: int | None = None,
    *,
    per_sample: bool = True,
) -> Image.Image:
    """Turn an array or tensor into a PIL image.

    Parameters
    ----------
    obj : numpy.ndarray or torch.Tensor
        One image, (H, W), (C, H, W) or (H, W, C) with C = 1 or 3, or with ``grid=True`` a batch
        (N, H, W), (N, C, H, W) or (N, H, W, C). A last axis of 1 or 3 is read as channels.
    vmin, vmax : float or numpy.ndarray, optional
        Bounds mapped to the ends of the colour map (or to 0 and 255 for colour data); each one
        given wins over the computed one.
    cmap : str or ColorMap
        Colour map for single-channel data; three-channel data is shown as RGB.
    level : float
        Contrast of the palette around its centre (see :meth:`ColorMap.palette`).
    symmetric : bool
        Computed bounds are ``+-max|x|`` if True, the minimum and maximum otherwise.
    grid : bool or tuple[int, int]
        Read ``obj`` as a batch and tile it with :func:`gridify`; a ``(rows, columns)`` pair is
        the grid's shape.
    gridfill : int, optional
        Pixel value (0 to 255; a palette index for single-channel data) of unused grid cells.
    per_sample : bool
        With ``grid=True``, compute bounds per sample (True) or once for the whole batch, so all
        tiles share one scale (False).

    Returns
    -------
    PIL.Image.Image
        Mode ``"P"`` for single-channel data, ``"RGB"`` for three channels. Constant data maps to
        the middle of the scale.
    """
    batch = _to_nhwc(_as_float(obj), batched=grid)
    if vmin is None or vmax is None:
        axes = (1, 2, 3) if per_sample else (0, 1, 2, 3)
        low, high = interval_norm_bounds(batch, symmetric=symmetric, dim=axes)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    span = np.asarray(vmax, np.float64) - np.asarray(vmin, np.float64)
    if np.any(span < 0):
        raise ValueError(f"vmin ({vmin}) must not exceed vmax ({vmax})")
    pixels = _to_uint8(_safe_ratio(batch - vmin, span, 0.5))
    if grid:
        if gridfill is not None and not 0 <= gridfill <= 255:
            raise ValueError(f"gridfill must be a pixel value from 0 to 255, not {gridfill}")
        shape = None if isinstance(grid, bool) else grid  # zennit's grid=(rows, columns)
        pixels = gridify(pixels, shape=shape, fill_value=gridfill)
    else:
        pixels = pixels[0]
    if pixels.shape[-1] == 3:
        return Image.fromarray(np.ascontiguousarray(pixels))
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0]))
    image.putpalette(palette(cmap, level).tobytes())
    return image


def imsave(
    fp: str | PathLike | IO[bytes],
    obj: ArrayLike,
    vmin: float | np.ndarray | None = None,
    vmax: float | np.ndarray | None = None,
    cmap: str | ColorMap = "bwr",
    level: float = 1.0,
    grid: bool | tuple[int, int] = False,
    format: str | None = None,
    writer_params: dict[str, Any] | None = None,
    symmetric: bool = False,
    gridfill: int | None = None,
    *,
    per_sample: bool = True,
) -> None:
    """Write an array or tensor as an image file; the parameters are those of :func:`imgify`.

    Parameters
    ----------
    fp : str, path or binary file
        Where to write.
    format : str, optional
        Pillow's format name; by default taken from the file name.
    writer_params : dict, optional
        Keyword arguments for Pillow's writer (e.g. ``{"optimize": True}``).
    """
    image = imgify(obj, vmin, vmax, cmap, level, symmetric, grid, gridfill, per_sample=per_sample)
    image.save(fp, format=format, **(writer_params or {}))


def _check_mode(mode: str) -> None:
    if mode not in _SHOWN:
        raise ValueError(f"unknown display mode {mode!r}; choose one of {', '.join(MODES)}")


def relevance_map(relevance: ArrayLike) -> np.ndarray:
    """Relevance summed over its channels.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        Shape (H, W), (C, H, W) or (1, C, H, W).

    Returns
    -------
    numpy.ndarray
        Shape (H, W), float64.
    """
    array = _as_float(relevance)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3:
        return array.sum(axis=0)
    if array.ndim == 2:
        return array
    raise ValueError(
        f"relevance of shape {tuple(array.shape)} is not a heatmap: "
        "expected (H, W), (C, H, W) or (1, C, H, W)"
    )


def heatmap_bounds(
    relevance: ArrayLike, mode: str = "signed", clip_percentile: float | None = None
) -> tuple[float, float]:
    """Return the colour scale ``(vmin, vmax)`` of a heatmap in one display mode.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        Shape (H, W) or (C, H, W) (channels are summed).
    mode : str
        One of :data:`MODES`. The bounds refer to the shown quantity: relevance in the signed
        mode (bounds ``(-b, b)``), its positive part, its negated negative part or its magnitude
        otherwise (bounds ``(0, b)``).
    clip_percentile : float, optional
        If given (in (0, 100]), ``b`` is this percentile of the shown magnitude over all pixels
        rather than its maximum, so a few extreme pixels do not wash out the rest; where that
        percentile is zero the maximum is kept.

    Returns
    -------
    tuple of float
    """
    _check_mode(mode)
    magnitude = np.abs(_SHOWN[mode](relevance_map(relevance)))
    bound = float(magnitude.max())
    if clip_percentile is not None:
        if not 0 < clip_percentile <= 100:
            raise ValueError(f"clip_percentile must lie in (0, 100], not {clip_percentile}")
        clipped = float(np.percentile(magnitude, clip_percentile))
        bound = clipped if clipped > 0 else bound
    return (-bound, bound) if mode == "signed" else (0.0, bound)


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        vmin, vmax = (float(value) for value in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair of numbers (vmin, vmax), not {bounds!r}") from None
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin <= vmax):
        raise ValueError(f"bounds must be finite with vmin <= vmax, not {bounds!r}")
    return vmin, vmax


def _position_and_strength(
    relevance: np.ndarray, colormap: ColorMap, mode: str, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's position on the colour map and its normalised strength, both in [0, 1]."""
    vmin, vmax = _check_bounds(bounds)
    if mode == "signed":
        scaled = np.clip(_safe_ratio(relevance, max(abs(vmin), abs(vmax)), 0.0), -1.0, 1.0)
        return 0.5 + 0.5 * scaled, np.abs(scaled)
    shown = _SHOWN[mode](relevance) - vmin
    strength = np.clip(_safe_ratio(shown, vmax - vmin, 0.0), 0.0, 1.0)
    if not colormap.diverging:
        return strength, strength
    if mode == "negative":
        return 0.5 - 0.5 * strength, strength
    return 0.5 + 0.5 * strength, strength


def _colors_and_strength(
    relevance: np.ndarray, cmap: str | ColorMap, mode: str, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap colours (H, W, 3) in [0, 1] and each pixel's normalised strength in [0, 1].

    Colours come from the map's 256-entry palette, as in :func:`imgify`, so zero relevance in the
    signed mode gets exactly the palette's centre entry.
    """
    colormap = get_cmap(cmap)
    position, strength = _position_and_strength(relevance, colormap, mode, bounds)
    return colormap.palette()[_to_uint8(position)] / 255.0, strength


def colorize(
    relevance_2d: ArrayLike,
    cmap: str | ColorMap = "coldnhot",
    mode: str = "signed",
    bounds: tuple[float, float] | None = None,
    clip_percentile: float | None = None,
) -> np.ndarray:
    """Return the heatmap alone, as colours.

    Parameters
    ----------
    relevance_2d : numpy.ndarray or torch.Tensor
        Shape (H, W) (or (C, H, W), channels summed).
    cmap : str or ColorMap
        Colour map.
    mode : str
        Display mode, one of :data:`MODES`.
    bounds : tuple of float, optional
        ``(vmin, vmax)`` of the shown quantity (see :func:`heatmap_bounds`); given bounds win,
        so that several heatmaps can share one scale.
    clip_percentile : float, optional
        Passed to :func:`heatmap_bounds` when ``bounds`` is not given.

    Returns
    -------
    numpy.ndarray
        Shape (H, W, 3), dtype uint8.
    """
    _check_mode(mode)
    relevance = relevance_map(relevance_2d)
    if bounds is None:
        bounds = heatmap_bounds(relevance, mode, clip_percentile)
    colors, _ = _colors_and_strength(relevance, cmap, mode, bounds)
    return _to_uint8(colors)


def bar_range(bounds: tuple[float, float], mode: str = "signed") -> tuple[float, float]:
    """Return the relevance values at the ends of the colour bar of a scale, low end first.

    The one definition of a colour bar: the app's bars and the vector figures and reports draw
    it from here.

    Parameters
    ----------
    bounds : tuple of float
        ``(vmin, vmax)`` of the shown quantity (see :func:`heatmap_bounds`).
    mode : str
        One of :data:`MODES`. The bar is labelled with relevance itself, so the negative mode,
        which shows the magnitude of negative relevance, runs from ``-vmax`` to ``-vmin``.

    Returns
    -------
    tuple of float
        Where the scale has no width (an all-zero heatmap) it is widened by 1 each way, so the
        bar stays readable.
    """
    _check_mode(mode)
    low, high = _check_bounds(bounds)
    low, high = (-high, -low) if mode == "negative" else (low, high)
    return (low - 1.0, high + 1.0) if high <= low else (low, high)


def bar_colors(
    bounds: tuple[float, float], cmap: str | ColorMap = "coldnhot", mode: str = "signed"
) -> np.ndarray:
    """Return the colours of the colour bar of a scale, from its low end to its high end.

    Parameters
    ----------
    bounds, mode
        As for :func:`bar_range`.
    cmap : str or ColorMap
        Colour map.

    Returns
    -------
    numpy.ndarray
        Shape (:data:`BAR_STEPS`, 3), dtype uint8: the colours :func:`colorize` gives the
        relevance values evenly spaced over :func:`bar_range`.
    """
    low, high = bar_range(bounds, mode)
    ramp = np.linspace(low, high, BAR_STEPS)[None, :]
    return colorize(ramp, cmap, mode, bounds=bounds)[0]


def _check_picture(image: Any) -> np.ndarray:
    picture = _as_array(image)
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[-1] != 3:
        raise ImageShapeError(
            f"the picture must be an (H, W, 3) uint8 array, not {picture.dtype} of shape "
            f"{tuple(picture.shape)}"
        )
    return picture


def _resize(relevance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a 2-d map bilinearly to ``size`` (H, W), smoothing first when shrinking."""
    if relevance.shape == size:
        return relevance
    tensor = torch.from_numpy(np.ascontiguousarray(relevance))[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0, 0].numpy()


def _check_style(style: str) -> None:
    if style not in OVERLAY_STYLES:
        raise ValueError(
            f"unknown overlay style {style!r}; choose one of {', '.join(OVERLAY_STYLES)}"
        )


def _greyscale(picture: np.ndarray) -> np.ndarray:
    """Return the picture's luma in every channel, (H, W, 3) in [0, 1]."""
    luma = picture @ _LUMA / 255.0
    return np.repeat(luma[..., None], 3, axis=-1)


def _outline(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a labelled region (label not 0) next to another label, widened to ``width``."""
    padded = np.pad(labels, 1, mode="edge")
    edge = np.zeros(labels.shape, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        neighbour = padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]]
        edge |= neighbour != labels
    edge &= labels != 0
    for _ in range(width - 1):
        padded = np.pad(edge, 1)
        edge = edge | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return edge


def _contours(
    relevance: np.ndarray, colormap: ColorMap, mode: str, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Colours (H, W, 3) in [0, 1] and a mask (H, W) of the lines around each contour level.

    The relevance is first averaged over a window of about 2 % of the picture's side, so that
    pixel noise does not break the lines up. Positive and negative regions are outlined apart,
    each line in the colour its level has on the map; a stronger level's line is drawn over a
    weaker one's.
    """
    size = 2 * (min(relevance.shape) // 100) + 1
    if size > 1:
        tensor = torch.from_numpy(np.ascontiguousarray(relevance))[None, None]
        smooth = F.avg_pool2d(tensor, size, stride=1, padding=size // 2, count_include_pad=False)
        relevance = smooth[0, 0].numpy()
    position, strength = _position_and_strength(relevance, colormap, mode, bounds)
    centred = mode == "signed" or colormap.diverging
    side = np.where(position >= 0.5, 1, -1) if centred else np.ones(position.shape, dtype=int)
    width = max(1, round(min(relevance.shape) / 150))
    colors = np.zeros((*relevance.shape, 3))
    lines = np.zeros(relevance.shape, dtype=bool)
    table = colormap.palette() / 255.0
    for level in CONTOUR_LEVELS:
        edge = _outline(np.where(strength >= level, side, 0), width)
        level_position = 0.5 + 0.5 * level * side if centred else np.full(side.shape, level)
        colors[edge] = table[_to_uint8(level_position)][edge]
        lines |= edge
    return colors, lines


def overlay(
    image: np.ndarray,
    relevance: ArrayLike,
    cmap: str | ColorMap = "coldnhot",
    opacity: float = 0.6,
    mode: str = "signed",
    clip_percentile: float | None = None,
    bounds: tuple[float, float] | None = None,
    *,
    composite: bool = True,
    style: str = OVERLAY_STYLES[0],
) -> np.ndarray:
    """Return a heatmap laid over its input picture, at the picture's resolution.

    Parameters
    ----------
    image : numpy.ndarray
        The picture, (H, W, 3) uint8.
    relevance : numpy.ndarray or torch.Tensor
        (H', W') or (C, H', W') (channels summed); resized bilinearly to (H, W) if it differs.
    cmap : str or ColorMap
        Colour map.
    opacity : float
        Opacity in [0, 1] of the heatmap (the greyscale style), of its strongest evidence (the
        weighted style); contour lines are always opaque.
    mode : str
        Display mode, one of :data:`MODES`.
    clip_percentile : float, optional
        Contrast clipping, see :func:`heatmap_bounds`.
    bounds : tuple of float, optional
        ``(vmin, vmax)`` of the shown quantity; given bounds win over ``clip_percentile`` so that
        comparison panels can share one scale. Computed bounds come from the relevance at its own
        resolution.
    composite : bool
        If True, the picture (grey in the greyscale and contour styles) with the heatmap blended
        in, fully opaque. If False, the heatmap layer alone: heatmap colours with the blending
        opacity as alpha.
    style : str
        One of :data:`OVERLAY_STYLES` (see the module documentation).

    Returns
    -------
    numpy.ndarray
        Shape (H, W, 4), dtype uint8, RGBA.
    """
    _check_mode(mode)
    _check_style(style)
    picture = _check_picture(image)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], not {opacity}")
    relevance = relevance_map(relevance)
    if bounds is None:
        bounds = heatmap_bounds(relevance, mode, clip_percentile)
    relevance = _resize(relevance, picture.shape[:2])
    if style == "contour":
        colors, lines = _contours(relevance, get_cmap(cmap), mode, bounds)
        alpha = lines[..., None].astype(np.float64)
    else:
        colors, strength = _colors_and_strength(relevance, cmap, mode, bounds)
        weight = strength if style == "weighted" else np.ones_like(strength)
        alpha = opacity * weight[..., None]
    if composite:
        background = picture / 255.0 if style == "weighted" else _greyscale(picture)
        colors = background * (1.0 - alpha) + colors * alpha
        alpha = np.ones_like(alpha)
    return _to_uint8(np.concatenate([colors, alpha], axis=-1))


def side_by_side(
    image: np.ndarray,
    relevance: ArrayLike,
    cmap: str | ColorMap = "coldnhot",
    opacity: float = 0.6,
    mode: str = "signed",
    clip_percentile: float | None = None,
    bounds: tuple[float, float] | None = None,
    *,
    style: str = OVERLAY_STYLES[0],
) -> np.ndarray:
    """Return the input, the heatmap and the overlay in one row, with white gaps between them.

    The parameters are those of :func:`overlay`; the heatmap and the overlay share one scale and
    the heatmap is resized to the picture.

    Returns
    -------
    numpy.ndarray
        Shape (H, 3 W + 2 :data:`SIDE_BY_SIDE_GAP`, 3), dtype uint8.
    """
    picture = _check_picture(image)
    relevance = relevance_map(relevance)
    if bounds is None:
        bounds = heatmap_bounds(relevance, mode, clip_percentile)
    heat = colorize(_resize(relevance, picture.shape[:2]), cmap, mode, bounds)
    blended = overlay(picture, relevance, cmap, opacity, mode, bounds=bounds, style=style)
    gap = np.full((picture.shape[0], SIDE_BY_SIDE_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([picture, gap, heat, gap, blended[..., :3]], axis=1)


def side_by_side_column(x: int, width: int) -> int | None:
    """Return the input picture's column under column ``x`` of a :func:`side_by_side` row.

    Parameters
    ----------
    x : int
        A column of the row (input, heatmap and overlay, each ``width`` wide, with gaps).
    width : int
        The width of the input picture.

    Returns
    -------
    int or None
        The same pixel's column in the input, whichever of the three pictures ``x`` is in;
        None in a gap or outside the row.
    """
    tile, column = divmod(x, width + SIDE_BY_SIDE_GAP)
    return column if 0 <= tile < 3 and column < width else None
