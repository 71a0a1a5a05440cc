"""Comparison panels, evaluation, and every export format read back."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QGuiApplication
from test_app_support import wait_drawn, wait_idle

from lrp_desktop.comparison import conservation_note
from lrp_desktop.main_window import COMPARISON_TAB

pytest_plugins = ["test_app_support"]

PRESETS = ("epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1")


def wait_for_panels(qtbot, app):
    session = app.session
    qtbot.waitUntil(
        lambda: all(session.panel_result(panel) is not None for panel in session.comparison.panels),
        timeout=60_000,
    )
    wait_idle(qtbot, app)


@pytest.fixture
def compared(qtbot, viewer):
    """Return the viewer with three presets side by side."""
    for preset in PRESETS:
        viewer.window.compare(preset)
    wait_for_panels(qtbot, viewer)
    return viewer


def test_three_presets_side_by_side(qtbot, compared):
    session = compared.session
    window = compared.window
    assert window.tabs.currentIndex() == COMPARISON_TAB
    panels = window.comparison.panels
    assert [spec.method.rulemap.preset for spec in session.comparison.panels] == list(PRESETS)
    relevances = [session.panel_result(spec).relevance[0] for spec in session.comparison.panels]
    assert not np.allclose(relevances[0], relevances[1])
    assert not np.allclose(relevances[1], relevances[2])
    for panel, spec in zip(panels, session.comparison.panels, strict=True):
        assert spec.method.rulemap.preset in panel.caption.text()
        assert panel.note.text() == conservation_note(session.panel_result(spec))
    # linked views: zooming one zooms all
    panels[0].view.view_box.setRange(xRange=(10, 20), yRange=(10, 20), padding=0)
    qtbot.wait(50)
    for panel in panels[1:]:
        (left, right), (top, bottom) = panel.view.view_box.viewRange()
        assert left == pytest.approx(panels[0].view.view_box.viewRange()[0][0], abs=0.5)
        assert right - left < 20 and bottom - top < 20  # zoomed in, not the whole 64 pixels
    comparison = window.comparison
    shared = [panel.view.bounds for panel in panels]
    assert shared[0] == shared[1] == shared[2]
    assert list(comparison.shared_bars) == ["lrp"]
    assert comparison.shared_bars["lrp"].isVisible()
    assert comparison.shared_bars["lrp"].levels() == pytest.approx(shared[0])
    assert not any(panel.view.colorbar.isVisible() for panel in panels)
    window.actions.shared_scale.setChecked(False)
    assert not session.comparison.shared_scale
    wait_drawn(qtbot)
    assert len({panel.view.bounds for panel in panels}) == 3
    assert not comparison.shared_bar_view.isVisible()
    assert all(panel.view.colorbar.isVisible() for panel in panels)


def test_same_configuration_over_several_images(qtbot, viewer):
    session = viewer.session
    for path in session.images[3:]:
        session.remove_image(path)
    viewer.window.compare_all_images()
    assert [spec.image for spec in session.comparison.panels] == session.images
    wait_for_panels(qtbot, viewer)
    assert {spec.image.name for spec in session.comparison.panels} == {
        path.name for path in session.images
    }
    session.remove_panel(0)
    assert len(viewer.window.comparison.panels) == len(session.images) - 1


def test_other_methods_join_the_comparison(qtbot, viewer):
    viewer.session.set_method_params("smoothgrad", {"n_iter": 2})
    viewer.window.compare("current")
    viewer.window.compare("gradient")
    viewer.window.compare("smoothgrad")
    wait_for_panels(qtbot, viewer)
    captions = [panel.caption.text() for panel in viewer.window.comparison.panels]
    assert "LRP" in captions[0] and "Gradient" in captions[1] and "SmoothGrad" in captions[2]


def test_evaluate_plots_curves_with_aopc_and_localisation(qtbot, compared):
    session = compared.session
    compared.controller.evaluate(steps=6)
    qtbot.waitUntil(lambda: session.evaluation is not None, timeout=120_000)
    evaluation = session.evaluation
    assert len(evaluation.panels) == 3 and evaluation.steps == 6
    for curves in evaluation.panels:
        assert curves.morf.shape == curves.random.shape == (evaluation.steps + 1,)
        assert curves.mass_accuracy is not None  # the demo images come with masks
    plot = compared.window.comparison.plot
    assert plot.isVisibleTo(compared.window)
    names = [label.text for _, label in plot.legend.items]
    assert any("AOPC" in name and "random" in name for name in names)
    assert sum("AOPC" in name for name in names) == 4
    assert "mass acc." in compared.window.comparison.panels[0].note.text()


def read_png(path):
    with Image.open(path) as picture:
        picture.load()
        return picture.size


def test_every_export_format_is_written_and_reads_back(qtbot, compared, tmp_path):
    window = compared.window
    session = compared.session
    compared.controller.evaluate(steps=4)
    qtbot.waitUntil(lambda: session.evaluation is not None, timeout=120_000)

    window.tabs.setCurrentIndex(0)
    (view,) = window.export("view", tmp_path / "view.png")
    assert read_png(view) == (window.main_view.width(), window.main_view.height())

    figures = [
        window.export("figure", tmp_path / f"figure{suffix}")[0]
        for suffix in (".png", ".svg", ".pdf")
    ]
    width, height = read_png(figures[0])
    assert width > 3 * 160 and height > 160
    svg = ElementTree.parse(figures[1]).getroot()
    assert svg.tag.endswith("svg")
    svg_text = figures[1].read_text()
    assert all(preset in svg_text for preset in PRESETS)
    assert "Perturbation curves" in svg_text
    assert figures[2].read_bytes().startswith(b"%PDF")

    written = window.export("raw", tmp_path / "raw" / "circle")
    by_suffix = {path.suffix: path for path in written}
    relevance = np.load(by_suffix[".npy"])
    np.testing.assert_array_equal(relevance, session.explanation.relevance[0])
    record = json.loads(by_suffix[".json"].read_text())
    assert record["model"] == "demo"
    assert record["weights"]["sha256"] == session.model.weights_sha256
    assert record["rulemap"]["layers"]["head.fc"]["rule"] == session.rulemap["head.fc"].rule
    assert record["canonizer"] == session.rulemap.canonizer
    assert record["device"] == "cpu"
    assert record["target"]["index"] == int(session.explanation.target[0])
    assert "torch" in record["versions"]
    assert read_png(by_suffix[".png"]) == (64, 64)

    (report,) = window.export("report", tmp_path / "report.pdf")
    assert report.read_bytes().startswith(b"%PDF")
    assert report.stat().st_size > 10_000

    window.actions.copy.trigger()
    assert not QGuiApplication.clipboard().image().isNull()
    assert compared.reporter.errors() == []


def test_unknown_comparisons_are_reported(viewer):
    assert not viewer.controller.compare("lrp_magic")
    message = viewer.reporter.errors()[-1]
    assert "lrp_magic" in message.text and "epsilon_plus" in message.text
    assert viewer.session.comparison.panels == []


def test_export_problems_are_reported(qtbot, viewer, tmp_path):
    window = viewer.window
    assert window.export("figure", tmp_path / "empty.png") == []
    assert "no panels" in viewer.reporter.errors()[-1].text
    assert window.export("view", tmp_path / "missing" / "view.png") == []
    assert window.export("figure", tmp_path / "figure.gif") == []
    assert len(viewer.reporter.errors()) == 3
