"""Throughput of ``lrp-explain`` on a folder: images per second and peak memory.

Each setting runs ``lrp-explain`` in a fresh process on a folder of ``--images`` copies of the
bundled demo samples (resized by the model's own preprocessing), so its peak resident memory is
its own; the images/s figure is the one ``lrp-explain`` prints (explained images over the time from
the first image loaded to the last result written, model loading excluded). Torchvision models get
random weights (``--seed 0``), so nothing is downloaded. Rows with and without ``--prefetch``
(background decoding) run side by side.

Run: ``python bench/bench_cli.py [--models demo resnet18 resnet50] [--batch-sizes 1 8 32]
[--images 64] [--device cpu]``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = re.compile(r"\(([\d.]+) images/s\)")


def make_folder(root: Path, count: int) -> Path:
    """Fill ``root/images`` with ``count`` copies of the demo samples (no masks)."""
    from lrp_desktop_core.models import demo_samples

    samples = [path for path in demo_samples() if "_mask" not in path.stem]
    folder = root / "images"
    folder.mkdir()
    for index in range(count):
        source = samples[index % len(samples)]
        shutil.copy(source, folder / f"{index:04d}_{source.name}")
    return folder


def run_once(
    folder: Path, out: Path, model: str, batch: int, prefetch: int, device: str, extra: list[str]
) -> tuple[float, float, float]:
    """Return (images/s as printed, wall s of the process, peak RSS in MiB) of one run."""
    command = [
        sys.executable,
        "-m",
        "lrp_desktop_core.cli",
        str(folder),
        "--out",
        str(out),
        "--model",
        model,
        "--batch-size",
        str(batch),
        "--prefetch",
        str(prefetch),
        "--device",
        device,
        "--quiet",
        "--format",
        "overlay,npy,json",
        *extra,
    ]
    if model not in ("demo", "demo_vit"):
        command += ["--seed", "0"]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    stderr = process.stderr.read() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    match = RATE.search(stderr)
    if process.returncode != 0 or match is None:
        raise SystemExit(f"lrp-explain failed ({process.returncode}):\n{stderr[-2000:]}")
    return float(match.group(1)), wall, usage.ru_maxrss / 1024


def main() -> None:
    """Print a Markdown table: model, batch size, prefetch, images/s, wall s, peak MiB."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "resnet18", "resnet50"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument(
        "--prefetch",
        nargs="+",
        type=int,
        default=[0, 2],
        help="prefetch depths to compare (0: sequential loading)",
    )
    parser.add_argument("--images", type=int, default=64, help="images in the folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--composite", help="LRP preset (default: the model's recommended one)")
    args = parser.parse_args()
    extra = ["--composite", args.composite] if args.composite else []
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as root:
        folder = make_folder(Path(root), args.images)
        print(
            f"lrp-explain on {args.images} images, {args.device}, "
            f"{os.cpu_count()} CPU cores, torch threads default"
        )
        print(
            "\n| model | batch | prefetch | images/s | wall s (whole process) | peak RSS MiB |"
            "\n|---|---|---|---|---|---|"
        )
        for model in args.models:
            for batch in args.batch_sizes:
                for prefetch in args.prefetch:
                    out = Path(root) / f"out-{model}-{batch}-{prefetch}"
                    rate, wall, peak = run_once(
                        folder, out, model, batch, prefetch, args.device, extra
                    )
                    shutil.rmtree(out, ignore_errors=True)
                    print(
                        f"| {model} | {batch} | {prefetch} | {rate:.2f} | {wall:.1f} | "
                        f"{peak:.0f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
