r"""Speed and memory of LRP: a plain gradient, zennit 0.5.1 and lrp_desktop_core side by side.

For every model x composite, the three attributions run on the same model and input (random
weights; batch norms with random running statistics), interleaved and in a rotating order, after
one warm-up run each; the table shows the median of the timed repeats, the ratios ours/zennit and
ours/gradient, the largest difference between ours and zennit relative to zennit's largest
relevance, and the peak memory.

Memory is measured in a fresh Python process per model x composite x engine, which builds the
model, runs one attribution to warm up, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``) and runs one attribution: the table shows the peak resident set size
during the attribution minus the resident set size just before it, i.e. the memory the attribution
itself needed. The RSS counts every tensor on the CPU, which tracemalloc does not see. Where the
counter cannot be reset, the process's lifetime peak (``ru_maxrss``) minus the same baseline is
shown instead, marked ``*``. The measuring process runs with glibc's mmap threshold fixed
(:data:`FIXED_MMAP_THRESHOLD`): left to itself, glibc raises the threshold after a large block is
freed and then keeps later large blocks in its heap, and the gradient's figure varied from 276 to
413 MiB between runs; fixed, it repeats to the MiB. The same process then runs the attribution again
under the profiler and shows, in brackets, the peak of the bytes of live tensors, counted from the
profiler's allocation and free events.

Usage::

    python bench/bench_lrp.py                                  # vgg16 and resnet50, 224 x 224
    python bench/bench_lrp.py --models resnet50 --composites epsilon_plus_flat \
        --repeats 2 --batch 1 --size 112 --no-memory           # a quick run
    python bench/bench_lrp.py --profile                        # also where our time goes
    git archive HEAD lrp_desktop_core | tar -x -C /tmp/old      # an earlier engine ...
    python bench/bench_lrp.py --baseline /tmp/old              # ... timed beside this one
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from lrp_desktop_core.attribution import one_hot

ENGINES = ("gradient", "zennit", "ours")
CANONIZER_OF = {"vgg16": "vgg", "vgg16_bn": "vgg", "resnet50": "resnet", "resnet18": "resnet"}
BOX = {"low": -3.0, "high": 3.0}
AGREEMENT = 1e-2
"""Largest accepted difference of ours and zennit, relative to zennit's largest relevance.

The computation is float32; zennit also keeps a merged batch norm's eps, which scales each merged
activation by (1 + eps) ** -0.5 (about 1e-4 relative over a ResNet-50), so exact agreement is not
expected here; the test suite checks agreement to 1e-6 in float64.
"""
FIXED_MMAP_THRESHOLD = 1 << 17
"""glibc's mmap threshold in the memory-measuring processes (bytes), fixed so that every freed large
block goes back to the system instead of staying in the heap, where it would hide from the measured
peak or add to it by chance."""


def build_model(name: str, seed: int = 0) -> nn.Module:
    """Build a torchvision model with random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return model.eval()


def _kwargs(composite: str) -> dict:
    return dict(BOX) if composite == "epsilon_gamma_box" else {}


def _zennit_canonizers(model_name: str) -> list:
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    return [VGGCanonizer()] if CANONIZER_OF[model_name] == "vgg" else [ResNetCanonizer()]


