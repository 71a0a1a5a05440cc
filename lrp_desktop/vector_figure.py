"""Comparison figures as vector PDF or SVG.

Captioned panels in a grid, a colour bar per scale, and the mean perturbation curves with their
bands; text stays text, pictures stay lossless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF

from lrp_desktop_core.report import Band, Scale

from .vector_drawing import GAP, MARGIN, draw_curves, draw_panels, heading, vector_painter

#: Width of one panel in points, and how many panels share a row at most.
PANEL_WIDTH = 220.0
MAX_COLUMNS = 4
CURVES_TITLE = "Perturbation curves (MoRF), mean \u00b1 std per method, with the random baseline"


def write_figure(
    path: str | Path,
    pictures: Sequence[np.ndarray],
    captions: Sequence[str],
    scales: Sequence[Scale | None],
    title: str,
    curves: Sequence[Band] = (),
) -> Path:
    """Write a figure as PDF or SVG (by the suffix of ``path``).

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.pdf`` or ``.svg``.
    pictures, captions, scales
        Per panel its picture (RGB or RGBA uint8), caption and colour scale (None: no bar).
    title : str
        The line above the panels (the model and its weights).
    curves : sequence of Band
        Mean curves to plot below the panels; none for no plot.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    columns = min(MAX_COLUMNS, len(pictures))
    rows = -(-len(pictures) // columns)
    aspect = max(picture.shape[0] / picture.shape[1] for picture in pictures)
    cell_height = (PANEL_WIDTH - 34) * aspect + 52
    width = 2 * MARGIN + columns * PANEL_WIDTH + (columns - 1) * GAP
    panels_height = rows * cell_height + (rows - 1) * GAP
    plot_height = 220.0 if len(curves) else 0.0
    height = 2 * MARGIN + 40 + panels_height + (plot_height + GAP if plot_height else 0)
    with vector_painter(path, (width, height)) as (painter, page, _):
        area = page.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        top = heading(painter, QRectF(area.left(), area.top(), area.width(), 36), title)
        draw_panels(
            painter,
            QRectF(area.left(), top, area.width(), panels_height),
            pictures,
            captions,
            scales,
            columns,
        )
        if plot_height:
            draw_curves(
                painter,
                QRectF(
                    area.left(), top + panels_height + GAP, min(area.width(), 560.0), plot_height
                ),
                curves,
                CURVES_TITLE,
            )
    return path
