"""Shared set-up of the viewer tests: a viewer with temporary settings, waiting helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PySide6.QtCore import QSettings

from lrp_desktop.app import Application, StartOptions, build, start
from lrp_desktop.picture_thread import picture_thread
from lrp_desktop.reporter import Reporter
from lrp_desktop.settings import Preferences

#: Generous limit for one explanation of the small demo model on a busy machine (ms).
WAIT_MS = 60_000


def make_viewer(qtbot, tmp_path, answer: bool = False) -> Application:
    """Build a viewer whose settings live in ``tmp_path`` and whose questions get ``answer``."""
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    reporter = Reporter(confirm_handler=lambda title, text: answer)
    app = build(Preferences(settings), reporter)
    qtbot.addWidget(app.window)
    app.window.resize(1200, 800)
    return app


@pytest.fixture
def viewer(qtbot, tmp_path):
    """Yield a viewer on the demo model, its first heatmap shown; stop its worker afterwards."""
    app = make_viewer(qtbot, tmp_path)
    try:
        start(app, StartOptions())
        wait_for_heatmap(qtbot, app)
        yield app
    finally:
        app.shutdown()


def wait_for_heatmap(qtbot, app: Application) -> np.ndarray:
    """Wait until the main view shows the explanation of the current settings; return it."""
    qtbot.waitUntil(
        lambda: app.session.explanation_is_current and not app.host.busy, timeout=WAIT_MS
    )
    wait_drawn(qtbot)
    return app.session.explanation.relevance[0]


def wait_idle(qtbot, app: Application) -> None:
    """Wait until the worker has nothing queued or running."""
    qtbot.waitUntil(lambda: not app.host.busy, timeout=WAIT_MS)
    wait_drawn(qtbot)


def wait_drawn(qtbot) -> None:
    """Wait until every picture asked of a heatmap view is shown."""
    qtbot.waitUntil(lambda: not picture_thread().busy, timeout=WAIT_MS)


@contextlib.contextmanager
def nan_weight(app: Application) -> Iterator[None]:
    """Make one weight of the worker's model NaN while the context lasts (runs then fail)."""
    weight = next(app.host.worker.context.loaded.model.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)
