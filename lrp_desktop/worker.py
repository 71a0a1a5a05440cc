"""The long-lived worker thread that owns the model and serves requests in order.

The GUI thread never runs a model. It hands a request to :meth:`WorkerHost.submit`, which gives
it an id and queues it to the :class:`Worker` living on its own :class:`QThread`; the worker runs
requests one after another and answers with :attr:`WorkerHost.finished`, :attr:`~WorkerHost.failed`
or :attr:`~WorkerHost.cancelled`, each carrying the request's id so the caller can drop answers it
no longer wants. Cancelling sets a flag the running request checks between its steps; a request
cancelled before it starts is skipped.

A request is any object with a ``title`` (used in messages) and a ``run(context, job)`` method;
what crosses back to the GUI is whatever ``run`` returns (numpy arrays and plain Python, never
tensors).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

log = logging.getLogger(__name__)

#: Progress is passed on at most this often (seconds), so a fast loop cannot flood the GUI.
PROGRESS_INTERVAL = 0.05
#: How much lower than the GUI's the worker threads' scheduling priority is (a ``nice`` step).
#: Threads the worker starts (PyTorch's compute threads) inherit it, so on a machine whose cores
#: all compute, the window still gets a core as soon as it has something to draw.
WORKER_NICENESS = 5


def _lower_this_threads_priority() -> None:
    """Make the calling thread ``WORKER_NICENESS`` steps nicer, where the system allows it."""
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        except OSError:  # a sandbox may forbid it; the worker runs as it is
            log.debug("could not lower the worker thread's priority", exc_info=True)


class JobCancelled(Exception):
    """Raised inside a request when its job was cancelled."""


@dataclass(frozen=True)
class Failure:
    """Why a request failed, in words for the user.

    Attributes
    ----------
    title
        What did not happen ("Could not load the model").
    text
        The problem (usually the exception's message).
    hint
        What to do about it.
    """

    title: str
    text: str
    hint: str = ""


class UserFacingError(Exception):
    """An error whose message and hint are written for the user.

    Parameters
    ----------
    text
        The problem.
    hint
        What to do about it.
    """

    def __init__(self, text: str, hint: str = "") -> None:
        super().__init__(text)
        self.hint = hint


class Request(Protocol):
    """What the worker can serve."""

    title: str

    def run(self, context: Any, job: Job) -> Any:
        """Do the work in the worker thread and return the result for the GUI."""


class Job:
    """The running request's link to its id, its cancel flag and the progress signal.

    Parameters
    ----------
    request_id
        The id the host gave the request.
    worker
        The worker serving it.
    """

    def __init__(self, request_id: int, worker: Worker) -> None:
        self.request_id = request_id
        self._worker = worker
        self._last_progress = 0.0

    def cancelled(self) -> bool:
        """Return True once the request has been cancelled."""
        return self._worker.is_cancelled(self.request_id)

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the request has been cancelled."""
        if self.cancelled():
            raise JobCancelled()

    def progress(self, fraction: float, text: str = "") -> None:
        """Report progress (0 to 1), throttled to one signal per :data:`PROGRESS_INTERVAL`."""
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        self._worker.progress.emit(self.request_id, float(min(max(fraction, 0.0), 1.0)), text)


class Worker(QObject):
    """Serves requests one at a time in the thread it lives in.

    Parameters
    ----------
    context
        State the requests share (the model and its device); touched only in the worker thread.
    """

    started = Signal(int, str)  # id, title
    finished = Signal(int, object)
    failed = Signal(int, object)  # id, Failure
    cancelled = Signal(int)
    progress = Signal(int, float, str)

    def __init__(self, context: Any, describe_error=None) -> None:
        super().__init__()
        self.context = context
        self._describe_error = describe_error
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        #: ``threading.get_ident()`` of every thread a request ran on (tests check it).
        self.thread_idents: set[int] = set()

    def cancel(self, request_id: int) -> None:
        """Mark a request as cancelled; safe to call from any thread."""
        with self._lock:
            self._cancelled.add(request_id)

    def is_cancelled(self, request_id: int) -> bool:
        """Return True if the request was cancelled."""
        with self._lock:
            return request_id in self._cancelled

    @Slot(int, object)
    def serve(self, request_id: int, request: Request) -> None:
        """Run one request and emit its outcome (called through a queued connection)."""
        self.thread_idents.add(threading.get_ident())
        job = Job(request_id, self)
        try:
            if job.cancelled():
                raise JobCancelled()
            self.started.emit(request_id, request.title)
            result = request.run(self.context, job)
        except JobCancelled:
            self.cancelled.emit(request_id)
        except Exception as error:  # every failure becomes a message; the worker lives on
            if _is_cancellation(error):
                self.cancelled.emit(request_id)
            else:
                log.debug("request %d (%s) failed", request_id, request.title, exc_info=True)
                self.failed.emit(request_id, self._failure(request, error))
        else:
            self.finished.emit(request_id, result)
        finally:
            with self._lock:
                self._cancelled.discard(request_id)

    def _failure(self, request: Request, error: Exception) -> Failure:
        hint = error.hint if isinstance(error, UserFacingError) else ""
        if not hint and self._describe_error is not None:
            hint = self._describe_error(error)
        text = str(error) or type(error).__name__
        return Failure(f"{request.title} failed", text, hint)


def _is_cancellation(error: Exception) -> bool:
    """Return True for the core's own cancellation exception (named ``ExplainCancelled``)."""
    return type(error).__name__ == "ExplainCancelled"


class WorkerHost(QObject):
    """Owns the worker thread; the GUI's only way to the model.

    Parameters
    ----------
    context
        The worker's shared state (see :class:`Worker`).
    describe_error
        ``(exception) -> hint`` giving advice for errors that carry none.
    """

    started = Signal(int, str)
    finished = Signal(int, object)
    failed = Signal(int, object)
    cancelled = Signal(int)
    progress = Signal(int, float, str)
    busy_changed = Signal(bool)
    _submit = Signal(int, object)

    def __init__(self, context: Any, describe_error=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("lrp-desktop worker")
        # runs on the new thread as it starts, before it creates any thread of its own
        self._thread.started.connect(
            _lower_this_threads_priority, Qt.ConnectionType.DirectConnection
        )
        self.worker = Worker(context, describe_error)
        self.worker.moveToThread(self._thread)
        self._submit.connect(self.worker.serve)
        self.worker.started.connect(self.started)
        self.worker.progress.connect(self.progress)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self._next_id = 1
        self.pending: dict[int, str] = {}
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a request is queued or running."""
        return bool(self.pending)

    def submit(self, request: Request) -> int:
        """Queue ``request`` for the worker and return its id."""
        request_id = self._next_id
        self._next_id += 1
        was_busy = self.busy
        self.pending[request_id] = request.title
        self._submit.emit(request_id, request)
        if not was_busy:
            self.busy_changed.emit(True)
        return request_id

    def cancel(self, request_id: int) -> None:
        """Ask the worker to drop or stop a request."""
        if request_id in self.pending:
            self.worker.cancel(request_id)

    def cancel_all(self) -> None:
        """Cancel every queued and running request."""
        for request_id in list(self.pending):
            self.worker.cancel(request_id)

    def is_running(self) -> bool:
        """Return True while the worker thread runs."""
        return self._thread.isRunning()

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel everything, end the thread and wait for it; return True if it ended."""
        self.cancel_all()
        self._thread.quit()
        ended = self._thread.wait(timeout_ms)
        if not ended:
            log.error("the worker thread did not stop within %d ms", timeout_ms)
        return bool(ended)

    def _done(self, request_id: int) -> None:
        self.pending.pop(request_id, None)
        if not self.pending:
            self.busy_changed.emit(False)

    def _on_finished(self, request_id: int, result: object) -> None:
        self._done(request_id)
        self.finished.emit(request_id, result)

    def _on_failed(self, request_id: int, failure: object) -> None:
        self._done(request_id)
        self.failed.emit(request_id, failure)

    def _on_cancelled(self, request_id: int) -> None:
        self._done(request_id)
        self.cancelled.emit(request_id)
