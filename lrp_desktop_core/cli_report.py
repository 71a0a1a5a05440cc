"""``lrp-explain --report FILE.pdf``: the batch as one report, the same the app writes.

Each explained image adds an :class:`~.report.ImagePage` (its input, overlay with colour bar, a
score table and, with ``--evaluate``, its curves); at the end the pages go, behind a summary page,
to the app's vector writer ``lrp_desktop.report_pdf``.  That writer draws with Qt (offscreen, no
window), so only ``--report`` needs PySide6; everything else here stays free of Qt. The option
itself is defined in :mod:`.cli_args`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .evaluate import PerturbationResult
from .explain import Explanation, Method
from .image import DEFAULT_CLIP_PERCENTILE, heatmap_bounds, overlay
from .models import LoadedModel
from .report import SCORE_TITLES, Heatmap, ImagePage, ImageScores, Report, Scale
from .report import image_page as build_page

#: The module that draws reports (needs PySide6).
WRITER_MODULE = "lrp_desktop.report_pdf"


def check(path: Path | None) -> str | None:
    """Return what is wrong with ``--report PATH`` (None when fine or not asked for)."""
    if path is None:
        return None
    if path.suffix.lower() != ".pdf":
        return f"--report writes a PDF; {path.name} does not end in .pdf"
    try:
        importlib.import_module(WRITER_MODULE)
    except ImportError as error:
        return (
            f"--report draws the PDF with Qt, which could not be loaded: {error}. PySide6 is "
            "installed with lrp-desktop: where a system library is named, install it (e.g. "
            "libegl1 or libgl1 with apt-get); otherwise reinstall Qt with "
            "pip install --force-reinstall PySide6-Essentials"
        )
    return None


def image_page(
    loaded: LoadedModel,
    method: Method,
    display: np.ndarray,
    explanation: Explanation,
    index: int,
    record: Mapping,
    image_name: str,
    cmap: str,
    style: str,
    curves: PerturbationResult | None,
) -> ImagePage:
    """Return the report page of sample ``index`` of a batch.

    Parameters
    ----------
    record
        The sample's JSON record (prediction, target, scores under ``"evaluation"``).
    curves
        The batch's perturbation curves (None without ``--evaluate``).
    """
    relevance = np.asarray(explanation.relevance[index])
    bounds = heatmap_bounds(relevance, "signed", DEFAULT_CLIP_PERCENTILE)
    picture = overlay(display, relevance, cmap, bounds=bounds, style=style)
    target = record["target"]
    output = float(record["explained_output"])
    share = float(record["relevance_sum"]) / output if output else float("nan")
    caption = (
        f"{method.label()}; class {target['name']} ({target['index']}); sum R / logit {share:.3f}"
    )
    scores = None
    if curves is not None:
        scores = ImageScores(
            method.label(),
            curves.morf[index],
            curves.lerf[index],
            curves.random[index],
            {key: _number(record["evaluation"].get(key)) for key in SCORE_TITLES},
        )
    heatmap = Heatmap(
        picture,
        caption,
        Scale(method.label(), cmap, *bounds),
        method.label(),
        str(target["name"]),
        share,
        scores,
    )
    return build_page(f"{image_name}: {loaded.title}", display, [heatmap])


def write(
    path: Path,
    loaded: LoadedModel,
    method: Method,
    args: argparse.Namespace,
    pages: list[ImagePage],
) -> Path:
    """Write the report of a run: its settings, then ``pages``."""
    settings = {
        "model": loaded.title,
        "source": loaded.spec.name,
        "weights file": str(loaded.weights_path or "(none)"),
        "weights sha256": loaded.weights_sha256 or "(none)",
        "device": str(args.device),
        "method": method.label()
        + (f", canonizer {method.rulemap.canonizer}" if method.rulemap is not None else ""),
        "colours": f"{args.cmap}, overlay {args.overlay}, clip {DEFAULT_CLIP_PERCENTILE}",
    }
    if args.evaluate:
        settings["perturbation"] = (
            f"regions of {args.region_size} px, fill {args.fill}, "
            "one random baseline per image (seed 0)"
        )
    writer = importlib.import_module(WRITER_MODULE)
    return writer.write_report(path, Report(loaded.title, settings, pages))


def _number(value: object) -> float | None:
    return None if value in (None, "") else float(value)
