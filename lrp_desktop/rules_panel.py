"""The rules dock: preset, canonizer, what suits the model, the layer tree, and a rule editor."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.names import CANONIZER_SETS, PRESETS
from lrp_desktop_core.rulemap import RULE_CHOICES, RuleChoice

from .choices import catalogue_combo
from .native import native_widget
from .reporter import Reporter
from .rule_delegate import RuleDelegate, rule_combo
from .rule_editing import UNFIT_LAYERS, apply_rule, base_preset, change_canonizer, choice_for
from .rule_tree import RULE, RULE_PARAMS, RuleTreeModel
from .session import Session
from .support import describe

#: Trees with at most this many rows open fully; bigger ones show their first level.
EXPAND_ALL_ROWS = 60
#: The cause of the "No layers selected" error (see ``Reporter.resolve``).
SELECTION = "no selection"
CANONIZER_TIP = "How the model is rewritten before rules are attached"


def parse_value(text: str) -> Any:
    """Read a parameter value: a number, or a ``[a, b, c]`` list of numbers."""
    text = text.strip()
    try:
        return json.loads(text) if text.startswith("[") else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number or a list of numbers") from None


class RuleEditor(QGroupBox):
    """A rule with editable parameters, applied to the layers selected in the tree.

    It shows the rule the selected layers have now: it follows the selection and every change
    of the rule map (an edit in the tree, an undo), so "Apply" never puts back an older rule.
    """

    def __init__(self, apply_action: QAction, parent: QWidget | None = None) -> None:
        super().__init__("Rule for the selected layers", parent)
        self.rule_box = rule_combo()
        self.rule_box.setToolTip("The rule to give the selected layers")
        self.rule_box.currentIndexChanged.connect(lambda _: self._show_params())
        self.params_form = QFormLayout()
        self.editors: dict[str, QLineEdit] = {}
        apply_button = QPushButton()
        apply_button.setText(apply_action.text().replace("&", ""))
        apply_button.setToolTip(apply_action.toolTip())
        apply_button.clicked.connect(apply_action.trigger)
        self.selection_label = QLabel("Nothing selected")
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Rule:"))
        row.addWidget(self.rule_box, 1)
        layout.addLayout(row)
        layout.addLayout(self.params_form)
        bottom = QHBoxLayout()
        bottom.addWidget(self.selection_label, 1)
        bottom.addWidget(apply_button)
        layout.addLayout(bottom)
        self._values: dict[str, Any] = {}
        self._show_params()

    def show_choice(self, choice: RuleChoice) -> None:
        """Show ``choice``'s rule and parameter values."""
        self._values = choice.params
        self.rule_box.setCurrentIndex(self.rule_box.findData(choice.rule))
        self._show_params()

    def _show_params(self) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.editors = {}
        rule = self.rule_box.currentData()
        for param in RULE_CHOICES[rule].params:
            value = self._values.get(param.name, param.default)
            edit = QLineEdit("" if value is None else _shown(value))
            edit.setToolTip(param.description)
            edit.setPlaceholderText("needed" if param.default is None else f"{param.default:g}")
            self.params_form.addRow(f"{param.name}:", edit)
            self.editors[param.name] = edit

    def rule(self) -> str:
        """Return the rule chosen."""
        return self.rule_box.currentData()

    def params(self) -> dict[str, Any]:
        """Return the parameters typed in (empty fields take the defaults)."""
        return {
            name: parse_value(edit.text())
            for name, edit in self.editors.items()
            if edit.text().strip()
        }


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(f"{item:g}" for item in value) + "]"
    return f"{value:g}"


