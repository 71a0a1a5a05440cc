"""How soon the viewer shows a window and its first heatmap, and how responsive it stays.

1. Cold start, in a subprocess (``QT_QPA_PLATFORM=offscreen``, ``LRP_DESKTOP_TIMINGS=1``): the
   time from launching ``python -m lrp_desktop --screenshot`` on the demo to the first window
   being shown, to the engine (torch) being loaded, and to the first heatmap.
2. In process, a 5 ms QTimer in the GUI thread records the gaps between its ticks: a gap much
   longer than 5 ms is a stall of the event loop (a frozen window). The script opens the viewer
   on ``--model`` and measures the time to the first heatmap, makes it explain a series of
   configurations (presets, classes, images, methods), then opens the model dialog and waits
   until it lists torchvision's classifiers (the checker's thread imports torchvision, as it
   does for a user), loads ``--large`` (ResNet-50 with random weights by default), switches its
   presets and edits a layer's rule, each explained; it prints the longest stall of each phase
   and kind of change.

Run: ``QT_QPA_PLATFORM=offscreen python bench/bench_gui.py [--model demo] [--rounds 12]
[--large resnet50] [--large-rounds 4]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK_MS = 5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="demo", help="a model name (torchvision ones get random weights) or file"
    )
    parser.add_argument("--rounds", type=int, default=12, help="explanations to measure")
    parser.add_argument(
        "--large",
        default="resnet50",
        help="a larger model to load (random weights) and explain; '' skips it",
    )
    parser.add_argument(
        "--large-rounds",
        type=int,
        default=4,
        help="preset switches, and as many rule edits (each explained), on the large model",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per explanation")
    parser.add_argument(
        "--no-cold-start", action="store_true", help="skip the cold start in a subprocess"
    )
    return parser.parse_args(argv)


def cold_start(timeout: float) -> dict[str, float]:
    """Launch ``lrp-desktop --screenshot`` on the demo; return seconds from launch per milestone."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LRP_DESKTOP_TIMINGS="1")
    with tempfile.TemporaryDirectory(prefix="bench_gui_cold_") as folder:
        launched = time.time()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lrp_desktop",
                "--fresh",
                "--screenshot",
                str(Path(folder) / "shot.png"),
                "--timeout",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout + 60,
        )
        ended = time.time()
    if result.returncode != 0:
        raise SystemExit(f"lrp-desktop failed ({result.returncode}):\n{result.stderr[-2000:]}")
    marks = {}
    for line in result.stderr.splitlines():
        if line.startswith("lrp-desktop-timing: "):
            event, stamp = line.removeprefix("lrp-desktop-timing: ").rsplit(" ", 1)
            marks[event] = float(stamp) - launched
    marks["process ended"] = ended - launched
    return marks


