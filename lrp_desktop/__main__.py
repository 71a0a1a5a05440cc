"""The ``lrp-desktop`` command: open the viewer (or take a screenshot of it and quit)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QApplication

from lrp_desktop_core.demos import DEMOS

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
    parser.add_argument("--device", metavar="cpu|cuda|cuda:N", help="where the model computes")
    parser.add_argument("--composite", metavar="NAME",
                        help="preset rules to start with (default: the model's recommended one)")
    parser.add_argument("--compare", nargs="+", metavar="NAME", default=(),
                        help="show these side by side: presets, 'current', or methods "
                             "(gradient, smoothgrad, integrated_gradients, occlusion, rollout)")
    parser.add_argument("--screenshot", type=Path, metavar="PATH",
                        help="wait until every explanation is shown, save the window as PNG "
                             "and exit (works with QT_QPA_PLATFORM=offscreen)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_SCREENSHOT_TIMEOUT,
                        metavar="SECONDS", help="how long --screenshot waits (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the viewer; return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .app import StartOptions, build, start
    from .screenshot import Screenshot

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setOrganizationName("lrp-desktop")
    qt_app.setApplicationName("lrp-desktop")
    app = build()
    screenshot = None
    if args.screenshot is not None:
        app.reporter.confirm_handler = lambda title, text: False  # never block unattended
        screenshot = Screenshot(app, args.screenshot, args.timeout)
    app.window.show()
    start(app, StartOptions(images=args.images, model=args.model, weights=args.weights,
                            device=args.device, composite=args.composite,
                            compare=tuple(args.compare)))
    code = qt_app.exec()
    app.shutdown()
    if screenshot is not None:
        print(screenshot.outcome, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
