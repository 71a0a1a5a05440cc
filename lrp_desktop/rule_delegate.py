"""The in-place editor of the rule column: a combo box of every rule with its description."""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from lrp_desktop_core.rulemap import RULE_CHOICES

from .rule_tree import RULE, RuleTreeModel

Index = QModelIndex | QPersistentModelIndex


def rule_combo(parent: QWidget | None = None) -> QComboBox:
    """Return a combo box listing every rule, each with its plain-language tooltip."""
    combo = QComboBox(parent)
    for name, spec in RULE_CHOICES.items():
        combo.addItem(name, name)
        combo.setItemData(combo.count() - 1, spec.description, Qt.ItemDataRole.ToolTipRole)
    return combo


def disable_unfit(combo: QComboBox, modules: list) -> None:
    """Grey out the rules that cannot handle some of ``modules``."""
    items = combo.model()
    if not isinstance(items, QStandardItemModel):
        return
    for row in range(combo.count()):
        spec = RULE_CHOICES[combo.itemData(row)]
        fits = all(spec.handles(module) for module in modules)
        items.item(row).setEnabled(fits)
        if not fits:
            items.item(row).setToolTip(
                f"{spec.description}\n\nNot available: needs {spec.accepts_text}."
            )


class RuleDelegate(QStyledItemDelegate):
    """Edits the rule and parameter cells of a :class:`RuleTreeModel`'s items.

    A rule is chosen with :func:`rule_combo` and committed as soon as it is chosen; parameters
    are typed as text. Either edit goes to :meth:`RuleTreeModel.edit`, which turns it into a step
    of the rule map (or refuses it with a message); the cells then show the rule map.

    Parameters
    ----------
    rules
        The tree whose items the view shows.
    parent
        The view.
    """

    def __init__(self, rules: RuleTreeModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rules = rules

    def createEditor(
        self,
        parent: QWidget,
        option: QStyleOptionViewItem,
        index: Index,
    ) -> QWidget:
        """Return a rule combo box (rules that do not fit the row's layers disabled) or a line."""
        if index.column() != RULE:
            return super().createEditor(parent, option, index)
        combo = rule_combo(parent)
        disable_unfit(combo, [layer.module for layer in self.rules.node(index).layers()])
        combo.activated.connect(lambda _position: self._commit(combo))
        return combo

    def _commit(self, combo: QComboBox) -> None:
        self.commitData.emit(combo)
        self.closeEditor.emit(combo)

    def setEditorData(self, editor: QWidget, index: Index) -> None:
        """Show the cell's rule (selected in the combo box) or parameters."""
        if index.column() != RULE:
            super().setEditorData(editor, index)
            return
        position = editor.findData(index.data(Qt.ItemDataRole.EditRole))
        if position >= 0:
            editor.setCurrentIndex(position)

    def setModelData(
        self,
        editor: QWidget,
        model: QAbstractItemModel,
        index: Index,
    ) -> None:
        """Hand the edit to the rule tree (unless it leaves the cell as it is)."""
        value = editor.currentData() if index.column() == RULE else editor.text()
        if value != index.data(Qt.ItemDataRole.EditRole):
            self.rules.edit(index, value)
