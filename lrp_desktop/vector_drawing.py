"""Drawing with QPainter for vector output.

Wrapped text, pictures at native resolution, colour bars, curves with bands, tables that fit, and
a painter on a PDF or SVG file.

Text stays text (fonts embedded by Qt's PDF writer), pictures are embedded losslessly
(``LosslessImageRendering``; scaled without smoothing, so pixels stay square).  No window is
needed: :func:`ensure_application` starts an offscreen ``QGuiApplication`` if none runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QGuiApplication,
    QImage,
    QPageLayout,
    QPageSize,
    QPainter,
    QPainterPath,
    QPdfWriter,
    QPen,
    QPolygonF,
)
from PySide6.QtSvg import QSvgGenerator

from lrp_desktop_core.image import bar_colors, bar_range
from lrp_desktop_core.report import BASELINE_LABEL, Band, Scale

#: Vector formats written here.
VECTOR_SUFFIXES = (".pdf", ".svg")
DPI = 72
MARGIN = 28.0
GAP = 10.0
#: Tables shrink their font down to this size before they break words inside.
MIN_WORD_FONT = 6.0
#: Tokens longer than this many characters (hashes, paths) may break anywhere.
LONG_TOKEN = 24
#: Room beside a picture for its colour bar, and below it for its caption.
COLOUR_BAR_WIDTH = 34.0
CAPTION_HEIGHT = 48.0
#: Distinct colours for methods (Okabe-Ito, readable by colour-blind readers); the baseline is grey.
METHOD_COLOURS = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (240, 228, 66),
    (0, 0, 0),
)
BASELINE_COLOUR = (120, 120, 120)
WRAP = (
    int(Qt.TextFlag.TextWordWrap) | int(Qt.AlignmentFlag.AlignLeft) | int(Qt.AlignmentFlag.AlignTop)
)


def method_colour(index: int) -> tuple[int, int, int]:
    """Return the colour of the ``index``-th method (repeating after eight)."""
    return METHOD_COLOURS[index % len(METHOD_COLOURS)]


def ensure_application() -> QGuiApplication:
    """Return the running Qt application, or start an offscreen one (no window needed)."""
    application = QGuiApplication.instance()
    if application is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        application = QGuiApplication([])
    return application


@contextmanager
def vector_painter(
    path: Path, size: tuple[float, float] | None = None
) -> Iterator[tuple[QPainter, QRectF, QPdfWriter | None]]:
    """Open a painter on a PDF or SVG file (by the suffix of ``path``).

    Parameters
    ----------
    path
        Output file ending in ``.pdf`` or ``.svg``.
    size
        Page size in points; A4 landscape when None (PDF only).

    Yields
    ------
    tuple
        The painter, the page rectangle and the PDF writer (None for SVG), for new pages.
    """
    suffix = path.suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise ValueError(f"cannot write {path.name!r} as a vector file; use .pdf or .svg")
    ensure_application()
    writer: QPdfWriter | None = None
    if suffix == ".pdf":
        writer = QPdfWriter(str(path))
        writer.setResolution(DPI)
        writer.setCreator("lrp-desktop")
        page_size = (
            QPageSize(QPageSize.PageSizeId.A4)
            if size is None
            else QPageSize(
                QSizeF(*size), QPageSize.Unit.Point, "figure", QPageSize.SizeMatchPolicy.ExactMatch
            )
        )
        orientation = (
            QPageLayout.Orientation.Landscape if size is None else QPageLayout.Orientation.Portrait
        )
        writer.setPageLayout(QPageLayout(page_size, orientation, QMarginsF(0, 0, 0, 0)))
        device, page = writer, QRectF(writer.pageLayout().paintRectPixels(DPI))
    else:
        width, height = size or (842.0, 595.0)
        device = QSvgGenerator()
        device.setFileName(str(path))
        device.setSize(QSize(round(width), round(height)))
        device.setViewBox(QRectF(0, 0, width, height))
        device.setResolution(DPI)
        page = QRectF(0, 0, width, height)
    painter = QPainter()
    if not painter.begin(device):
        raise OSError(f"could not write {path}; check that the folder exists and is writable")
    try:
        painter.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        yield painter, page, writer
    finally:
        painter.end()


def font(size: float, bold: bool = False) -> QFont:
    """Return the text font at ``size`` points, without ligatures.

    So "offline" stays searchable as six letters in the PDF's text layer.
    """
    chosen = QFont("DejaVu Sans")
    chosen.setFeature(QFont.Tag("liga"), 0)
    chosen.setPointSizeF(size)
    chosen.setBold(bold)
    return chosen


def heading(painter: QPainter, area: QRectF, line: str) -> float:
    """Draw a wrapped heading at the top of ``area``; return the y below it.

    The heading is at most 60 points high.
    """
    box = QRectF(area.left(), area.top(), area.width(), min(area.height(), 60.0))
    return text(painter, box, line, 13, bold=True) + GAP


def text(painter: QPainter, box: QRectF, content: str, size: float, bold: bool = False) -> float:
    """Draw ``content`` wrapped into ``box``, the font shrunk until it fits; return its bottom."""
    while True:
        painter.setFont(font(size, bold))
        needed = painter.boundingRect(box, WRAP, content)
        if needed.height() <= box.height() or size <= 4:
            break
        size -= 0.5
    painter.setPen(QColor(20, 20, 20))
    painter.drawText(box, WRAP, content)
    return box.top() + min(needed.height(), box.height())


def array_to_qimage(picture: np.ndarray) -> QImage:
    """Return an RGB(A) uint8 array as a QImage (a copy, so the array may go)."""
    picture = np.ascontiguousarray(picture, dtype=np.uint8)
    height, width, channels = picture.shape
    fmt = QImage.Format.Format_RGBA8888 if channels == 4 else QImage.Format.Format_RGB888
    return QImage(picture.data, width, height, channels * width, fmt).copy()


def draw_picture(painter: QPainter, box: QRectF, picture: np.ndarray) -> QRectF:
    """Draw ``picture`` fitted into ``box``; return the rectangle it covers.

    The picture keeps its native resolution and aspect ratio; it is scaled without smoothing.
    """
    height, width = picture.shape[:2]
    factor = min(box.width() / width, box.height() / height)
    target = QRectF(box.left(), box.top(), width * factor, height * factor)
    painter.drawImage(target, array_to_qimage(picture))
    painter.setPen(QPen(QColor(160, 160, 160), 0.5))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRect(target)
    return target


def draw_colour_bar(painter: QPainter, box: QRectF, scale: Scale) -> None:
    """Draw a vertical colour bar of ``scale`` with its ends and centre labelled.

    Its colours and range are those of the app's bar (``image.bar_colors`` and
    ``image.bar_range``).
    """
    bounds = (scale.low, scale.high)
    colours = bar_colors(bounds, scale.cmap, scale.mode)[::-1]  # high values on top
    strip = np.ascontiguousarray(colours[:, None, :])
    bar = QRectF(box.left(), box.top(), 8, box.height())
    painter.drawImage(bar, array_to_qimage(strip))
    painter.setPen(QPen(QColor(60, 60, 60), 0.5))
    painter.drawRect(bar)
    painter.setFont(font(5.5))
    low, high = bar_range(bounds, scale.mode)
    for fraction, value in ((0.0, high), (0.5, (low + high) / 2), (1.0, low)):
        y = bar.top() + fraction * bar.height()
        painter.drawLine(QPointF(bar.right(), y), QPointF(bar.right() + 2, y))
        painter.drawText(
            QRectF(bar.right() + 2.5, y - 5, box.width() - 10, 10),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            f"{value:.2g}",
        )


def draw_panels(
    painter: QPainter,
    box: QRectF,
    pictures: Sequence[np.ndarray],
    captions: Sequence[str],
    scales: Sequence[Scale | None],
    columns: int | None = None,
) -> None:
    """Draw pictures in a grid inside ``box``.

    Each has its wrapped caption below and, where its scale is given, a colour bar beside it.
    """
    columns = columns or len(pictures)
    rows = -(-len(pictures) // columns)
    cell_width = (box.width() - GAP * (columns - 1)) / columns
    cell_height = (box.height() - GAP * (rows - 1)) / rows
    for index, (picture, caption, scale) in enumerate(zip(pictures, captions, scales, strict=True)):
        row, column = divmod(index, columns)
        cell = QRectF(
            box.left() + column * (cell_width + GAP),
            box.top() + row * (cell_height + GAP),
            cell_width,
            cell_height,
        )
        bar = COLOUR_BAR_WIDTH if scale is not None else 0.0
        drawn = draw_picture(painter, cell.adjusted(0, 0, -bar, -CAPTION_HEIGHT), picture)
        if scale is not None:
            draw_colour_bar(
                painter, QRectF(drawn.right() + 3, drawn.top(), bar - 3, drawn.height()), scale
            )
        text(
            painter,
            QRectF(
                cell.left(), drawn.bottom() + 3, cell.width(), cell.bottom() - drawn.bottom() - 3
            ),
            caption,
            7,
        )


def draw_curves(painter: QPainter, box: QRectF, bands: Sequence[Band], title: str) -> None:
    """Plot curves with axes, a title and a legend beside the plot.

    A shaded mean +- std band shows the spread where it is not zero.
    """
    top = text(painter, QRectF(box.left(), box.top(), box.width(), 14), title, 8, bold=True)
    legend_width = box.width() * 0.34
    plot = QRectF(
        box.left() + 34, top + 4, box.width() - legend_width - 40, box.bottom() - top - 26
    )
    if not bands or plot.width() <= 0 or plot.height() <= 0:
        return
    low = min(float(np.min(b.mean - b.std)) for b in bands)
    high = max(float(np.max(b.mean + b.std)) for b in bands)
    high = high if high > low else low + 1.0
    steps = max(len(b.mean) for b in bands) - 1 or 1

    def point(step: float, value: float) -> QPointF:
        return QPointF(
            plot.left() + plot.width() * step / steps,
            plot.bottom() - plot.height() * (value - low) / (high - low),
        )

    painter.setPen(QPen(QColor(40, 40, 40), 0.7))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRect(plot)
    painter.setFont(font(6))
    for value in (low, (low + high) / 2, high):
        y = point(0, value).y()
        painter.drawText(
            QRectF(box.left(), y - 5, 32, 10),
            int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
            f"{value:.3g}",
        )
    for step in (0, steps // 2, steps):
        x = point(step, low).x()
        painter.drawText(
            QRectF(x - 15, plot.bottom() + 2, 30, 10), int(Qt.AlignmentFlag.AlignHCenter), str(step)
        )
    painter.drawText(
        QRectF(plot.left(), plot.bottom() + 11, plot.width(), 10),
        int(Qt.AlignmentFlag.AlignHCenter),
        "regions removed (steps)",
    )
    for index, curve in enumerate(bands):
        baseline = curve.label == BASELINE_LABEL
        rgb = BASELINE_COLOUR if baseline else method_colour(index)
        xs = np.arange(len(curve.mean))
        if np.any(curve.std > 0):
            upper = [point(x, v) for x, v in zip(xs, curve.mean + curve.std, strict=True)]
            lower = [point(x, v) for x, v in zip(xs, curve.mean - curve.std, strict=True)]
            path = QPainterPath()
            path.addPolygon(QPolygonF(upper + lower[::-1]))
            painter.fillPath(path, QBrush(QColor(*rgb, 60)))
        pen = QPen(QColor(*rgb), 1.4)
        if baseline:
            pen.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawPolyline(QPolygonF([point(x, v) for x, v in zip(xs, curve.mean, strict=True)]))
        legend_y = plot.top() + index * 22
        painter.drawLine(
            QPointF(plot.right() + 8, legend_y + 5), QPointF(plot.right() + 22, legend_y + 5)
        )
        label = curve.label + (f" (n={curve.count})" if curve.count > 1 else "")
        text(painter, QRectF(plot.right() + 25, legend_y, legend_width - 20, 21), label, 6.5)


def draw_table(painter: QPainter, box: QRectF, rows: Sequence[Sequence[str]]) -> float:
    """Draw ``rows`` (header first) inside ``box``; return the bottom of the table.

    Columns share the width by their content and cells wrap (between words, or anywhere in a
    word longer than its column, such as a hash); the font shrinks until the table fits.
    """
    if not rows:
        return box.top()
    size = 8.0
    while True:
        widths, heights, whole_words = _table_layout(rows, box.width(), size)
        fits = sum(heights) <= box.height() and (whole_words or size <= MIN_WORD_FONT)
        if fits or size <= 4:
            break
        size -= 0.5
    y = box.top()
    for row_index, (row, height) in enumerate(zip(rows, heights, strict=True)):
        x = box.left()
        if row_index == 0:
            painter.fillRect(QRectF(x, y, box.width(), height), QColor(230, 230, 230))
        painter.setFont(font(size, bold=row_index == 0))
        painter.setPen(QColor(20, 20, 20))
        metrics = QFontMetricsF(painter.font())
        for cell, width in zip(row, widths, strict=True):
            painter.drawText(
                QRectF(x + 2, y + 1, width - 4, height - 2),
                _cell_flags(metrics, str(cell), width - 4),
                str(cell),
            )
            x += width
        y += height
        painter.setPen(QPen(QColor(200, 200, 200), 0.4))
        painter.drawLine(QPointF(box.left(), y), QPointF(box.right(), y))
    return y


def _table_layout(
    rows: Sequence[Sequence[str]], width: float, size: float
) -> tuple[list[float], list[float], bool]:
    """Return column widths and row heights of ``rows`` at font ``size``, and if all words fit.

    Columns get their natural width where all fit, otherwise at least their longest word (up to
    an even share of ``width``) and the rest by how much more they would need.
    """
    metrics = QFontMetricsF(font(size, bold=True))
    plain = QFontMetricsF(font(size))
    columns = len(rows[0])
    natural = [
        max(metrics.horizontalAdvance(str(row[c])) for row in rows) + 6 for c in range(columns)
    ]
    words = [
        max(metrics.horizontalAdvance(word) for row in rows for word in _words(str(row[c]))) + 6
        for c in range(columns)
    ]
    if sum(natural) <= width:
        widths = [n * width / sum(natural) for n in natural]
    else:
        floor = words if sum(words) <= width else [min(w, width / columns) for w in words]
        spare = max(width - sum(floor), 0.0)
        extra = [n - f for n, f in zip(natural, floor, strict=True)]
        widths = [f + spare * e / (sum(extra) or 1) for f, e in zip(floor, extra, strict=True)]
    heights = []
    for index, row in enumerate(rows):
        used = metrics if index == 0 else plain
        tallest = max(
            used.boundingRect(
                QRectF(0, 0, max(w - 4, 1), 1e6), _cell_flags(used, str(cell), w - 4), str(cell)
            ).height()
            for cell, w in zip(row, widths, strict=True)
        )
        heights.append(tallest + 3)
    return widths, heights, sum(words) <= width


def _words(cell: str) -> list[str]:
    """Return the words of a cell that should not break; longer tokens (hashes, paths) may."""
    return [word for word in cell.split() if len(word) <= LONG_TOKEN] or [""]


def _cell_flags(metrics: QFontMetricsF, text: str, width: float) -> int:
    """Return flags that wrap between words, and inside a word (a hash, a path) too wide."""
    longest = max((metrics.horizontalAdvance(word) for word in text.split()), default=0.0)
    return WRAP | (int(Qt.TextFlag.TextWrapAnywhere) if longest > width else 0)
