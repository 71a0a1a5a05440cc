"""Pictures a researcher can trust: overlay styles, honest captions, per-kind scales, exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication
from test_app_support import make_viewer, wait_drawn, wait_idle

from lrp_desktop.__main__ import parse_args
from lrp_desktop.app import StartOptions, start
from lrp_desktop.exporting import render_panels, save_current_explanation
from lrp_desktop.session import ModelInfo
from lrp_desktop_core.image import OVERLAY_STYLES, SIDE_BY_SIDE_GAP
from lrp_desktop_core.models import load_model
from lrp_desktop_core.names import METHODS

pytest_plugins = ["test_app_support"]


def shown(qtbot, viewer) -> np.ndarray:
    """Return the main view's picture, once every picture asked for is drawn."""
    wait_drawn(qtbot)
    return np.asarray(viewer.window.main_view.view.image_item.image)


def test_overlay_style_is_a_display_setting_offered_and_remembered(qtbot, viewer):
    session, controls = viewer.session, viewer.window.display_controls
    assert session.display.overlay == "greyscale"
    assert [controls.style_box.itemData(i) for i in range(controls.style_box.count())] == list(
        OVERLAY_STYLES
    )
    key = session.explanation_key
    pictures = {}
    for style in OVERLAY_STYLES:
        controls.style_box.setCurrentIndex(controls.style_box.findData(style))
        assert session.display.overlay == style
        pictures[style] = shown(qtbot, viewer).copy()
    assert session.explanation_key == key and not viewer.host.busy  # nothing recomputed
    assert not np.array_equal(pictures["greyscale"], pictures["weighted"])
    assert not np.array_equal(pictures["contour"], pictures["greyscale"])
    assert viewer.preferences.overlay_style == "contour"
    with pytest.raises(ValueError, match="overlay style"):
        session.set_display(overlay="blend")


def test_saved_overlay_style_is_restored(qtbot, tmp_path):
    first = make_viewer(qtbot, tmp_path)
    first.preferences.overlay_style = "weighted"
    first.shutdown()
    second = make_viewer(qtbot, tmp_path)
    try:
        assert second.session.display.overlay == "weighted"
    finally:
        second.shutdown()


def test_side_by_side_view_shows_input_heatmap_and_overlay(qtbot, viewer):
    session = viewer.session
    session.set_display(layer="side by side")
    picture = shown(qtbot, viewer)
    height, width = session.current_display.shape[:2]
    assert picture.shape[:2] == (height, 3 * width + 2 * SIDE_BY_SIDE_GAP)
    np.testing.assert_array_equal(picture[:, :width, :3], session.current_display)
    assert viewer.window.actions.layer_actions["side by side"].isChecked()


def test_hovering_any_picture_of_the_side_by_side_view_reads_the_same_pixel(qtbot, viewer):
    session, view = viewer.session, viewer.window.main_view.view
    session.set_display(layer="side by side")
    wait_drawn(qtbot)
    view.fit()
    width = session.current_display.shape[1]
    relevance = session.explanation.relevance[0].sum(axis=0)
    shown = []
    view.hovered.connect(shown.append)
    for tile in range(3):
        left = tile * (width + SIDE_BY_SIDE_GAP)
        view._on_mouse_moved(view.view_box.mapViewToScene(QPointF(left + 10.5, 20.5)))
        info = shown[-1]
        assert (info.x, info.y) == (10, 20)
        assert info.relevance == pytest.approx(float(relevance[20, 10]), rel=1e-5)
        assert info.rgb == tuple(int(v) for v in session.current_display[20, 10, :3])
        assert "x 10, y 20" in viewer.window.hover_label.text()
    view._on_mouse_moved(view.view_box.mapViewToScene(QPointF(width + 2.5, 20.5)))  # the gap
    assert shown[-1] is None


def test_raw_export_equals_the_screen(qtbot, viewer, tmp_path):
    session = viewer.session
    session.set_display(
        cmap="rdbu", opacity=0.8, mode="signed", clip_percentile=90.0, overlay="weighted"
    )
    written = save_current_explanation(session, tmp_path, "shot")
    with Image.open(written["overlay"]) as saved:
        np.testing.assert_array_equal(np.asarray(saved), shown(qtbot, viewer)[..., :3])
    session.set_display(layer="heatmap")
    with Image.open(written["heatmap"]) as saved:
        np.testing.assert_array_equal(np.asarray(saved), shown(qtbot, viewer)[..., :3])


def test_conservation_is_shown_for_lrp_with_a_tooltip_and_not_for_occlusion(qtbot, viewer):
    window, session = viewer.window, viewer.session
    assert "conserved" in window.main_view.note.text()
    assert window.main_view.note.toolTip() == METHODS["lrp"].conservation
    window.compare("epsilon_plus")
    window.compare("occlusion")
    window.compare("gradient")
    qtbot.waitUntil(
        lambda: all(session.panel_result(spec) is not None for spec in session.comparison.panels),
        timeout=60_000,
    )
    wait_idle(qtbot, viewer)
    lrp, occlusion, gradient = window.comparison.panels
    assert "conserved" in lrp.note.text() and lrp.note.toolTip()
    for panel in (occlusion, gradient):
        assert "conserved" not in panel.note.text() and "%" not in panel.note.text()
        assert "not shares of the logit" in panel.note.text()


