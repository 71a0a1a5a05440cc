"""One background thread that draws pictures, so that numpy work stays off the GUI thread.

Turning relevance into a picture (its scale's percentile, colours, blending) is a series of numpy
calls on whole pictures. Each call releases the interpreter lock, and while a worker thread runs
LRP or checks rules the GUI thread then waits to take the lock back, once per call: drawn on the
GUI thread, one heatmap froze the window for up to 40 ms. Drawn here, those waits hold up this
thread instead, and the GUI thread only shows the finished picture.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot


class PictureThread(QObject):
    """Runs drawing jobs one after another on its thread; answers arrive on the GUI thread.

    Create it on the GUI thread. Each finished job's future is handed to its ``deliver``
    callback by a queued signal, in the order the jobs were submitted; ``future.result()``
    there returns the job's result or raises its exception on the GUI thread.
    """

    _answered = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrp-pictures")
        self._unanswered = 0
        self._answered.connect(self._deliver)

    @property
    def busy(self) -> bool:
        """Whether a job's answer has not yet reached the GUI thread."""
        return self._unanswered > 0

    def submit(self, job: Callable[[], Any], deliver: Callable[[Future], None]) -> None:
        """Run ``job()`` on the picture thread, then ``deliver(future)`` on the GUI thread."""
        self._unanswered += 1
        future = self._executor.submit(job)
        future.add_done_callback(lambda done: self._answered.emit(deliver, done))

    @Slot(object, object)
    def _deliver(self, deliver: Callable[[Future], None], done: Future) -> None:
        self._unanswered -= 1
        deliver(done)


_thread: PictureThread | None = None


def picture_thread() -> PictureThread:
    """Return the application's picture thread (made on first use; call on the GUI thread)."""
    global _thread
    if _thread is None:
        _thread = PictureThread()
    return _thread
