"""The arguments of ``lrp-explain``: its parser and the checks that need no model, free of torch.

Every choice comes from the catalogue (:mod:`.names`), so ``--help`` and argument errors answer
before the engine is imported. :func:`parse_arguments` returns the parsed arguments with
``shard`` as ``(K, N)`` and ``formats`` resolved; what needs the model (its name, weights, rules,
target, layer) and the device is checked by :mod:`.cli_run`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .names import (
    COLOUR_MAPS,
    DEFAULT_EXPORT_FORMATS,
    DEFAULT_MODEL,
    EXPORT_FORMATS,
    FILLS,
    METHODS,
    OVERLAY_STYLES,
    PRESETS,
    export_formats,
)

EPILOG = """\
outputs, per image: <stem>_overlay.png, <stem>_heatmap.png, <stem>.npy (relevance, C x H x W),
<stem>.json (record), and with --format side_by_side <stem>_side_by_side.png (input | heatmap |
overlay);
and summary.csv (summary-K-of-N.csv with --shard) with one row per image; with --report FILE.pdf
one vector report (needs PySide6, no window): a summary page (settings, mean +- std of every
score, the mean curves with their spread under --evaluate), then one page per image.

warnings: with --method lrp, what may make the heatmaps wrong (operations on the relevance path
outside any rule, parts of the model no rule explains) is printed once per run on stderr; each
record lists it under "warnings" (and what suits the model, and why, under "recommendation"),
and the summary counts it per image.

exit codes: 0 all images explained; 1 some images failed (see the summary and stderr; an image
whose numbers turn NaN or infinite fails on its own, the rest of its batch is explained again);
2 bad arguments, model, weights or rules file, a device that does not exist, an output folder or
summary that cannot be written (checked before any image is explained), or a method the model
does not allow: LRP of a TorchScript model (use a gradient-based method or occlusion there),
attention rollout of a model that is not a Vision Transformer with a class token.

splitting a large data set over many machines: --shard K/N explains the K-th (1-based) of N
disjoint parts of the sorted image list, e.g. in a Slurm job array:
  #SBATCH --array=0-9
  lrp-explain data/ --device cuda --out results \\
      --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT
"""


class UsageError(Exception):
    """A problem with the arguments or the files they name; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``lrp-explain``."""
    parser = argparse.ArgumentParser(
        prog="lrp-explain",
        description="Explain image classifications with Layer-wise Relevance Propagation "
        "(or a gradient, occlusion or attention rollout baseline) and write heatmaps, raw "
        "relevance and records.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", type=Path)
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders too")
    _add_model_options(parser.add_argument_group("model"))
    _add_method_options(parser.add_argument_group("method"))
    _add_run_options(parser.add_argument_group("run"))
    _add_output_options(parser.add_argument_group("output"))
    _add_evaluation_options(parser.add_argument_group("evaluation"))
    _add_concept_options(parser.add_argument_group("concepts (LRP only)"))
    return parser


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments of ``lrp-explain`` as far as no model is needed.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    argparse.Namespace
        The arguments, ``shard`` as ``(K, N)`` and ``formats`` the resolved export formats.

    Raises
    ------
    UsageError
        For a bad ``--shard``, ``--format`` or ``--cmap``, or nothing to do.
    SystemExit
        As :meth:`argparse.ArgumentParser.parse_args` does, for ``--help`` or a malformed
        argument.
    """
    args = build_parser().parse_args(argv)
    args.shard = parse_shard(args.shard)
    args.formats = parse_formats(args.format)
    check_cmap(args.cmap)
    if not args.inputs and args.index_concepts is None:
        raise UsageError("give images or folders to explain (or --index-concepts FOLDER)")
    return args


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (1 <= K <= N) into ``(K, N)``."""
    try:
        part, parts = (int(value) for value in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N, e.g. 2/8, not {text!r}") from None
    if not 1 <= part <= parts:
        raise UsageError(f"--shard {text}: K must lie between 1 and N")
    return part, parts


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``--format``: comma-separated names or aliases of the catalogue's export formats."""
    formats = tuple(item.strip() for item in text.split(",") if item.strip())
    aliases = [alias for entry in EXPORT_FORMATS.values() for alias in entry.aliases]
    message = f"--format takes {', '.join((*EXPORT_FORMATS, *aliases))}, not {text!r}"
    if not formats:
        raise UsageError(message)
    try:
        return export_formats(formats)
    except ValueError:
        raise UsageError(message) from None


def check_cmap(text: str) -> None:
    """Refuse a ``--cmap`` that is neither a named map nor a colour map source."""
    if text not in COLOUR_MAPS and "," not in text and ":" not in text:
        raise UsageError(
            f"--cmap {text!r} is no colour map; known maps: {COLOUR_MAPS.choices()} (or write a "
            "source of at least two comma-separated colours, e.g. '00f,80:fff,f00')"
        )


