"""A synthetic RGB data set of simple shapes on cluttered backgrounds, with object masks.

Every image shows one filled shape (circle, square, triangle, star or cross) in one of several
saturated colours, at a random position and size, upright or tilted by up to 20 degrees, over a
muted colour gradient with noise, lines and dots.
Each image comes with a boolean mask of the shape's pixels, so one can measure whether a heatmap
points at the object. Generation is deterministic: image ``index`` of data set ``seed`` is always
the same, however many images are generated.

Examples
--------
>>> batch = generate(100, seed=1)
>>> batch.images.shape, batch.masks.shape, batch.labels.shape
((100, 64, 64, 3), (100, 64, 64), (100,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Class names, in label order."""

IMAGE_SIZE = 64
"""Height and width of the generated images in pixels."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Colours a shape can have."""

_SUPERSAMPLING = 4  # shapes are drawn at 4x resolution and box-filtered down (anti-aliasing)
_MIN_CONTRAST = 110.0  # least RGB distance between the shape's colour and the background's
_RADIUS_RANGE = (10.0, 24.0)  # circumradius of a shape in output pixels
_MAX_TILT = math.radians(20)  # shapes are upright, turned by at most this much either way


@dataclass(frozen=True)
class ShapeBatch:
    """A batch of generated images.

    Attributes
    ----------
    images : np.ndarray
        (N, H, W, 3) uint8 RGB images.
    masks : np.ndarray
        (N, H, W) bool, True on the shape's pixels.
    labels : np.ndarray
        (N,) int64 index into :data:`SHAPES`.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray


def _polygon(label: str, radius: float) -> np.ndarray:
    """Return the corners (K, 2) of a shape centred on the origin with the given circumradius."""
    if label == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return radius * 0.9 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if label == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if label == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if label == "cross":
        arm, half = radius * 0.95, radius * 0.32
        return np.array(
            [
                (-half, -arm),
                (half, -arm),
                (half, -half),
                (arm, -half),
                (arm, half),
                (half, half),
                (half, arm),
                (-half, arm),
                (-half, half),
                (-arm, half),
                (-arm, -half),
                (-half, -half),
            ]
        )
    raise ValueError(f"no polygon for shape {label!r}; known shapes: {', '.join(SHAPES)}")


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return a noisy gradient (H, W, 3) float between two muted colours, and those colours (2, 3).

    The end colours are greys of random brightness with a slight random tint, so the saturated
    shape colours stand out from them as they do in photographs of objects against scenery.
    """
    ends = rng.uniform(50, 205, size=(2, 1)) + rng.normal(0, 20, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    t = np.clip(0.5 + (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0.0, 1.0)
    gradient = ends[0] * (1 - t[..., None]) + ends[1] * t[..., None]
    return gradient + rng.normal(0, 10, size=gradient.shape), ends


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Return a random grey with a slight tint, as used for background clutter."""
    grey = rng.uniform(0, 255) + rng.normal(0, 25, size=3)
    return tuple(int(c) for c in np.clip(grey, 0, 255))


def _add_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Draw random thin lines and small dots in muted colours (at supersampled scale)."""
    size = IMAGE_SIZE * _SUPERSAMPLING
    for _ in range(int(rng.integers(4, 12))):
        start, end = rng.uniform(0, size, size=(2, 2))
        colour = _muted_colour(rng)
        draw.line([tuple(start), tuple(end)], fill=colour, width=int(rng.integers(2, 7)))
    for _ in range(int(rng.integers(3, 10))):
        x, y = rng.uniform(0, size, size=2)
        r = rng.uniform(2, 2.5 * _SUPERSAMPLING)
        colour = _muted_colour(rng)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _shape_colour(rng: np.random.Generator, background_ends: np.ndarray) -> tuple[int, int, int]:
    """Pick a palette colour that stands out from both ends of the background gradient."""
    names = list(COLOURS)
    rng.shuffle(names)
    contrast = {
        name: float(np.linalg.norm(background_ends - np.array(COLOURS[name]), axis=1).min())
        for name in names
    }
    fitting = [name for name in names if contrast[name] >= _MIN_CONTRAST]
    return COLOURS[fitting[0] if fitting else max(contrast, key=contrast.get)]


def render(seed: int, index: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Render one image of the data set.

    Parameters
    ----------
    seed : int
        Seed of the data set.
    index : int
        Index of the image within the data set; its class is ``index % len(SHAPES)`` unless
        ``label`` is given.
    label : int, optional
        Force this class instead.

    Returns
    -------
    image : np.ndarray
        (H, W, 3) uint8 RGB.
    mask : np.ndarray
        (H, W) bool, True on the shape.
    label : int
        Index of the shape in :data:`SHAPES`.
    """
    rng = np.random.default_rng([seed, index])
    label = index % len(SHAPES) if label is None else int(label)
    background, ends = _background(rng)
    scale = _SUPERSAMPLING
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (IMAGE_SIZE * scale,) * 2, Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(canvas)
    _add_clutter(draw, rng)

    radius = rng.uniform(*_RADIUS_RANGE)
    centre = rng.uniform(radius + 1, IMAGE_SIZE - radius - 1, size=2)
    mask_canvas = Image.new("L", canvas.size, 0)
    colour = _shape_colour(rng, ends)
    if SHAPES[label] == "circle":
        r = radius * 0.85 * scale
        box = [
            centre[0] * scale - r,
            centre[1] * scale - r,
            centre[0] * scale + r,
            centre[1] * scale + r,
        ]
        draw.ellipse(box, fill=colour)
        ImageDraw.Draw(mask_canvas).ellipse(box, fill=255)
    else:
        angle = rng.uniform(-_MAX_TILT, _MAX_TILT)
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = np.array([[cos, -sin], [sin, cos]])
        corners = (_polygon(SHAPES[label], radius) @ rotation.T + centre) * scale
        points = [tuple(point) for point in corners]
        draw.polygon(points, fill=colour)
        ImageDraw.Draw(mask_canvas).polygon(points, fill=255)

    small = (IMAGE_SIZE, IMAGE_SIZE)
    image = np.asarray(canvas.resize(small, Image.Resampling.BOX), dtype=np.float64)
    image = np.clip(image + rng.normal(0, 6, size=image.shape), 0, 255).astype(np.uint8)
    mask = np.asarray(mask_canvas.resize(small, Image.Resampling.BOX)) >= 128
    return image, mask, label


def generate(count: int, seed: int) -> ShapeBatch:
    """Generate ``count`` images of data set ``seed``, classes balanced and in cyclic order.

    Parameters
    ----------
    count : int
        Number of images.
    seed : int
        Seed of the data set; different seeds give independent data sets.

    Returns
    -------
    ShapeBatch
        The images, their masks and labels.
    """
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    masks = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    labels = np.empty(count, dtype=np.int64)
    for index in range(count):
        images[index], masks[index], labels[index] = render(seed, index)
    return ShapeBatch(images=images, masks=masks, labels=labels)
