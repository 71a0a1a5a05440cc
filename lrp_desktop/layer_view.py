"""The layer view: what one layer of the model contributes to the current explanation.

For the layer chosen in the rules tree (the session's ``layer``) it shows every channel's relevance
at that layer as a bar chart (sorted, positive and negative), the layer's relevance map (summed
over channels), and the conditional heatmaps of the top channels (concept relevance propagation,
see :mod:`lrp_desktop_core.concepts`).  Clicking a channel, in the chart or among the heatmaps,
shows its heatmap in the main view and, once a folder of images has been indexed, its reference
images beside it.  Everything is computed in the worker thread, cancellable, and kept in a small
cache.  The view exports as a vector figure (PDF or SVG, see :mod:`.concept_export`) or as a PNG
of what it shows.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from lrp_desktop_core.concepts import spatial_map
from lrp_desktop_core.explain import Method
from lrp_desktop_core.image import colorize, heatmap_bounds
from lrp_desktop_core.images import load_image
from lrp_desktop_core.relmax import ReferenceIndex

from .concept_export import (
    NEGATIVE,
    POSITIVE,
    concept_provenance,
    map_caption,
    write_concept_figure,
)
from .concept_requests import ConceptsRequest, ConceptsResult, ReferencesRequest
from .heatmap_view import render
from .session import PanelSpec, Session
from .worker import Failure, WorkerHost

DEFAULT_CHANNELS = 8
CACHE_SIZE = 16
THUMBNAIL = 96
MAX_TICKS = 16
MIN_CROP = 0.4
"""A reference's crop spans at least this share of the image's side, for context."""
EXPORT_FILTER = "PDF figures (*.pdf);;SVG figures (*.svg);;PNG pictures of the view (*.png)"


def pixmap(picture: np.ndarray) -> QPixmap:
    """Return an RGB or RGBA uint8 array ``(H, W, 3|4)`` as a pixmap."""
    picture = np.ascontiguousarray(picture)
    height, width, depth = picture.shape
    kind = QImage.Format.Format_RGBA8888 if depth == 4 else QImage.Format.Format_RGB888
    return QPixmap.fromImage(QImage(picture.data, width, height, depth * width, kind).copy())


class LayerView(QWidget):
    """Channels of the session's layer ranked by relevance, with their concept heatmaps.

    Parameters
    ----------
    session
        The session observed (layer, image, rules, class) and whose main view a click updates.
    host
        The model's worker, which computes the concepts and indexes reference images.
    """

    reference_folder_chosen = Signal(object)
    """Emitted with the folder (a Path) whose images were asked for as reference images."""

    def __init__(self, session: Session, host: WorkerHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.host = session, host
        self.result: ConceptsResult | None = None
        self.references: ReferenceIndex | None = None
        self.reference_folder: Path | None = None
        self._reference_store: Path | None = None
        self._references_for: Any = None  # (layer, rule map fingerprint) of the references
        self.selected: int | None = None
        self._cache: OrderedDict[Any, ConceptsResult] = OrderedDict()
        self._request: tuple[int, Any] | None = None
        self._index_request: int | None = None
        self._indexing_for: Any = None
        self._bar_order = np.zeros(0, dtype=np.int64)
        self._build()
        for signal in (
            session.layer_changed,
            session.current_image_changed,
            session.rulemap_changed,
            session.target_changed,
            session.model_changed,
        ):
            signal.connect(self.refresh)
        session.display_changed.connect(self._draw)
        host.finished.connect(self._on_finished)
        host.failed.connect(self._on_failed)
        host.cancelled.connect(self._on_cancelled)
        host.progress.connect(self._on_progress)
        self.refresh()

    # -- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self.header = QLabel("Select a layer in the rules tree to look inside it.")
        self.header.setWordWrap(True)
        self.count = QSpinBox()
        self.count.setRange(1, 256)
        self.count.setValue(DEFAULT_CHANNELS)
        self.count.setPrefix("top ")
        self.count.setSuffix(" channels")
        self.count.valueChanged.connect(self.refresh)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.full_button = QPushButton("Whole heatmap")
        self.full_button.setToolTip("Show the plain heatmap (all channels) in the main view")
        self.full_button.clicked.connect(lambda: self.select_channel(None))
        self.index_button = QPushButton("Reference images...")
        self.index_button.setToolTip("Find each channel's most relevant images in a folder")
        self.index_button.clicked.connect(self._choose_folder)
        self.compare_button = QPushButton("Add to comparison")
        self.compare_button.setToolTip("Add the selected channel's heatmap as a comparison panel")
        self.compare_button.clicked.connect(self.compare_selected)
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip(
            "Export the layer's concepts as a vector figure (PDF, SVG) or the view as a PNG"
        )
        self.export_button.clicked.connect(self._choose_export)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        for widget in (
            self.count,
            self.progress,
            self.cancel_button,
            self.full_button,
            self.compare_button,
            self.index_button,
            self.export_button,
        ):
            top.addWidget(widget)

        self.bars = pg.PlotWidget()
        self.bars.setLabel("left", "relevance at the layer")
        self.bars.setLabel("bottom", "channels, by relevance")
        self.bars.setMenuEnabled(False)
        self.bars.scene().sigMouseClicked.connect(self._on_bar_click)
        self.layer_map = pg.GraphicsLayoutWidget()
        self.map_box = self.layer_map.addViewBox(lockAspect=True, invertY=True)
        self.map_item = pg.ImageItem(axisOrder="row-major")
        self.map_box.addItem(self.map_item)
        self.map_box.setMouseEnabled(False, False)
        self.map_caption = QLabel("relevance map of the layer")
        self.map_caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        map_column = QWidget()
        column = QVBoxLayout(map_column)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.layer_map, 1)
        column.addWidget(self.map_caption)
        charts = QSplitter(Qt.Orientation.Horizontal)
        charts.addWidget(self.bars)
        charts.addWidget(map_column)
        charts.setSizes([500, 200])

        self.heatmaps = self._gallery()
        self.heatmaps.currentRowChanged.connect(
            lambda row: self.select_channel(row if row >= 0 else None)
        )
        self.reference_list = self._gallery()
        self.reference_caption = QLabel("")
        galleries = QHBoxLayout()
        galleries.addWidget(self.heatmaps, 3)
        refs = QVBoxLayout()
        refs.addWidget(self.reference_caption)
        refs.addWidget(self.reference_list, 1)
        galleries.addLayout(refs, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(charts, 1)
        layout.addLayout(galleries, 1)

    @staticmethod
    def _gallery() -> QListWidget:
        gallery = QListWidget()
        gallery.setViewMode(QListWidget.ViewMode.IconMode)
        gallery.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        gallery.setMovement(QListWidget.Movement.Static)
        gallery.setMinimumHeight(THUMBNAIL + 40)
        return gallery

    # -- requests -----------------------------------------------------------------------
    def _key(self) -> Any:
        session = self.session
        path, rulemap = session.current_image, session.rulemap
        if session.layer is None or path is None or rulemap is None:
            return None
        explain_key = session.key_for(path, Method("lrp", rulemap), session.target)
        return None if explain_key is None else (explain_key, session.layer, self.count.value())

    def refresh(self) -> None:
        """Show the concepts of the current layer, image, rules and class (computing them).

        While the view is hidden nothing is computed (selecting layers to give them rules
        costs nothing); showing it catches up.
        """
        key = self._key()
        if self._request is not None and self._request[1] != key:
            self.host.cancel(self._request[0])
            self._request = None
        if not self.isVisibleTo(self.window()):
            return
        if key is None:
            self._show(None)
            return
        if key in self._cache:
            self._cache.move_to_end(key)
            self._show(self._cache[key])
            return
        if self._request is None:
            session = self.session
            request = ConceptsRequest(
                session.current_image,
                session.rulemap,
                session.layer,
                self.count.value(),
                session.target,
            )
            self._request = (self.host.submit(request), key)
            self.header.setText(f"Computing the concepts of {session.layer}...")
            self._busy(True)

    def showEvent(self, event: QShowEvent) -> None:
        """Catch up with the layer, image and rules chosen while the view was hidden."""
        super().showEvent(event)
        self.refresh()

    def cancel(self) -> None:
        """Stop the running concept computation or indexing."""
        for request_id in (self._request[0] if self._request else None, self._index_request):
            if request_id is not None:
                self.host.cancel(request_id)

    def index_folder(self, folder: Path, store: Path | None = None) -> int | None:
        """Find the reference images of the current layer's channels among ``folder``'s images.

        The folder is remembered: other layers and rules get their reference images from it too
        (read from the store when indexed before, else indexed then).
        """
        session = self.session
        self.reference_folder, self._reference_store = Path(folder), store
        self.reference_folder_chosen.emit(self.reference_folder)
        if session.layer is None or session.rulemap is None:
            return None
        request = ReferencesRequest(Path(folder), session.rulemap, session.layer, store)
        self._index_request = self.host.submit(request)
        self._indexing_for = (session.layer, session.rulemap.fingerprint())
        self._busy(True)
        return self._index_request

    def _on_finished(self, request_id: int, result: object) -> None:
        if self._request is not None and request_id == self._request[0]:
            key = self._request[1]
            self._request = None
            assert isinstance(result, ConceptsResult)
            self._cache[key] = result
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            self._busy(False)
            self.refresh()
        elif request_id == self._index_request:
            self._index_request = None
            assert isinstance(result, ReferenceIndex)
            self.references, self._references_for = result, self._indexing_for
            self._busy(False)
            self._show_references()

    def _on_failed(self, request_id: int, failure: object) -> None:
        if request_id == self._index_request:
            self.reference_folder = None  # not asked again for every layer
        if self._mine(request_id):
            assert isinstance(failure, Failure)
            self.header.setText(f"{failure.text} {failure.hint}".strip())

    def _on_cancelled(self, request_id: int) -> None:
        if self._mine(request_id):
            self.header.setText("Cancelled.")

    def _mine(self, request_id: int) -> bool:
        """Forget ``request_id`` if it is this view's and return whether it was."""
        if self._request is not None and request_id == self._request[0]:
            self._request = None
        elif request_id == self._index_request:
            self._index_request = None
        else:
            return False
        self._busy(self._request is not None or self._index_request is not None)
        return True

    def _on_progress(self, request_id: int, fraction: float, text: str) -> None:
        if (self._request and request_id == self._request[0]) or request_id == self._index_request:
            self.progress.setValue(round(100 * fraction))

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if busy:
            self.progress.setValue(0)

    # -- drawing ------------------------------------------------------------------------
    def _show(self, result: ConceptsResult | None) -> None:
        changed = result is not self.result
        self.result = result
        if changed:
            self.selected = None
        self._draw()

    def _draw(self) -> None:
        if not self.isVisibleTo(self.window()):
            return  # showing the view refreshes it (see showEvent)
        result = self.result
        self.bars.clear()
        self.heatmaps.clear()
        self.map_item.clear()
        if result is None:
            if self._request is None:
                self.header.setText("Select a layer in the rules tree to look inside it.")
            self._show_references()
            return
        concepts = result.concepts
        per_channel = concepts.overview.channels[0]
        names = self.session.model.class_names if self.session.model is not None else ()
        target = concepts.target
        self.header.setText(
            f"<b>{concepts.layer}</b>: {len(per_channel)} channels, relevance for class "
            f"{names[target] if target < len(names) else target} "
            f"(sum {per_channel.sum():.3g}); click a channel to see its heatmap"
        )
        self._draw_bars(per_channel)
        positions = concepts.overview.spatial[0]
        spatial = spatial_map(positions)
        if spatial is not None:
            self.map_item.setImage(colorize(spatial, self.session.display.cmap, "signed"))
            self.map_caption.setText(map_caption(positions, spatial))
        else:
            self.map_caption.setText("no spatial map (the layer has no grid of positions)")
        display, settings = result.display, self.session.display
        self.heatmaps.blockSignals(True)
        for row, (channel, share) in enumerate(zip(concepts.channels, concepts.shares())):
            relevance = concepts.relevance[row]
            picture = render(
                display,
                relevance,
                settings,
                heatmap_bounds(relevance.sum(axis=0), settings.mode, settings.clip_percentile),
            )
            item = QListWidgetItem(_icon(picture), f"#{channel}  {share:+.1%}")
            item.setData(Qt.ItemDataRole.UserRole, int(channel))
            self.heatmaps.addItem(item)
        if self.selected is not None:
            self.heatmaps.setCurrentRow(self.selected)
        self.heatmaps.blockSignals(False)
        self._show_references()

    def _draw_bars(self, per_channel: np.ndarray) -> None:
        order = np.lexsort((np.arange(len(per_channel)), -per_channel))
        values = per_channel[order]
        brushes = [pg.mkBrush(*(POSITIVE if value >= 0 else NEGATIVE)) for value in values]
        self.bars.addItem(
            pg.BarGraphItem(
                x=np.arange(len(values)),
                height=values,
                width=0.8,
                brushes=brushes,
                pens=[None] * len(values),
            )
        )
        step = max(1, -(-len(order) // MAX_TICKS))
        self.bars.getAxis("bottom").setTicks(
            [[(x, str(int(order[x]))) for x in range(0, len(order), step)]]
        )
        self._bar_order = order

    def _on_bar_click(self, event: Any) -> None:
        if self.result is None:
            return
        point = self.bars.getPlotItem().vb.mapSceneToView(event.scenePos())
        position = round(point.x())
        if 0 <= position < len(self._bar_order):
            channel = int(self._bar_order[position])
            rows = np.nonzero(self.result.concepts.channels == channel)[0]
            if len(rows):
                self.heatmaps.setCurrentRow(int(rows[0]))
            else:
                self.header.setText(
                    f"Channel {channel} is not among the top "
                    f"{self.count.value()}; raise the count to see its heatmap."
                )

    def select_channel(self, row: int | None) -> None:
        """Show the ``row``-th top channel's heatmap (None: the whole one) in the main view.

        Its reference images are shown here.
        """
        if self.result is None:
            return
        self.selected = row
        self.session.set_explanation(self.result.explanation(row), self.session.current_key())
        self._show_references()

    def compare_selected(self) -> bool:
        """Add the selected channel's heatmap to the comparison; False if none is selected."""
        if self.result is None or self.selected is None:
            return False
        method = self.result.explanation(self.selected).method
        self.session.add_panel(PanelSpec(method, self.result.path))
        return True

    def _show_references(self) -> None:
        self.reference_list.clear()
        index, result = self.references, self.result
        if result is None or self.selected is None:
            self.reference_caption.setText(
                ""
                if self.reference_folder
                else "Reference images: choose a folder (Reference images...)"
            )
            return
        wanted = (result.concepts.layer, result.method.rulemap.fingerprint())
        if index is None or self._references_for != wanted:
            session = self.session
            current = session.rulemap is not None and wanted == (
                session.layer,
                session.rulemap.fingerprint(),
            )
            if self.reference_folder is not None and self._index_request is None and current:
                self.index_folder(self.reference_folder, self._reference_store)
            self.reference_caption.setText(
                "Finding reference images..." if self.reference_folder else ""
            )
            return
        channel = int(result.concepts.channels[self.selected])
        spec = self.session.model.spec if self.session.model is not None else None
        self.reference_caption.setText(f"Most relevant images of channel {channel}")
        for reference in index.references(channel):
            if spec is None or reference.score <= 0 or not reference.path.is_file():
                continue
            display = load_image(reference.path, spec).display
            crop = display[_widened(reference.box, display.shape[:2])]
            caption = f"{reference.path.name}\n{reference.score:.3g}"
            item = QListWidgetItem(_icon(crop), caption)
            item.setToolTip(f"{reference.path} (region {reference.box})")
            self.reference_list.addItem(item)

    # -- files --------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of reference images")
        if folder:
            self.index_folder(Path(folder))

    def use_reference_folder(self, folder: Path) -> None:
        """Take reference images from ``folder`` (indexed when a channel is first selected)."""
        self.reference_folder = Path(folder)
        self._show_references()

    def _choose_export(self) -> None:
        layer = self.result.concepts.layer if self.result is not None else "concepts"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the layer's concepts", f"{layer}.pdf", EXPORT_FILTER
        )
        if path and not self.export(Path(path)):
            self.header.setText(f"Could not write {path}.")

    def export(self, path: Path) -> bool:
        """Write the layer's concepts to ``path``; return whether it was written.

        A ``.pdf`` or ``.svg`` file gets the vector figure of :mod:`.concept_export` (with the
        model, weights, layer and rules it came from); a ``.png`` file a picture of the view
        (chart, map, heatmaps and references).  Nothing is written before the concepts are shown.
        """
        path = Path(path)
        if path.suffix.lower() == ".png":
            return self.grab().save(str(path), "PNG")
        result = self.result
        if result is None:
            return False
        provenance = concept_provenance(self.session, result.concepts, result.path)
        try:
            write_concept_figure(
                path, result.concepts, result.display, self.session.display, provenance
            )
        except (OSError, ValueError):
            return False
        return True


def _icon(picture: np.ndarray) -> QIcon:
    """Return a gallery icon of ``picture``, scaled to the thumbnail size with crisp pixels."""
    return QIcon(
        pixmap(picture).scaled(
            THUMBNAIL,
            THUMBNAIL,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation,
        )
    )


def _widened(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """Return the slices of ``box`` grown about its centre to :data:`MIN_CROP` of the image."""
    spans = []
    for low, high, extent in ((box[0], box[2], size[0]), (box[1], box[3], size[1])):
        length = max(high - low, round(MIN_CROP * extent))
        start = min(max(0, (low + high - length) // 2), extent - length)
        spans.append(slice(start, start + length))
    return spans[0], spans[1]
