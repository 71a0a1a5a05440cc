"""The in-place editor of the rule column: a combo box of every rule with its description."""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from lrp_desktop_core.rulemap import RULE_CHOICES

from .rule_tree import RuleTreeModel

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
    """Edits a rule cell with :func:`rule_combo`; the choice is committed as soon as it is made."""

    def createEditor(
        self,
        parent: QWidget,
        option: QStyleOptionViewItem,
        index: Index,
    ) -> QWidget:
        """Return a rule combo box; rules that do not fit the row's layers are disabled."""
        combo = rule_combo(parent)
        model = index.model()
        if isinstance(model, RuleTreeModel):
            disable_unfit(combo, [layer.module for layer in model.node(index).layers()])
        combo.activated.connect(lambda _position: self._commit(combo))
        return combo

    def _commit(self, combo: QComboBox) -> None:
        self.commitData.emit(combo)
        self.closeEditor.emit(combo)

    def setEditorData(self, editor: QWidget, index: Index) -> None:
        """Select the cell's rule in the combo box."""
        position = editor.findData(index.data(Qt.ItemDataRole.EditRole))
        if position >= 0:
            editor.setCurrentIndex(position)

    def setModelData(
        self,
        editor: QWidget,
        model: QAbstractItemModel,
        index: Index,
    ) -> None:
        """Write the chosen rule to the model (unless it is the one already there)."""
        rule = editor.currentData()
        if rule != index.data(Qt.ItemDataRole.EditRole):
            model.setData(index, rule, Qt.ItemDataRole.EditRole)