class Heartbeat:
    """A 5 ms timer in the GUI thread; :meth:`mark` starts a phase, :meth:`worst` reads them."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.ticks: list[float] = []
        self.phases: list[tuple[str, int]] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def mark(self, phase: str) -> None:
        self.phases.append((phase, len(self.ticks)))

    def gaps(self, first: int = 0, last: int | None = None) -> list[float]:
        ticks = self.ticks[max(first - 1, 0) : last]
        return [(later - earlier) * 1000 for earlier, later in itertools.pairwise(ticks)]

    def worst(self) -> dict[str, float]:
        result: dict[str, float] = {}
        ends = [first for _, first in self.phases[1:]] + [len(self.ticks)]
        for (phase, first), last in zip(self.phases, ends, strict=True):
            result[phase] = max(result.get(phase, 0.0), max(self.gaps(first, last), default=0.0))
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_cold_start:
        marks = cold_start(args.timeout)
        print(
            "cold start of `lrp-desktop --screenshot` (demo), seconds from launch: "
            + ", ".join(f"{event} {value:.2f}" for event, value in marks.items()),
            flush=True,
        )
    start_time = time.perf_counter()
    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 (kept alive)
    from lrp_desktop.app import build
    from lrp_desktop.model_dialog import ModelDialog
    from lrp_desktop.picture_thread import picture_thread
    from lrp_desktop.rule_tree import RULE
    from lrp_desktop.settings import Preferences
    from lrp_desktop_core.composites import COMPOSITES
    from lrp_desktop_core.models import demo_samples

    imported = time.perf_counter() - start_time
    settings_dir = tempfile.mkdtemp(prefix="bench_gui_")
    settings = QSettings(str(Path(settings_dir) / "settings.ini"), QSettings.Format.IniFormat)
    app = build(Preferences(settings))
    beat = Heartbeat()
    beat.mark("start")
    app.window.resize(1400, 860)
    app.window.show()
    if args.device != "cpu":
        app.controller.set_device(args.device)
    app.controller.load_model(args.model, seed=None if args.model.startswith("demo") else 0)
    app.controller.open_paths(demo_samples()[:4])

    def wait(condition, what: str) -> None:
        """Run the event loop until ``condition()`` holds (polled every millisecond).

        The loop handles what is already queued before it returns, which may undo the
        condition (a redraw hands a picture to the picture thread): then it runs again.
        """
        deadline = time.perf_counter() + args.timeout
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(1)
        poll.timeout.connect(
            lambda: (condition() or time.perf_counter() > deadline) and loop.quit()
        )
        poll.start()
        while True:
            loop.exec()
            if condition() or time.perf_counter() > deadline:
                break
        poll.stop()
        if not condition():
            raise SystemExit(f"gave up waiting for {what}")

    session = app.session

    def settled() -> bool:
        return (
            session.explanation_is_current
            and not app.host.busy
            and not app.controller.building_preset
            and not picture_thread().busy
        )

    wait(
        lambda: (
            session.explanation_is_current
            and app.window.main_view.view.image_item.image is not None
        ),
        "the first heatmap",
    )
    first_heatmap = time.perf_counter() - start_time

    presets = itertools.cycle(COMPOSITES)
    classes = itertools.cycle([None, *range(len(session.model.class_names))][:5])
    changes = itertools.cycle(["preset", "class", "image", "method"])
    methods = itertools.cycle(["gradient", "lrp", "smoothgrad", "lrp"])
    session.set_method_params("smoothgrad", {"n_iter": 8})
    wait(settled, "the first explanations")
    durations = []
    explaining_from = len(beat.ticks)
    for _ in range(args.rounds):
        change = next(changes)
        beat.mark(change)
        began = time.perf_counter()
        if change == "preset":
            app.controller.apply_preset(next(presets))
        elif change == "class":
            session.set_target(next(classes))
        elif change == "image":
            session.set_current_image((session.current_index + 1) % len(session.images))
        else:
            session.set_method_kind(next(methods))
        wait(settled, "an explanation")
        durations.append(time.perf_counter() - began)
    explaining_gaps = beat.gaps(explaining_from)
    large: list[str] = []
    if args.large:
        session.set_method_kind("lrp")
        wait(settled, "lrp")
        beat.mark("model dialog: listing torchvision's classifiers")
        dialog = ModelDialog(Path(settings_dir), app.support, app.window)
        dialog.show()
        wait(lambda: bool(dialog.names or dialog.listing_problem), "torchvision's classifiers")
        dialog.reject()
        dialog.deleteLater()
        beat.mark(f"loading {args.large} and its first explanation")
        began = time.perf_counter()
        old = session.model
        app.controller.load_model(args.large, seed=0)
        wait(lambda: session.model is not old and settled(), f"{args.large}")
        large.append(
            f"{args.large} (random weights) loaded and explained in "
            f"{time.perf_counter() - began:.1f} s"
        )
        large_presets = itertools.cycle(
            ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat", "epsilon_plus"]
        )
        rules = app.window.rules_panel.model
        layer = next(name for name, node in rules.nodes.items() if node.module_type == "Conv2d")
        edits = itertools.cycle(["ZPlus", "Epsilon", "Gamma"])

        def cell():
            return rules.index_of_layer(layer, RULE)

        changes = (
            (
                "preset switch",
                "switching preset",
                lambda: app.controller.apply_preset(next(large_presets)),
            ),
            ("rule edit", "editing a layer's rule", lambda: rules.edit(cell(), next(edits))),
        )
        for change, phase, make in changes:
            times = []
            for _ in range(args.large_rounds):
                beat.mark(f"{args.large}: {phase} and explaining")
                began = time.perf_counter()
                make()
                wait(settled, "an explanation")
                times.append(time.perf_counter() - began)
            if times:
                large.append(
                    f"{args.large} {change} + explanation: median {statistics.median(times):.2f} s"
                )
    beat.mark("end")
    beat.timer.stop()
    worst = beat.worst()
    app.shutdown()
    app.window.close()
    print(f"model: {args.model} on {args.device}")
    print(
        f"in process, start to first heatmap: {first_heatmap:.2f} s (of which importing "
        f"PySide6, torch and pyqtgraph: {imported:.2f} s)"
    )
    print(
        f"explanations measured: {len(durations)}, median {statistics.median(durations):.3f} s,"
        f" longest {max(durations):.3f} s"
    )
    if len(explaining_gaps) > 2:
        print(
            f"GUI event loop while explaining ({TICK_MS} ms timer, {len(explaining_gaps)} gaps):"
            f" longest stall {max(explaining_gaps):.1f} ms, 99th percentile "
            f"{statistics.quantiles(explaining_gaps, n=100)[98]:.1f} ms, median "
            f"{statistics.median(explaining_gaps):.1f} ms"
        )
    for line in large:
        print(line)
    print("longest stall per phase or kind of change (ms):")
    for phase, value in worst.items():
        if phase != "end":
            print(f"  {phase}: {value:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
