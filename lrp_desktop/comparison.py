"""Side-by-side comparison: one panel per configuration or image, views linked.

Every panel shows one explanation (a preset, the current per-layer rules, or another attribution
method, on one image) with a caption saying what it is and, below, how much of the explained
output the relevance conserves (for the methods where that means something). Zoom and pan are
linked across panels. The colour scale is per panel, or shared by the panels of one kind of method
(each kind with its own colour bar: an Occlusion score and an LRP relevance have different units).
After "Evaluate", the perturbation curves of all panels appear in one plot.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
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

from lrp_desktop_core.channel_method import ChannelMethod
from lrp_desktop_core.explain import relevance_conservation
from lrp_desktop_core.image import heatmap_bounds
from lrp_desktop_core.names import METHODS

from .evaluation_plot import EvaluationPlot, EvaluationSettings
from .heatmap_view import CaptionedView, relevance_colorbar, show_scale
from .session import PanelSpec, Session

PANEL_MIN_SIZE = 200
SHARED_BAR_WIDTH = 80


def grid_columns(count: int) -> int:
    """Return how many panels go in one row: all of up to three, else a near-square grid."""
    return count if count <= 3 else math.ceil(math.sqrt(count))


def conservation_note(explanation) -> str:
    """Return "sum R = a of logit b (c %)" for a one-image explanation, or why none is shown.

    The share is shown for the methods the catalogue marks as conserving
    (``names.METHODS[kind].conserving``).
    """
    method = explanation.method
    if method is not None and method.class_agnostic:
        return "class-agnostic: the same map for every class, no share of the logit"
    if method is not None and not METHODS[method.kind].conserving:
        return f"{METHODS.title(method.kind)} scores are not shares of the logit"
    total = float(explanation.relevance_sum[0])
    output = float(explanation.explained_output[0])
    share = float(relevance_conservation(explanation)[0])
    percent = "n/a" if math.isnan(share) else f"{share * 100:.0f} %"
    if isinstance(method, ChannelMethod):  # one channel's part, not the whole conserved sum
        return (
            f"sum R = {total:.3g} of logit {output:.3g}: channel {method.channel} "
            f"carries {percent} of it"
        )
    note = f"sum R = {total:.3g} of logit {output:.3g} ({percent} conserved)"
    if _uses_attnlrp(explanation.method):
        note += "; AttnLRP's attention softmax does not conserve relevance, by design"
    return note


def conservation_tip(explanation) -> str:
    """Return why the conserved share of a method is what it is (empty where none is shown)."""
    method = explanation.method
    if method is None or method.class_agnostic:
        return ""
    if isinstance(method, ChannelMethod):
        return (
            f"The relevance that flows through channel {method.channel} of {method.layer} only; "
            "the heatmaps of all the layer's channels add up to the plain heatmap."
        )
    return METHODS[method.kind].conservation


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
    """One comparison panel: a captioned heatmap view with a remove button.

    A retry button shows while its explanation is missing because it was cancelled or failed.
    """

    def __init__(self, index: int, session: Session, parent: QWidget | None = None) -> None:
        remove = QToolButton()
        remove.setText("x")
        remove.setToolTip("Remove this panel")
        remove.setAutoRaise(True)
        super().__init__(remove, parent)
        self.retry = QToolButton()
        self.retry.setText("Retry")
        self.retry.setToolTip("Compute this panel again")
        self.retry.setVisible(False)
        self.layout().addWidget(self.retry, 0, Qt.AlignmentFlag.AlignHCenter)
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

    Signals
    -------
    retry_requested(int)
        The index of a cancelled or failed panel whose Retry button was pressed.
    """

    retry_requested = Signal(int)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.panels: list[PanelWidget] = []
        self.hint = QLabel(
            "No panels yet. Use the Compare menu or the toolbar to add the current "
            "configuration, presets or other methods."
        )
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(2, 2, 2, 2)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(self.grid_host)
        self.shared_bar_view = pg.GraphicsLayoutWidget()
        self.shared_bar_view.setBackground("w")
        self.shared_bar_view.setToolTip(
            "The colour scale of each kind of method, shared by its panels"
        )
        self.shared_bar_view.setVisible(False)
        self.shared_bars: dict[str, pg.ColorBarItem] = {}
        panels_row = QWidget()
        row_layout = QHBoxLayout(panels_row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.scroll, 1)
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
        self.evaluation_settings = EvaluationSettings()
        layout.addWidget(self.evaluation_settings)
        layout.addWidget(self.splitter, 1)
        session.comparison_changed.connect(self._rebuild)
        for signal in (
            session.panel_results_changed,
            session.display_changed,
            session.scale_changed,
            session.display_image_changed,
            session.evaluation_changed,
        ):
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
            panel.view.scroll_area = self.scroll  # the wheel scrolls the panels, Ctrl+wheel zooms
            panel.retry.clicked.connect(lambda _=False, i=index: self.retry_requested.emit(i))
            row, column = divmod(index, columns)
            self.grid.addWidget(panel, row, column)
            if self.panels:
                panel.view.view_box.setXLink(self.panels[0].view.view_box)
                panel.view.view_box.setYLink(self.panels[0].view.view_box)
            self.panels.append(panel)
        self.hint.setVisible(not specs)
        self.redraw()

    def shared_scales(self) -> dict[str, tuple[float, float]]:
        """Return one colour scale per kind of method, covering its computed panels.

        None where every panel has its own scale.
        """
        if not self.session.comparison.shared_scale:
            return {}
        display = self.session.display
        scales: dict[str, tuple[float, float]] = {}
        for spec in self.session.comparison.panels:
            result = self.session.panel_result(spec)
            if result is None:
                continue
            low, high = heatmap_bounds(result.relevance[0], display.mode, display.clip_percentile)
            kind = spec.method.kind
            if kind in scales:
                low, high = min(low, scales[kind][0]), max(high, scales[kind][1])
            scales[kind] = (low, high)
        return scales

    def panel_bounds(self) -> list[tuple[float, float] | None]:
        """Return each panel's colour scale: its kind's shared one, or None for its own."""
        scales = self.shared_scales()
        return [scales.get(spec.method.kind) for spec in self.session.comparison.panels]

    def redraw(self) -> None:
        """Draw every panel from cached relevance with the current display settings."""
        scales = self.shared_scales()
        evaluation = self.session.evaluation
        for index, (panel, spec) in enumerate(
            zip(self.panels, self.session.comparison.panels, strict=True)
        ):
            bounds = scales.get(spec.method.kind)
            panel.view.show_colorbar = bounds is None
            self._draw_panel(
                panel, spec, bounds, None if evaluation is None else evaluation.panels[index]
            )
        self._show_shared_bars(scales)
        if evaluation is not None and not self.plot.isVisibleTo(self):
            total = max(sum(self.splitter.sizes()), 1)
            self.splitter.setSizes([total * 3 // 5, total * 2 // 5])  # panels stay in view
        self.plot.setVisible(evaluation is not None)
        if evaluation is not None:
            specs = self.session.comparison.panels
            self.plot.show_evaluation(
                evaluation, [spec.method.label() for spec in specs], [spec.image for spec in specs]
            )

    def _show_shared_bars(self, scales: dict[str, tuple[float, float]]) -> None:
        """Show one colour bar per kind of method with a shared scale, labelled with the kind."""
        if list(scales) != list(self.shared_bars):
            self.shared_bar_view.clear()
            self.shared_bars = {}
            for column, kind in enumerate(scales):
                bar = relevance_colorbar()
                bar.axis.setLabel(METHODS.title(kind), color="k")
                self.shared_bar_view.addItem(bar, row=0, col=column)
                self.shared_bars[kind] = bar
        for kind, bar in self.shared_bars.items():
            show_scale(bar, scales[kind], self.session.display)
        self.shared_bar_view.setFixedWidth(SHARED_BAR_WIDTH * max(1, len(scales)))
        self.shared_bar_view.setVisible(bool(scales))

    def _draw_panel(self, panel: PanelWidget, spec: PanelSpec, bounds, curves) -> None:
        session = self.session
        result = session.panel_result(spec)
        display = session.displays.get(spec.image)
        state = session.panel_state(spec) if result is None else None
        panel.retry.setVisible(state is not None)
        if result is None:
            note = "computing..." if state is None else f"{state}: Retry computes it (F5: all)"
            panel.set_caption(f"<b>{spec.method.label()}</b><br>{spec.image.name}", note)
            panel.view.draw(display, None, session.display)
            return
        target = int(result.target[0])
        names = session.model.class_names if session.model is not None else ()
        class_name = names[target] if target < len(names) else str(target)
        note = conservation_note(result)
        if curves is not None:
            note += "<br>" + scores_note(curves)
        panel.set_caption(
            f"<b>{spec.method.label()}</b><br>{spec.image.name}, class {class_name}",
            note,
            result.warnings,
            conservation_tip(result),
        )
        if display is None:
            display = np.zeros((*result.relevance.shape[2:], 3), dtype=np.uint8)
        panel.view.draw(display, result.relevance[0], session.display, bounds)
