"""A bar above the views showing the newest message (never a blocking dialog)."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

from .reporter import Level, Message

STYLES = {
    Level.INFO: "background: #e6f0fa; border: 1px solid #9cc0e6;",
    Level.WARNING: "background: #fff5d6; border: 1px solid #e6c35c;",
    Level.ERROR: "background: #fde2e1; border: 1px solid #e08a85;",
}
#: Information disappears by itself after this many milliseconds; problems stay until closed.
INFO_TIMEOUT_MS = 6000


class MessageBar(QFrame):
    """Shows one message with its hint and a close button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(self.label.textFormat().PlainText)
        close = QToolButton()
        close.setText("x")
        close.setToolTip("Close this message")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.message: Message | None = None
        self.hide()

    def show_message(self, message: Message) -> None:
        """Show ``message``; information hides itself after a few seconds."""
        self.message = message
        self.setStyleSheet(f"MessageBar {{ {STYLES[message.level]} }}")
        self.label.setText(message.full_text())
        self.show()
        if message.level is Level.INFO:
            self._timer.start(INFO_TIMEOUT_MS)
        else:
            self._timer.stop()
