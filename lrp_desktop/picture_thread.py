"""One background thread that draws pictures, so that numpy work stays off the GUI thread.

Turning relevance into a picture (its scale's percentile, colours, blending) is a series of numpy
calls on whole pictures. Each call releases the interpreter lock, and while a worker thread runs
LRP or checks rules the GUI thread then waits to take the lock back, once per call: drawn on the
GUI thread, one heatmap froze the window for up to 40 ms. Drawn here, those waits hold up this
thread instead, and the GUI thread only shows the finished picture.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot


class _Maker(QObject):
    """Lives on the picture thread and runs the jobs handed to it."""

    made = Signal(object, object)

    @Slot(object, object)
    def make(self, job: Callable[[], Any], deliver: Callable[[Future], None]) -> None:
        outcome: Future = Future()
        try:
            outcome.set_result(job())
        except Exception as error:  # handed to the GUI thread, which raises it
            outcome.set_exception(error)
        self.made.emit(deliver, outcome)


class PictureThread(QObject):
    """Runs drawing jobs one after another on its thread; answers arrive on the GUI thread.

    Create it on the GUI thread. Each job's outcome, as a finished :class:`~concurrent.futures.
    Future`, is handed to its ``deliver`` callback by a queued signal, in the order the jobs were
    submitted; ``future.result()`` there returns the job's result or raises its exception on the
    GUI thread.
    """

    _asked = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unanswered = 0
        self._thread = QThread()
        self._thread.setObjectName("lrp-desktop pictures")
        self._maker = _Maker()
        self._maker.moveToThread(self._thread)
        self._asked.connect(self._maker.make)
        self._maker.made.connect(self._deliver)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a job's answer has not yet reached the GUI thread."""
        return self._unanswered > 0

    def submit(self, job: Callable[[], Any], deliver: Callable[[Future], None]) -> None:
        """Run ``job()`` on the picture thread, then ``deliver(future)`` on the GUI thread."""
        self._unanswered += 1
        self._asked.emit(job, deliver)

    def stop(self) -> None:
        """End the thread once the jobs handed to it are done (their answers are dropped)."""
        self._thread.quit()
        self._thread.wait()

    @Slot(object, object)
    def _deliver(self, deliver: Callable[[Future], None], outcome: Future) -> None:
        self._unanswered -= 1
        deliver(outcome)


_thread: PictureThread | None = None


def picture_thread() -> PictureThread:
    """Return the application's picture thread (made on first use; call on the GUI thread).

    It ends when Python exits.
    """
    global _thread
    if _thread is None:
        _thread = PictureThread()
        atexit.register(_thread.stop)
    return _thread
