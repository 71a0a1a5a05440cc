"""The perturbation curves of the compared heatmaps in one plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

#: Distinct colours for up to eight curves (then they repeat).
CURVE_COLOURS = ((200, 30, 30), (30, 90, 200), (30, 150, 60), (170, 80, 190),
                 (230, 140, 20), (20, 160, 170), (120, 80, 40), (220, 80, 150))
BASELINE_COLOUR = (120, 120, 120)


def curve_colour(index: int) -> tuple[int, int, int]:
    """Return the colour of the ``index``-th curve."""
    return CURVE_COLOURS[index % len(CURVE_COLOURS)]


class EvaluationPlot(pg.PlotWidget):
    """MoRF curves of every panel, with AOPC in the legend, and the random baselines.

    The random baseline removes regions in a random order; each panel's run draws its own order,
    so the baseline shown per image is the mean of its panels' random curves.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="w")
        item = self.getPlotItem()
        item.setTitle("Region perturbation: most relevant regions first (MoRF)", color="k")
        item.setLabel("bottom", "regions removed (steps)", color="k")
        item.setLabel("left", "explained logit", color="k")
        item.showGrid(x=True, y=True, alpha=0.3)
        for axis in ("bottom", "left"):
            item.getAxis(axis).setTextPen("k")
            item.getAxis(axis).setPen("k")
        self.legend = item.addLegend(offset=(-10, 10), labelTextColor="k",
                                     brush=pg.mkBrush(255, 255, 255, 220))
        self.setMinimumHeight(180)

    def show_evaluation(self, evaluation, captions: Sequence[str],
                        images: Sequence[Path]) -> None:
        """Plot one MoRF curve per panel and, per image, the mean random-order baseline."""
        item = self.getPlotItem()
        item.clear()
        self.legend.clear()
        for index, (curves, caption) in enumerate(zip(evaluation.panels, captions, strict=True)):
            item.plot(np.arange(len(curves.morf)), curves.morf,
                      pen=pg.mkPen(curve_colour(index), width=2),
                      name=f"{caption} (AOPC {curves.morf_aopc:.3g})")
        by_image: dict[Path, list] = {}
        for curves, image in zip(evaluation.panels, images, strict=True):
            by_image.setdefault(image, []).append(curves)
        for image, group in by_image.items():
            random = np.mean([curves.random for curves in group], axis=0)
            aopc = float(np.mean([curves.random_aopc for curves in group]))
            label = "random baseline" if len(by_image) == 1 else f"random baseline {image.name}"
            item.plot(np.arange(len(random)), random,
                      pen=pg.mkPen(BASELINE_COLOUR, width=2, style=Qt.PenStyle.DashLine),
                      name=f"{label} (AOPC {aopc:.3g})")
