"""Widgets and item models made by Qt itself, for views that repaint while LRP runs.

A widget constructed from Python is an instance of a binding subclass that asks Python, on every
call of a C++ virtual method, whether Python overrides it; each such question takes the
interpreter lock. While the worker thread runs LRP, which holds that lock between tensor
operations, painting a tree of a hundred cells waited for the lock hundreds of times and froze
the window for over 100 ms. A widget that ``QUiLoader`` creates is a plain C++ object: its
virtual calls stay in C++. The same holds for an item model and its items. Such objects are used
from Python as usual; they only cannot be subclassed.
"""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import QObject
from PySide6.QtGui import QStandardItemModel
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QComboBox, QWidget

WidgetT = TypeVar("WidgetT", bound=QWidget)


def native_widget(widget_class: type[WidgetT], parent: QWidget) -> WidgetT:
    """Return a new ``widget_class`` (a Qt widget class) created by Qt, owned by ``parent``."""
    widget = QUiLoader().createWidget(widget_class.__name__, parent)
    if not isinstance(widget, widget_class):
        raise TypeError(f"Qt cannot create a {widget_class.__name__} by name")
    return widget


def native_item_model(parent: QObject) -> QStandardItemModel:
    """Return an empty ``QStandardItemModel`` created by Qt, owned by ``parent``.

    Qt has no factory for models; a combo box makes its own item model in C++, which is taken
    from it here. Fill it through the model's own methods (``insertRows``, ``setData``...), never
    with ``QStandardItem`` objects made in Python, so that its items are C++ objects too.
    """
    combo = QComboBox()
    model = combo.model()
    model.setParent(parent)
    # reparented first: a combo box deletes its old model on setModel only while it owns it
    combo.setModel(QStandardItemModel(combo))
    return model
