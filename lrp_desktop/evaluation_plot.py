"""The perturbation curves of the compared heatmaps in one plot."""

from __future__ import annotations

from collections.abc import Sequence

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
    """MoRF curves of every panel, with AOPC in the legend, and the random baselines."""

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

    def show_evaluation(self, evaluation, captions: Sequence[str]) -> None:
        """Plot one MoRF curve per panel and one random baseline per distinct curve set."""
        item = self.getPlotItem()
        item.clear()
        self.legend.clear()
        baselines: list[np.ndarray] = []
        for index, (curves, caption) in enumerate(zip(evaluation.panels, captions, strict=True)):
            steps = np.arange(len(curves.morf))
            item.plot(steps, curves.morf, pen=pg.mkPen(curve_colour(index), width=2),
                      name=f"{caption} (AOPC {curves.morf_aopc:.3g})")
            if not any(np.array_equal(curves.random, seen) for seen in baselines):
                baselines.append(curves.random)
                label = "random baseline" if not baselines[:-1] else \
                    f"random baseline {len(baselines)}"
                item.plot(steps, curves.random,
                          pen=pg.mkPen(BASELINE_COLOUR, width=2, style=Qt.PenStyle.DashLine),
                          name=f"{label} (AOPC {curves.random_aopc:.3g})")
