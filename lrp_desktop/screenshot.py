"""``--screenshot``: wait until every requested explanation is on screen, save the window, quit."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QApplication

from .app import Application
from .picture_thread import picture_thread
from .reporter import Level, Message

log = logging.getLogger(__name__)

POLL_MS = 100
#: Time given to the views to paint after the last result arrived.
SETTLE_MS = 400
EXIT_FAILED = 2
EXIT_TIMEOUT = 3


def everything_shown(app: Application) -> bool:
    """Return True when the main view and every comparison panel show their explanation, drawn."""
    session = app.session
    if session.model is None or app.host.busy or session.current_display is None:
        return False
    if picture_thread().busy:
        return False
    if not session.explanation_is_current or not session.coverage_is_current:
        return False
    return all(
        session.panel_result(panel) is not None and panel.image in session.displays
        for panel in session.comparison.panels
    )


class Screenshot(QObject):
    """Saves a grab of the main window once :func:`everything_shown`, then ends the event loop.

    The exit code is 0 on success, :data:`EXIT_FAILED` when an error is reported or the file
    cannot be written, and :data:`EXIT_TIMEOUT` when the explanations do not arrive in time.

    Parameters
    ----------
    app
        The running viewer.
    path
        Where to save the PNG.
    timeout_s
        How long to wait for every explanation.
    """

    def __init__(self, app: Application, path: Path, timeout_s: float) -> None:
        super().__init__(app.window)
        self.app = app
        self.path = Path(path)
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.exit_code: int | None = None
        #: What happened, in one line, for the command to print.
        self.outcome = ""
        self._settling = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        app.reporter.reported.connect(self._on_message)
        self._timer.start()

    def _on_message(self, message: Message) -> None:
        if message.level is Level.ERROR:
            self._finish(EXIT_FAILED, f"no screenshot: {message.full_text()}")

    def _poll(self) -> None:
        if self.exit_code is not None or self._settling:
            return
        if everything_shown(self.app):
            self._settling = True
            QTimer.singleShot(SETTLE_MS, self._save)
        elif time.monotonic() > self.deadline:
            self._finish(
                EXIT_TIMEOUT,
                f"no screenshot: the explanations were not shown within {self.timeout_s:g} s",
            )

    def _save(self) -> None:
        if self.exit_code is not None:
            return
        if not everything_shown(self.app):  # something changed while settling: wait again
            self._settling = False
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.app.window.grab().save(str(self.path), "PNG"):
            self._finish(0, f"saved {self.path}")
        else:
            self._finish(EXIT_FAILED, f"no screenshot: could not write {self.path}")

    def _finish(self, code: int, text: str) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        self.outcome = text
        self._timer.stop()
        # queued, so that an error reported before the event loop runs still ends it
        QTimer.singleShot(0, lambda: QApplication.instance().exit(code))
