"""The method panel: the main view's attribution method, its settings, and the device.

The methods, their settings and every tooltip come from the catalogue (``names.METHODS``).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.names import METHODS

from .choices import catalogue_combo
from .devices import available_devices
from .session import Session


def param_editor(value: Any) -> QAbstractSpinBox:
    """Return a spin box suited to a parameter's default ``value`` (int or float)."""
    if isinstance(value, int):
        editor = QSpinBox()
        editor.setRange(0, 100_000)
    else:
        editor = QDoubleSpinBox()
        editor.setDecimals(3)
        editor.setRange(0.0, 100.0)
        editor.setSingleStep(0.05)
    editor.setValue(value)
    return editor


class MethodPanel(QWidget):
    """A method chooser with the settings of the chosen method, and a device chooser.

    Parameters
    ----------
    session
        The session observed and edited.
    on_device
        Called with a device name when the user picks one (the controller moves the model).
    """

    def __init__(self, session: Session, on_device, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.method_box = catalogue_combo(METHODS.values())
        self.method_box.setToolTip("The attribution method of the main view")
        self.method_box.currentIndexChanged.connect(
            lambda index: session.set_method_kind(self.method_box.itemData(index))
        )
        self.device_box = QComboBox()
        self.device_box.setToolTip("Where the model computes")
        for device in available_devices():
            self.device_box.addItem(device.label, device.name)
        self.device_box.activated.connect(lambda index: on_device(self.device_box.itemData(index)))
        self.form = QFormLayout()
        self.form.addRow("Method:", self.method_box)
        self.params_host = QWidget()
        self.params_form = QFormLayout(self.params_host)
        self.params_form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow(self.params_host)
        self.form.addRow("Device:", self.device_box)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        self.editors: dict[str, QAbstractSpinBox] = {}
        self._shown_kind: str | None = None
        session.method_changed.connect(self._show_method)
        session.device_changed.connect(self._show_device)
        self._show_method()
        self._show_device()

    def _show_method(self) -> None:
        kind = self.session.method_kind
        self.method_box.blockSignals(True)
        self.method_box.setCurrentIndex(self.method_box.findData(kind))
        self.method_box.blockSignals(False)
        if kind == self._shown_kind:
            return  # only the settings changed, and the editors already show them
        self._shown_kind = kind
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.editors = {}
        params = METHODS[kind].params
        chosen = self.session.method_params.get(kind, {})
        for param in params:
            editor = param_editor(chosen.get(param.name, param.default))
            editor.setToolTip(param.description)
            editor.setKeyboardTracking(False)
            editor.valueChanged.connect(lambda _value, kind=kind: self._params_edited(kind))
            self.params_form.addRow(param.name.replace("_", " ") + ":", editor)
            self.editors[param.name] = editor
        self.params_host.setVisible(bool(params))

    def _params_edited(self, kind: str) -> None:
        self.session.set_method_params(
            kind, {name: editor.value() for name, editor in self.editors.items()}
        )

    def _show_device(self) -> None:
        position = self.device_box.findData(self.session.device)
        if position >= 0:
            self.device_box.setCurrentIndex(position)
