"""Side-by-side comparison: one panel per configuration or image, views linked.

Every panel shows one explanation (a preset, the current per-layer rules, or another attribution
method, on one image) with a caption saying what it is and, below, how much of the explained
output the relevance conserves. Zoom and pan are linked across panels; the colour scale is shared
or per panel. After "Evaluate", the perturbation curves of all panels appear in one plot.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.explain import relevance_conservation
from lrp_desktop_core.image import heatmap_bounds

from .evaluation_plot import EvaluationPlot
from .heatmap_view import CaptionedView, relevance_colorbar, show_scale
from .session import PanelSpec, Session

PANEL_MIN_SIZE = 200
SHARED_BAR_WIDTH = 80


def grid_columns(count: int) -> int:
    """Return how many panels go in one row: all of up to three, else a near-square grid."""
    return count if count <= 3 else math.ceil(math.sqrt(count))


def conservation_note(explanation) -> str:
    """Return "sum R = a of logit b (c %)" for a one-image explanation, or, for a class-agnostic
    method (attention rollout), that its map is the same for every class."""
    if explanation.method is not None and explanation.method.class_agnostic:
        return "class-agnostic: the same map for every class, no share of the logit"
    total = float(explanation.relevance_sum[0])
    output = float(explanation.explained_output[0])
    share = float(relevance_conservation(explanation)[0])
    percent = "n/a" if math.isnan(share) else f"{share * 100:.0f} %"
    note = f"sum R = {total:.3g} of logit {output:.3g} ({percent} conserved)"
    if _uses_attnlrp(explanation.method):
        note += "; AttnLRP's attention softmax absorbs a share by design"
    return note


def _uses_attnlrp(method) -> bool:
    """Whether an LRP method gives some attention core the AttnLRP rule."""
    rules = None if method is None else method.rulemap
    return rules is not None and any(choice.rule == "AttentionAttnLRP" for choice in rules.values())


def scores_note(curves) -> str:
    """Return the AOPC and (where a mask exists) localisation scores of one panel."""
    note = f"AOPC MoRF {curves.morf_aopc:.3g}, LeRF {curves.lerf_aopc:.3g}"
    if curves.mass_accuracy is not None:
        note += f" | mass acc. {curves.mass_accuracy:.2f}, rank acc. {curves.rank_accuracy:.2f}"
    return note


class PanelWidget(CaptionedView):
    """One comparison panel: a captioned heatmap view with a remove button."""

    def __init__(self, index: int, session: Session, parent: QWidget | None = None) -> None:
        remove = QToolButton()
        remove.setText("x")
        remove.setToolTip("Remove this panel")
        remove.setAutoRaise(True)
        super().__init__(remove, parent)
        self.index = index
        self.view.setMinimumSize(PANEL_MIN_SIZE, PANEL_MIN_SIZE)
        self.caption.setStyleSheet("font-size: 9pt;")
        self.note.setStyleSheet("font-size: 9pt;")
        lines = self.caption.fontMetrics().lineSpacing()
        self.caption.setMinimumHeight(3 * lines)  # equal captions keep linked views aligned
        self.note.setMinimumHeight(3 * lines)
        remove.clicked.connect(lambda: session.remove_panel(self.index))


class ComparisonView(QWidget):
    """The comparison tab: panels in a grid above the evaluation plot.

    Parameters
    ----------
    session
        The session whose comparison is shown.
    """

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.panels: list[PanelWidget] = []
        self.hint = QLabel("No panels yet. Use the Compare menu or the toolbar to add the current "
                           "configuration, presets or other methods.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(2, 2, 2, 2)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.grid_host)
        self.shared_bar_view = pg.GraphicsLayoutWidget()
        self.shared_bar_view.setBackground("w")
        self.shared_bar_view.setFixedWidth(SHARED_BAR_WIDTH)
        self.shared_bar = relevance_colorbar()
        self.shared_bar_view.addItem(self.shared_bar)
        self.shared_bar_view.setToolTip("The colour scale shared by every panel")
        self.shared_bar_view.setVisible(False)
        panels_row = QWidget()
        row_layout = QHBoxLayout(panels_row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(scroll, 1)
        row_layout.addWidget(self.shared_bar_view)
        self.plot = EvaluationPlot()
        self.plot.setVisible(False)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(panels_row)
        self.splitter.addWidget(self.plot)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.hint)
        layout.addWidget(self.splitter, 1)
        session.comparison_changed.connect(self._rebuild)
        for signal in (session.panel_results_changed, session.display_changed,
                       session.scale_changed, session.display_image_changed,
                       session.evaluation_changed):
            signal.connect(self.redraw)
        self._rebuild()

    def _rebuild(self) -> None:
        for panel in self.panels:
            self.grid.removeWidget(panel)
            panel.deleteLater()
        self.panels = []
        specs = self.session.comparison.panels
        columns = max(1, grid_columns(len(specs)))
        for index, _ in enumerate(specs):
            panel = PanelWidget(index, self.session)
            row, column = divmod(index, columns)
            self.grid.addWidget(panel, row, column)
            if self.panels:
                panel.view.view_box.setXLink(self.panels[0].view.view_box)
                panel.view.view_box.setYLink(self.panels[0].view.view_box)
            self.panels.append(panel)
        self.hint.setVisible(not specs)
        self.redraw()

    def shared_bounds(self) -> tuple[float, float] | None:
        """Return one colour scale covering every computed panel, or None for per-panel scales."""
        if not self.session.comparison.shared_scale:
            return None
        display = self.session.display
        bounds = [heatmap_bounds(result.relevance[0], display.mode, display.clip_percentile)
                  for result in map(self.session.panel_result, self.session.comparison.panels)
                  if result is not None]
        if not bounds:
            return None
        return (min(low for low, _ in bounds), max(high for _, high in bounds))

    def redraw(self) -> None:
        """Draw every panel from cached relevance with the current display settings."""
        bounds = self.shared_bounds()
        evaluation = self.session.evaluation
        for index, (panel, spec) in enumerate(zip(self.panels, self.session.comparison.panels,
                                                  strict=True)):
            panel.view.show_colorbar = bounds is None
            self._draw_panel(panel, spec, bounds,
                             None if evaluation is None else evaluation.panels[index])
        show_scale(self.shared_bar, bounds, self.session.display)
        self.shared_bar_view.setVisible(bounds is not None)
        if evaluation is not None and not self.plot.isVisibleTo(self):
            total = max(sum(self.splitter.sizes()), 1)
            self.splitter.setSizes([total * 3 // 5, total * 2 // 5])  # panels stay in view
        self.plot.setVisible(evaluation is not None)
        if evaluation is not None:
            specs = self.session.comparison.panels
            self.plot.show_evaluation(evaluation, [spec.caption() for spec in specs],
                                      [spec.image for spec in specs])

    def _draw_panel(self, panel: PanelWidget, spec: PanelSpec, bounds, curves) -> None:
        session = self.session
        result = session.panel_result(spec)
        display = session.displays.get(spec.image)
        if result is None:
            panel.set_caption(f"<b>{spec.method.label()}</b><br>{spec.image.name}",
                              "computing...")
            panel.view.draw(display, None, session.display)
            return
        target = int(result.target[0])
        names = session.model.class_names if session.model is not None else ()
        class_name = names[target] if target < len(names) else str(target)
        note = conservation_note(result)
        if curves is not None:
            note += "<br>" + scores_note(curves)
        panel.set_caption(f"<b>{spec.method.label()}</b><br>{spec.image.name}, class {class_name}",
                          note, result.warnings)
        if display is None:
            display = np.zeros(result.relevance.shape[2:] + (3,), dtype=np.uint8)
        panel.view.draw(display, result.relevance[0], session.display, bounds)
