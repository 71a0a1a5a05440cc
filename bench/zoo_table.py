"""The zoo table: every registry classifier, made bias-free, arriving as a user's model file.

For every torchvision classifier in :func:`lrp_desktop_core.models.list_models` (all but the demo):

1. build it with seeded random weights and make it bias-free with lively batch norms: every
   parameter named ``bias`` (a Vision Transformer's ``class_token`` and ``pos_embedding`` too)
   and every batch norm's ``running_mean`` zero, the batch norms'
   ``running_var`` uniform in (0.5, 2) and ``weight`` uniform in (0.5, 1.5) (seeded);
2. ``torch.save`` the whole module and load it back with ``load_model(path, trust=True)``, as a
   user's own model arrives: from here on, only its structure says what it is;
3. build ``RuleMap.recommended(model, spec)`` and explain one seeded random image (uniform within
   the input bounds) of the registry's input size (224 where that is larger than 384, to keep
   memory sane; the row says so) with ``explain(model, image, Method("lrp", rules))``.

A row reports the family and whether it is supported (from
:func:`~lrp_desktop_core.recommend.recommend`), the explained logit, the relevance conservation
``sum R / logit`` (1 for a sound preset on a bias-free model), the number of warnings (the audit's,
:func:`~lrp_desktop_core.audit.audit_rulemap`, and in float32 those of
:attr:`Explanation.warnings` about outputs too small for the stabilizers), the time of the audit
(once per model, canonizer set and input shape, cached afterwards), of the LRP and of a plain
gradient (``Method("gradient")``), and their ratio. Every model runs in a process of its own, so
memory is freed between models and a crash (e.g. out of memory) becomes a row; rows are written
as they come.

``--float64`` does the same in float64, with ``epsilon=1e-30`` and ``stabilizer=1e-30`` so that the
stabilizers absorb no relevance. ``explain`` hands its results back in float32, so in float64 the
relevance comes from the same rule map through the composite and
:class:`~lrp_desktop_core.attribution.Gradient`, and the warnings from
:func:`~lrp_desktop_core.audit.audit_rulemap` (which ``explain`` also uses).

Usage::

    python bench/zoo_table.py --out zoo.md                       # all 80 models
    python bench/zoo_table.py --models resnet18,vit_b_16 --float64
    python bench/zoo_table.py --skip-larger-than 300000000       # leave out the giants
    python bench/zoo_table.py --float64 --size 96                # the rules' own conservation
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from lrp_desktop_core.attribution import Gradient
from lrp_desktop_core.audit import audit_rulemap
from lrp_desktop_core.explain import Method, explain, relevance_conservation
from lrp_desktop_core.models import DEFAULT_MODEL, LoadedModel, get_spec, list_models, load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.types import BatchNorm

SEED = 0
LARGEST_INPUT = 384
"""Inputs above this size are explained at :data:`FALLBACK_INPUT` instead."""
FALLBACK_INPUT = 224
TINY = 1e-30
"""Epsilon and stabilizer in float64: small enough that the stabilizers absorb no relevance."""
COLUMNS = (
    "model",
    "family",
    "supported",
    "params (M)",
    "input",
    "logit",
    "sum R / logit",
    "warnings",
    "audit s",
    "LRP s",
    "gradient s",
    "LRP / gradient",
    "note",
)


@dataclass
class Result:
    """One model's row; ``note`` holds the error where it failed."""

    model: str
    family: str = ""
    supported: bool | None = None
    parameters: int | None = None
    input_size: int | None = None
    logit: float | None = None
    conservation: float | None = None
    warnings: int | None = None
    audit_seconds: float | None = None
    lrp_seconds: float | None = None
    gradient_seconds: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        """Return the row's markdown cells, in the order of :data:`COLUMNS`."""
        ratio = (
            self.lrp_seconds / self.gradient_seconds
            if self.lrp_seconds is not None and self.gradient_seconds
            else None
        )
        supported = "" if self.supported is None else ("yes" if self.supported else "no")
        millions = None if self.parameters is None else self.parameters / 1e6
        return [
            self.model,
            self.family,
            supported,
            _number(millions, ".1f"),
            _number(self.input_size, "d"),
            _number(self.logit, ".4g"),
            _number(self.conservation, ".8g"),
            _number(self.warnings, "d"),
            _number(self.audit_seconds, ".2f"),
            _number(self.lrp_seconds, ".2f"),
            _number(self.gradient_seconds, ".2f"),
            _number(ratio, ".2f"),
            self.note.replace("|", "/").replace("\n", " "),
        ]


