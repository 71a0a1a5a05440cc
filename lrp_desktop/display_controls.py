"""Controls for how heatmaps look: colour map, opacity, mode, overlay style, contrast, layer.

Every control writes to the session's :class:`~.session.DisplaySettings`; the views redraw from
the relevance they already have, so nothing is recomputed.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QWidget,
)

from lrp_desktop_core.names import COLOUR_MAPS, HEATMAP_MODES, OVERLAY_STYLES

from .choices import catalogue_combo
from .session import LAYERS, Session

#: Percentiles offered for contrast clipping; 100 means no clipping.
NO_CLIPPING = 100.0


class DisplayControls(QWidget):
    """A row of controls bound to the session's display settings.

    Parameters
    ----------
    session
        The session whose display settings are shown and edited.
    """

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)

        self.cmap_box = catalogue_combo(COLOUR_MAPS.values())
        self.cmap_box.setToolTip("Colour map of the heatmap")
        self.cmap_box.currentIndexChanged.connect(
            lambda index: session.set_display(cmap=self.cmap_box.itemData(index))
        )

        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setMaximumWidth(120)
        self.opacity_slider.setToolTip("Opacity of the heatmap over the image")
        self.opacity_slider.valueChanged.connect(
            lambda value: session.set_display(opacity=value / 100.0)
        )

        self.mode_box = catalogue_combo(HEATMAP_MODES.values())
        self.mode_box.setToolTip("Which relevance is coloured")
        self.mode_box.currentIndexChanged.connect(
            lambda index: session.set_display(mode=self.mode_box.itemData(index))
        )

        self.style_box = catalogue_combo(OVERLAY_STYLES.values())
        self.style_box.setToolTip("How the overlay lays the heatmap over the image")
        self.style_box.currentIndexChanged.connect(
            lambda index: session.set_display(overlay=self.style_box.itemData(index))
        )

        self.clip_box = QDoubleSpinBox()
        self.clip_box.setRange(50.0, NO_CLIPPING)
        self.clip_box.setDecimals(1)
        self.clip_box.setSingleStep(0.5)
        self.clip_box.setSuffix(" %")
        self.clip_box.setToolTip(
            "Contrast: relevance above this percentile of its magnitude is "
            "drawn in the end colour (100 % = no clipping)"
        )
        self.clip_box.valueChanged.connect(self._on_clip)

        self.layer_box = QComboBox()
        for layer in LAYERS:
            self.layer_box.addItem(layer, layer)
        self.layer_box.setToolTip("Show the input, the heatmap, or the heatmap over the input")
        self.layer_box.currentIndexChanged.connect(
            lambda index: session.set_display(layer=self.layer_box.itemData(index))
        )

        for label, widget in (
            ("Colours", self.cmap_box),
            ("Opacity", self.opacity_slider),
            ("Mode", self.mode_box),
            ("Overlay", self.style_box),
            ("Clip at", self.clip_box),
            ("Show", self.layer_box),
        ):
            layout.addWidget(QLabel(label))
            layout.addWidget(widget)
            layout.addSpacing(8)
        layout.addStretch(1)
        session.display_changed.connect(self._show)
        self._show()

    def _on_clip(self, value: float) -> None:
        self.session.set_display(clip_percentile=None if value >= NO_CLIPPING else value)

    def _show(self) -> None:
        display = self.session.display
        widgets = (
            self.cmap_box,
            self.opacity_slider,
            self.mode_box,
            self.style_box,
            self.clip_box,
            self.layer_box,
        )
        for widget in widgets:
            widget.blockSignals(True)
        self.cmap_box.setCurrentIndex(self.cmap_box.findData(display.cmap))
        self.opacity_slider.setValue(round(display.opacity * 100))
        self.mode_box.setCurrentIndex(self.mode_box.findData(display.mode))
        self.style_box.setCurrentIndex(self.style_box.findData(display.overlay))
        self.clip_box.setValue(
            NO_CLIPPING if display.clip_percentile is None else display.clip_percentile
        )
        self.layer_box.setCurrentIndex(self.layer_box.findData(display.layer))
        for widget in widgets:
            widget.blockSignals(False)
