"""A heatmap over its image in a pyqtgraph view, with a colour bar, and a captioned frame.

The image sits in one :class:`pyqtgraph.ViewBox` (aspect locked, y pointing down like an image),
so it can be zoomed with the wheel and panned by dragging. Drawing takes the relevance already
computed and the session's display settings; it never computes relevance. The picture itself
is made on the picture thread (:mod:`.picture_thread`), and the view shows it when it arrives.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QApplication,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.image import (
    bar_colors,
    bar_range,
    colorize,
    heatmap_bounds,
    overlay,
    relevance_map,
    side_by_side,
    side_by_side_column,
)

from .picture_thread import picture_thread
from .session import DisplaySettings

#: What a caption shows when its explanation may be wrong (the reasons are its tooltip).
WARNING_MARK = "\N{WARNING SIGN} may be wrong"
WARNING_COLOR = "#b35900"


@dataclass(frozen=True)
class HoverInfo:
    """What lies under the mouse: pixel position, its colour and its relevance (if any)."""

    x: int
    y: int
    rgb: tuple[int, int, int]
    relevance: float | None


def render(
    display: np.ndarray,
    relevance: np.ndarray | None,
    settings: DisplaySettings,
    bounds: tuple[float, float] | None,
) -> np.ndarray:
    """Return the RGB(A) picture for one layer setting (input, heatmap, overlay, side by side).

    Without ``bounds`` the scale comes from this relevance with the settings' clipping, as on
    screen, so an export drawn here equals the view.
    """
    if relevance is None or settings.layer == "input":
        return display
    if bounds is None:
        bounds = heatmap_bounds(relevance, settings.mode, settings.clip_percentile)
    if settings.layer == "heatmap":
        return colorize(relevance, settings.cmap, settings.mode, bounds=bounds)
    draw = side_by_side if settings.layer == "side by side" else overlay
    return draw(
        display,
        relevance,
        settings.cmap,
        settings.opacity,
        settings.mode,
        bounds=bounds,
        style=settings.overlay,
    )


def relevance_colorbar() -> pg.ColorBarItem:
    """Return a vertical colour bar with a "relevance" axis, black on white.

    The axis is as wide as its tick labels and title need (pyqtgraph fixes it at 45 pixels,
    which a label such as "-0.005" overruns into the title), and its labels are relevance itself,
    never rescaled by an SI factor, as in exported figures.
    """
    colorbar = pg.ColorBarItem(
        values=(-1.0, 1.0), interactive=False, width=14, colorMap=pg.colormap.get("CET-D1")
    )
    colorbar.axis.setWidth(None)
    colorbar.axis.enableAutoSIPrefix(False)
    colorbar.axis.setTextPen("k")
    colorbar.axis.setPen("k")
    colorbar.axis.setLabel("relevance", color="k")
    colorbar.setVisible(False)
    return colorbar


def show_scale(
    colorbar: pg.ColorBarItem, bounds: tuple[float, float] | None, settings: DisplaySettings
) -> None:
    """Make ``colorbar`` show the scale ``bounds`` as drawn with ``settings`` (None hides it)."""
    if bounds is None or settings.layer == "input":
        colorbar.setVisible(False)
        return
    colormap = _bar_colormap(bar_colors(bounds, settings.cmap, settings.mode).tobytes())
    if colorbar.colorMap() is not colormap:
        colorbar.setColorMap(colormap)
    colorbar.setLevels(values=bar_range(bounds, settings.mode))
    colorbar.setVisible(True)


@functools.lru_cache(maxsize=32)
def _bar_colormap(colors: bytes) -> pg.ColorMap:
    """Return the colour bar's map of ``colors`` (RGB uint8 bytes, low end first).

    Kept, because pyqtgraph reads the 256 colours one by one in Python: a new explanation on the
    same colour map and mode has the same colours (they depend on the bounds only through their
    signs), and drawing it makes no new map.
    """
    rgb = np.frombuffer(colors, dtype=np.uint8).reshape(-1, 3)
    return pg.ColorMap(np.linspace(0.0, 1.0, len(rgb)), rgb)


@dataclass(frozen=True)
class _Picture:
    """A picture made for a :class:`HeatmapView`, with what hovering and the colour bar read."""

    display: np.ndarray
    relevance: np.ndarray | None
    bounds: tuple[float, float] | None
    settings: DisplaySettings
    picture: np.ndarray


def _make(
    display: np.ndarray | None,
    relevance: np.ndarray | None,
    settings: DisplaySettings,
    bounds: tuple[float, float] | None,
) -> _Picture | None:
    """Make the picture of :meth:`HeatmapView.draw`'s arguments (on the picture thread)."""
    if display is None:
        return None
    relevance = None if relevance is None else relevance_map(relevance)
    if relevance is not None and bounds is None:
        bounds = heatmap_bounds(relevance, settings.mode, settings.clip_percentile)
    return _Picture(
        display, relevance, bounds, settings, render(display, relevance, settings, bounds)
    )


