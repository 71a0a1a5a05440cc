"""Controls for how heatmaps look: colour map, opacity, mode, overlay style, contrast and what is
shown.

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

from lrp_desktop_core.cmap import CMAP_TIPS, CMAPS
from lrp_desktop_core.image import OVERLAY_STYLES

from .session import LAYERS, MODES, Session

MODE_TIPS = {
    "signed": "Positive relevance (evidence for the class) and negative (against) in the two "
    "halves of the colour map",
    "positive": "Only the evidence for the class",
    "negative": "Only the evidence against the class",
    "absolute": "How much each pixel matters, whatever the sign",
}
STYLE_TIPS = {
    "greyscale": "The heatmap at a uniform opacity over the image in grey: positive and negative "
    "relevance both show, and no colour of the photo can be mistaken for relevance",
    "weighted": "The heatmap over the image in colour, each pixel as opaque as its relevance is "
    "strong: only the strongest evidence shows",
    "contour": "Lines around the regions of top relevance (25, 50 and 75 % of the scale) over the "
    "image in grey; good for print",
}
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

        self.cmap_box = QComboBox()
        for name in CMAPS:
            self.cmap_box.addItem(name)
            self.cmap_box.setItemData(
                self.cmap_box.count() - 1, CMAP_TIPS.get(name, ""), Qt.ItemDataRole.ToolTipRole
            )
        self.cmap_box.setToolTip("Colour map of the heatmap")
        self.cmap_box.currentTextChanged.connect(lambda name: session.set_display(cmap=name))

        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setMaximumWidth(120)
        self.opacity_slider.setToolTip("Opacity of the heatmap over the image")
        self.opacity_slider.valueChanged.connect(
            lambda value: session.set_display(opacity=value / 100.0)
        )

        self.mode_box = QComboBox()
        for mode in MODES:
            self.mode_box.addItem(mode, mode)
            self.mode_box.setItemData(
                self.mode_box.count() - 1, MODE_TIPS[mode], Qt.ItemDataRole.ToolTipRole
            )
        self.mode_box.setToolTip("Which relevance is coloured")
        self.mode_box.currentIndexChanged.connect(
            lambda index: session.set_display(mode=self.mode_box.itemData(index))
        )

        self.style_box = QComboBox()
        for style in OVERLAY_STYLES:
            self.style_box.addItem(style, style)
            self.style_box.setItemData(
                self.style_box.count() - 1, STYLE_TIPS[style], Qt.ItemDataRole.ToolTipRole
            )
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
        self.cmap_box.setCurrentText(display.cmap)
        self.opacity_slider.setValue(round(display.opacity * 100))
        self.mode_box.setCurrentIndex(self.mode_box.findData(display.mode))
        self.style_box.setCurrentIndex(self.style_box.findData(display.overlay))
        self.clip_box.setValue(
            NO_CLIPPING if display.clip_percentile is None else display.clip_percentile
        )
        self.layer_box.setCurrentIndex(self.layer_box.findData(display.layer))
        for widget in widgets:
            widget.blockSignals(False)
