"""The ``lrp-desktop`` command: open the viewer (or take a screenshot of it and quit).

Nothing on the way to the first window imports torch: the command shows a window at once, loads
the engine (torch and the core) in a background thread while that window stays responsive, then
builds the viewer and loads the model. torchvision, which takes about as long to import as torch
and which the bundled demos do not need, is loaded with the engine only when the command names
another model; otherwise the viewer imports it on a thread of its own when the model dialog first
lists its classifiers.
With ``LRP_DESKTOP_TIMINGS=1`` it prints on stderr when (``time.time()``) the first window was
shown, the engine loaded and the first heatmap shown, for ``bench/bench_gui.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lrp_desktop_core.import_freeze import import_and_freeze
from lrp_desktop_core.names import DEMO_NAMES, OTHER_METHODS, PRESETS
from lrp_desktop_core.torchvision_types import may_need_torchvision

from .qt_check import platform_problem

DEFAULT_SCREENSHOT_TIMEOUT = 120.0
#: Modules imported in the background after the first window is shown: the ones that take long.
ENGINE_MODULES = (
    "torch",
    "lrp_desktop_core.models",
    "lrp_desktop_core.explain",
    "lrp_desktop_core.composites",
    "lrp_desktop_core.rulemap",
    "lrp_desktop_core.audit",
    "lrp_desktop_core.recommend",
    "lrp_desktop_core.coverage",
    "lrp_desktop_core.evaluate",
    "lrp_desktop_core.export",
    "lrp_desktop_core.channel_method",
    "lrp_desktop_core.concepts",
    "lrp_desktop_core.relmax",
)
TIMINGS = os.environ.get("LRP_DESKTOP_TIMINGS") == "1"


#: What ``--compare`` takes: the main view's settings, a preset or another method.
COMPARABLE = ("current", *PRESETS, *OTHER_METHODS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="lrp-desktop",
        description="Explore Layer-wise Relevance Propagation heatmaps of image classifiers. "
        "Without arguments the bundled demo model opens on its sample images.",
    )
    parser.add_argument(
        "images", nargs="*", type=Path, metavar="IMAGE", help="image files or folders to open"
    )
    parser.add_argument(
        "--model",
        metavar="NAME|PATH",
        help=f"a bundled demo ({', '.join(DEMO_NAMES)}; works offline), a "
        "torchvision classifier (ImageNet weights, from the cache or "
        "downloaded) or a model file",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="weights file (.safetensors, .pt) for the --model architecture",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="give a torchvision --model random weights instead of its pretrained "
        "ones (captions and records say so)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the random weights (implies --random-weights): the same "
        "seed gives the same weights and heatmaps",
    )
    parser.add_argument("--device", metavar="cpu|cuda|cuda:N", help="where the model computes")
    parser.add_argument(
        "--composite",
        choices=tuple(PRESETS),
        metavar="NAME",
        help="preset rules to start with (default: the model's recommended one): "
        f"{', '.join(PRESETS)}",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        choices=COMPARABLE,
        metavar="NAME",
        default=(),
        help="show these side by side: 'current', presets, or methods "
        f"({', '.join(OTHER_METHODS)})",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="PATH",
        help="wait until every explanation is shown, save the window as PNG "
        "and exit (works with QT_QPA_PLATFORM=offscreen)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore saved preferences (window size, colours, recent files) and "
        "save none; implied by --screenshot, so screenshots are reproducible",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_SCREENSHOT_TIMEOUT,
        metavar="SECONDS",
        help="how long --screenshot waits (default %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the viewer; return the exit code."""
    args = parse_args(argv)
    widgets = sys.modules.get("PySide6.QtWidgets")
    if widgets is None or widgets.QApplication.instance() is None:
        problem = platform_problem()  # before Qt aborts with a plugin dump
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
    from PySide6.QtWidgets import QApplication

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setOrganizationName("lrp-desktop")
    qt_app.setApplicationName("lrp-desktop")
    loading = None
    if "lrp_desktop.app" not in sys.modules:  # a cold start: a window first, then the engine
        loading = _loading_window()
        loading.show()
        _timing("window shown")
        error = _load_engine(loading, with_torchvision=may_need_torchvision(args.model))
        if not loading.isVisible():  # closed by the user while the engine loaded
            return 0
        if error is not None:
            loading.close()
            print(f"lrp-desktop: the engine failed to load: {error!r}", file=sys.stderr)
            return 1
        _timing("engine loaded")
    from .app import StartOptions, build, start
    from .screenshot import Screenshot
    from .settings import Preferences, fresh_settings

    unattended = args.fresh or args.screenshot is not None
    fresh = tempfile.TemporaryDirectory(prefix="lrp-desktop-") if unattended else None
    app = build(Preferences(fresh_settings(Path(fresh.name))) if fresh is not None else None)
    screenshot = None
    if args.screenshot is not None:
        app.reporter.confirm_handler = lambda title, text: False  # never block unattended
        screenshot = Screenshot(app, args.screenshot, args.timeout)
    app.window.show()
    if loading is not None:
        loading.close()
    if TIMINGS:
        _on_first_heatmap(app, lambda: _timing("first heatmap"))
    start(
        app,
        StartOptions(
            images=args.images,
            model=args.model,
            weights=args.weights,
            device=args.device,
            composite=args.composite,
            compare=tuple(args.compare),
            random_weights=args.random_weights,
            seed=args.seed,
        ),
    )
    code = qt_app.exec()
    app.shutdown()
    if fresh is not None:
        fresh.cleanup()
    if screenshot is not None:
        print(screenshot.outcome, file=sys.stderr if code else sys.stdout)
    return code


def _timing(event: str) -> None:
    if TIMINGS:
        print(f"lrp-desktop-timing: {event} {time.time():.3f}", file=sys.stderr, flush=True)


def _loading_window():
    """Return a plain window saying the engine loads (Qt only, shown before torch is imported)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel, QMainWindow

    window = QMainWindow()
    window.setWindowTitle("lrp-desktop")
    label = QLabel("Loading the LRP engine (PyTorch)...")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    window.setCentralWidget(label)
    window.resize(1400, 860)
    return window


def _load_engine(window, *, with_torchvision: bool) -> BaseException | None:
    """Import :data:`ENGINE_MODULES` in a thread while the event loop runs; return any error.

    ``with_torchvision`` imports torchvision too, while nothing but the loading window is up; a
    failure there is only logged, as the model's own load then says what is missing. Returns
    early, with the import still running, where ``window`` is closed meanwhile.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    failure: list[BaseException] = []

    def load() -> None:
        torchvision = ["torchvision"] if with_torchvision else []
        try:
            missing = import_and_freeze(ENGINE_MODULES, optional=torchvision)
        except BaseException as error:  # reported in the GUI thread
            failure.append(error)
            return
        for name, error in missing.items():
            logging.getLogger(__name__).warning("%s could not be imported: %s", name, error)

    thread = threading.Thread(target=load, name="lrp-desktop-engine", daemon=True)
    thread.start()
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: (thread.is_alive() and window.isVisible()) or loop.quit())
    poll.start()
    loop.exec()
    poll.stop()
    return failure[0] if failure else None


def _on_first_heatmap(app, action) -> None:
    """Run ``action`` once, when the main view first shows a heatmap."""
    from PySide6.QtCore import QTimer

    poll = QTimer(app.window)
    poll.setInterval(5)

    def check() -> None:
        if (
            app.session.explanation_is_current
            and app.window.main_view.view.image_item.image is not None
        ):
            poll.stop()
            action()

    poll.timeout.connect(check)
    poll.start()


if __name__ == "__main__":
    sys.exit(main())
