"""The perturbation curves of the compared heatmaps: their settings and their plot.

The plot scales to many images: the mean curve per method with a +- std band, per-image curves
on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.evaluate import DEFAULT_FILL, DEFAULT_REGION_SIZE, FILLS, aopc
from lrp_desktop_core.report import BASELINE_LABEL, band

from .vector_drawing import BASELINE_COLOUR, method_colour

#: Opacity (0-255) of the +- std band around a mean curve.
BAND_ALPHA = 60


class EvaluationSettings(QWidget):
    """Region size, fill and number of steps of the next Evaluate."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.region_size = QSpinBox()
        self.region_size.setRange(1, 224)
        self.region_size.setValue(DEFAULT_REGION_SIZE)
        self.region_size.setSuffix(" px")
        self.region_size.setToolTip("Side of the square regions removed per step")
        self.fill = QComboBox()
        self.fill.addItems(list(FILLS))
        self.fill.setCurrentText(DEFAULT_FILL)
        self.fill.setToolTip("How a removed region is filled (blur keeps natural statistics)")
        self.steps = QSpinBox()
        self.steps.setRange(0, 10_000)
        self.steps.setSpecialValueText("all (at most 100)")
        self.steps.setToolTip("Removal steps; 0 removes every region, in at most 100 steps")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        for label, widget in (
            ("Regions:", self.region_size),
            ("Fill:", self.fill),
            ("Steps:", self.steps),
        ):
            layout.addWidget(QLabel(label))
            layout.addWidget(widget)
        layout.addStretch(1)

    def values(self) -> dict[str, Any]:
        """Return the settings as keyword arguments of ``Controller.evaluate``."""
        return {
            "region_size": self.region_size.value(),
            "steps": self.steps.value() or None,
            "fill": self.fill.currentText(),
        }


class EvaluationPlot(QWidget):
    """MoRF curves per method, averaged over images with a +- std band.

    The random baseline (one per image) is drawn the same way; the legend sits below the plot,
    never over it.

    Attributes
    ----------
    per_image
        Check box: also draw every panel's own curve (thin) under the means.
    means
        The mean curve of each method and of the random baseline, by label.
    bands
        The +- std bands (where a mean is over more than one curve).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.per_image = QCheckBox("Show per-image curves")
        self.per_image.toggled.connect(self._replot)
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setBackground("w")
        self.item: pg.PlotItem = self.canvas.addPlot(row=0, col=0)
        self.item.setTitle("Region perturbation: most relevant regions first (MoRF)", color="k")
        self.item.setLabel("bottom", "regions removed (steps)", color="k")
        self.item.setLabel("left", "explained logit", color="k")
        self.item.showGrid(x=True, y=True, alpha=0.3)
        for axis in ("bottom", "left"):
            self.item.getAxis(axis).setTextPen("k")
            self.item.getAxis(axis).setPen("k")
        self.legend = pg.LegendItem(labelTextColor="k", brush=pg.mkBrush(255, 255, 255))
        self.legend.setColumnCount(2)
        self.canvas.addItem(self.legend, row=1, col=0)
        self.bands: list[pg.FillBetweenItem] = []
        self.means: dict[str, pg.PlotDataItem] = {}
        self._shown: tuple[Any, Sequence[str], Sequence[Path]] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.per_image)
        layout.addWidget(self.canvas, 1)
        self.canvas.setMinimumHeight(240)

    def show_evaluation(self, evaluation, methods: Sequence[str], images: Sequence[Path]) -> None:
        """Plot the mean MoRF curve per method and the mean random baseline, each with a band.

        ``methods`` holds each panel's method label; the baseline is one per image.
        """
        self._shown = (evaluation, tuple(methods), tuple(images))
        self._replot()

    def curve_items(self) -> list[pg.PlotDataItem]:
        """Return the plotted curves (means first, per-image curves after, when shown)."""
        return [item for item in self.item.listDataItems() if isinstance(item, pg.PlotDataItem)]

    def _replot(self) -> None:
        self.item.clear()
        self.legend.clear()
        self.bands = []
        self.means = {}
        if self._shown is None:
            return
        evaluation, methods, images = self._shown
        groups: dict[str, list] = {}
        for curves, method in zip(evaluation.panels, methods, strict=True):
            groups.setdefault(method, []).append(curves)
        baselines = {
            image: curves.random for curves, image in zip(evaluation.panels, images, strict=True)
        }
        series = [
            (method, [c.morf for c in group], method_colour(index), False)
            for index, (method, group) in enumerate(groups.items())
        ]
        series.append((BASELINE_LABEL, list(baselines.values()), BASELINE_COLOUR, True))
        for label, curves, colour, dashed in series:
            self._plot_mean(label, curves, colour, dashed)
        self.canvas.ci.layout.setRowFixedHeight(1, self.legend.layout.preferredHeight() + 4)
        if self.per_image.isChecked():
            for _, curves, colour, _dashed in series:
                for values in curves:
                    self.item.plot(
                        np.arange(len(values)), values, pen=pg.mkPen((*colour, 110), width=1)
                    )

    def _plot_mean(
        self, label: str, curves: list[np.ndarray], colour: tuple[int, int, int], dashed: bool
    ) -> None:
        mean = band(label, curves)
        steps = np.arange(len(mean.mean))
        pen = pg.mkPen(
            colour, width=2.5, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        )
        line = self.item.plot(steps, mean.mean, pen=pen)
        self.means[label] = line
        if mean.count > 1:
            upper = pg.PlotDataItem(steps, mean.mean + mean.std, pen=pg.mkPen(None))
            lower = pg.PlotDataItem(steps, mean.mean - mean.std, pen=pg.mkPen(None))
            fill = pg.FillBetweenItem(upper, lower, brush=pg.mkBrush(*colour, BAND_ALPHA))
            self.item.addItem(fill)
            self.bands.append(fill)
        area = float(aopc(mean.mean[None])[0])
        spread = f", mean \u00b1 std, n={mean.count}" if mean.count > 1 else ""
        self.legend.addItem(line, f"{label} (AOPC {area:.3g}{spread})")
