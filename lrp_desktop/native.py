"""Widgets made by Qt itself rather than by Python, for views that repaint while LRP runs.

A widget constructed from Python is an instance of a binding subclass that asks Python, on every
call of a C++ virtual method, whether Python overrides it; each such question takes the
interpreter lock. While the worker thread runs LRP, which holds that lock between tensor
operations, painting a tree of a hundred cells waited for the lock hundreds of times and froze
the window for over 100 ms. A widget that ``QUiLoader`` creates is a plain C++ object: its
virtual calls stay in C++. Such a widget can be used from Python as usual; it only cannot be
subclassed.
"""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QWidget

WidgetT = TypeVar("WidgetT", bound=QWidget)


def native_widget(widget_class: type[WidgetT], parent: QWidget) -> WidgetT:
    """Return a new ``widget_class`` (a Qt widget class) created by Qt, owned by ``parent``."""
    widget = QUiLoader().createWidget(widget_class.__name__, parent)
    if not isinstance(widget, widget_class):
        raise TypeError(f"Qt cannot create a {widget_class.__name__} by name")
    return widget
