"""A layer's concepts as a vector figure (PDF or SVG), one page that also serves as a report page.

The page holds where it came from (model, weights, layer, rules, image and class), a bar chart of
the channels with the most relevance at the layer for and against the class, the layer's
relevance map beside the plain heatmap, and the conditional heatmaps of the top channels with
their channel numbers and shares.  It is drawn with :mod:`.vector_drawing`, as the comparison
figures are: text stays text and pictures are embedded losslessly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from lrp_desktop_core.concepts import Concepts, spatial_map
from lrp_desktop_core.image import colorize, heatmap_bounds
from lrp_desktop_core.report import Scale

from .exporting import enlarged, figure_title
from .heatmap_view import render
from .session import DisplaySettings, Session
from .vector_drawing import (
    GAP,
    MARGIN,
    draw_panels,
    draw_table,
    font,
    heading,
    text,
    vector_painter,
)

POSITIVE, NEGATIVE = (215, 48, 39), (69, 117, 180)
"""Bar colours of relevance for and against the explained class."""

BARS_PER_SIDE = 16
"""The bar chart shows this many channels of most and of least relevance."""

COLUMNS = 4
"""Conditional heatmaps per row."""

PAGE_WIDTH = 842.0
CHART_HEIGHT = 200.0
ROW_HEIGHT = 16.0
"""Height of a row of the provenance table (it shrinks its font to fit)."""
PANEL_HEIGHT = 206.0


def concept_provenance(session: Session, concepts: Concepts, image: Path) -> list[tuple[str, str]]:
    """Return where a layer's concepts came from, as (what, value) rows of the figure's table.

    Parameters
    ----------
    session : Session
        Gives the model, its weights and the rules.
    concepts : Concepts
        The layer's concepts on ``image``.
    image : Path
        The explained image.
    """
    model, rulemap = session.model, session.rulemap
    rows = [("model", figure_title(session))]
    if model is not None:
        weights = str(model.weights_path) if model.weights_path else model.source
        sha = f", sha256 {model.weights_sha256}" if model.weights_sha256 else ""
        rows.append(("weights", f"{weights}{sha}"))
    rows.append(("layer", f"{concepts.layer} ({len(concepts.overview.channels[0])} channels)"))
    if rulemap is not None:
        rows.append(
            (
                "rules",
                f"preset {rulemap.preset or '(edited)'}, canonizer {rulemap.canonizer}, "
                f"fingerprint {rulemap.fingerprint()}",
            )
        )
    names = session.model.class_names if session.model is not None else ()
    target = concepts.target
    rows.append(
        ("image", f"{image.name}, class {names[target] if target < len(names) else target}")
    )
    return rows


def map_caption(positions: np.ndarray, picture: np.ndarray) -> str:
    """Return the caption of a layer's relevance map drawn as ``picture`` from ``positions``.

    Parameters
    ----------
    positions : np.ndarray
        The relevance per position (a row of ``LayerRelevance.spatial``).
    picture : np.ndarray
        Its 2-d map (see :func:`~lrp_desktop_core.concepts.spatial_map`); a class token left out
        of it is named with its relevance.
    """
    caption = f"relevance map of the layer, {picture.shape[0]} x {picture.shape[1]}"
    if positions.size > picture.size:
        caption += f" (class token {positions[0]:.3g} left out)"
    return caption


def write_concept_figure(
    path: str | Path,
    concepts: Concepts,
    display: np.ndarray,
    settings: DisplaySettings,
    provenance: Sequence[tuple[str, str]],
) -> Path:
    """Write a layer's concepts as a one-page vector figure, PDF or SVG by the suffix of ``path``.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.pdf`` or ``.svg``.
    concepts : Concepts
        The layer's concepts with the plain heatmap (``overview.relevance``); every channel in
        ``concepts.channels`` gets a panel.
    display : np.ndarray
        The image as the model sees it, RGB uint8.
    settings : DisplaySettings
        The colours and overlay of the heatmaps, as on screen.
    provenance : sequence of (str, str)
        Where the concepts came from (see :func:`concept_provenance`), drawn as a table.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if concepts.overview.relevance is None:
        raise ValueError("the figure needs the plain heatmap; compute the concepts with it")
    rows = -(-len(concepts.channels) // COLUMNS)
    table_height = ROW_HEIGHT * (len(provenance) + 1)
    height = 2 * MARGIN + 40 + table_height + CHART_HEIGHT + rows * PANEL_HEIGHT + 3 * GAP
    with vector_painter(path, (PAGE_WIDTH, height)) as (painter, page, _):
        area = page.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        title = f"Concepts of layer {concepts.layer}"
        top = heading(painter, QRectF(area.left(), area.top(), area.width(), 36), title)
        box = QRectF(area.left(), top, area.width(), table_height)
        top = draw_table(painter, box, [("provenance", ""), *provenance]) + GAP
        chart = QRectF(area.left(), top, area.width() * 0.56, CHART_HEIGHT)
        draw_channel_bars(painter, chart, concepts.overview.channels[0], concepts.layer)
        maps = QRectF(
            chart.right() + 2 * GAP, top, area.right() - chart.right() - 2 * GAP, CHART_HEIGHT
        )
        _draw_overview(painter, maps, concepts, display, settings)
        grid = QRectF(area.left(), top + CHART_HEIGHT + GAP, area.width(), rows * PANEL_HEIGHT)
        _draw_channels(painter, grid, concepts, display, settings)
    return path


def draw_channel_bars(painter: QPainter, box: QRectF, per_channel: np.ndarray, layer: str) -> None:
    """Draw the channels of most and least relevance as bars, each named by its number.

    At most :data:`BARS_PER_SIDE` channels from each end of the ranking are drawn; a gap between
    them says how many channels lie in between.
    """
    order = np.lexsort((np.arange(len(per_channel)), -per_channel))
    hidden = max(0, len(order) - 2 * BARS_PER_SIDE)
    shown = order if not hidden else np.concatenate([order[:BARS_PER_SIDE], order[-BARS_PER_SIDE:]])
    title = f"Relevance per channel at {layer}: the {len(shown)} of most and least relevance"
    if not hidden:
        title = f"Relevance per channel at {layer}, all {len(order)} channels by relevance"
    top = text(painter, QRectF(box.left(), box.top(), box.width(), 14), title, 8, bold=True)
    plot = QRectF(box.left() + 40, top + 6, box.width() - 44, box.bottom() - top - 30)
    values = per_channel[shown]
    extent = float(np.abs(values).max()) or 1.0
    low = min(0.0, float(values.min()))
    high = max(0.0, float(values.max()))
    scale = plot.height() / ((high - low) or extent)
    zero = plot.top() + high * scale
    slots = len(shown) + (2 if hidden else 0)
    width = plot.width() / slots
    painter.setFont(font(5.5))
    for place, (channel, value) in enumerate(zip(shown, values)):
        slot = place + (2 if hidden and place >= BARS_PER_SIDE else 0)
        left = plot.left() + slot * width
        colour = QColor(*(POSITIVE if value >= 0 else NEGATIVE))
        bar = QRectF(left + 0.1 * width, min(zero, zero - value * scale), 0.8 * width, 0)
        bar.setHeight(abs(value) * scale)
        painter.fillRect(bar, colour)
        painter.setPen(QColor(40, 40, 40))
        painter.drawText(
            QRectF(left - 4, plot.bottom() + 2, width + 8, 9),
            int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop),
            str(int(channel)),
        )
    if hidden:
        gap = QRectF(plot.left() + BARS_PER_SIDE * width, plot.top(), 2 * width, plot.height())
        painter.drawText(
            gap, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), f"{hidden} more"
        )
    painter.setPen(QPen(QColor(60, 60, 60), 0.5))
    painter.drawLine(QPointF(plot.left(), zero), QPointF(plot.right(), zero))
    painter.drawLine(QPointF(plot.left(), plot.top()), QPointF(plot.left(), plot.bottom()))
    for value in (high, 0.0, low):
        y = zero - value * scale
        painter.drawText(
            QRectF(box.left(), y - 5, 37, 10),
            int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
            f"{value:.2g}",
        )
    painter.setFont(font(6.5))
    painter.drawText(
        QRectF(plot.left(), plot.bottom() + 12, plot.width(), 10),
        int(Qt.AlignmentFlag.AlignHCenter),
        "channel (by relevance at the layer; red for the class, blue against it)",
    )


