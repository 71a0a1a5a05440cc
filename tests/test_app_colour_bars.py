"""Colour bars of vector figures and reports are the app's bars, in every display mode."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from test_app_support import WAIT_MS, wait_drawn, wait_idle

from lrp_desktop.exporting import save_comparison_figure
from lrp_desktop.heatmap_view import HeatmapView
from lrp_desktop.session import DisplaySettings
from lrp_desktop.vector_drawing import draw_colour_bar
from lrp_desktop_core.image import MODES, bar_range, colorize
from lrp_desktop_core.report import Scale

pytest_plugins = ["test_app_support"]


def svg_texts(path) -> list[str]:
    return [
        "".join(element.itertext()).strip()
        for element in ElementTree.parse(path).iter()
        if element.tag.endswith("text")
    ]


def vector_bar(scale: Scale, rows: tuple[int, ...]) -> list[tuple[float, np.ndarray]]:
    """Draw ``scale``'s vector colour bar 256 pixels high; return rows' places and colours.

    A row's place on the bar is 0 at the low end, 1 at the high end.
    """
    image = QImage(40, 256, QImage.Format.Format_RGB888)
    image.fill(0xFFFFFF)
    painter = QPainter(image)
    draw_colour_bar(painter, QRectF(0, 0, 40, 256), scale)
    painter.end()
    bits = np.frombuffer(image.constBits(), np.uint8).reshape(256, -1).copy()
    middle = 4 * 3  # the middle of the 8-point strip, in bytes
    return [(1.0 - row / 255, bits[row, middle : middle + 3]) for row in rows]


@pytest.mark.parametrize("mode", MODES)
def test_figure_bars_have_the_screen_bars_ends_and_colours(qtbot, viewer, tmp_path, mode):
    session, window = viewer.session, viewer.window
    session.set_shared_scale(False)
    window.compare("current")
    [spec] = session.comparison.panels
    qtbot.waitUntil(lambda: session.panel_result(spec) is not None, timeout=WAIT_MS)
    wait_idle(qtbot, viewer)
    session.set_display(mode=mode)
    wait_drawn(qtbot)
    panel = window.comparison.panels[0]
    screen = panel.view.colorbar
    low, high = screen.levels()
    assert (low, high) == bar_range(panel.view.bounds, mode)
    if mode == "negative":
        assert high == 0.0 and low < 0.0
    elif mode != "signed":
        assert low == 0.0 and high > 0.0
    bounds = window.comparison.panel_bounds()
    path = save_comparison_figure(session, tmp_path / f"{mode}.svg", bounds)
    texts = svg_texts(path)
    assert f"{low:.2g}" in texts and f"{high:.2g}" in texts
    scale = Scale("x", session.display.cmap, *panel.view.bounds, mode)
    for where, colour in vector_bar(scale, (2, 64, 128, 192, 253)):
        np.testing.assert_allclose(colour, screen.colorMap().map(where, mode="byte")[:3], atol=3)


def test_the_bar_keeps_its_colour_map_while_only_the_scale_changes(qtbot):
    view = HeatmapView()
    qtbot.addWidget(view)
    picture = np.zeros((16, 16, 3), np.uint8)
    relevance = np.linspace(-1.0, 1.0, 256).reshape(16, 16)
    settings = DisplaySettings()
    view.draw(picture, relevance, settings)
    wait_drawn(qtbot)
    first = view.colorbar.colorMap()
    view.draw(picture, 50 * relevance, settings)
    wait_drawn(qtbot)
    assert view.colorbar.colorMap() is first  # the same colours: no new map
    assert view.colorbar.levels() == bar_range(view.bounds, settings.mode)
    view.draw(picture, relevance, DisplaySettings(cmap="hot"))
    wait_drawn(qtbot)
    assert view.colorbar.colorMap() is not first
    hot = colorize(np.array([[1.0]]), "hot", "signed", bounds=(-1.0, 1.0))[0, 0]
    np.testing.assert_array_equal(view.colorbar.colorMap().map(1.0, mode="byte")[:3], hot)
