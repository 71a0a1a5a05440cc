"""Write explanations for reports: overlays, raw relevance, JSON records, figures and PDF reports.

Everything here needs only Pillow and numpy:

* :func:`explanation_record` collects every setting that produced an explanation (model, weights
  hash, rule map and why it was recommended, method, class, the audit's warnings, device,
  versions, time) into a JSON-ready dict;
* :func:`save_explanation` writes one sample's overlay and heatmap PNGs (and, on request, the
  input, heatmap and overlay side by side), raw relevance ``.npy`` and record;
* :func:`save_figure` lays panels out in a captioned grid, as PNG, SVG or PDF.

Reports are described by :mod:`.report` and drawn as vector PDF by ``lrp_desktop.report_pdf``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFont

from . import __version__
from .explain import Explanation, Method
from .image import (
    DEFAULT_CLIP_PERCENTILE,
    OVERLAY_STYLES,
    colorize,
    heatmap_bounds,
    overlay,
    side_by_side,
)
from .models import weights_record
from .names import DEFAULT_EXPORT_FORMATS, export_formats
from .torchvision_types import torchvision_version

if TYPE_CHECKING:
    from .recommend import Recommendation

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
MIN_PANEL_SIZE = 160
CAPTION_SIZE = 14
MARGIN = 12
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def explanation_record(
    *,
    model_name: str,
    method: Method,
    explanation: Explanation,
    index: int,
    class_names: Sequence[str] = (),
    weights_path: str | Path | None = None,
    weights_sha256: str | None = None,
    image_path: str | Path | None = None,
    recommendation: Recommendation | None = None,
    pretrained: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Return every setting behind one sample's explanation as a JSON-ready dict.

    Parameters
    ----------
    model_name : str
        The model's name (a registry name or a file path).
    method : Method
        The attribution method, including the rule map for LRP.
    explanation : Explanation
        The batch explanation the sample belongs to.
    index : int
        The sample's position in the batch.
    class_names : sequence of str, optional
        Class names of the model, to name the predicted and explained classes.
    weights_path, weights_sha256 : optional
        The weights file and its SHA-256 hash, where weights were loaded from a file.
    image_path : str or Path, optional
        The explained image.
    recommendation : Recommendation, optional
        What :func:`~.recommend.recommend` decided for the model and why (for LRP).
    pretrained, seed : optional
        The name of published weights, or the seed of random weights (see
        :func:`~.models.weights_record`, which makes the ``weights`` entry).

    Returns
    -------
    dict
        Keys ``image``, ``model``, ``weights``, ``method``, ``canonizer``, ``rulemap``,
        ``recommendation`` (None where not given), ``prediction``, ``target``,
        ``explained_output``, ``relevance_sum``, ``warnings`` (the explanation's, a list that is
        empty when all is well), ``seconds``, ``device``, ``versions`` and ``time`` (UTC,
        ISO 8601).
    """
    predicted = int(np.argmax(explanation.logits[index]))
    rulemap = method.rulemap
    return {
        "image": None if image_path is None else str(image_path),
        "model": model_name,
        "weights": weights_record(
            None if weights_path is None else Path(weights_path), weights_sha256, pretrained, seed
        ),
        "method": {key: value for key, value in method.to_dict().items() if key != "rulemap"},
        "canonizer": None if rulemap is None else rulemap.canonizer,
        "rulemap": None if rulemap is None else rulemap.to_dict(),
        "recommendation": None if recommendation is None else recommendation.to_dict(),
        "prediction": {
            **_class_entry(predicted, class_names),
            "logit": float(explanation.logits[index, predicted]),
            "probability": float(explanation.probabilities[index, predicted]),
        },
        "target": _class_entry(int(explanation.target[index]), class_names),
        "explained_output": float(explanation.explained_output[index]),
        "relevance_sum": float(explanation.relevance_sum[index]),
        "warnings": list(explanation.warnings),
        "seconds": float(explanation.seconds),
        "device": explanation.device,
        "versions": software_versions(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def software_versions() -> dict[str, str]:
    """Return the versions of lrp-desktop, torch, torchvision, numpy, Pillow and Python."""
    return {
        "lrp-desktop": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def save_explanation(
    out_dir: str | Path,
    stem: str,
    display: np.ndarray,
    explanation: Explanation,
    index: int,
    record: Mapping[str, Any],
    cmap: str = "coldnhot",
    formats: Sequence[str] = DEFAULT_EXPORT_FORMATS,
    clip_percentile: float | None = DEFAULT_CLIP_PERCENTILE,
    *,
    mode: str = "signed",
    opacity: float = 0.6,
    style: str = OVERLAY_STYLES[0],
    bounds: tuple[float, float] | None = None,
) -> dict[str, Path]:
    """Write one sample of an explanation: pictures, raw relevance and JSON record.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created if missing).
    stem : str
        File name without suffix; the files are ``<stem>_overlay.png``, ``<stem>_heatmap.png``,
        ``<stem>_side_by_side.png``, ``<stem>.npy`` and ``<stem>.json``.
    display : np.ndarray
        The input picture, (H, W, 3) uint8, at the model's input geometry.
    explanation : Explanation
        The batch explanation.
    index : int
        The sample's position in the batch.
    record : mapping
        The JSON record, e.g. from :func:`explanation_record`.
    cmap : str, optional
        Colour map of the pictures.
    formats : sequence of str, optional
        Names and aliases of the catalogue's :data:`~.names.EXPORT_FORMATS` (by default those
        marked as default).
    clip_percentile : float, optional
        Contrast clipping (see :func:`.image.heatmap_bounds`); None uses max|R|.
    mode, opacity, style : optional
        Display mode, opacity and overlay style (see :func:`.image.overlay`).
    bounds : tuple of float, optional
        The colour scale, winning over ``clip_percentile`` (to write what a viewer shows).

    Returns
    -------
    dict[str, Path]
        The written file per format.
    """
    formats = export_formats(formats)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    relevance = explanation.relevance[index]
    if bounds is None:
        bounds = heatmap_bounds(relevance, mode, clip_percentile)
    look = {"cmap": cmap, "opacity": opacity, "mode": mode, "bounds": bounds, "style": style}
    written: dict[str, Path] = {}
    for kind in formats:
        if kind in ("npy", "json"):
            continue
        written[kind] = folder / f"{stem}_{kind}.png"
        Image.fromarray(_picture(kind, display, relevance, look)).save(written[kind])
    if "npy" in formats:
        written["npy"] = folder / f"{stem}.npy"
        np.save(written["npy"], relevance.astype(np.float32))
    if "json" in formats:
        display_record = {**look, "bounds": list(bounds), "clip_percentile": clip_percentile}
        full_record = {
            **record,
            "display": display_record,
            "files": {key: path.name for key, path in written.items()},
        }
        written["json"] = folder / f"{stem}.json"
        written["json"].write_text(json.dumps(full_record, indent=2, default=_json_default))
    return written


def _picture(kind: str, display: np.ndarray, relevance: np.ndarray, look: dict) -> np.ndarray:
    """Draw one picture format ("overlay", "heatmap" or "side_by_side") as (H, W, 3) uint8."""
    if kind == "heatmap":
        return colorize(relevance, look["cmap"], look["mode"], look["bounds"])
    draw = side_by_side if kind == "side_by_side" else overlay
    picture = draw(
        display,
        relevance,
        look["cmap"],
        look["opacity"],
        look["mode"],
        bounds=look["bounds"],
        style=look["style"],
    )
    return np.ascontiguousarray(picture[..., :3])


@dataclass(frozen=True)
class _Grid:
    """Geometry of a captioned grid: where each panel and caption line goes."""

    width: int
    height: int
    title_height: int
    cell: tuple[int, int]
    columns: int
    caption_lines: list[list[str]]
    line_height: int

    def panel_origin(self, index: int) -> tuple[int, int]:
        row, column = divmod(index, self.columns)
        cell_height = self.cell[1] + self.line_height * self.max_lines + MARGIN
        return (
            MARGIN + column * (self.cell[0] + MARGIN),
            self.title_height + MARGIN + row * cell_height,
        )

    @property
    def max_lines(self) -> int:
        return max((len(lines) for lines in self.caption_lines), default=0)


def save_figure(
    path: str | Path,
    panels: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str | None = None,
    columns: int | None = None,
) -> Path:
    """Write panels in a captioned grid as PNG, SVG or PDF, chosen by the suffix of ``path``.

    Parameters
    ----------
    path : str or Path
        Output file ending in ``.png``, ``.svg`` or ``.pdf``.
    panels : sequence of np.ndarray
        Pictures, (H, W, 3) or (H, W, 4) uint8; small ones are enlarged by whole factors.
    captions : sequence of str
        One caption per panel, wrapped to the panel width.
    title : str, optional
        A line above the grid.
    columns : int, optional
        Panels per row; all in one row up to four panels, otherwise four per row.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise ValueError(
            f"cannot write a figure as {path.name!r}; use {', '.join(FIGURE_SUFFIXES)}"
        )
    if len(panels) != len(captions) or not panels:
        raise ValueError("give at least one panel and exactly one caption per panel")
    pictures = [_enlarge(_as_rgb(panel)) for panel in panels]
    grid = _grid_layout(pictures, captions, title, columns)
    if suffix == ".svg":
        path.write_text(_figure_svg(grid, pictures, title), encoding="utf-8")
    else:
        figure = _figure_raster(grid, pictures, title)
        figure.save(path, **({"resolution": 150.0} if suffix == ".pdf" else {}))
    return path


def _class_entry(index: int, class_names: Sequence[str]) -> dict[str, Any]:
    name = class_names[index] if 0 <= index < len(class_names) else None
    return {"index": index, "name": name}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _as_rgb(panel: np.ndarray) -> Image.Image:
    array = np.asarray(panel)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"a panel must be (H, W, 3) or (H, W, 4) uint8, got {array.shape}")
    picture = Image.fromarray(array)
    if picture.mode == "RGBA":
        background = Image.new("RGB", picture.size, BACKGROUND)
        background.paste(picture, mask=picture.getchannel("A"))
        return background
    return picture


def _enlarge(picture: Image.Image, minimum: int = MIN_PANEL_SIZE) -> Image.Image:
    factor = max(1, math.ceil(minimum / max(picture.size)))
    if factor == 1:
        return picture
    size = (picture.width * factor, picture.height * factor)
    return picture.resize(size, Image.Resampling.NEAREST)


def _wrap(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` pixels (a longer single word overflows)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _grid_layout(
    pictures: Sequence[Image.Image], captions: Sequence[str], title: str | None, columns: int | None
) -> _Grid:
    columns = columns or (len(pictures) if len(pictures) <= 4 else 4)
    cell = (max(p.width for p in pictures), max(p.height for p in pictures))
    font = _font(CAPTION_SIZE)
    lines = [_wrap(caption, font, cell[0]) for caption in captions]
    line_height = CAPTION_SIZE + 4
    title_height = 2 * CAPTION_SIZE + 8 if title else 0
    rows = math.ceil(len(pictures) / columns)
    max_lines = max(len(caption_lines) for caption_lines in lines)
    return _Grid(
        width=MARGIN + columns * (cell[0] + MARGIN),
        height=title_height + MARGIN + rows * (cell[1] + line_height * max_lines + MARGIN),
        title_height=title_height,
        cell=cell,
        columns=columns,
        caption_lines=lines,
        line_height=line_height,
    )


def _figure_raster(grid: _Grid, pictures: Sequence[Image.Image], title: str | None) -> Image.Image:
    figure = Image.new("RGB", (grid.width, grid.height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    if title:
        draw.text((MARGIN, MARGIN), title, fill=INK, font=_font(CAPTION_SIZE + 4))
    font = _font(CAPTION_SIZE)
    for index, picture in enumerate(pictures):
        left, top = grid.panel_origin(index)
        figure.paste(picture, (left, top))
        for number, line in enumerate(grid.caption_lines[index]):
            y = top + picture.height + 2 + number * grid.line_height
            draw.text((left, y), line, fill=INK, font=font)
    return figure


def _figure_svg(grid: _Grid, pictures: Sequence[Image.Image], title: str | None) -> str:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{grid.width}" height="{grid.height}" '
        f'viewBox="0 0 {grid.width} {grid.height}">',
        f'<rect width="{grid.width}" height="{grid.height}" fill="white"/>',
    ]
    text_style = f'font-family="sans-serif" font-size="{CAPTION_SIZE}" fill="black"'
    if title:
        parts.append(
            f'<text x="{MARGIN}" y="{MARGIN + CAPTION_SIZE + 4}" font-family="sans-serif" '
            f'font-size="{CAPTION_SIZE + 4}" fill="black">{escape(title)}</text>'
        )
    for index, picture in enumerate(pictures):
        left, top = grid.panel_origin(index)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        parts.append(
            f'<image x="{left}" y="{top}" width="{picture.width}" height="{picture.height}" '
            f'href="data:image/png;base64,{encoded}"/>'
        )
        for number, line in enumerate(grid.caption_lines[index]):
            y = top + picture.height + (number + 1) * grid.line_height
            parts.append(f'<text x="{left}" y="{y}" {text_style}>{escape(line)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
