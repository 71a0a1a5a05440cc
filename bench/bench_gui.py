"""How responsive the viewer stays while it explains, and how soon the first heatmap appears.

A 5 ms QTimer in the GUI thread records the gaps between its ticks: a gap much longer than 5 ms
is a stall of the event loop (a frozen window). The script opens the viewer, measures the time
from start to the first heatmap, then makes it explain a series of configurations (presets,
classes, methods) one after another and reports the longest and typical gaps while explanations
ran.

Run: ``QT_QPA_PLATFORM=offscreen python bench/bench_gui.py [--model demo] [--rounds 12]``
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

TICK_MS = 5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo",
                        help="a model name (torchvision ones get random weights) or file")
    parser.add_argument("--rounds", type=int, default=12, help="explanations to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per explanation")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start_time = time.perf_counter()
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 (kept alive)
    from lrp_desktop.app import build
    from lrp_desktop.settings import Preferences
    from lrp_desktop_core.composites import COMPOSITES
    from lrp_desktop_core.models import demo_samples

    imported = time.perf_counter() - start_time
    settings_dir = tempfile.mkdtemp(prefix="bench_gui_")
    settings = QSettings(str(Path(settings_dir) / "settings.ini"), QSettings.Format.IniFormat)
    app = build(Preferences(settings))
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    app.window.resize(1400, 860)
    app.window.show()
    if args.device != "cpu":
        app.controller.set_device(args.device)
    app.controller.load_model(args.model)
    app.controller.open_paths(demo_samples()[:4])

    def wait(condition, what: str) -> None:
        """Run the event loop until ``condition()`` holds (polled every millisecond)."""
        deadline = time.perf_counter() + args.timeout
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(1)
        poll.timeout.connect(lambda: (condition() or time.perf_counter() > deadline)
                             and loop.quit())
        poll.start()
        loop.exec()
        poll.stop()
        if not condition():
            raise SystemExit(f"gave up waiting for {what}")

    session = app.session
    wait(lambda: session.explanation_is_current and app.window.main_view.view.image_item.image
         is not None, "the first heatmap")
    first_heatmap = time.perf_counter() - start_time

    presets = itertools.cycle(COMPOSITES)
    classes = itertools.cycle([None, *range(len(session.model.class_names))][:5])
    changes = itertools.cycle(["preset", "class", "image", "method"])
    methods = itertools.cycle(["gradient", "lrp", "smoothgrad", "lrp"])
    session.set_method_params("smoothgrad", {"n_iter": 8})
    ticks.clear()
    durations = []
    rounds: list[tuple[str, int]] = []  # the change made and the tick count when it was made
    for _ in range(args.rounds):
        change = next(changes)
        rounds.append((change, len(ticks)))
        began = time.perf_counter()
        if change == "preset":
            app.controller.apply_preset(next(presets))
        elif change == "class":
            session.set_target(next(classes))
        elif change == "image":
            session.set_current_image((session.current_index + 1) % len(session.images))
        else:
            session.set_method_kind(next(methods))
        wait(lambda: session.explanation_is_current and not app.host.busy
             and not app.controller.building_preset, "an explanation")
        durations.append(time.perf_counter() - began)
    timer.stop()
    gaps = [(later - earlier) * 1000 for earlier, later in zip(ticks, ticks[1:], strict=False)]
    worst: dict[str, float] = {}
    for (change, first), (_, last) in zip(rounds, [*rounds[1:], ("", len(ticks))], strict=True):
        round_gaps = gaps[max(first - 1, 0):max(last - 1, first)]
        worst[change] = max(worst.get(change, 0.0), max(round_gaps, default=0.0))
    app.shutdown()
    app.window.close()
    print(f"model: {args.model} on {args.device}")
    print(f"start to first heatmap: {first_heatmap:.2f} s (of which importing PySide6, torch, "
          f"torchvision and pyqtgraph: {imported:.2f} s)")
    print(f"explanations measured: {len(durations)}, median {statistics.median(durations):.3f} s,"
          f" longest {max(durations):.3f} s")
    print(f"GUI event loop while explaining ({TICK_MS} ms timer, {len(gaps)} gaps): longest stall "
          f"{max(gaps):.1f} ms, 99th percentile {statistics.quantiles(gaps, n=100)[98]:.1f} ms, "
          f"median {statistics.median(gaps):.1f} ms")
    print("longest stall per kind of change: "
          + ", ".join(f"{change} {value:.1f} ms" for change, value in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
