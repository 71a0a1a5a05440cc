"""Writing what the viewer shows: the view, comparison figures, raw relevance and reports.

The figures are drawn again from the cached relevance with the current display settings (the same
colours as on screen) and written by the core's exporters, so a figure made here matches one made
with ``lrp-explain``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QWidget

from lrp_desktop_core.export import (
    FIGURE_SUFFIXES,
    Curve,
    ReportPage,
    explanation_record,
    save_explanation,
    save_figure,
    save_report,
)
from lrp_desktop_core.models import weights_label

from .comparison import CONSERVING_KINDS, conservation_note, scores_note
from .heatmap_view import render
from .session import DisplaySettings, PanelSpec, Session

VIEW_SUFFIXES = (".png",)
#: Heatmaps in figures and reports are enlarged (by whole pixels) to at least this size.
FIGURE_PANEL_SIZE = 300
#: Size of the evaluation plot in exported figures.
PLOT_SIZE = (480, 300)


class ExportError(Exception):
    """An export could not be written; the message says why."""


def qimage_to_array(image: QImage) -> np.ndarray:
    """Return a copy of ``image`` as an (H, W, 4) uint8 RGBA array."""
    converted = image.convertToFormat(QImage.Format.Format_RGBA8888)
    height, width = converted.height(), converted.width()
    buffer = np.frombuffer(converted.constBits(), dtype=np.uint8)
    rows = buffer.reshape(height, converted.bytesPerLine())[:, : width * 4]
    return rows.reshape(height, width, 4).copy()


def safe_stem(text: str) -> str:
    """Return ``text`` as a file name stem (letters, digits, ``-``, ``_`` and ``.`` only)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "explanation"


def save_view(widget: QWidget, path: Path) -> Path:
    """Save a picture of ``widget`` (the view as shown, zoom included) as PNG."""
    path = Path(path)
    if path.suffix.lower() not in VIEW_SUFFIXES:
        raise ExportError(f"the view is saved as PNG; {path.name} does not end in .png")
    if not widget.grab().save(str(path), "PNG"):
        raise ExportError(f"could not write {path}; check that the folder exists and is "
                          "writable")
    return path


def copy_view(widget: QWidget) -> None:
    """Put a picture of ``widget`` on the clipboard."""
    QGuiApplication.clipboard().setImage(widget.grab().toImage())


def _class_name(session: Session, index: int) -> str:
    names = session.model.class_names if session.model is not None else ()
    return names[index] if 0 <= index < len(names) else f"class {index}"


