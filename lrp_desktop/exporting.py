"""Writing what the viewer shows: the view, comparison figures, raw relevance and reports.

The figures are drawn again from the cached relevance with the current display settings (the same
colours as on screen).  PNG figures and raw files are written by the core's exporters; PDF and
SVG figures and reports are drawn as vector files (:mod:`.vector_figure`, :mod:`.report_pdf`)
from a :class:`~lrp_desktop_core.report.Report`, the same writer ``lrp-explain --report`` uses.
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
    explanation_record,
    save_explanation,
    save_figure,
)
from lrp_desktop_core.image import heatmap_bounds
from lrp_desktop_core.names import METHODS
from lrp_desktop_core.report import (
    SCORE_TITLES,
    Heatmap,
    ImagePage,
    ImageScores,
    Report,
    Scale,
    image_page,
)

from .comparison import conservation_note, scores_note
from .heatmap_view import render
from .report_pdf import write_report
from .session import DisplaySettings, PanelSpec, Session
from .vector_drawing import VECTOR_SUFFIXES
from .vector_figure import write_figure

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
        raise ExportError(f"could not write {path}; check that the folder exists and is writable")
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


def render_panels(
    session: Session,
    bounds: Sequence[tuple[float, float] | None],
    display: DisplaySettings | None = None,
) -> list[RenderedPanel]:
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
            raise ExportError(
                f"the panel {spec.caption()} is not computed yet; wait until every panel is shown"
            )
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
    return (
        f"{spec.caption()}{rules}; class {_class_name(session, int(result.target[0]))}; "
        f"{conservation_note(result)}"
    )


def figure_title(session: Session) -> str:
    """Return the title line of a figure: the model and where its weights came from."""
    model = session.model
    if model is None:
        return "lrp-desktop"
    return f"{model.title}, on {model.device}"


def save_comparison_figure(
    session: Session,
    path: Path,
    bounds: Sequence[tuple[float, float] | None],
    plot_picture: np.ndarray | None = None,
) -> Path:
    """Write the comparison as a captioned grid: vector PDF or SVG, or PNG, by ``path``'s suffix.

    Vector output keeps text as text and has a colour bar per scale and the mean perturbation
    curves with their bands.

    Parameters
    ----------
    bounds
        Each panel's colour scale, see :func:`render_panels`.
    plot_picture
        A picture of the evaluation plot, added as the last panel of a PNG figure when given.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ExportError(
            f"a figure is written as {', '.join(FIGURE_SUFFIXES)}; {path.name} ends otherwise"
        )
    panels = render_panels(session, bounds)
    if not panels:
        raise ExportError("the comparison has no panels; add some first")
    pictures = [panel.picture for panel in panels]
    captions = [panel.caption for panel in panels]
    if path.suffix.lower() in VECTOR_SUFFIXES:
        specs = session.comparison.panels
        scales = [
            _panel_scale(spec, session.panel_result(spec).relevance[0], bound, session.display)
            for spec, bound in zip(specs, bounds, strict=True)
        ]
        curves = (
            comparison_report(session, bounds).mean_curves("morf")
            if session.evaluation is not None
            else []
        )
        return write_figure(path, pictures, captions, scales, figure_title(session), curves)
    if plot_picture is not None:
        pictures.append(plot_picture)
        captions.append("Perturbation curves (MoRF) with the random baseline")
    return save_figure(path, pictures, captions, title=figure_title(session))


def save_current_explanation(
    session: Session, folder: Path, stem: str | None = None
) -> dict[str, Path]:
    """Write the main view's explanation as on screen.

    The files are overlay and heatmap PNGs (same colours, style and scale as the view), the raw
    relevance ``.npy`` and the JSON record.
    """
    explanation = session.explanation
    path = session.current_image
    model = session.model
    if explanation is None or path is None or model is None or not session.explanation_is_current:
        raise ExportError(
            "there is no finished explanation to export; wait until the heatmap is shown"
        )
    method = explanation.method
    record = explanation_record(
        model_name=model.source,
        method=method,
        explanation=explanation,
        index=0,
        class_names=model.class_names,
        weights_path=model.weights_path,
        weights_sha256=model.weights_sha256,
        image_path=path,
        pretrained=model.pretrained,
        seed=model.seed,
    )
    stem = stem or safe_stem(f"{path.stem}_{method.label()}")
    display = session.display
    return save_explanation(
        folder,
        stem,
        session.displays[path],
        explanation,
        0,
        record,
        cmap=display.cmap,
        clip_percentile=display.clip_percentile,
        mode=display.mode,
        opacity=display.opacity,
        style=display.overlay,
    )


