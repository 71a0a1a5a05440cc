"""A bar above the views showing the newest message (never a blocking dialog).

A message with details (every problem a warning counts) gets a "Details" button that lists them in
a window of their own. A problem whose cause is gone (the run that failed has now worked) is
withdrawn: the bar hides if it still shows it.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .reporter import Level, Message

STYLES = {
    Level.INFO: "background: #e6f0fa; border: 1px solid #9cc0e6;",
    Level.WARNING: "background: #fff5d6; border: 1px solid #e6c35c;",
    Level.ERROR: "background: #fde2e1; border: 1px solid #e08a85;",
}
#: Information disappears by itself after this many milliseconds; problems stay until closed.
INFO_TIMEOUT_MS = 6000


class DetailsDialog(QDialog):
    """Lists a message's details, one per paragraph, in text that can be selected and copied."""

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(message.title)
        self.text = QPlainTextEdit("\n\n".join(message.details))
        self.text.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"{len(message.details)} item(s):"))
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        self.resize(640, 360)


class MessageBar(QFrame):
    """One message with its hint, a close button and, when it has details, a "Details" button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(self.label.textFormat().PlainText)
        self.details_button = QToolButton()
        self.details_button.setText("Details...")
        self.details_button.setToolTip("List every item of this message")
        self.details_button.clicked.connect(self.show_details)
        close = QToolButton()
        close.setText("x")
        close.setToolTip("Close this message")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.details_button)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.message: Message | None = None
        self.details_dialog: DetailsDialog | None = None
        self.hide()

    def show_message(self, message: Message) -> None:
        """Show ``message``; information hides itself after a few seconds."""
        self.message = message
        self.setStyleSheet(f"MessageBar {{ {STYLES[message.level]} }}")
        self.label.setText(message.full_text())
        self.details_button.setVisible(bool(message.details))
        self.show()
        if message.level is Level.INFO:
            self._timer.start(INFO_TIMEOUT_MS)
        else:
            self._timer.stop()

    def withdraw(self, message: Message) -> None:
        """Hide the bar if it shows ``message``, whose cause is gone (a later one stays)."""
        if self.message is message:
            self.hide()

    def show_details(self) -> None:
        """Open a window listing the shown message's details (it does not block the viewer)."""
        if self.message is None or not self.message.details:
            return
        if self.details_dialog is not None:
            self.details_dialog.deleteLater()
        self.details_dialog = DetailsDialog(self.message, self)
        self.details_dialog.show()
