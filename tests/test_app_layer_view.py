"""The layer view: channels by relevance, concept heatmaps, the main view and reference images."""

from __future__ import annotations

import numpy as np
import torch
from PySide6.QtCore import QItemSelectionModel
from test_app_support import WAIT_MS, wait_idle

from lrp_desktop.comparison import conservation_note, conservation_tip
from lrp_desktop_core.models import demo_samples

pytest_plugins = ["test_app_support"]

LAYER = "features.stage3.conv"


def select_layer(viewer, name: str, open_view: bool = True) -> None:
    if open_view:
        viewer.window.docks["layer"].show()
    panel = viewer.window.rules_panel
    panel.tree.selectionModel().select(
        panel.model.index_of_layer(name),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )


def wait_for_concepts(qtbot, viewer, layer: str):
    view = viewer.window.layer_view
    qtbot.waitUntil(
        lambda: view.result is not None and view.result.concepts.layer == layer, timeout=WAIT_MS
    )
    wait_idle(qtbot, viewer)
    return view


def test_selecting_a_layer_shows_its_channels_and_a_click_updates_the_main_view(
    qtbot, viewer, tmp_path
):
    model = viewer.host.worker.context.loaded.model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    plain = viewer.session.explanation.relevance[0].copy()
    select_layer(viewer, LAYER)
    assert viewer.session.layer == LAYER
    view = wait_for_concepts(qtbot, viewer, LAYER)
    concepts = view.result.concepts
    assert view.heatmaps.count() == 8 and len(concepts.channels) == 8
    assert np.all(np.diff(concepts.layer_relevance) <= 0)
    bars = [item for item in view.bars.getPlotItem().items if hasattr(item, "opts")]
    assert len(bars) == 1 and len(bars[0].opts["height"]) == 64
    assert view.map_item.image is not None and view.map_item.image.shape[:2] == (16, 16)
    assert LAYER in view.header.text()

    view.heatmaps.setCurrentRow(2)
    shown = viewer.session.explanation
    np.testing.assert_allclose(shown.relevance[0], concepts.relevance[2])
    assert not np.allclose(shown.relevance[0], plain)
    assert f"channel {concepts.channels[2]} of {LAYER}" in shown.method.label()
    share = shown.relevance[0].sum() / float(shown.explained_output[0])
    note = conservation_note(shown)  # a channel's part of the logit, not a conservation figure
    assert f"channel {concepts.channels[2]} carries {share * 100:.0f} %" in note
    assert "conserved" not in note and "add up to the plain heatmap" in conservation_tip(shown)
    assert viewer.session.explanation_is_current
    view.select_channel(None)
    np.testing.assert_allclose(viewer.session.explanation.relevance[0], plain, rtol=1e-4, atol=1e-6)

    # reference images of the clicked channel, from an indexed folder
    folder = demo_samples()[0].parent
    view.index_folder(folder, store=tmp_path / "store")
    qtbot.waitUntil(lambda: view.references is not None, timeout=WAIT_MS)
    view.heatmaps.setCurrentRow(0)
    assert view.reference_list.count() > 0
    assert "channel" in view.reference_caption.text()
    # another layer finds its reference images in the same folder
    select_layer(viewer, "features.stage2.conv")
    wait_for_concepts(qtbot, viewer, "features.stage2.conv")
    view.heatmaps.setCurrentRow(0)
    qtbot.waitUntil(lambda: view.references.layer == "features.stage2.conv", timeout=WAIT_MS)
    assert view.reference_list.count() > 0
    select_layer(viewer, LAYER)
    wait_for_concepts(qtbot, viewer, LAYER)
    view.heatmaps.setCurrentRow(0)
    qtbot.waitUntil(lambda: view.references.layer == LAYER, timeout=WAIT_MS)
    concepts = view.result.concepts

    # the selected channel as a comparison panel, computed by the worker like any other
    view.heatmaps.setCurrentRow(1)
    assert view.compare_selected()
    panel = viewer.session.comparison.panels[-1]
    assert panel.method.channel == int(concepts.channels[1]) and panel.method.layer == LAYER
    qtbot.waitUntil(lambda: viewer.session.panel_result(panel) is not None, timeout=WAIT_MS)
    np.testing.assert_allclose(
        viewer.session.panel_result(panel).relevance[0], concepts.relevance[1], rtol=1e-5, atol=1e-7
    )

    assert view.export(tmp_path / "concepts.png")
    assert (tmp_path / "concepts.png").stat().st_size > 1000
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_a_cancelled_computation_leaves_the_model_unchanged_and_a_second_look_is_cached(
    qtbot, viewer
):
    model = viewer.host.worker.context.loaded.model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    view = viewer.window.layer_view
    view.count.setValue(64)
    select_layer(viewer, "features.stage2.conv")
    view.cancel()
    wait_idle(qtbot, viewer)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(not module._forward_hooks for module in model.modules())
    select_layer(viewer, LAYER)
    wait_for_concepts(qtbot, viewer, LAYER)
    first = view.result
    select_layer(viewer, "features.stage2.conv")
    wait_for_concepts(qtbot, viewer, "features.stage2.conv")
    select_layer(viewer, LAYER)
    assert view.result is first  # from the cache, at once


def test_the_layer_view_starts_closed_and_computes_only_when_opened(qtbot, viewer):
    dock, view = viewer.window.docks["layer"], viewer.window.layer_view
    viewer.window.show()
    qtbot.waitExposed(viewer.window)
    assert dock.isHidden()
    select_layer(viewer, LAYER, open_view=False)
    assert viewer.session.layer == LAYER
    assert view.result is None and view._request is None  # selecting for rules costs nothing
    dock.toggleViewAction().trigger()
    assert view.isVisible()
    wait_for_concepts(qtbot, viewer, LAYER)
