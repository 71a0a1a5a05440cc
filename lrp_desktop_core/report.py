"""The content of a report, free of any drawing: a summary across images, then one page per image.

The app and ``lrp-explain --report`` both fill a :class:`Report` and hand it to one writer
(``lrp_desktop.report_pdf``), so a report looks the same whichever made it.  Scores and curves
are summarised here: mean and standard deviation per method across images, the mean MoRF and
LeRF curves with their spread, and the random baseline (one per image) the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .names import SCORES

#: The scores a report summarises, with their column titles (from the catalogue).
SCORE_TITLES = {name: entry.title for name, entry in SCORES.items()}
#: Label of the random baseline in curves and tables.
BASELINE_LABEL = "random baseline"


@dataclass(frozen=True)
class Scale:
    """A colour scale drawn as a colour bar.

    It holds its label, colour map, the range of the shown quantity (``image.heatmap_bounds``)
    and the display mode (``image.MODES``).
    """

    label: str
    cmap: str
    low: float
    high: float
    mode: str = "signed"


@dataclass(frozen=True)
class Band:
    """A curve with its spread: the mean over ``count`` curves and their standard deviation."""

    label: str
    mean: np.ndarray
    std: np.ndarray
    count: int


@dataclass(frozen=True)
class ImageScores:
    """The evaluation of one heatmap: its curves and scores (localisation may be missing)."""

    method: str
    morf: np.ndarray
    lerf: np.ndarray
    random: np.ndarray
    scores: Mapping[str, float | None]


@dataclass(frozen=True)
class ImagePage:
    """One page per input image.

    Attributes
    ----------
    title : str
        Page heading (the image name and the model).
    image : np.ndarray
        The input picture, (H, W, 3) uint8, drawn at its native resolution.
    heatmaps : sequence of np.ndarray
        The compared pictures, RGB or RGBA uint8.
    captions : sequence of str
        One caption per heatmap (wrapped, never cut).
    scales : sequence of int
        Per heatmap, the index of its colour scale in ``page_scales``.
    page_scales : sequence of Scale
        The colour scales of this page, one colour bar each.
    table : sequence of sequence of str
        Per-heatmap numbers, the first row the header.
    evaluations : sequence of ImageScores
        Curves and scores of the heatmaps (empty without an evaluation); all share one random
        baseline, the image's.
    """

    title: str
    image: np.ndarray
    heatmaps: Sequence[np.ndarray]
    captions: Sequence[str]
    scales: Sequence[int]
    page_scales: Sequence[Scale]
    table: Sequence[Sequence[str]] = ()
    evaluations: Sequence[ImageScores] = ()


@dataclass(frozen=True, eq=False)
class Heatmap:
    """One heatmap of a report page with what the page's table says about it.

    Attributes
    ----------
    picture : np.ndarray
        The picture as drawn (RGB or RGBA uint8).
    caption : str
        Its caption.
    scale : Scale
        Its colour scale; heatmaps with equal scales share one colour bar.
    method : str
        The method's label.
    class_name : str
        The explained class.
    share : float or None
        Sum of relevance over the explained logit; None where the method's scores are no
        shares of the logit.
    evaluation : ImageScores or None
        Its curves and scores (None without an evaluation).
    """

    picture: np.ndarray
    caption: str
    scale: Scale
    method: str
    class_name: str
    share: float | None
    evaluation: ImageScores | None = None


def image_page(title: str, image: np.ndarray, heatmaps: Sequence[Heatmap]) -> ImagePage:
    """Return the page of one input image.

    The page has its heatmaps, a colour bar per distinct scale, and a table with a row per
    heatmap (its scores too where the heatmaps were evaluated).

    The app's report and ``lrp-explain --report`` both build their pages here.
    """
    evaluations = [item.evaluation for item in heatmaps if item.evaluation is not None]
    header = ["method", "class", "sum R / logit"]
    if evaluations:
        header += list(SCORE_TITLES.values())
    table, page_scales = [header], []
    for item in heatmaps:
        if item.scale not in page_scales:
            page_scales.append(item.scale)
        row = [item.method, item.class_name, "n/a" if item.share is None else f"{item.share:.3f}"]
        if item.evaluation is not None:
            row += [_score_text(item.evaluation.scores.get(key)) for key in SCORE_TITLES]
        table.append(row)
    return ImagePage(
        title=title,
        image=image,
        heatmaps=[item.picture for item in heatmaps],
        captions=[item.caption for item in heatmaps],
        scales=[page_scales.index(item.scale) for item in heatmaps],
        page_scales=page_scales,
        table=table,
        evaluations=evaluations,
    )


def _score_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class Report:
    """A whole report: a summary page, then :attr:`pages`.

    Attributes
    ----------
    title : str
        The model as the app names it (weights included).
    settings : mapping of str to str
        Model, weights, method and perturbation settings, listed on the summary page.
    pages : sequence of ImagePage
        One per input image.
    """

    title: str
    settings: Mapping[str, str]
    pages: Sequence[ImagePage]

    def evaluations(self) -> list[ImageScores]:
        """Return every page's evaluations, page by page."""
        return [scores for page in self.pages for scores in page.evaluations]

    def summary_table(self) -> list[list[str]]:
        """Return mean +- std of every score per method across images (header first)."""
        by_method = _by_method(self.evaluations())
        header = ["method", "images", *SCORE_TITLES.values()]
        rows = [header]
        for method, group in by_method.items():
            row = [method, str(len(group))]
            for key in SCORE_TITLES:
                row.append(mean_std_text([item.scores.get(key) for item in group]))
            rows.append(row)
        return rows

    def mean_curves(self, kind: str) -> list[Band]:
        """Return the mean ``kind`` curve ("morf" or "lerf") per method with its spread.

        The random baseline comes last (one per image, so each image counts once).
        """
        bands = [
            band(method, [getattr(item, kind) for item in group])
            for method, group in _by_method(self.evaluations()).items()
        ]
        baselines = [page.evaluations[0].random for page in self.pages if page.evaluations]
        if baselines:
            bands.append(band(BASELINE_LABEL, baselines))
        return bands


def band(label: str, curves: Sequence[np.ndarray]) -> Band:
    """Return the mean and standard deviation of ``curves`` (cut to the shortest one)."""
    length = min(len(curve) for curve in curves)
    stacked = np.stack([np.asarray(curve, dtype=np.float64)[:length] for curve in curves])
    return Band(label, stacked.mean(axis=0), stacked.std(axis=0), len(curves))


def mean_std_text(values: Sequence[float | None]) -> str:
    """Return ``"mean +- std"`` of the given values (missing ones left out), or ``"n/a"``."""
    present = np.array([value for value in values if value is not None and np.isfinite(value)])
    if present.size == 0:
        return "n/a"
    if present.size == 1:
        return f"{present[0]:.4g}"
    spread = present.std()
    spread = 0.0 if spread <= 1e-9 * abs(present.mean()) else spread
    return f"{present.mean():.4g} \u00b1 {spread:.2g}"


def _by_method(evaluations: Sequence[ImageScores]) -> dict[str, list[ImageScores]]:
    grouped: dict[str, list[ImageScores]] = {}
    for item in evaluations:
        grouped.setdefault(item.method, []).append(item)
    return grouped