def import_baseline(directory: str):
    """Import the ``lrp_desktop_core`` package in ``directory`` under the name ``baseline_core``."""
    package = Path(directory) / "lrp_desktop_core"
    spec = importlib.util.spec_from_file_location(
        "baseline_core", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_core"] = module
    spec.loader.exec_module(module)
    return module


def lrp_function(
    model: nn.Module, model_name: str, composite: str, package: str = "lrp_desktop_core"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Our LRP of ``model`` with a preset, from ``package`` (this tree's engine or a baseline)."""
    attribution = importlib.import_module(f"{package}.attribution")
    canonizers = importlib.import_module(f"{package}.canonizers")
    composites = importlib.import_module(f"{package}.composites")

    def ours(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        mine = composites.COMPOSITES[composite](
            canonizers=canonizers.get_canonizers(CANONIZER_OF[model_name]), **_kwargs(composite)
        )
        with attribution.Gradient(model, mine) as attributor:
            return attributor(images, attr_output=one_hot)[1]

    return ours


def attribution_functions(
    model: nn.Module, model_name: str, composite: str, baseline: bool = False
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """One function ``(images, one_hot) -> relevance`` per engine (and the baseline's, if asked)."""
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES

    def zennit(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        theirs = ZENNIT_COMPOSITES[composite](
            canonizers=_zennit_canonizers(model_name), **_kwargs(composite)
        )
        with ZennitGradient(model, theirs) as attributor:
            return attributor(images, attr_output=one_hot)[1]

    functions = {
        "gradient": gradient_function(model),
        "zennit": zennit,
        "ours": lrp_function(model, model_name, composite),
    }
    if baseline:
        functions["baseline"] = lrp_function(model, model_name, composite, "baseline_core")
    return functions


def gradient_function(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return the plain gradient of ``model``'s seeded output with respect to the input."""

    def gradient(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        images = images.detach().requires_grad_()
        (grad,) = torch.autograd.grad(model(images), images, one_hot)
        return grad

    return gradient


def inputs_for(model: nn.Module, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and the one-hot seed of each image's top class."""
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model(images)
    return images, one_hot(output, output.argmax(1))


@dataclass
class Row:
    """The measurements of one model x composite."""

    model: str
    composite: str
    seconds: dict[str, float]
    max_rel_diff: float
    peak_mib: dict[str, str]


def time_engines(functions: dict, images: torch.Tensor, one_hot: torch.Tensor, repeats: int):
    """Median seconds per engine: one warm-up each, then ``repeats`` interleaved rounds."""
    results = {name: function(images, one_hot) for name, function in functions.items()}
    times: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            functions[name](images, one_hot)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, results


def peak_memory_mib(model: str, composite: str, engine: str, args) -> str:
    """Measure the extra peak memory of one attribution in a fresh process (see the docstring).

    Returns ``"RSS (tensors)"`` in MiB.
    """
    spec = f"{model},{composite},{engine}"
    options = ["--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)]
    if args.baseline:
        options += ["--baseline", args.baseline]
    result = run_measuring_process(__file__, spec, options)
    return f"{format_rss(result)} ({result['tensor_mib']:.0f})"


def run_measuring_process(script: str, spec: str, options: list[str]) -> dict:
    """Run ``script --measure-one spec`` with the fixed mmap threshold; return its JSON result."""
    command = [sys.executable, script, "--measure-one", spec, *options]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(FIXED_MMAP_THRESHOLD)}
    completed = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_rss(result: dict) -> str:
    """Return a measuring process's extra peak RSS in MiB, marked ``*`` if a lifetime peak."""
    return f"{result['extra_mib']:.0f}" + ("" if result["reset"] else "*")


def extra_peak_rss(
    function: Callable, images: torch.Tensor, one_hot: torch.Tensor
) -> dict[str, float | bool]:
    """Warm ``function`` up, then measure the extra peak RSS of one call.

    Returns ``{"extra_mib": ..., "reset": ...}``: the peak minus the RSS before the call, in MiB,
    and whether the kernel's peak counter could be reset (else the lifetime peak is used).
    """
    function(images, one_hot)
    gc.collect()
    baseline_kib = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    function(images, one_hot)
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"extra_mib": (peak_kib - baseline_kib) / 1024, "reset": reset}


def peak_tensor_mib(function: Callable, images: torch.Tensor, one_hot: torch.Tensor) -> float:
    """Return the peak of the bytes of live tensors during one call of ``function``, in MiB.

    The profiler records every allocation and free on the CPU; their running sum, from the
    start of the call, is the memory the call's tensors took at each moment.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        function(images, one_hot)
    events = profiler.profiler.kineto_results.events()
    changes = sorted(
        (event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def measure_one(spec: str, args) -> None:
    """Child process: print the extra peak RSS and tensor bytes of one attribution as JSON."""
    model_name, composite, engine = spec.split(",")
    model = build_model(model_name)
    images, one_hot = inputs_for(model, args.batch, args.size)
    if args.baseline:
        import_baseline(args.baseline)
    function = attribution_functions(model, model_name, composite, bool(args.baseline))[engine]
    result = extra_peak_rss(function, images, one_hot)
    result["tensor_mib"] = peak_tensor_mib(function, images, one_hot)
    print(json.dumps(result))


def profile_ours(model: nn.Module, model_name: str, composite: str, images, one_hot) -> str:
    """Where our time goes: the top operators by self CPU time in one attribution."""
    ours = lrp_function(model, model_name, composite)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        ours(images, one_hot)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def format_table(rows: list[Row], memory: bool) -> str:
    """Format the rows as a table; with a baseline, also its time and ours/baseline."""
    baseline = any("baseline" in row.seconds for row in rows)
    engines = ENGINES + (("baseline",) if baseline else ())
    header = (
        f"{'model':<9} {'composite':<22} {'gradient s':>10} {'zennit s':>9} {'ours s':>8} "
        f"{'ours/zennit':>11} {'ours/grad':>9} {'max rel diff':>12}"
    )
    if baseline:
        header += f" {'baseline s':>10} {'ours/base':>9} {'base/grad':>9}"
    if memory:
        memory_title = "extra peak MiB, RSS (tensors): " + "/".join(engines)
        header += f" {memory_title}"
    lines = [header, "-" * len(header)]
    for row in rows:
        seconds = row.seconds
        line = (
            f"{row.model:<9} {row.composite:<22} {seconds['gradient']:>10.3f} "
            f"{seconds['zennit']:>9.3f} {seconds['ours']:>8.3f} "
            f"{seconds['ours'] / seconds['zennit']:>11.2f} "
            f"{seconds['ours'] / seconds['gradient']:>9.2f} {row.max_rel_diff:>12.1e}"
        )
        if baseline:
            line += (
                f" {seconds['baseline']:>10.3f} {seconds['ours'] / seconds['baseline']:>9.2f}"
                f" {seconds['baseline'] / seconds['gradient']:>9.2f}"
            )
        if memory:
            peaks = "/".join(row.peak_mib[engine] for engine in engines)
            line += f" {peaks:>{len(memory_title)}}"
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vgg16,resnet50", help="comma-separated")
    parser.add_argument(
        "--composites",
        default="epsilon_plus_flat,epsilon_alpha2_beta1,epsilon_gamma_box",
        help="comma-separated preset names",
    )
    add_timing_arguments(parser, repeats=5, batch=4)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--profile", action="store_true", help="profile ours once per row")
    parser.add_argument(
        "--baseline",
        help="a folder holding an earlier lrp_desktop_core, timed beside this one",
    )
    return parser.parse_args(argv)


def add_timing_arguments(parser: argparse.ArgumentParser, repeats: int, batch: int) -> None:
    """Add the options of every side-by-side benchmark (``--measure-one`` is for its children)."""
    parser.add_argument(
        "--repeats", type=int, default=repeats, help="timed runs per engine (median)"
    )
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure_one:
        measure_one(args.measure_one, args)
        return 0
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.repeats} repeats (median), float32, CPU",
        flush=True,
    )
    engines = ENGINES
    if args.baseline:
        import_baseline(args.baseline)
        engines += ("baseline",)
    rows = []
    for model_name in args.models.split(","):
        model = build_model(model_name)
        images, one_hot = inputs_for(model, args.batch, args.size)
        for composite in args.composites.split(","):
            functions = attribution_functions(model, model_name, composite, bool(args.baseline))
            seconds, results = time_engines(functions, images, one_hot, args.repeats)
            scale = results["zennit"].abs().max().item()
            diff = (results["ours"] - results["zennit"]).abs().max().item() / scale
            peaks = (
                {}
                if args.no_memory
                else {e: peak_memory_mib(model_name, composite, e, args) for e in engines}
            )
            rows.append(Row(model_name, composite, seconds, diff, peaks))
            print(format_table(rows[-1:], not args.no_memory).splitlines()[-1], flush=True)
            if args.profile:
                print(profile_ours(model, model_name, composite, images, one_hot), flush=True)
            assert diff <= AGREEMENT, f"ours and zennit disagree: {diff:.2e} of max|R|"
    print()
    print(format_table(rows, not args.no_memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