def _draw_overview(
    painter: QPainter,
    box: QRectF,
    concepts: Concepts,
    display: np.ndarray,
    settings: DisplaySettings,
) -> None:
    """Draw the layer's relevance map (where it has one) and the plain heatmap side by side."""
    heatmap = concepts.overview.relevance[0]
    bounds = heatmap_bounds(heatmap.sum(axis=0), settings.mode, settings.clip_percentile)
    pictures = [enlarged(render(display, heatmap, settings, bounds))]
    captions = [f"plain heatmap (all channels), sum {heatmap.sum():.3g}"]
    scales: list[Scale | None] = [Scale("heatmap", settings.cmap, *bounds, settings.mode)]
    at_layer = spatial_map(concepts.overview.spatial[0])
    if at_layer is not None:
        low, high = heatmap_bounds(at_layer, "signed")
        pictures.insert(
            0, enlarged(colorize(at_layer, settings.cmap, "signed", bounds=(low, high)))
        )
        captions.insert(0, map_caption(concepts.overview.spatial[0], at_layer))
        scales.insert(0, Scale("layer", settings.cmap, low, high, "signed"))
    draw_panels(painter, box, pictures, captions, scales, columns=2)


def _draw_channels(
    painter: QPainter,
    box: QRectF,
    concepts: Concepts,
    display: np.ndarray,
    settings: DisplaySettings,
) -> None:
    """Draw each channel's conditional heatmap with its number, share and relevance."""
    pictures, captions, scales = [], [], []
    for row, (channel, share) in enumerate(zip(concepts.channels, concepts.shares())):
        relevance = concepts.relevance[row]
        bounds = heatmap_bounds(relevance.sum(axis=0), settings.mode, settings.clip_percentile)
        pictures.append(enlarged(render(display, relevance, settings, bounds)))
        captions.append(
            f"channel {channel}: share {share:+.1%}, "
            f"relevance {concepts.layer_relevance[row]:.3g} at the layer"
        )
        scales.append(Scale(f"channel {channel}", settings.cmap, *bounds, settings.mode))
    columns = min(COLUMNS, len(pictures))
    grid = QRectF(box.left(), box.top(), box.width() * columns / COLUMNS, box.height())
    draw_panels(painter, grid, pictures, captions, scales, columns=columns)
