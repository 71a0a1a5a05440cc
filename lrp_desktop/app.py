"""Assembling the viewer: session, reporter, preferences, worker, controller and window.

:func:`build` wires the parts together (tests pass their own preferences and reporter);
:func:`start` loads the first model and images as the command line asks.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtWidgets import QMessageBox

from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.models import DEFAULT_MODEL, demo_samples, is_registered

from .controller import Controller
from .main_window import MainWindow
from .reporter import Reporter
from .requests import StructureContext, WorkerContext, describe_error
from .rule_editing import apply_preset
from .session import Session
from .settings import Preferences
from .support import SupportChecker
from .worker import WorkerHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartOptions:
    """What to show first (the command line's arguments).

    Attributes
    ----------
    images
        Image files or folders; the demo's samples when empty.
    model
        A model name or file; the demo when None.
    weights
        A weights file for ``model``.
    device
        "cpu", "cuda" or "cuda:N"; the stored preference when None.
    composite
        A preset to fill the rules with instead of the model's recommended one.
    compare
        Presets or method kinds to show side by side in the comparison tab.
    random_weights, seed
        Give a torchvision ``model`` random weights instead of its pretrained ones, drawn from
        ``seed`` when given (a seed alone implies random weights).
    """

    images: Sequence[Path] = ()
    model: str | None = None
    weights: Path | None = None
    device: str | None = None
    composite: str | None = None
    compare: Sequence[str] = field(default_factory=tuple)
    random_weights: bool = False
    seed: int | None = None


@dataclass
class Application:
    """The assembled parts of a running viewer."""

    session: Session
    reporter: Reporter
    preferences: Preferences
    host: WorkerHost
    structure: WorkerHost
    controller: Controller
    window: MainWindow
    support: SupportChecker

    def shutdown(self) -> None:
        """Stop the worker threads (idempotent); call before the QApplication goes away."""
        for host in (self.host, self.structure, self.support.host):
            if host.is_running():
                host.stop()


def ask_user(window: MainWindow):
    """Return a confirm handler that asks with a modal yes/no dialog over ``window``."""

    def confirm(title: str, text: str) -> bool:
        answer = QMessageBox.question(
            window,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    return confirm


def build(preferences: Preferences | None = None, reporter: Reporter | None = None) -> Application:
    """Create every part of the viewer (the window is not shown yet)."""
    pg.setConfigOptions(antialias=True)
    session = Session()
    reporter = reporter if reporter is not None else Reporter()
    preferences = preferences if preferences is not None else Preferences()
    host = WorkerHost(WorkerContext(), describe_error)
    structure = WorkerHost(StructureContext())
    controller = Controller(session, host, structure, reporter, preferences)
    support = SupportChecker()
    window = MainWindow(session, controller, reporter, preferences, support)
    if reporter.confirm_handler is None:
        reporter.confirm_handler = ask_user(window)
    # What is imported and built by now (PyTorch, Qt, the window: some 400,000 objects) lives as
    # long as the process. Frozen, it is left out of Python's full garbage collections, each of
    # which holds the interpreter lock for the whole pass: over 200 ms over these objects, a
    # frozen window whichever thread happens to run it.
    gc.freeze()
    return Application(session, reporter, preferences, host, structure, controller, window, support)


def start(app: Application, options: StartOptions) -> None:
    """Load the first model, device and images, then apply the preset and comparison asked for."""
    device = options.device or app.preferences.device
    if device != "cpu":
        app.controller.set_device(device)
    model = options.model or DEFAULT_MODEL
    random_weights = options.random_weights or options.seed is not None
    pretrained = options.weights is None and is_registered(model) and not random_weights
    app.controller.load_model(model, options.weights, pretrained=pretrained, seed=options.seed)
    app.controller.open_paths(options.images or demo_samples())
    if options.composite is not None or options.compare:
        _after_first_model(app, lambda: _apply_start_rules(app, options))


def _after_first_model(app: Application, action) -> None:
    """Run ``action`` once, when the first model has been loaded."""

    def once() -> None:
        app.session.model_changed.disconnect(once)
        action()

    app.session.model_changed.connect(once)


def _apply_start_rules(app: Application, options: StartOptions) -> None:
    session = app.session
    if options.composite is not None:
        if options.composite in COMPOSITES:
            apply_preset(session, options.composite)
        else:
            app.reporter.error(
                "Unknown composite",
                f"{options.composite!r} is not a preset.",
                f"Choose one of {', '.join(COMPOSITES)}.",
            )
    for entry in options.compare:
        app.window.compare(entry)