def _add_model_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model name or model file (default: the bundled demo)",
    )
    group.add_argument("--weights", type=Path, help="weights file for --model NAME")
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="explain a torchvision architecture with random weights instead of its pretrained "
        "ones (which are used by default, from the torch hub cache or downloaded once)",
    )
    group.add_argument(
        "--seed",
        type=int,
        help="seed of the random weights (implies --random-weights); the same seed gives the "
        "same weights and relevance; without it a fresh seed is drawn and written to the records",
    )
    group.add_argument(
        "--trust",
        action="store_true",
        help="allow model files that run code (pickle, TorchScript); only for "
        "files from a source you trust",
    )


def _add_method_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--method",
        choices=METHODS.names,
        default=METHODS.default,
        help=_escaped(
            f"{METHODS.default} (default), a gradient or occlusion baseline, or rollout: "
            f"{METHODS.description('rollout')}"
        ),
    )
    rules = group.add_mutually_exclusive_group()
    rules.add_argument(
        "--composite",
        choices=PRESETS.names,
        help="LRP preset (default: the model's recommended one)",
    )
    rules.add_argument(
        "--rules",
        type=Path,
        metavar="RULES.json",
        help="per-layer rule map, e.g. saved by the desktop app",
    )
    group.add_argument(
        "--target",
        default="top1",
        help="class to explain: top1 (default), a class index or a class name",
    )


def _add_run_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--batch-size", type=_positive_int, default=16)
    group.add_argument(
        "--prefetch",
        type=_non_negative_int,
        default=2,
        metavar="N",
        help="decode and preprocess up to N batches ahead in background threads while the "
        "model computes (default: 2; 0 loads each batch only when it is explained)",
    )
    group.add_argument(
        "--shard",
        default="1/1",
        metavar="K/N",
        help="explain only the K-th of N parts of the sorted image list",
    )


def _add_output_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--out", type=Path, default=Path("lrp-explain-output"), metavar="DIR")
    group.add_argument(
        "--cmap",
        default=COLOUR_MAPS.default,
        help=f"colour map of the pictures (default: {COLOUR_MAPS.default})",
    )
    group.add_argument(
        "--overlay",
        choices=OVERLAY_STYLES.names,
        default=OVERLAY_STYLES.default,
        help=_escaped(
            "; ".join(
                f"{name}: {entry.description}"
                + (" (default)" if name == OVERLAY_STYLES.default else "")
                for name, entry in OVERLAY_STYLES.items()
            )
        ),
    )
    aliases = ", ".join(
        f"{alias} is an alias of {entry.name}"
        for entry in EXPORT_FORMATS.values()
        for alias in entry.aliases
    )
    group.add_argument(
        "--format",
        default=",".join(DEFAULT_EXPORT_FORMATS),
        help=f"files per image, comma-separated from {','.join(EXPORT_FORMATS)} ({aliases}; "
        f"default: {','.join(DEFAULT_EXPORT_FORMATS)})",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument(
        "--report",
        type=Path,
        metavar="FILE.pdf",
        help="also write one vector PDF report: a summary (settings, mean +- std of the scores "
        "and the mean curves with --evaluate), then one page per image",
    )


def _add_evaluation_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--evaluate",
        action="store_true",
        help="add AOPC (region perturbation) and localisation scores",
    )
    group.add_argument("--region-size", type=_positive_int, default=8)
    group.add_argument(
        "--fill",
        choices=FILLS.names,
        default=FILLS.default,
        help=_escaped(
            "how removed regions are filled: "
            + "; ".join(f"{name}: {entry.description}" for name, entry in FILLS.items())
        ),
    )


def _add_concept_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--layer",
        metavar="NAME",
        help="a layer as in model.named_modules() while the canonizers are applied (e.g. "
        "layer1.0.canonizer_sum): write <stem>_concepts.npz with its channels' conditional "
        "heatmaps (concept relevance propagation)",
    )
    group.add_argument(
        "--concepts",
        type=_concept_count,
        default=8,
        metavar="K|all",
        help="with --layer: the K channels of most relevance there, or all (default: 8)",
    )
    group.add_argument(
        "--channel-axis",
        type=int,
        default=None,
        metavar="AXIS",
        help="with --layer: the axis of the layer's output that holds its channels (default: "
        "found from the layer, e.g. 1 after convolutions, -1 after linear layers and attention)",
    )
    group.add_argument(
        "--index-concepts",
        type=Path,
        metavar="FOLDER",
        help="with --layer: find every channel's reference images (most relevance, most "
        "activation) among the images in FOLDER and store them for the desktop app",
    )
    group.add_argument(
        "--concept-store",
        type=Path,
        default=None,
        metavar="DIR",
        help="where reference images are stored (default: lrp-desktop/references in the user's "
        "cache folder, $XDG_CACHE_HOME or ~/.cache)",
    )


def _escaped(text: str) -> str:
    """Return ``text`` for an argparse help string, which %-formats it."""
    return text.replace("%", "%%")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def _concept_count(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a count or 'all', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


__all__ = [
    "EPILOG",
    "UsageError",
    "build_parser",
    "parse_arguments",
    "parse_formats",
    "parse_shard",
]
