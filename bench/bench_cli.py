"""Time ``lrp-explain`` on the bundled demo samples (in-process, after a warm-up run).

Run: ``python bench/bench_cli.py [--device cpu] [--repeat 3]``; prints the wall time per run of
the command as a whole (model loading, rule map, images, explaining, writing) for a few settings.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lrp_desktop_core.cli import main as lrp_explain
from lrp_desktop_core.models import demo_samples

SETTINGS = {
    "lrp, png+npy+json": [],
    "lrp, --evaluate (8 px regions)": ["--evaluate"],
    "gradient": ["--method", "gradient"],
    "smoothgrad (20 samples)": ["--method", "smoothgrad"],
}


def time_runs(extra: list[str], device: str, repeat: int) -> list[float]:
    """Return the wall times of ``repeat`` runs of lrp-explain with ``extra`` arguments."""
    folder = str(demo_samples()[0].parent)
    times = []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeat):
            start = time.perf_counter()
            code = lrp_explain([folder, "--out", out, "--device", device, "--quiet", *extra])
            times.append(time.perf_counter() - start)
            if code != 0:
                raise SystemExit(f"lrp-explain failed with exit code {code}")
    return times


def main() -> None:
    """Print a Markdown table of the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    time_runs([], args.device, 1)  # warm-up: imports, caches
    count = len(demo_samples())
    print(f"lrp-explain on {count} demo samples ({Path(demo_samples()[0]).parent}), {args.device}")
    print("\n| setting | median s | min s |\n|---|---|---|")
    for name, extra in SETTINGS.items():
        times = time_runs(extra, args.device, args.repeat)
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
