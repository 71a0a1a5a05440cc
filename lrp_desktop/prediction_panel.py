"""The model's top-5 prediction and the choice of the explained class."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QFormLayout,
    QLabel,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from .session import Session

TOP_K = 5
#: The first entry of the class chooser; selecting it explains the top class.
TOP_CLASS_ENTRY = "Top class (automatic)"


class PredictionPanel(QWidget):
    """Shows the top-5 classes with probabilities and lets the user pick the explained class.

    The class chooser is an editable combo box whose completer matches any part of a class name,
    so typing "tab" finds "tabby cat" among a thousand classes.

    Parameters
    ----------
    session
        The session observed and edited.
    """

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        self.headline = QLabel("No prediction yet")
        self.headline.setWordWrap(True)
        layout.addWidget(self.headline)
        self.rows = QFormLayout()
        self.bars: list[QProgressBar] = []
        self.names: list[QLabel] = []
        for _ in range(TOP_K):
            name = QLabel()
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setMaximumHeight(16)
            self.rows.addRow(name, bar)
            self.names.append(name)
            self.bars.append(bar)
        layout.addLayout(self.rows)
        layout.addWidget(QLabel("Explained class:"))
        self.class_box = QComboBox()
        self.class_box.setEditable(True)
        self.class_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.class_box.setToolTip("The class whose evidence the heatmap shows; type to search")
        completer = QCompleter(self.class_box.model(), self.class_box)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.class_box.setCompleter(completer)
        self.class_box.activated.connect(self._on_activated)
        layout.addWidget(self.class_box)
        layout.addStretch(1)
        session.model_changed.connect(self._fill_classes)
        session.target_changed.connect(self._show_target)
        session.explanation_changed.connect(self._show_prediction)
        self._fill_classes()
        self._show_prediction()

    def _fill_classes(self) -> None:
        # one call for a thousand classes; an entry's position tells its class (see target_at)
        entries = [TOP_CLASS_ENTRY]
        if self.session.model is not None:
            names = self.session.model.class_names
            entries += [f"{index}: {name}" for index, name in enumerate(names)]
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItems(entries)
        self.class_box.blockSignals(False)
        self._show_target()

    @staticmethod
    def target_at(position: int) -> int | None:
        """Return the class of the chooser's entry at ``position`` (None: the top class)."""
        return None if position <= 0 else position - 1

    def _show_target(self) -> None:
        target = self.session.target
        self.class_box.setCurrentIndex(0 if target is None else target + 1)

    def _on_activated(self, position: int) -> None:
        self.session.set_target(self.target_at(position))

    def _show_prediction(self) -> None:
        # the bars repaint at once on every change; drawn once, after all of them changed
        self.setUpdatesEnabled(False)
        try:
            self._write_prediction()
        finally:
            self.setUpdatesEnabled(True)

    def _write_prediction(self) -> None:
        explanation = self.session.explanation
        model = self.session.model
        if explanation is None or model is None:
            self.headline.setText("No prediction yet" if model is None else "Computing...")
            for name, bar in zip(self.names, self.bars, strict=True):
                name.setText("")
                bar.setValue(0)
                bar.setFormat("")
            return
        probabilities = np.asarray(explanation.probabilities[0], dtype=np.float64)
        order = np.argsort(probabilities)[::-1][:TOP_K]
        target = int(explanation.target[0])
        logit = float(explanation.explained_output[0])
        self.headline.setText(
            f"Explaining <b>{model.class_names[target]}</b> "
            f"(p = {probabilities[target]:.3f}, logit {logit:.3g})"
        )
        for row, (name, bar) in enumerate(zip(self.names, self.bars, strict=True)):
            if row >= len(order):
                name.setText("")
                bar.setValue(0)
                bar.setFormat("")
                continue
            index = int(order[row])
            name.setText(model.class_names[index])
            bar.setValue(round(probabilities[index] * 1000))
            bar.setFormat(f"{probabilities[index] * 100:.1f} %")
