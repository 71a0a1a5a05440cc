"""Combo boxes and menus filled from the catalogue: titles shown, descriptions as tooltips."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QMenu, QWidget

from lrp_desktop_core.names import Entry


def catalogue_combo(entries: Iterable[Entry], parent: QWidget | None = None) -> QComboBox:
    """Return a combo box of ``entries``: each shown by its title, its name as the item's data.

    Parameters
    ----------
    entries
        Catalogue entries, e.g. ``names.PRESETS.values()`` or a whole catalogue's values.
    parent
        The combo box's parent widget.
    """
    combo = QComboBox(parent)
    for entry in entries:
        combo.addItem(entry.title, entry.name)
        combo.setItemData(combo.count() - 1, entry.description, Qt.ItemDataRole.ToolTipRole)
    return combo


def add_catalogue_actions(
    menu: QMenu, entries: Iterable[Entry], triggered: Callable[[str], object]
) -> None:
    """Add an action per entry to ``menu``, titled and with its tooltip.

    Triggering an action calls ``triggered`` with the entry's name.
    """
    menu.setToolTipsVisible(True)
    for entry in entries:
        action = menu.addAction(entry.title)
        action.setToolTip(entry.description)
        action.triggered.connect(lambda _=False, name=entry.name: triggered(name))
