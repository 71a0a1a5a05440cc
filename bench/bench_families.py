"""Speed and memory of LRP per torchvision family: a plain gradient, ours and zennit side by side.

One model per family (its smallest member) with random weights, in eval mode and float32, on a
seeded random input (224 x 224, 299 x 299 for Inception v3). Per model, the engines run on the same
model and input, interleaved and in a rotating order, after one warm-up run each (which also runs
our audit of the rule map once; it is cached per model and canonizer set, as in the app and the
CLI):

* ``gradient``: :func:`lrp_desktop_core.explain.explain` with ``Method("gradient")``;
* ``ours``: ``explain`` with ``Method("lrp", rules)``, where
  ``rules = RuleMap.recommended(model, spec, "epsilon_plus_flat")`` has the canonizers that the
  model's structure calls for;
* ``zennit``: zennit 0.5.1's ``EpsilonPlusFlat`` where zennit has a matching canonizer
  (``ResNetCanonizer`` for the ResNet family, ResNeXt and Wide ResNet included, ``VGGCanonizer`` for
  VGG, none needed for AlexNet and SqueezeNet); "-" elsewhere.

The table shows the median of the timed repeats, the ratios ours/gradient (the target is at most 3)
and ours/zennit, the largest difference between ours and zennit relative to zennit's largest
relevance (both explain the logit, so they should agree), and the extra peak memory of one
attribution, measured after a warm-up in a fresh process per model and engine as ``bench_lrp.py``
does (``*`` where the peak-RSS counter cannot be reset).

Usage::

    python bench/bench_families.py                                   # all 18 families
    python bench/bench_families.py --models alexnet,resnet18 --repeats 2 --no-memory
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from bench_lrp import (
    add_timing_arguments,
    extra_peak_rss,
    format_rss,
    inputs_for,
    run_measuring_process,
    time_engines,
)
from torch import nn

from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.models import load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap

FAMILIES = (
    "alexnet",
    "vgg11_bn",
    "resnet18",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "convnext_tiny",
)
"""The smallest member of every CNN family in the registry."""
PRESET = "epsilon_plus_flat"
ENGINES = ("gradient", "ours", "zennit")
SIZES = {"inception_v3": 299}
"""Input sizes other than 224."""
ZENNIT_CANONIZERS: dict[str, str | None] = {
    "ResNet": "ResNetCanonizer",
    "VGG": "VGGCanonizer",
    "AlexNet": None,
    "SqueezeNet": None,
}
"""Our family name (from :func:`recommend`) -> the class in ``zennit.torchvision`` that suits it."""

Attribution = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Row:
    """The measurements of one model."""

    model: str
    family: str
    size: int
    seconds: dict[str, float]
    max_rel_diff: float | None
    peak_mib: dict[str, str]


def build(name: str, seed: int = 0) -> tuple[nn.Module, RuleMap, str]:
    """Return registry model ``name`` (seeded random weights), its LRP rules and its family."""
    torch.manual_seed(seed)
    loaded = load_model(name)
    rulemap = RuleMap.recommended(loaded.model, loaded.spec, PRESET)
    return loaded.model, rulemap, recommend(loaded.model).family


def attribution_functions(
    model: nn.Module, rulemap: RuleMap, family: str
) -> dict[str, Attribution]:
    """One function ``(images, one_hot) -> relevance`` per engine; zennit only where it fits."""
    lrp = Method("lrp", rulemap)

    def through_explain(method: Method) -> Attribution:
        def attribute(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(explain(model, images, method, one_hot.argmax(1)).relevance)

        return attribute

    functions = {"gradient": through_explain(Method("gradient")), "ours": through_explain(lrp)}
    if family in ZENNIT_CANONIZERS:
        functions["zennit"] = _zennit_function(model, ZENNIT_CANONIZERS[family])
    return functions


def _zennit_function(model: nn.Module, canonizer: str | None) -> Attribution:
    import zennit.torchvision
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES

    def attribute(images: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        canonizers = [] if canonizer is None else [getattr(zennit.torchvision, canonizer)()]
        composite = ZENNIT_COMPOSITES[PRESET](canonizers=canonizers)
        with ZennitGradient(model, composite) as attributor:
            return attributor(images, attr_output=lambda output: output * one_hot)[1]

    return attribute


def measure_row(name: str, args: argparse.Namespace) -> Row:
    """Time the engines on ``name`` and, unless ``--no-memory``, measure their peak memory."""
    model, rulemap, family = build(name)
    size = SIZES.get(name, 224)
    images, one_hot = inputs_for(model, args.batch, size)
    functions = attribution_functions(model, rulemap, family)
    seconds, results = time_engines(functions, images, one_hot, args.repeats)
    diff = None
    if "zennit" in results:
        scale = results["zennit"].abs().max().item()
        diff = (results["ours"] - results["zennit"]).abs().max().item() / scale
    peaks = {} if args.no_memory else {e: peak_memory_mib(name, e, args) for e in functions}
    return Row(name, family, size, seconds, diff, peaks)


def peak_memory_mib(name: str, engine: str, args: argparse.Namespace) -> str:
    """Return the extra peak RSS of one attribution, measured in a fresh process."""
    options = ["--batch", str(args.batch), "--threads", str(args.threads)]
    return format_rss(run_measuring_process(__file__, f"{name},{engine}", options))


def measure_one(spec: str, args: argparse.Namespace) -> None:
    """Child process: build, then print the extra peak RSS of one warmed-up attribution."""
    name, engine = spec.split(",")
    model, rulemap, family = build(name)
    images, one_hot = inputs_for(model, args.batch, SIZES.get(name, 224))
    function = attribution_functions(model, rulemap, family)[engine]
    print(json.dumps(extra_peak_rss(function, images, one_hot)))


def format_row(row: Row, memory: bool) -> str:
    """One line of the table (see :func:`header`)."""
    seconds = row.seconds
    zennit = seconds.get("zennit")
    cells = [
        f"{row.model:<19}",
        f"{row.family:<13}",
        f"{row.size:>4}",
        f"{seconds['gradient']:>10.3f}",
        f"{seconds['ours']:>8.3f}",
        f"{zennit:>9.3f}" if zennit else f"{'-':>9}",
        f"{seconds['ours'] / seconds['gradient']:>9.2f}",
        f"{seconds['ours'] / zennit:>11.2f}" if zennit else f"{'-':>11}",
        f"{row.max_rel_diff:>12.1e}" if row.max_rel_diff is not None else f"{'-':>12}",
    ]
    if memory:
        peaks = "/".join(row.peak_mib.get(engine, "-") for engine in ENGINES)
        cells.append(f"{peaks:>32}")
    return " ".join(cells)


def header(memory: bool) -> str:
    """Return the table's header line and rule."""
    line = (
        f"{'model':<19} {'family':<13} {'size':>4} {'gradient s':>10} {'ours s':>8} "
        f"{'zennit s':>9} {'ours/grad':>9} {'ours/zennit':>11} {'max rel diff':>12}"
    )
    if memory:
        line += f" {'extra peak MiB grad/ours/zennit':>32}"
    return line + "\n" + "-" * len(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="models: " + ", ".join(FAMILIES),
    )
    parser.add_argument(
        "--models", default=",".join(FAMILIES), help="comma-separated names (default: all below)"
    )
    add_timing_arguments(parser, repeats=3, batch=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure_one:
        measure_one(args.measure_one, args)
        return 0
    memory = not args.no_memory
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
        f"{args.repeats} repeats (median), float32, CPU, preset {PRESET}",
        flush=True,
    )
    print(header(memory), flush=True)
    rows = []
    for name in args.models.split(","):
        rows.append(measure_row(name, args))
        print(format_row(rows[-1], memory), flush=True)
    ratios = [row.seconds["ours"] / row.seconds["gradient"] for row in rows]
    print(f"\nours/gradient: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