def _number(value: float | int | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


ADDITIVE_CONSTANTS = ("bias", "class_token", "pos_embedding")
"""Parameters that are added to the signal (Vision Transformers add a class token and a position
embedding to their tokens), zeroed to make a model bias-free. Relative position bias tables stay:
they only shift attention scores inside the softmax, whose weights the attention rules hold."""


def make_bias_free(model: nn.Module, generator: torch.Generator) -> None:
    """Make ``model`` bias-free with lively statistics.

    Zero every additive constant (:data:`ADDITIVE_CONSTANTS`) and batch-norm mean; give batch
    norms random scales and variances, and weights that are zero everywhere (torchvision's Vision
    Transformer head) random values.
    """
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ADDITIVE_CONSTANTS:
                parameter.zero_()
            elif name.rsplit(".", 1)[-1] == "weight" and not parameter.any():
                scale = parameter.shape[-1] ** -0.5
                parameter.copy_(_uniform(parameter, -scale, scale, generator))
        for module in model.modules():
            if isinstance(module, BatchNorm) and module.running_var is not None:
                module.running_mean.zero_()
                module.running_var.copy_(_uniform(module.running_var, 0.5, 2.0, generator))
                if module.weight is not None:
                    module.weight.copy_(_uniform(module.weight, 0.5, 1.5, generator))


def _uniform(
    like: torch.Tensor, low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    return low + (high - low) * torch.rand(like.shape, generator=generator, dtype=like.dtype)


def arrive_as_a_file(name: str, folder: Path, skip_larger_than: int | None) -> LoadedModel | int:
    """Build ``name`` bias-free, save it whole and load it back.

    Where it has more than ``skip_larger_than`` parameters, return that number instead.
    """
    torch.manual_seed(SEED)
    model = get_spec(name).builder().eval()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if skip_larger_than is not None and parameters > skip_larger_than:
        return parameters
    make_bias_free(model, torch.Generator().manual_seed(SEED))
    path = folder / f"{name}.pt"
    torch.save(model, path)
    del model
    loaded = load_model(path, trust=True)
    path.unlink()
    return loaded


def input_size(name: str, override: int | None = None) -> tuple[int, str]:
    """Return the input size of ``name`` and a note saying where it comes from.

    ``override`` wins; else the registry's size, else the fallback (the note says so).
    """
    if override is not None:
        return override, f"input {override} (--size)"
    size = get_spec(name).input_size[0]
    if size > LARGEST_INPUT:
        return FALLBACK_INPUT, f"input {FALLBACK_INPUT} instead of {size} (memory)"
    return size, ""


def measure(
    name: str, float64: bool, skip_larger_than: int | None, size: int | None = None
) -> Result:
    """Everything in one row of the table for the model ``name`` (run in a process of its own)."""
    with tempfile.TemporaryDirectory() as folder:
        loaded = arrive_as_a_file(name, Path(folder), skip_larger_than)
    if isinstance(loaded, int):
        return Result(name, parameters=loaded, note="skipped: larger than --skip-larger-than")
    model = loaded.model
    recommendation = recommend(model)
    size, note = input_size(name, size)
    kwargs = {"epsilon": TINY, "stabilizer": TINY} if float64 else {}
    rulemap = RuleMap.recommended(model, loaded.spec, **kwargs)
    dtype = torch.float64 if float64 else torch.float32
    model.to(dtype)
    low, high = (bound.to(dtype) for bound in loaded.spec.input_bounds())
    generator = torch.Generator().manual_seed(SEED + 1)
    image = low + (high - low) * torch.rand(1, 3, size, size, dtype=dtype, generator=generator)
    with torch.no_grad():
        model(image)  # warms the kernels up, so that neither method pays for it
    start = time.perf_counter()
    warnings = audit_rulemap(model, rulemap, tuple(image.shape)).warnings
    audit_seconds = time.perf_counter() - start
    run = _run_float64 if float64 else _run_float32
    logit, conservation, lrp_seconds, gradient_seconds, more = run(model, image, rulemap)
    warnings = (*warnings, *(warning for warning in more if warning not in warnings))
    return Result(
        name,
        family=recommendation.family,
        supported=recommendation.supported,
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        input_size=size,
        logit=logit,
        conservation=conservation,
        warnings=len(warnings),
        audit_seconds=audit_seconds,
        lrp_seconds=lrp_seconds,
        gradient_seconds=gradient_seconds,
        note=note,
    )


Run = tuple[float, float, float, float, tuple[str, ...]]
"""Logit, sum R / logit, LRP seconds, gradient seconds and the explanation's warnings."""


def _run_float32(model: nn.Module, image: torch.Tensor, rulemap: RuleMap) -> Run:
    """Through :func:`explain`, whose warnings also say where stabilizers take the relevance."""
    gradient = explain(model, image, Method("gradient"))
    lrp = explain(model, image, Method("lrp", rulemap))
    conservation = float(relevance_conservation(lrp)[0])
    logit = float(lrp.explained_output[0])
    return logit, conservation, lrp.seconds, gradient.seconds, lrp.warnings


def _run_float64(model: nn.Module, image: torch.Tensor, rulemap: RuleMap) -> Run:
    """Through the composite in float64 (the audit's warnings are all there is to add)."""

    def top_logit(output: torch.Tensor) -> torch.Tensor:
        return output * nn.functional.one_hot(output.argmax(1), output.shape[1])

    start = time.perf_counter()
    Gradient(model)(image, attr_output=top_logit)
    gradient_seconds = time.perf_counter() - start
    start = time.perf_counter()
    output, relevance = Gradient(model, rulemap.to_composite())(image, attr_output=top_logit)
    lrp_seconds = time.perf_counter() - start
    logit = float(output.max())
    return logit, float(relevance.sum()) / logit, lrp_seconds, gradient_seconds, ()


def measure_in_child(name: str, args: argparse.Namespace) -> Result:
    """Run :func:`measure` in a fresh process; a crash or a timeout becomes the row's note."""
    command = [sys.executable, __file__, "--one", name]
    if args.float64:
        command.append("--float64")
    if args.skip_larger_than is not None:
        command += ["--skip-larger-than", str(args.skip_larger_than)]
    if args.size is not None:
        command += ["--size", str(args.size)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return Result(name, note=f"timed out after {args.timeout} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return Result(**json.loads(lines[-1]))
    killed = " (killed: out of memory?)" if done.returncode < 0 else ""
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return Result(name, note=f"process exited with {done.returncode}{killed}: {last}")


def write_header(stream: TextIO, float64: bool) -> None:
    """Return the settings, then the markdown table's header."""
    dtype = "float64, epsilon = stabilizer = 1e-30" if float64 else "float32"
    stream.write(
        f"Bias-free random-weight models (seed {SEED}) loaded from whole-module files; "
        f"recommended rules; {dtype}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; batch 1.\n\n"
    )
    stream.write("| " + " | ".join(COLUMNS) + " |\n")
    stream.write("|" + "---|" * len(COLUMNS) + "\n")
    stream.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated names (default: all but the demo)")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: stdout)")
    parser.add_argument("--float64", action="store_true", help="compute in float64 (see above)")
    parser.add_argument(
        "--skip-larger-than",
        type=int,
        metavar="N",
        help="skip models with more than N parameters (vit_h_14 and regnet_y_128gf have ~0.6e9)",
    )
    parser.add_argument(
        "--size", type=int, help="input height and width for every model (default: the registry's)"
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per model")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        try:
            result = measure(args.one, args.float64, args.skip_larger_than, args.size)
        except Exception as error:  # any failure of any model becomes its row
            result = Result(args.one, note=f"{type(error).__name__}: {error}")
        print(json.dumps(asdict(result)))
        return 0
    names = args.models.split(",") if args.models else list_models()
    names = [name for name in names if name != DEFAULT_MODEL]
    stream = sys.stdout if args.out is None else args.out.open("w", encoding="utf-8")
    try:
        write_header(stream, args.float64)
        for name in names:
            stream.write("| " + " | ".join(measure_in_child(name, args).cells()) + " |\n")
            stream.flush()
    finally:
        if stream is not sys.stdout:
            stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