def test_shared_scales_are_per_kind_of_method_each_with_its_bar(qtbot, viewer):
    window, session = viewer.window, viewer.session
    for entry in ("epsilon_plus", "epsilon_gamma_box", "occlusion"):
        window.compare(entry)
    qtbot.waitUntil(
        lambda: all(session.panel_result(spec) is not None for spec in session.comparison.panels),
        timeout=60_000,
    )
    wait_idle(qtbot, viewer)
    comparison = window.comparison
    first, second, occlusion = (panel.view.bounds for panel in comparison.panels)
    assert first == second and occlusion != first
    assert list(comparison.shared_bars) == ["lrp", "occlusion"]
    assert comparison.shared_bars["occlusion"].levels() == pytest.approx(occlusion)
    assert comparison.panel_bounds() == [first, second, occlusion]
    # figures equal the screen, per-kind scales and clipping included, also with per-panel scales
    for shared in (True, False):
        session.set_shared_scale(shared)
        wait_drawn(qtbot)
        rendered = render_panels(session, comparison.panel_bounds())
        for panel, figure in zip(comparison.panels, rendered, strict=True):
            on_screen = np.asarray(panel.view.image_item.image)
            factor = figure.picture.shape[0] // on_screen.shape[0]
            np.testing.assert_array_equal(figure.picture[::factor, ::factor], on_screen)


def test_model_titles_name_random_weights_with_their_seed(qtbot):
    loaded = load_model("demo")
    info = ModelInfo("k", loaded.spec, "resnet18", None, None, None, 0, "cpu", None, seed=4)
    assert info.title.endswith("random weights (seed 4)")
    assert info.weights["random"] is True and info.weights["seed"] == 4


def test_command_line_seed_reaches_the_model_load(qtbot, tmp_path, monkeypatch):
    args = parse_args(["--model", "resnet18", "--seed", "4", "--random-weights"])
    assert (args.seed, args.random_weights) == (4, True)
    app = make_viewer(qtbot, tmp_path)
    calls = []
    monkeypatch.setattr(app.controller, "load_model", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(app.controller, "open_paths", lambda paths: [])
    try:
        start(app, StartOptions(model="resnet18", seed=4))
        start(app, StartOptions(model="resnet18", random_weights=True))
        start(app, StartOptions(model="resnet18"))
    finally:
        app.shutdown()
    assert [(k["pretrained"], k["seed"]) for _, k in calls] == [
        (False, 4),
        (False, None),
        (True, None),
    ]


def test_exported_record_names_the_weights(qtbot, viewer, tmp_path):
    written = save_current_explanation(viewer.session, tmp_path, "rec")
    record = json.loads(Path(written["json"]).read_text())
    assert record["weights"]["random"] is False and record["weights"]["sha256"]
    assert record["display"]["style"] == viewer.session.display.overlay


def send_wheel(widget, modifiers) -> None:
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(
        centre,
        widget.mapToGlobal(centre),
        QPoint(0, 0),
        QPoint(0, -120),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget.viewport(), event)


def test_panels_fit_their_view_and_the_wheel_scrolls_unless_ctrl_is_held(qtbot, viewer):
    window, session = viewer.window, viewer.session
    for preset in (
        "epsilon_plus",
        "epsilon_gamma_box",
        "epsilon_alpha2_beta1",
        "epsilon",
        "epsilon_plus_flat",
        "epsilon_gamma_box",
    ):
        window.compare(preset)
    qtbot.waitUntil(
        lambda: all(session.panel_result(spec) is not None for spec in session.comparison.panels),
        timeout=60_000,
    )
    wait_idle(qtbot, viewer)
    window.show()
    window.resize(1100, 560)  # two rows of panels do not fit
    qtbot.wait(50)
    comparison = window.comparison
    view = comparison.panels[0].view
    (left, right), (top, bottom) = view.view_box.viewRange()
    width = session.current_display.shape[1]
    # fitted: the picture fills the view's shorter side (up to the padding)
    assert min(right - left, bottom - top) <= width * 1.1
    bar = comparison.scroll.verticalScrollBar()
    assert bar.maximum() > 0
    before_range = view.view_box.viewRange()
    send_wheel(view, Qt.KeyboardModifier.NoModifier)
    assert bar.value() > 0 and view.view_box.viewRange() == before_range
    bar.setValue(0)
    send_wheel(view, Qt.KeyboardModifier.ControlModifier)
    assert bar.value() == 0 and view.view_box.viewRange() != before_range


def test_a_cancelled_panel_says_so_and_f5_computes_it_again(qtbot, viewer):
    window, session = viewer.window, viewer.session
    for entry in ("occlusion", "smoothgrad", "integrated_gradients"):
        window.compare(entry)
    qtbot.waitUntil(lambda: viewer.host.busy, timeout=10_000)
    viewer.controller.cancel()  # the first may finish; the queued ones are cancelled
    wait_idle(qtbot, viewer)
    qtbot.wait(50)
    specs, panels = session.comparison.panels, window.comparison.panels
    cancelled = [
        index for index, spec in enumerate(specs) if session.panel_state(spec) == "cancelled"
    ]
    assert cancelled
    for index in cancelled:
        assert session.panel_result(specs[index]) is None  # not computed behind the user's back
        assert "cancelled" in panels[index].note.text()
    window.actions.explain.trigger()
    qtbot.waitUntil(
        lambda: all(session.panel_result(spec) is not None for spec in specs), timeout=60_000
    )
    assert not any("cancelled" in panel.note.text() for panel in window.comparison.panels)
