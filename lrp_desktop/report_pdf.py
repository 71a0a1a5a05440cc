"""Vector reports: a :class:`~lrp_desktop_core.report.Report` drawn into a PDF (A4 landscape).

A summary page first (settings, mean +- std of every score per method, the mean MoRF and LeRF
curves with their bands), then one page per image: its input, the heatmaps with a colour bar per
scale and wrapped captions, its curves with the image's one random baseline, and a score table.
Drawing itself is :mod:`.vector_drawing`'s; no window is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QPainter

from lrp_desktop_core.report import BASELINE_LABEL, Band, ImagePage, Report

from .vector_drawing import (
    GAP,
    MARGIN,
    draw_curves,
    draw_panels,
    draw_table,
    heading,
    text,
    vector_painter,
)


def write_report(path: str | Path, report: Report) -> Path:
    """Write ``report`` as a vector PDF (A4 landscape): the summary page, then one per image.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.pdf``.
    report : Report
        What to write, see :mod:`lrp_desktop_core.report`.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if path.suffix.lower() != ".pdf":
        raise ValueError(f"a report is written as a .pdf file, not {path.name!r}")
    with vector_painter(path) as (painter, page, writer):
        writer.setTitle(report.title)
        area = page.adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        _summary_page(painter, area, report)
        for image_page in report.pages:
            writer.newPage()
            _image_page(painter, area, image_page)
    return path


# -- pages ---------------------------------------------------------------------------------


def _summary_page(painter: QPainter, area: QRectF, report: Report) -> None:
    top = heading(painter, area, f"Report: {report.title}")
    left = QRectF(area.left(), top, area.width() * 0.42, area.bottom() - top)
    right = QRectF(left.right() + GAP, top, area.right() - left.right() - GAP, left.height())
    settings = [["setting", "value"], *([key, value] for key, value in report.settings.items())]
    bottom = draw_table(
        painter, QRectF(left.left(), left.top(), left.width(), left.height() * 0.6), settings
    )
    table = report.summary_table()
    if len(table) > 1:
        note = text(
            painter,
            QRectF(left.left(), bottom + GAP, left.width(), 30),
            f"Scores: mean \u00b1 std across {len(report.pages)} image(s).",
            9,
        )
        draw_table(
            painter, QRectF(left.left(), note + 4, left.width(), left.bottom() - note), table
        )
        half = (right.height() - GAP) / 2
        draw_curves(
            painter,
            QRectF(right.left(), right.top(), right.width(), half),
            report.mean_curves("morf"),
            "Most relevant first (MoRF): mean \u00b1 std",
        )
        draw_curves(
            painter,
            QRectF(right.left(), right.top() + half + GAP, right.width(), half),
            report.mean_curves("lerf"),
            "Least relevant first (LeRF): mean \u00b1 std",
        )
    else:
        text(
            painter,
            QRectF(left.left(), bottom + GAP, left.width(), 40),
            "No evaluation: run Evaluate (or lrp-explain --evaluate) for scores and curves.",
            9,
        )


def _image_page(painter: QPainter, area: QRectF, page: ImagePage) -> None:
    top = heading(painter, area, page.title)
    picture_height = area.height() * (0.5 if page.evaluations or page.table else 0.8)
    scales = [None, *(page.page_scales[index] for index in page.scales)]
    draw_panels(
        painter,
        QRectF(area.left(), top, area.width(), picture_height),
        [page.image, *page.heatmaps],
        ["input", *page.captions],
        scales,
    )
    lower = QRectF(
        area.left(),
        top + picture_height + GAP,
        area.width(),
        area.bottom() - top - picture_height - GAP,
    )
    plot_width = lower.width() * 0.45 if page.evaluations else 0.0
    if page.evaluations:
        curves = [
            Band(item.method, item.morf, np.zeros_like(item.morf), 1) for item in page.evaluations
        ]
        random = page.evaluations[0].random
        curves.append(Band(BASELINE_LABEL, random, np.zeros_like(random), 1))
        draw_curves(
            painter,
            QRectF(lower.left(), lower.top(), plot_width, lower.height()),
            curves,
            "Most relevant regions first (MoRF)",
        )
    if page.table:
        draw_table(
            painter,
            QRectF(
                lower.left() + plot_width + GAP * (plot_width > 0),
                lower.top(),
                lower.width() - plot_width - GAP,
                lower.height(),
            ),
            page.table,
        )
