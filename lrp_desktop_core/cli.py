"""``lrp-explain``: explain images from the command line, batched, on any device.

For every image it writes the heatmap overlay (PNG), the raw relevance (``.npy``) and a JSON
record of all settings, the same files the desktop app exports, plus one ``summary.csv``.
Where the heatmaps of LRP may be wrong (parts of the model no rule explains, operations on the
relevance path outside any rule), it says so once per run on stderr, and in every record.
With ``--evaluate`` it adds faithfulness scores (region perturbation AOPC) and, where an object
mask ``<stem>_mask.png`` lies beside an image, localisation scores.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from . import cli_concepts, cli_report
from .cmap import get_cmap
from .composites import COMPOSITES
from .evaluate import (
    DEFAULT_FILL,
    FILLS,
    PerturbationResult,
    localisation_scores,
    object_mask,
    region_perturbation,
)
from .explain import (
    METHOD_KINDS,
    Explanation,
    Method,
    NonFiniteError,
    UnsupportedModelError,
    explain,
)
from .export import (
    DEFAULT_FORMATS,
    EXPORT_FORMATS,
    FORMAT_ALIASES,
    explanation_record,
    export_formats,
    save_explanation,
)
from .image import OVERLAY_STYLES
from .images import ImageLoadError, LoadedImage, image_files, load_image
from .models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from .recommend import Recommendation, recommend
from .report import ImagePage
from .rulemap import RuleMap

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

SUMMARY_FIELDS = (
    "image",
    "status",
    "error",
    "predicted_class",
    "predicted_name",
    "score",
    "explained_class",
    "explained_name",
    "explained_logit",
    "relevance_sum",
    "warnings",
)
#: Per sample its scores, and the batch's perturbation curves (None without ``--evaluate``).
Scores = tuple[list[dict[str, float | str]], PerturbationResult | None]
EVALUATION_FIELDS = ("morf_aopc", "lerf_aopc", "random_aopc", "mass_accuracy", "rank_accuracy")


class UsageError(Exception):
    """A problem with the arguments or the files they name; reported without a traceback."""


@dataclass(frozen=True)
class Job:
    """What every batch of one run shares: the model, the method and what suits the model."""

    loaded: LoadedModel
    method: Method
    target: int | None
    formats: tuple[str, ...]
    recommendation: Recommendation | None
    report: list[ImagePage] | None = None


@dataclass
class Row:
    """One line of the summary."""

    image: Path
    stem: str
    values: dict[str, Any] = field(default_factory=dict)

    def failed(self, error: str) -> None:
        self.values.update(status="failed", error=error)


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
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model name or model file (default: the bundled demo)",
    )
    model.add_argument("--weights", type=Path, help="weights file for --model NAME")
    model.add_argument(
        "--random-weights",
        action="store_true",
        help="explain a torchvision architecture with random weights instead of its pretrained "
        "ones (which are used by default, from the torch hub cache or downloaded once)",
    )
    model.add_argument(
        "--seed",
        type=int,
        help="seed of the random weights (implies --random-weights); the same seed gives the "
        "same weights and relevance; without it a fresh seed is drawn and written to the records",
    )
    model.add_argument(
        "--trust",
        action="store_true",
        help="allow model files that run code (pickle, TorchScript); only for "
        "files from a source you trust",
    )
    method = parser.add_argument_group("method")
    method.add_argument(
        "--method",
        choices=METHOD_KINDS,
        default="lrp",
        help="lrp (default), a gradient or occlusion baseline, or rollout: attention rollout "
        "(Abnar and Zuidema 2020), for Vision Transformers with a class token only and the same "
        "map for every class",
    )
    rules = method.add_mutually_exclusive_group()
    rules.add_argument(
        "--composite",
        choices=sorted(COMPOSITES),
        help="LRP preset (default: the model's recommended one)",
    )
    rules.add_argument(
        "--rules",
        type=Path,
        metavar="RULES.json",
        help="per-layer rule map, e.g. saved by the desktop app",
    )
    method.add_argument(
        "--target",
        default="top1",
        help="class to explain: top1 (default), a class index or a class name",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    run.add_argument("--batch-size", type=_positive_int, default=16)
    run.add_argument(
        "--prefetch",
        type=_non_negative_int,
        default=2,
        metavar="N",
        help="decode and preprocess up to N batches ahead in background threads while the "
        "model computes (default: 2; 0 loads each batch only when it is explained)",
    )
    run.add_argument(
        "--shard",
        default="1/1",
        metavar="K/N",
        help="explain only the K-th of N parts of the sorted image list",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=Path("lrp-explain-output"), metavar="DIR")
    output.add_argument("--cmap", default="coldnhot", help="colour map of the pictures")
    output.add_argument(
        "--overlay",
        choices=OVERLAY_STYLES,
        default=OVERLAY_STYLES[0],
        help="greyscale: the heatmap at uniform opacity over the image in grey (default); "
        "weighted: each pixel as opaque as its relevance is strong; contour: lines around the "
        "top relevance",
    )
    output.add_argument(
        "--format",
        default=",".join(DEFAULT_FORMATS),
        help=f"files per image, comma-separated from {','.join(EXPORT_FORMATS)} (png is an alias "
        f"of overlay; default: {','.join(DEFAULT_FORMATS)})",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    cli_report.add_arguments(output)
    scores = parser.add_argument_group("evaluation")
    scores.add_argument(
        "--evaluate",
        action="store_true",
        help="add AOPC (region perturbation) and localisation scores",
    )
    scores.add_argument("--region-size", type=_positive_int, default=8)
    scores.add_argument(
        "--fill", choices=FILLS, default=DEFAULT_FILL, help="how removed regions are filled"
    )
    cli_concepts.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lrp-explain``; return the exit code (0 ok, 1 some images failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        shard = parse_shard(args.shard)
        formats = _formats(args.format)
        get_cmap(args.cmap)
        device = _device(args.device)
        loaded = _load_model(args)
        method = _method(args, loaded)
        problem = cli_concepts.check(args, loaded.model, method.rulemap) or cli_report.check(
            args.report
        )
        if problem is not None:
            raise UsageError(problem)
        if not args.inputs and args.index_concepts is None:
            raise UsageError("give images or folders to explain (or --index-concepts FOLDER)")
        job = Job(
            loaded,
            method,
            _target(args.target, loaded.spec.class_names),
            formats,
            recommend(loaded.model) if method.kind == "lrp" else None,
            [] if args.report is not None else None,
        )
        found = collect_images(args.inputs, args.recursive) if args.inputs else []
        images = shard_paths(found, *shard)
        summary = args.out / (
            "summary.csv" if shard == (1, 1) else f"summary-{shard[0]}-of-{shard[1]}.csv"
        )
        _check_output(args.out, summary)
    except (UsageError, ValueError) as error:
        print(f"lrp-explain: error: {error}", file=sys.stderr)
        return 2
    loaded.model.to(device)
    if args.index_concepts is not None:
        folder = image_files(args.index_concepts, args.recursive)
        indexed = cli_concepts.run_index(args, loaded, method.rulemap, folder)
        if indexed != 0 or not args.inputs:
            return indexed
    start = time.perf_counter()
    try:
        rows = _run(args, job, images)
    except UnsupportedModelError as error:
        print(f"lrp-explain: error: {error}", file=sys.stderr)
        return 2
    try:
        write_summary(summary, rows, args.evaluate)
    except OSError as error:
        print(f"lrp-explain: error: cannot write the summary {summary}: {error}", file=sys.stderr)
        return 1
    if job.report:
        try:
            cli_report.write(args.report, loaded, method, args, job.report)
        except (OSError, ValueError) as error:
            print(
                f"lrp-explain: error: cannot write the report {args.report}: {error}",
                file=sys.stderr,
            )
            return 1
    failed = sum(row.values.get("status") != "ok" for row in rows)
    elapsed = time.perf_counter() - start
    print(
        f"lrp-explain: {len(rows) - failed} of {len(rows)} images explained in "
        f"{elapsed:.1f} s on {device} ({(len(rows) - failed) / max(elapsed, 1e-9):.2f} images/s); "
        f"{failed} failed; summary: {summary}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (1 <= K <= N) into ``(K, N)``."""
    try:
        part, parts = (int(value) for value in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N, e.g. 2/8, not {text!r}") from None
    if not 1 <= part <= parts:
        raise UsageError(f"--shard {text}: K must lie between 1 and N")
    return part, parts


def collect_images(inputs: Sequence[Path], recursive: bool = False) -> list[tuple[Path, str]]:
    """Return the images named by files and folders, sorted, each with its output stem.

    Files given directly are kept whatever their suffix (so unreadable ones are reported);
    folders contribute their image files, without object masks (``*_mask.png``).  Images found
    in folders get stems with the sub-folder in them (``a/b.png`` -> ``a__b``), and repeated
    stems get a numeric suffix, so no two outputs collide.
    """
    found: dict[Path, str] = {}
    for entry in inputs:
        if entry.is_dir():
            for path in image_files(entry, recursive):
                found.setdefault(path, "__".join(path.relative_to(entry).with_suffix("").parts))
        else:
            found.setdefault(entry, entry.stem)
    ordered = sorted(found.items(), key=lambda item: str(item[0]))
    counts: dict[str, int] = {}
    result = []
    for path, stem in ordered:
        counts[stem] = counts.get(stem, 0) + 1
        result.append((path, stem if counts[stem] == 1 else f"{stem}-{counts[stem]}"))
    if not result:
        raise UsageError("no images found in " + ", ".join(str(entry) for entry in inputs))
    return result


def shard_paths(items: Sequence[Any], part: int, parts: int) -> list[Any]:
    """Return the ``part``-th (1-based) of ``parts`` contiguous, disjoint slices of ``items``."""
    size = len(items)
    return list(items[(part - 1) * size // parts : part * size // parts])


def write_summary(path: Path, rows: Sequence[Row], evaluated: bool) -> None:
    """Write the summary CSV, one row per image."""
    fields = SUMMARY_FIELDS + (EVALUATION_FIELDS if evaluated else ())
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({"image": str(row.image), **row.values})


def _check_output(folder: Path, summary: Path) -> None:
    """Create the output folder and make sure it and the summary can be written, or say why not."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the output folder {folder} is a file; give a folder with --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output folder {folder}: {error.strerror}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"cannot write in the output folder {folder}: {error.strerror}") from None
    if summary.is_dir():
        raise UsageError(f"the summary {summary} is a folder; move it away or choose another --out")
    if summary.exists():
        try:
            with summary.open("a", encoding="utf-8"):
                pass
        except OSError as error:
            raise UsageError(f"cannot write the summary {summary}: {error.strerror}") from None


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


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(item.strip() for item in text.split(",") if item.strip())
    choices = ", ".join((*EXPORT_FORMATS, *FORMAT_ALIASES))
    if not formats:
        raise UsageError(f"--format takes {choices}, not {text!r}")
    try:
        return export_formats(formats)
    except ValueError:
        raise UsageError(f"--format takes {choices}, not {text!r}") from None


def _device(text: str) -> torch.device:
    from .devices import parse_device

    try:
        return parse_device(text)
    except ValueError as error:
        raise UsageError(f"--device {text}: {error}") from None


def _load_model(args: argparse.Namespace) -> LoadedModel:
    try:
        random_weights = args.random_weights or args.seed is not None
        pretrained = args.weights is None and not random_weights
        return load_model(
            args.model, args.weights, pretrained=pretrained, trust=args.trust, seed=args.seed
        )
    except (ModelLoadError, ValueError) as error:
        raise UsageError(str(error)) from None


def _method(args: argparse.Namespace, loaded: LoadedModel) -> Method:
    if args.method != "lrp":
        if args.composite or args.rules:
            raise UsageError("--composite and --rules apply to --method lrp only")
        return Method(args.method)
    if args.rules is not None:
        rulemap = RuleMap.load(args.rules)
        problems = rulemap.mismatches(loaded.model)
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise UsageError(f"{args.rules} does not fit the model {args.model}: {shown}")
    else:
        rulemap = RuleMap.recommended(loaded.model, loaded.spec, args.composite)
    return Method("lrp", rulemap)


def _target(text: str, class_names: Sequence[str]) -> int | None:
    if text == "top1":
        return None
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(class_names):
            raise UsageError(f"--target {index} is out of range 0..{len(class_names) - 1}")
        return index
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
    raise UsageError(f"--target {text!r} is not a class name of this model ({shown})")


class _ProgressBar:
    """A plain-text progress bar on a stream: redrawn in place on a terminal, else one line each."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.interactive = stream.isatty()
        self.line_open = False

    def show(self, done: int) -> None:
        if not self.enabled:
            return
        filled = round(30 * done / max(self.total, 1))
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} images"
        if self.interactive:
            self.line_open = done < self.total
            self.stream.write("\r" + line + ("" if self.line_open else "\n"))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def print(self, text: str) -> None:
        """Write ``text`` on lines of its own; the bar is redrawn below it by the next ``show``."""
        if self.line_open:
            self.stream.write("\n")
            self.line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()


def _run(args: argparse.Namespace, job: Job, images: Sequence[tuple[Path, str]]) -> list[Row]:
    """Explain all images batch by batch; each warning is reported once, where it first comes."""
    rows = [Row(path, stem) for path, stem in images]
    bar = _ProgressBar(len(rows), sys.stderr, not args.quiet)
    bar.show(0)
    reported: set[str] = set()
    unsupported = _warnings_report(job.loaded.spec.name, job.recommendation, ())
    if unsupported:  # said before any image, since no image of such a model may come out
        bar.print(unsupported)
    size = args.batch_size
    batches = [rows[first : first + size] for first in range(0, len(rows), size)]
    done = 0
    for batch in loaded_batches(batches, job.loaded.spec, args.prefetch):
        warnings = _explain_batch(args, job, batch)
        done += len(batch)
        if warnings is not None:
            new = [warning for warning in warnings if warning not in reported]
            reported.update(new)
            report = _warnings_report(job.loaded.spec.name, None, new)
            if report:
                bar.print(report)
        bar.show(done)
    return rows


Loaded = tuple[Row, "LoadedImage | ImageLoadError"]


def loaded_batches(
    batches: Iterable[Sequence[Row]], spec: Any, ahead: int = 2
) -> Iterator[list[Loaded]]:
    """Yield each batch's rows with their loaded images (or why loading failed), in order.

    With ``ahead`` > 0 the images are decoded and preprocessed by a pool of threads (Pillow's
    decoders and torch's kernels release the GIL) up to ``ahead`` batches before the batch being
    explained, so loading overlaps computing; with 0 each batch is loaded when it is asked for.
    Either way the results are the same, in the same order: only :class:`ImageLoadError` is
    caught (into the result); any other error is raised where the sequential path raises it.
    """
    if ahead <= 0:
        for batch in batches:
            yield [(row, _try_load(row, spec)) for row in batch]
        return
    pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="lrp-explain-load")
    waiting = iter(batches)
    pending: deque[list[tuple[Row, Future[Any]]]] = deque()

    def submit() -> None:
        batch = next(waiting, None)
        if batch is not None:
            pending.append([(row, pool.submit(_try_load, row, spec)) for row in batch])

    try:
        for _ in range(ahead + 1):
            submit()
        while pending:
            futures = pending.popleft()
            submit()
            yield [(row, future.result()) for row, future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _try_load(row: Row, spec: Any) -> LoadedImage | ImageLoadError:
    try:
        return load_image(row.image, spec)
    except ImageLoadError as error:
        return error


def _warnings_report(
    model_name: str, recommendation: Recommendation | None, warnings: Sequence[str]
) -> str:
    """Return why the heatmaps of a model may be wrong, for people; ``""`` when all is well.

    Parameters
    ----------
    model_name : str
        The model's name, for the header line.
    recommendation : Recommendation or None
        Its ``unsupported`` sentences come first (None for methods other than LRP).
    warnings : sequence of str
        The audit's warnings, from :attr:`~.explain.Explanation.warnings`.

    Returns
    -------
    str
        A header line naming the model, then one indented line per problem.
    """
    problems = [*(recommendation.unsupported if recommendation else ()), *warnings]
    if not problems:
        return ""
    lines = [f"lrp-explain: the heatmaps of {model_name} may be wrong:"]
    lines += [f"  - {problem}" for problem in problems]
    return "\n".join(lines)


def _explain_batch(
    args: argparse.Namespace, job: Job, batch: Sequence[Loaded]
) -> tuple[str, ...] | None:
    """Explain, score and save one loaded batch; failures are recorded in the rows.

    Returns the explanation's warnings, or None where no explanation came about.  A method the
    model does not allow (LRP of a TorchScript model, attention rollout of a model that is not a
    Vision Transformer) raises :class:`~.explain.UnsupportedModelError`, as every batch would fail.
    """
    loaded, method = job.loaded, job.method
    ready = []
    for row, image in batch:
        if isinstance(image, ImageLoadError):
            row.failed(str(image))
            print(f"lrp-explain: skipped {row.image}: {image}", file=sys.stderr)
        else:
            ready.append((row, image))
    try:
        done = _explain_finite(args, job, ready)
    except UnsupportedModelError:
        raise
    except (RuntimeError, ValueError) as error:
        for row, _ in ready:
            if row.values.get("status") != "failed":
                row.failed(f"explaining failed: {error}")
        print(f"lrp-explain: a batch failed: {error}", file=sys.stderr)
        return None
    if done is None:
        return None
    ready, explanation, (scores, curves) = done
    names = loaded.spec.class_names
    for index, (row, image) in enumerate(ready):
        record = explanation_record(
            model_name=loaded.spec.name,
            method=method,
            explanation=explanation,
            index=index,
            class_names=names,
            weights_path=loaded.weights_path,
            weights_sha256=loaded.weights_sha256,
            image_path=row.image,
            recommendation=job.recommendation,
            pretrained=loaded.pretrained,
            seed=loaded.seed,
        )
        if args.evaluate:
            record["evaluation"] = {
                **scores[index],
                "region_size": args.region_size,
                "fill": args.fill,
            }
        if args.layer is not None:
            try:
                target = int(explanation.target[index])
                record["concepts"] = cli_concepts.write_concepts(
                    args, loaded.model, method.rulemap, image.tensor, target, row.stem
                )
            except (OSError, RuntimeError, ValueError) as error:
                row.failed(f"concept heatmaps failed: {error}")
                continue
        try:
            save_explanation(
                args.out,
                row.stem,
                image.display,
                explanation,
                index,
                record,
                args.cmap,
                job.formats,
                style=args.overlay,
            )
        except OSError as error:
            row.failed(f"writing the results failed: {error}")
            continue
        row.values.update(_summary_values(record), **scores[index] if args.evaluate else {})
        if job.report is not None:
            job.report.append(
                cli_report.image_page(
                    loaded,
                    method,
                    image.display,
                    explanation,
                    index,
                    record,
                    row.image.name,
                    args.cmap,
                    args.overlay,
                    curves,
                )
            )
    return explanation.warnings


def _explain_finite(
    args: argparse.Namespace, job: Job, ready: list[tuple[Row, LoadedImage]]
) -> tuple[list[tuple[Row, LoadedImage]], Explanation, Scores] | None:
    """Explain and score loaded images; those whose numbers are not finite fail on their own.

    When :func:`~.explain.explain` raises :class:`~.explain.NonFiniteError`, the images it names
    fail (all of them where it names none) and the others are explained again.  Returns the images
    explained, their explanation and scores, or None where none is left.
    """
    while ready:
        inputs = torch.stack([image.tensor for _, image in ready])
        try:
            explanation = explain(job.loaded.model, inputs, job.method, job.target)
            paths = [row.image for row, _ in ready]
            return ready, explanation, _scores(args, job.loaded, inputs, explanation, paths)
        except NonFiniteError as error:
            bad = {index for index in error.samples if 0 <= index < len(ready)}
            bad = bad or set(range(len(ready)))
            for index in sorted(bad):
                ready[index][0].failed(f"explaining failed: {error}")
            names = ", ".join(str(ready[index][0].image) for index in sorted(bad))
            print(f"lrp-explain: {names} failed: {error}", file=sys.stderr)
            ready = [item for index, item in enumerate(ready) if index not in bad]
    return None


def _summary_values(record: dict[str, Any]) -> dict[str, Any]:
    prediction, target = record["prediction"], record["target"]
    return {
        "status": "ok",
        "error": "",
        "predicted_class": prediction["index"],
        "predicted_name": prediction["name"],
        "score": f"{prediction['probability']:.6g}",
        "explained_class": target["index"],
        "explained_name": target["name"],
        "explained_logit": f"{record['explained_output']:.6g}",
        "relevance_sum": f"{record['relevance_sum']:.6g}",
        "warnings": len(record["warnings"]),
    }


def _scores(
    args: argparse.Namespace,
    loaded: LoadedModel,
    inputs: torch.Tensor,
    explanation: Explanation,
    paths: Sequence[Path],
) -> Scores:
    """Return the evaluation scores per sample and the curves (empty dicts and None without
    ``--evaluate``)."""
    if not args.evaluate:
        return [{} for _ in paths], None
    curves = region_perturbation(
        loaded.model,
        inputs,
        explanation.relevance,
        explanation.target,
        region_size=args.region_size,
        fill=args.fill,
        batch_size=args.batch_size * 3,
    )
    aopcs = zip(curves.morf_aopc, curves.lerf_aopc, curves.random_aopc, strict=True)
    scores = []
    for index, (path, (morf, lerf, rand)) in enumerate(zip(paths, aopcs, strict=True)):
        entry: dict[str, float | str] = {"morf_aopc": morf, "lerf_aopc": lerf, "random_aopc": rand}
        mask = object_mask(path, loaded.spec)
        if mask is not None:
            local = localisation_scores(explanation.relevance[index : index + 1], mask)
            entry.update(mass_accuracy=local.mass_accuracy[0], rank_accuracy=local.rank_accuracy[0])
        scores.append({key: _rounded(value) for key, value in entry.items()})
    return scores, curves


def _rounded(value: Any) -> float | str:
    value = float(value)
    return "" if math.isnan(value) else float(f"{value:.6g}")


__all__ = ["build_parser", "collect_images", "main", "parse_shard", "shard_paths"]

if __name__ == "__main__":
    raise SystemExit(main())