class HeatmapView(pg.GraphicsLayoutWidget):
    """One picture with its heatmap and a colour bar.

    Signals
    -------
    hovered(object)
        A :class:`HoverInfo` when the mouse is over the picture, None when it leaves it.
    """

    hovered = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        #: A scroll area the plain wheel scrolls (Ctrl+wheel zooms); None: the wheel zooms.
        self.scroll_area: QAbstractScrollArea | None = None
        self._keep_fitted = False
        self.setBackground("w")
        self.view_box = self.addViewBox(
            row=0, col=0, lockAspect=True, invertY=True, enableMenu=False
        )
        self.view_box.setBackgroundColor((246, 246, 246))
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view_box.addItem(self.image_item)
        self.colorbar = relevance_colorbar()
        self.addItem(self.colorbar, row=0, col=1)
        self.show_colorbar = True
        self.message = pg.TextItem("", color="k", anchor=(0.5, 0.5))
        self.view_box.addItem(self.message, ignoreBounds=True)
        self.display: np.ndarray | None = None
        self.relevance: np.ndarray | None = None
        self.bounds: tuple[float, float] | None = None
        self.layer = "overlay"
        self._wanted: tuple | None = None
        self._making = False
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.view_box.sigRangeChangedManually.connect(self._stop_fitting)
        self.view_box.sigResized.connect(self._on_resized)

    def show_message(self, text: str) -> None:
        """Write ``text`` in the middle of the view (empty text removes it)."""
        self.message.setText(text)
        rect = self.view_box.viewRect()
        self.message.setPos(rect.center())

    def draw(
        self,
        display: np.ndarray | None,
        relevance: np.ndarray | None,
        settings: DisplaySettings,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        """Draw ``display`` (H, W, 3 uint8) with ``relevance`` (C, H, W or H, W) per ``settings``.

        The picture is made on the :mod:`picture thread <lrp_desktop.picture_thread>` and shown
        when it arrives (:attr:`drawing` is True until then); of several draws asked for while
        one is being made, only the newest is made next.

        Parameters
        ----------
        bounds
            The colour scale ``(vmin, vmax)`` of the shown quantity; computed from this
            relevance (with the settings' clipping) when omitted, given to share one scale.
        """
        self._wanted = (display, relevance, settings, bounds)
        if not self._making:
            self._make_next()

    @property
    def drawing(self) -> bool:
        """Whether a picture asked for with :meth:`draw` is not shown yet."""
        return self._making

    def _make_next(self) -> None:
        wanted, self._wanted = self._wanted, None
        self._making = wanted is not None
        if wanted is not None:
            picture_thread().submit(functools.partial(_make, *wanted), self._show)

    def _show(self, done: Future) -> None:
        if not shiboken6.isValid(self):  # closed while its picture was being made
            return
        if self._wanted is not None:  # a newer picture is wanted: this one is stale
            self._make_next()
            return
        self._making = False
        made: _Picture | None = done.result()  # a drawing error is raised here, on the GUI thread
        if made is None:
            self.display = self.relevance = self.bounds = None
            self.image_item.clear()
            self.colorbar.setVisible(False)
            return
        first = self.display is None or self.display.shape != made.display.shape
        self.display, self.relevance, self.bounds = made.display, made.relevance, made.bounds
        self.layer = made.settings.layer
        self.image_item.setImage(made.picture, autoLevels=False, levels=(0, 255))
        self._show_colorbar(made.settings)
        if first:
            self.fit()

    def _show_colorbar(self, settings: DisplaySettings) -> None:
        shown = self.show_colorbar and self.relevance is not None
        show_scale(self.colorbar, self.bounds if shown else None, settings)

    def fit(self) -> None:
        """Show the whole picture.

        It stays fitted when the view is resized, until the user zooms or pans.
        """
        if self.display is not None:
            self._keep_fitted = True
            self.view_box.enableAutoRange()
            self.view_box.autoRange(padding=0.02)

    def _stop_fitting(self, *_args) -> None:
        self._keep_fitted = False

    def _on_resized(self, *_args) -> None:
        """Keep the whole picture in view while the view grows, until the user zooms or pans.

        Only a view that no longer fits is fitted again: every range change emits Qt signals, and
        each emission costs (see the note on PySide6 in the module docstring).
        """
        if self._keep_fitted and not self._fits():
            self.fit()

    def _fits(self) -> bool:
        """Whether the picture fills the view along one side (up to the fitting's padding)."""
        if self.display is None:
            return True
        (left, right), (top, bottom) = self.view_box.viewRange()
        height, width = self.display.shape[:2]
        return right - left <= width * 1.1 or bottom - top <= height * 1.1

    def wheelEvent(self, event: QWheelEvent) -> None:
        """Zoom; with a :attr:`scroll_area`, scroll it instead unless Ctrl is held."""
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if self.scroll_area is not None and not ctrl:
            QApplication.sendEvent(self.scroll_area.verticalScrollBar(), event)
            event.accept()
            return
        super().wheelEvent(event)

    def _on_mouse_moved(self, position: QPointF) -> None:
        if self.display is None or not self.view_box.sceneBoundingRect().contains(position):
            self.hovered.emit(None)
            return
        point = self.view_box.mapSceneToView(position)
        x, y = int(np.floor(point.x())), int(np.floor(point.y()))
        height, width = self.display.shape[:2]
        if self.layer == "side by side" and self.relevance is not None and x >= 0:
            x = side_by_side_column(x, width)  # any of the three pictures: the same pixel
        if x is None or not (0 <= x < width and 0 <= y < height):
            self.hovered.emit(None)
            return
        rgb = tuple(int(value) for value in self.display[y, x, :3])
        value = None if self.relevance is None else float(self.relevance[y, x])
        self.hovered.emit(HoverInfo(x, y, rgb, value))


class CaptionedView(QWidget):
    """A :class:`HeatmapView` with a caption above and a note below (both wrapped to its width).

    Parameters
    ----------
    corner
        A widget placed right of the caption (a close button, say).
    """

    def __init__(self, corner: QWidget | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = HeatmapView()
        self.caption = QLabel()
        self.note = QLabel()
        for label in (self.caption, self.note):
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setTextFormat(Qt.TextFormat.RichText)
        self.caption.setStyleSheet("font-weight: bold;")
        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        if corner is not None:
            top.addWidget(corner, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.note)

    def set_caption(
        self, caption: str, note: str = "", warnings: Sequence[str] = (), note_tip: str = ""
    ) -> None:
        """Set the text above the picture and the note below it.

        ``note_tip`` is the note's tooltip; ``warnings`` (why the picture may be wrong) add a
        mark to the caption and make up its tooltip.
        """
        mark = f' <span style="color: {WARNING_COLOR};">{WARNING_MARK}</span>' if warnings else ""
        self.caption.setText(caption + mark)
        self.caption.setToolTip("\n".join(warnings))
        self.note.setText(note)
        self.note.setToolTip(note_tip)
