"""The worker thread: order, ids, cancellation, failures, and the thread requests run on."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from lrp_desktop.worker import Failure, UserFacingError, WorkerHost


@dataclass(frozen=True)
class Record:
    """Appends its value to a shared list in the worker; optionally slow and cancellable."""

    value: int
    log: list
    steps: int = 0
    title: str = "Recording"

    def run(self, context, job):
        for step in range(self.steps):
            job.check()
            job.progress(step / self.steps, "working")
            time.sleep(0.01)
        self.log.append((self.value, threading.get_ident()))
        return self.value


@dataclass(frozen=True)
class Broken:
    """Fails like a request whose input is bad."""

    error: Exception
    title: str = "Breaking"

    def run(self, context, job):
        raise self.error


@pytest.fixture
def host(qtbot):
    worker_host = WorkerHost(context=None, describe_error=lambda error: "a general hint")
    yield worker_host
    assert worker_host.stop()


def collect(host):
    outcomes = {}
    host.finished.connect(lambda rid, result: outcomes.__setitem__(rid, ("done", result)))
    host.failed.connect(lambda rid, failure: outcomes.__setitem__(rid, ("failed", failure)))
    host.cancelled.connect(lambda rid: outcomes.__setitem__(rid, ("cancelled", None)))
    return outcomes


def test_requests_run_in_order_on_the_worker_thread(qtbot, host):
    log: list = []
    outcomes = collect(host)
    ids = [host.submit(Record(value, log)) for value in range(5)]
    assert len(set(ids)) == 5
    qtbot.waitUntil(lambda: len(outcomes) == 5, timeout=5000)
    assert [value for value, _ in log] == list(range(5))
    assert {outcomes[rid] for rid in ids} == {("done", value) for value in range(5)}
    threads = {ident for _, ident in log}
    assert threads == host.worker.thread_idents
    assert threading.get_ident() not in threads
    assert not host.busy


def test_cancel_stops_a_running_request_and_skips_a_queued_one(qtbot, host):
    log: list = []
    outcomes = collect(host)
    progress: list = []
    host.progress.connect(lambda rid, fraction, text: progress.append(rid))
    running = host.submit(Record(1, log, steps=500))
    queued = host.submit(Record(2, log))
    qtbot.waitUntil(lambda: running in progress, timeout=5000)
    host.cancel(running)
    host.cancel(queued)
    qtbot.waitUntil(lambda: len(outcomes) == 2, timeout=5000)
    assert outcomes[running] == ("cancelled", None)
    assert outcomes[queued] == ("cancelled", None)
    assert log == []
    after = host.submit(Record(3, log))
    qtbot.waitUntil(lambda: after in outcomes, timeout=5000)
    assert outcomes[after] == ("done", 3)


def test_a_failure_becomes_a_message_and_the_worker_lives_on(qtbot, host):
    outcomes = collect(host)
    plain = host.submit(Broken(RuntimeError("the disk is full")))
    advised = host.submit(Broken(UserFacingError("no model", "choose one")))
    log: list = []
    later = host.submit(Record(7, log))
    qtbot.waitUntil(lambda: len(outcomes) == 3, timeout=5000)
    assert outcomes[plain] == (
        "failed",
        Failure("Breaking failed", "the disk is full", "a general hint"),
    )
    assert outcomes[advised][1].hint == "choose one"
    assert outcomes[later] == ("done", 7)


def test_busy_signal_follows_the_queue(qtbot, host):
    states: list = []
    host.busy_changed.connect(states.append)
    log: list = []
    host.submit(Record(1, log))
    host.submit(Record(2, log))
    qtbot.waitUntil(lambda: states == [True, False], timeout=5000)
    assert len(log) == 2
