"""The ``lrp-desktop`` command: open the viewer (or take a screenshot of it and quit)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lrp_desktop_core.demos import DEMOS

from .qt_check import platform_problem

DEFAULT_SCREENSHOT_TIMEOUT = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="lrp-desktop",
        description="Explore Layer-wise Relevance Propagation heatmaps of image classifiers. "
                    "Without arguments the bundled demo model opens on its sample images.")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE",
                        help="image files or folders to open")
    parser.add_argument("--model", metavar="NAME|PATH",
                        help=f"a bundled demo ({', '.join(DEMOS)}; works offline), a torchvision "
                             "classifier (ImageNet weights, from the cache or downloaded) or a "
                             "model file")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="weights file (.safetensors, .pt) for the --model architecture")
    parser.add_argument("--random-weights", action="store_true",
                        help="give a torchvision --model random weights instead of its pretrained "
                             "ones (captions and records say so)")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the random weights (implies --random-weights): the same "
                             "seed gives the same weights and heatmaps")
    parser.add_argument("--device", metavar="cpu|cuda|cuda:N", help="where the model computes")
    parser.add_argument("--composite", metavar="NAME",
                        help="preset rules to start with (default: the model's recommended one)")
    parser.add_argument("--compare", nargs="+", metavar="NAME", default=(),
                        help="show these side by side: presets, 'current', or methods "
                             "(gradient, smoothgrad, integrated_gradients, occlusion, rollout)")
    parser.add_argument("--screenshot", type=Path, metavar="PATH",
                        help="wait until every explanation is shown, save the window as PNG "
                             "and exit (works with QT_QPA_PLATFORM=offscreen)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore saved preferences (window size, colours, recent files) and "
                             "save none; implied by --screenshot, so screenshots are reproducible")
    parser.add_argument("--timeout", type=float, default=DEFAULT_SCREENSHOT_TIMEOUT,
                        metavar="SECONDS", help="how long --screenshot waits (default %(default)s)")
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
    from .app import StartOptions, build, start
    from .screenshot import Screenshot
    from .settings import Preferences, fresh_settings

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setOrganizationName("lrp-desktop")
    qt_app.setApplicationName("lrp-desktop")
    fresh = tempfile.TemporaryDirectory(prefix="lrp-desktop-")
    app = build(Preferences(fresh_settings(Path(fresh.name)))
                if args.fresh or args.screenshot is not None else None)
    screenshot = None
    if args.screenshot is not None:
        app.reporter.confirm_handler = lambda title, text: False  # never block unattended
        screenshot = Screenshot(app, args.screenshot, args.timeout)
    app.window.show()
    start(app, StartOptions(images=args.images, model=args.model, weights=args.weights,
                            device=args.device, composite=args.composite,
                            compare=tuple(args.compare), random_weights=args.random_weights,
                            seed=args.seed))
    code = qt_app.exec()
    app.shutdown()
    fresh.cleanup()
    if screenshot is not None:
        print(screenshot.outcome, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