def enlarged(picture: np.ndarray, minimum: int = FIGURE_PANEL_SIZE) -> np.ndarray:
    """Repeat pixels (no smoothing) until the shorter side of ``picture`` reaches ``minimum``."""
    factor = max(1, -(-minimum // min(picture.shape[:2])))
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


@dataclass(frozen=True)
class RenderedPanel:
    """A comparison panel drawn for export, with its caption."""

    picture: np.ndarray
    caption: str


def render_panels(session: Session, bounds: Sequence[tuple[float, float] | None],
                  display: DisplaySettings | None = None) -> list[RenderedPanel]:
    """Draw every computed comparison panel as on screen.

    Parameters
    ----------
    bounds
        Each panel's colour scale as on screen (``ComparisonView.panel_bounds``); None for one
        computed from the panel's relevance with the display's clipping, as the view does.
    """
    display = display or session.display
    if len(bounds) != len(session.comparison.panels):
        raise ExportError("the colour scales do not match the panels; try again")
    rendered = []
    evaluation = session.evaluation
    for index, spec in enumerate(session.comparison.panels):
        result = session.panel_result(spec)
        picture = session.displays.get(spec.image)
        if result is None or picture is None:
            raise ExportError(f"the panel {spec.caption()} is not computed yet; wait until every "
                              "panel is shown")
        caption = _panel_caption(session, spec, result)
        if evaluation is not None:
            caption += "; " + scores_note(evaluation.panels[index])
        picture = render(picture, result.relevance[0], display, bounds[index])
        rendered.append(RenderedPanel(enlarged(picture), caption))
    return rendered


def _panel_caption(session: Session, spec: PanelSpec, result) -> str:
    rules = ""
    if spec.method.rulemap is not None:
        rules = f" (canonizer {spec.method.rulemap.canonizer})"
    return (f"{spec.caption()}{rules}; class {_class_name(session, int(result.target[0]))}; "
            f"{conservation_note(result)}")


def figure_title(session: Session) -> str:
    """Return the title line of a figure: the model and where its weights came from."""
    model = session.model
    if model is None:
        return "lrp-desktop"
    return f"{model.title}, on {model.device}"


def save_comparison_figure(session: Session, path: Path,
                           bounds: Sequence[tuple[float, float] | None],
                           plot_picture: np.ndarray | None = None) -> Path:
    """Write the comparison as a captioned grid (PNG, SVG or PDF by the suffix of ``path``).

    Parameters
    ----------
    bounds
        Each panel's colour scale, see :func:`render_panels`.
    plot_picture
        A picture of the evaluation plot, added as the last panel when given.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ExportError(f"a figure is written as {', '.join(FIGURE_SUFFIXES)}; "
                          f"{path.name} ends otherwise")
    panels = render_panels(session, bounds)
    if not panels:
        raise ExportError("the comparison has no panels; add some first")
    pictures = [panel.picture for panel in panels]
    captions = [panel.caption for panel in panels]
    if plot_picture is not None:
        pictures.append(plot_picture)
        captions.append("Perturbation curves (MoRF) with the random baseline")
    return save_figure(path, pictures, captions, title=figure_title(session))


def save_current_explanation(session: Session, folder: Path, stem: str | None = None
                             ) -> dict[str, Path]:
    """Write the main view's explanation as on screen: overlay and heatmap PNGs (same colours,
    style and scale as the view), raw relevance ``.npy`` and JSON record."""
    explanation = session.explanation
    path = session.current_image
    model = session.model
    if explanation is None or path is None or model is None or not session.explanation_is_current:
        raise ExportError("there is no finished explanation to export; wait until the heatmap is "
                          "shown")
    method = explanation.method
    record = explanation_record(
        model_name=model.source, method=method, explanation=explanation, index=0,
        class_names=model.class_names, weights_path=model.weights_path,
        weights_sha256=model.weights_sha256, image_path=path, pretrained=model.pretrained,
        seed=model.seed)
    stem = stem or safe_stem(f"{path.stem}_{method.label()}")
    display = session.display
    return save_explanation(folder, stem, session.displays[path], explanation, 0, record,
                            cmap=display.cmap, clip_percentile=display.clip_percentile,
                            mode=display.mode, opacity=display.opacity, style=display.overlay)


def save_comparison_report(session: Session, path: Path,
                           bounds: Sequence[tuple[float, float] | None]) -> Path:
    """Write a PDF report: per image its input, compared heatmaps, curves and a score table
    (``bounds``: each panel's colour scale, see :func:`render_panels`)."""
    panels = render_panels(session, bounds)
    if not panels:
        raise ExportError("the comparison has no panels; add some first")
    evaluation = session.evaluation
    by_image: dict[Path, list[int]] = {}
    for index, spec in enumerate(session.comparison.panels):
        by_image.setdefault(spec.image, []).append(index)
    pages = []
    for image, indices in by_image.items():
        specs = [session.comparison.panels[i] for i in indices]
        results = [session.panel_result(spec) for spec in specs]
        header = ["panel", "class", "sum R / logit"]
        if evaluation is not None:
            header += ["AOPC MoRF", "AOPC LeRF", "AOPC random", "mass acc.", "rank acc."]
        table = [header]
        curves = []
        for position, (index, spec, result) in enumerate(zip(indices, specs, results,
                                                            strict=True)):
            conserving = spec.method.kind in CONSERVING_KINDS
            share = float(result.relevance_sum[0]) / float(result.explained_output[0]) \
                if float(result.explained_output[0]) else float("nan")
            row = [spec.method.label(), _class_name(session, int(result.target[0])),
                   f"{share:.3f}" if conserving else "n/a"]
            if evaluation is not None:
                scores = evaluation.panels[index]
                row += [f"{scores.morf_aopc:.4g}", f"{scores.lerf_aopc:.4g}",
                        f"{scores.random_aopc:.4g}", _score(scores.mass_accuracy),
                        _score(scores.rank_accuracy)]
                curves.append(Curve(spec.method.label(), scores.morf, scores.morf_aopc))
                if position == 0:
                    curves.append(Curve("random baseline", scores.random, scores.random_aopc))
            table.append(row)
        pages.append(ReportPage(
            title=f"{image.name}: {figure_title(session)}",
            image=session.displays[image],
            heatmaps=[panels[i].picture for i in indices],
            captions=[panels[i].caption for i in indices],
            curves=curves,
            table=table,
            settings=_report_settings(session, specs),
        ))
    return save_report(path, pages)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _report_settings(session: Session, specs: list[PanelSpec]) -> dict[str, str]:
    model = session.model
    settings = {
        "model": model.source if model else "",
        "weights": weights_label(model.weights) if model else "(none)",
        "weights file": str(model.weights_path) if model and model.weights_path else "(none)",
        "weights sha256": (model.weights_sha256 or "") if model else "",
        "device": session.device,
        "colour map": (f"{session.display.cmap}, mode {session.display.mode}, overlay "
                       f"{session.display.overlay}"),
    }
    for spec in specs:
        if spec.method.rulemap is not None:
            settings[f"canonizer ({spec.method.label()})"] = spec.method.rulemap.canonizer
    if session.evaluation is not None:
        settings["perturbation"] = (f"regions of {session.evaluation.region_size} px, "
                                    f"{session.evaluation.steps} steps")
    return settings