class RulesPanel(QWidget):
    """Preset and canonizer choosers above the layer tree, the rule editor below it.

    Parameters
    ----------
    session
        The session whose rule map is edited.
    reporter
        Where rejected edits are explained.
    apply_action
        The "apply rule to selected" command (shared with the menu and its shortcut).
    choose_preset
        Called with the name of the preset the user picks (it fills every layer).
    """

    def __init__(
        self,
        session: Session,
        reporter: Reporter,
        apply_action: QAction,
        choose_preset: Callable[[str], object],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.reporter = reporter
        self.preset_box = catalogue_combo(PRESETS.values())
        self.preset_box.setToolTip("Fill every layer with a preset composite's rules")
        self.preset_box.activated.connect(
            lambda position: choose_preset(self.preset_box.itemData(position))
        )
        self.canonizer_box = catalogue_combo(CANONIZER_SETS.values())
        self.canonizer_box.setToolTip(CANONIZER_TIP)
        self.recommendation = QLabel()
        self.recommendation.setWordWrap(True)
        self.recommendation.setStyleSheet("font-size: 9pt;")
        self.canonizer_box.activated.connect(
            lambda position: change_canonizer(session, self.canonizer_box.itemData(position))
        )
        self.model = RuleTreeModel(session, reporter, self)
        self.tree = native_widget(QTreeView, self)
        self.tree.setModel(self.model.items)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.SelectedClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.tree.setAlternatingRowColors(True)
        # one line per row: measuring a single row spares measuring every row each time the
        # rules change
        self.tree.setUniformRowHeights(True)
        delegate = RuleDelegate(self.model, self.tree)
        self.tree.setItemDelegateForColumn(RULE, delegate)
        self.tree.setItemDelegateForColumn(RULE_PARAMS, delegate)
        # sized once per model: sizing to contents on every edit would re-read the whole tree
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.tree.header().setStretchLastSection(True)
        self.editor = RuleEditor(apply_action)
        apply_action.triggered.connect(self.apply_to_selected)
        self.tree.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.model.rebuilt.connect(self._on_reset)
        form = QFormLayout()
        form.addRow("Preset:", self.preset_box)
        form.addRow("Canonizer:", self.canonizer_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.recommendation)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.editor)
        session.rulemap_changed.connect(self._show_rulemap)
        session.rulemap_changed.connect(self._show_selected_rule)
        session.model_changed.connect(self._show_recommendation)
        self._on_reset()
        self._show_recommendation()

    def _show_recommendation(self) -> None:
        """Say what suits the model (from its structure) and why, the details as tooltips."""
        model = self.session.model
        details = "" if model is None else describe(model.recommendation)
        self.recommendation.setText(
            "" if model is None else f"Suits this model: {model.recommendation.summary()}"
        )
        self.recommendation.setToolTip(details)
        self.canonizer_box.setToolTip(f"{CANONIZER_TIP}\n\n{details}" if details else CANONIZER_TIP)

    def _on_reset(self) -> None:
        if len(self.model.nodes) <= EXPAND_ALL_ROWS:
            self.tree.expandAll()
        else:
            self.tree.expandToDepth(0)
        for column in range(self.model.items.columnCount()):
            self.tree.resizeColumnToContents(column)
        self._show_rulemap()

    def _show_rulemap(self) -> None:
        rulemap = self.session.rulemap
        enabled = rulemap is not None and self.session.model is not None
        for widget in (self.preset_box, self.canonizer_box, self.editor):
            widget.setEnabled(enabled)
        if not enabled:
            return
        preset = base_preset(rulemap, self.session.model)
        self.preset_box.setCurrentIndex(max(self.preset_box.findData(preset), 0))
        self.preset_box.setToolTip(f"{rulemap.preset or preset}: {PRESETS.description(preset)}")
        self.canonizer_box.setCurrentIndex(self.canonizer_box.findData(rulemap.canonizer))

    def selected_layers(self) -> list[str]:
        """Return the layers selected in the tree (a selected group stands for its layers)."""
        names: list[str] = []
        for index in self.tree.selectionModel().selectedRows():
            for layer in self.model.node(index).layers():
                if layer.name not in names:
                    names.append(layer.name)
        return names

    def _on_selection_changed(self) -> None:
        """Show the new selection's rule; warnings about the last selection no longer apply."""
        if self.selected_layers():
            self.reporter.resolve(SELECTION)
        self.reporter.resolve(UNFIT_LAYERS)
        self._show_selected_rule()

    def _show_selected_rule(self) -> None:
        """Show the rule of the selected layers in the editor (kept as it is when they differ)."""
        names = self.selected_layers()
        rulemap = self.session.rulemap
        choices = set() if rulemap is None else {rulemap.get(name) for name in names}
        same = len(choices) == 1 and None not in choices
        text = f"{len(names)} layer(s) selected" if names else "Nothing selected"
        self.editor.selection_label.setText(text if same or not names else f"{text}, mixed rules")
        if same:
            self.editor.show_choice(choices.pop())

    def apply_to_selected(self) -> None:
        """Give the selected layers the rule and parameters of the rule editor."""
        names = self.selected_layers()
        if not names:
            self.reporter.error(
                "No layers selected",
                "Select layers in the tree first.",
                "Ctrl+click or Shift+click selects several.",
                cause=SELECTION,
            )
            return
        try:
            base = choice_for(self.session, self.editor.rule())
            choice = RuleChoice(base.rule, {**base.params, **self.editor.params()})
        except ValueError as error:
            self.reporter.error("The rule was not applied", str(error))
            return
        apply_rule(self.session, names, choice, self.reporter)
