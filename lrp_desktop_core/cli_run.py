"""The engine side of ``lrp-explain``: explain the images of checked arguments, batch by batch.

:mod:`.cli` parses the arguments (with :mod:`.cli_args`, without torch) and then calls
:func:`run`, which loads the model, checks what needs it, and explains, scores and writes every
image, with one summary for the run.
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
from .cli_args import UsageError
from .cmap import get_cmap
from .evaluate import (
    PerturbationResult,
    localisation_scores,
    object_mask,
    region_perturbation,
)
from .explain import (
    Explanation,
    Method,
    NonFiniteError,
    UnsupportedModelError,
    explain,
)
from .export import explanation_record, save_explanation
from .images import ImageLoadError, LoadedImage, image_files, load_image
from .models import LoadedModel, ModelLoadError, load_model
from .names import SCORES
from .recommend import Recommendation, recommend
from .report import ImagePage
from .rulemap import RuleMap

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
EVALUATION_FIELDS = SCORES.names


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


def run(args: argparse.Namespace) -> int:
    """Explain the images ``args`` name; return the exit code (0 ok, 1 some failed, 2 bad usage).

    Parameters
    ----------
    args : argparse.Namespace
        Arguments from :func:`~.cli_args.parse_arguments` (``shard`` and ``formats`` parsed).
    """
    shard = args.shard
    try:
        get_cmap(args.cmap)
        device = _device(args.device)
        loaded = _load_model(args)
        recommendation = recommend(loaded.model) if args.method == "lrp" else None
        method = _method(args, loaded, recommendation)
        problem = cli_concepts.check(args, loaded.model, method.rulemap) or cli_report.check(
            args.report
        )
        if problem is not None:
            raise UsageError(problem)
        job = Job(
            loaded,
            method,
            _target(args.target, loaded.spec.class_names),
            args.formats,
            recommendation,
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


def _method(
    args: argparse.Namespace, loaded: LoadedModel, recommendation: Recommendation | None
) -> Method:
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
        rulemap = RuleMap.recommended(
            loaded.model, loaded.spec, args.composite, recommendation=recommendation
        )
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
    """Return the evaluation scores per sample and the curves.

    Without ``--evaluate`` the scores are empty dicts and the curves None.
    """
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


__all__ = ["collect_images", "loaded_batches", "run", "shard_paths", "write_summary"]
