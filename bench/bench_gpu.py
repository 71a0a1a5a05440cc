"""LRP latency on one device: a plain gradient, ours and zennit side by side, batch 1 and 32.

For VGG16 and ResNet-50 (``epsilon_plus_flat``, zennit's matching canonizers) and ViT-B/16
(``vit_cp`` with the ``torchvision`` canonizers; zennit has no attention rules, so "-"), random
weights, float32, the engines run interleaved after one warm-up each (``bench_lrp.time_engines``),
each call followed by a device synchronisation so the time is the device's. A cell that runs out
of device memory says ``OOM`` and frees the cache; the next cell and the next run work as usual.
The table gives the median milliseconds and the ratios ours/gradient and ours/zennit.

Usage::

    python bench/bench_gpu.py                          # cuda, all three models, batch 1 and 32
    python bench/bench_gpu.py --device cpu --models resnet50 --batches 1 --repeats 2

``bench/gpu.sh`` runs the ``cuda`` tests and this table in one go, for the day a GPU is lent.
``--cuda-tests`` prints the test files it runs: every one with a ``cuda`` mark, less the viewer's
(``tests/test_app_*``) where PySide6, pyqtgraph or pytest-qt cannot be imported, as on a GPU
machine whose Python has torch but not the viewer's packages.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from bench_lrp import (
    CANONIZER_OF,
    attribution_functions,
    build_model,
    gradient_function,
    inputs_for,
    time_engines,
)
from torch import nn

from lrp_desktop_core.attribution import Gradient
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES

CNN_PRESET = "epsilon_plus_flat"
VIT_PRESET = "vit_cp"
BOUND = 3.0
"""The ZBox bounds of ``vit_cp`` (inputs are standard normal)."""

VIEWER_PACKAGES = ("PySide6", "pyqtgraph", "pytestqt")
"""What the viewer's tests import beyond the engine's packages."""
TESTS = Path(__file__).resolve().parents[1] / "tests"

Attribution = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cuda_test_files(tests: Path, viewer: bool) -> list[Path]:
    """Return the test files in ``tests`` that hold a test marked ``cuda``.

    The viewer's files (``test_app_*``) are left out unless ``viewer``: collecting them needs its
    packages, and a collection error would stop every other test from running.
    """
    return [
        path
        for path in sorted(tests.glob("test_*.py"))
        if "pytest.mark.cuda" in path.read_text(encoding="utf-8")
        and (viewer or not path.name.startswith("test_app_"))
    ]


def viewer_importable() -> bool:
    """Whether the packages of the viewer's tests can be imported here."""
    return all(importlib.util.find_spec(name) is not None for name in VIEWER_PACKAGES)


def functions_for(model: nn.Module, name: str) -> dict[str, Attribution]:
    """Return the engines of one model: zennit's where it has a canonizer for the model."""
    if name in CANONIZER_OF:
        return attribution_functions(model, name, CNN_PRESET)

    def ours(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        composite = COMPOSITES[VIT_PRESET](
            low=-BOUND, high=BOUND, canonizers=get_canonizers("torchvision")
        )
        with Gradient(model, composite) as attributor:
            return attributor(images, attr_output=one_hot)[1]

    return {"gradient": gradient_function(model), "ours": ours}


def synchronised(function: Attribution, device: torch.device) -> Attribution:
    """Wrap ``function`` to wait for the device, so that timing covers its work."""

    def call(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        result = function(images, one_hot)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    return call


def measure(name: str, batch: int, device: torch.device, repeats: int) -> dict[str, float] | str:
    """Median seconds per engine, or ``"OOM"`` where the device ran out of memory."""
    model = build_model(name)
    images, one_hot = inputs_for(model, batch, 224)
    try:
        model.to(device)
        images, one_hot = images.to(device), one_hot.to(device)
        functions = {
            engine: synchronised(function, device)
            for engine, function in functions_for(model, name).items()
        }
        seconds, _ = time_engines(functions, images, one_hot, repeats)
        return seconds
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def format_row(name: str, batch: int, seconds: dict[str, float] | str) -> str:
    if isinstance(seconds, str):
        return f"| {name} | {batch} | {seconds} | | | | |"
    gradient, ours = seconds["gradient"], seconds["ours"]
    zennit = seconds.get("zennit")
    theirs = "-" if zennit is None else f"{zennit * 1e3:.1f}"
    versus = "-" if zennit is None else f"{ours / zennit:.2f}"
    return (
        f"| {name} | {batch} | {gradient * 1e3:.1f} | {ours * 1e3:.1f} | {theirs} "
        f"| {ours / gradient:.2f} | {versus} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="vgg16,resnet50,vit_b_16")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cuda-tests", action="store_true", help="print the test files with cuda tests and stop"
    )
    args = parser.parse_args(argv)
    if args.cuda_tests:
        viewer = viewer_importable()
        if not viewer:
            missing = ", ".join(VIEWER_PACKAGES)
            print(
                f"one of {missing} is missing: the viewer's cuda tests are left out",
                file=sys.stderr,
            )
        print("\n".join(str(path) for path in cuda_test_files(TESTS, viewer)))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu, or on a machine with a GPU", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {where}, float32, 224 x 224, median of {args.repeats}\n")
    print("| model | batch | gradient ms | ours ms | zennit ms | ours/gradient | ours/zennit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        for batch in (int(value) for value in args.batches.split(",")):
            print(format_row(name, batch, measure(name, batch, device, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