def save_comparison_report(
    session: Session, path: Path, bounds: Sequence[tuple[float, float] | None]
) -> Path:
    """Write the comparison as a vector PDF report (see :func:`comparison_report`)."""
    return write_report(path, comparison_report(session, bounds))


def comparison_report(session: Session, bounds: Sequence[tuple[float, float] | None]) -> Report:
    """Return the comparison as a report.

    A summary page of the settings and scores across images comes first, then per image its
    input, heatmaps with colour bars, curves and a score table.

    Parameters
    ----------
    bounds
        Each panel's colour scale as on screen, see :func:`render_panels`.
    """
    panels = render_panels(session, bounds)
    if not panels:
        raise ExportError("the comparison has no panels; add some first")
    specs = session.comparison.panels
    by_image: dict[Path, list[int]] = {}
    for index, spec in enumerate(specs):
        by_image.setdefault(spec.image, []).append(index)
    pages = [
        _image_page(session, image, indices, panels, bounds) for image, indices in by_image.items()
    ]
    return Report(figure_title(session), _report_settings(session, specs), pages)


def _image_page(
    session: Session,
    image: Path,
    indices: list[int],
    panels: list[RenderedPanel],
    bounds: Sequence[tuple[float, float] | None],
) -> ImagePage:
    evaluation = session.evaluation
    heatmaps = []
    for index in indices:
        spec = session.comparison.panels[index]
        result = session.panel_result(spec)
        output = float(result.explained_output[0])
        share = float(result.relevance_sum[0]) / output if output else float("nan")
        scores = None
        if evaluation is not None:
            curves = evaluation.panels[index]
            scores = ImageScores(
                spec.method.label(),
                curves.morf,
                curves.lerf,
                curves.random,
                {key: getattr(curves, key) for key in SCORE_TITLES},
            )
        heatmaps.append(
            Heatmap(
                panels[index].picture,
                panels[index].caption,
                _panel_scale(spec, result.relevance[0], bounds[index], session.display),
                spec.method.label(),
                _class_name(session, int(result.target[0])),
                share if METHODS[spec.method.kind].conserving else None,
                scores,
            )
        )
    return image_page(f"{image.name}: {figure_title(session)}", session.displays[image], heatmaps)


def _panel_scale(
    spec: PanelSpec,
    relevance: np.ndarray,
    bounds: tuple[float, float] | None,
    display: DisplaySettings,
) -> Scale:
    """Return the colour scale a panel is drawn with: its kind's shared one, or its own."""
    if bounds is not None:
        return Scale(METHODS.title(spec.method.kind), display.cmap, *bounds, display.mode)
    low, high = heatmap_bounds(relevance, display.mode, display.clip_percentile)
    return Scale(spec.method.label(), display.cmap, low, high, display.mode)


def _report_settings(session: Session, specs: Sequence[PanelSpec]) -> dict[str, str]:
    model = session.model
    settings = {
        "model": model.title if model else "(none)",
        "source": model.source if model else "",
        "weights file": str(model.weights_path) if model and model.weights_path else "(none)",
        "weights sha256": (model.weights_sha256 or "(none)") if model else "",
        "device": session.device,
        "colours": (
            f"{session.display.cmap}, mode {session.display.mode}, overlay "
            f"{session.display.overlay}, clip {session.display.clip_percentile}"
        ),
    }
    for spec in specs:
        method = spec.method
        text = method.label()
        if method.rulemap is not None:
            text += f", canonizer {method.rulemap.canonizer}"
        settings.setdefault(f"method: {method.label()}", text)
    evaluation = session.evaluation
    if evaluation is not None:
        settings["perturbation"] = (
            f"regions of {evaluation.region_size} px, "
            f"{evaluation.steps} steps, fill {evaluation.fill}, "
            "one random baseline per image (seed 0)"
        )
    return settings
