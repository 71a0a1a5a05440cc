"""The viewer on the demo model: first heatmap, rule edits, display, cache, cancel, devices."""

from __future__ import annotations

import gc
import itertools
import threading

import numpy as np
import torch
from PySide6.QtCore import Qt
from test_app_support import WAIT_MS, make_viewer, wait_drawn, wait_for_heatmap, wait_idle

from lrp_desktop.prediction_panel import TOP_CLASS_ENTRY
from lrp_desktop.reporter import Level
from lrp_desktop.rule_tree import RULE, RULE_PARAMS
from lrp_desktop_core.rulemap import RuleMap

pytest_plugins = ["test_app_support"]


def model_snapshot(app):
    """Return the real model's parameters and a copy of its state (read while the worker idles)."""
    model = app.host.worker.context.loaded.model
    return list(model.parameters()), {k: v.clone() for k, v in model.state_dict().items()}


def assert_model_unchanged(app, snapshot):
    params, state = snapshot
    model = app.host.worker.context.loaded.model
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[key], state[key]) for key in state)


def test_starts_on_the_demo_with_the_recommended_rules(viewer):
    session = viewer.session
    assert session.model.spec.name == "demo"
    assert session.current_image.name == session.images[0].name
    assert session.rulemap.preset == session.model.recommendation.preset
    explanation = session.explanation
    assert explanation.relevance.shape == (1, 3, 64, 64)
    assert np.abs(explanation.relevance).sum() > 0
    assert viewer.window.main_view.view.image_item.image is not None
    assert "class" in viewer.window.main_view.caption.text()
    assert (
        viewer.window.prediction.names[0].text()
        == session.model.class_names[int(np.argmax(explanation.probabilities[0]))]
    )
    # the class chooser finds classes by any part of their name
    completer = viewer.window.prediction.class_box.completer()
    completer.setCompletionPrefix("ria")
    assert completer.currentCompletion().endswith("triangle")
    # explanations ran on the worker thread, rule checks on the structure thread
    idents = viewer.host.worker.thread_idents
    assert idents and threading.get_ident() not in idents
    checks = viewer.structure.worker.thread_idents
    assert checks and threading.get_ident() not in checks and not checks & idents


def test_what_the_start_builds_is_left_out_of_full_garbage_collections(qtbot, tmp_path):
    gc.unfreeze()
    app = make_viewer(qtbot, tmp_path)
    try:
        # a full collection scans only what is not frozen: a small part of the heap
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())
    finally:
        app.shutdown()


def test_a_rule_edit_in_the_tree_changes_the_heatmap_and_undo_is_instant(qtbot, viewer):
    session = viewer.session
    snapshot = model_snapshot(viewer)
    before = wait_for_heatmap(qtbot, viewer)
    tree = viewer.window.rules_panel.model
    assert tree.edit(tree.index_of_layer("head.fc", RULE), "ZPlus")
    after = wait_for_heatmap(qtbot, viewer)
    assert not np.allclose(before, after)
    assert tree.edit(tree.index_of_layer("features.stage2.conv", RULE_PARAMS), "gamma=2")
    changed = wait_for_heatmap(qtbot, viewer)
    assert not np.allclose(after, changed)
    submitted = viewer.host._next_id
    session.undo_stack.undo()
    session.undo_stack.undo()
    qtbot.waitUntil(lambda: session.explanation_is_current, timeout=2000)
    assert viewer.host._next_id == submitted  # answered from the cache, nothing recomputed
    np.testing.assert_array_equal(session.explanation.relevance[0], before)
    # the reason a layer is marked is worked out in the background
    cell = tree.index_of_layer("features.stage2.conv", RULE)
    assert tree.edit(cell, "none")
    qtbot.waitUntil(lambda: session.coverage_is_current, timeout=30_000)
    assert "assign a rule" in cell.data(Qt.ItemDataRole.ToolTipRole)
    assert cell.data(Qt.ItemDataRole.DecorationRole) is not None
    wait_for_heatmap(qtbot, viewer)
    assert_model_unchanged(viewer, snapshot)


def test_a_preset_is_built_off_the_gui_thread_and_a_superseded_choice_is_dropped(
    qtbot, viewer, monkeypatch
):
    session = viewer.session
    builders: list[int] = []
    recommended = RuleMap.recommended.__func__

    def spy(cls, *args, **kwargs):
        builders.append(threading.get_ident())
        return recommended(cls, *args, **kwargs)

    monkeypatch.setattr(RuleMap, "recommended", classmethod(spy))
    before = session.rulemap
    heatmap = wait_for_heatmap(qtbot, viewer)
    depth = session.undo_stack.count()
    shown: list[str] = []
    session.rulemap_changed.connect(lambda: shown.append(session.rulemap.preset))
    box = viewer.window.rules_panel.preset_box
    box.activated.emit(box.findData("epsilon_alpha2_beta1"))
    box.activated.emit(box.findData("epsilon_plus"))
    assert session.rulemap is before and viewer.controller.building_preset
    qtbot.waitUntil(lambda: not viewer.controller.building_preset, timeout=WAIT_MS)
    assert shown == ["epsilon_plus"]  # the first choice, superseded, never became the rules
    assert session.undo_stack.count() == depth + 1
    assert builders and threading.get_ident() not in builders
    assert set(builders) <= viewer.structure.worker.thread_idents
    tree = viewer.window.rules_panel.model
    assert tree.index_of_layer("features.stage1.conv", RULE).data() == "ZPlus"
    assert not np.allclose(heatmap, wait_for_heatmap(qtbot, viewer))
    session.undo_stack.undo()
    assert session.rulemap == before
    session.undo_stack.redo()
    assert session.rulemap.preset == "epsilon_plus"


def test_display_changes_redraw_without_recomputing(qtbot, viewer):
    session = viewer.session
    item = viewer.window.main_view.view.image_item
    submitted = viewer.host._next_id
    pictures = [item.image.copy()]
    for change in (
        {"cmap": "hot"},
        {"opacity": 0.2},
        {"mode": "positive"},
        {"clip_percentile": 90.0},
        {"layer": "heatmap"},
    ):
        session.set_display(**change)
        wait_drawn(qtbot)
        pictures.append(item.image.copy())
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(pictures))
    session.set_display(layer="input")
    wait_drawn(qtbot)
    np.testing.assert_array_equal(item.image, session.current_display)
    assert viewer.window.main_view.view.colorbar.isVisible() is False
    assert viewer.host._next_id == submitted


def test_choosing_a_class_explains_it_and_stale_answers_are_not_shown(qtbot, viewer):
    session = viewer.session
    shown = []
    session.explanation_changed.connect(
        lambda: shown.append(
            None if session.explanation is None else int(session.explanation.target[0])
        )
    )
    session.set_target(3)
    viewer.controller.refresh()  # submitted now rather than on the next pass of the event loop
    assert viewer.controller._main is not None
    # its answer cannot arrive before the event loop runs again: the request is replaced first
    session.set_target(1)
    wait_for_heatmap(qtbot, viewer)
    wait_idle(qtbot, viewer)
    assert int(session.explanation.target[0]) == 1
    assert 3 not in shown
    panel = viewer.window.prediction
    assert panel.class_box.currentText().startswith("1: ")
    assert panel.target_at(panel.class_box.currentIndex()) == 1
    panel.class_box.setCurrentIndex(panel.class_box.findText(TOP_CLASS_ENTRY))
    panel.class_box.activated.emit(panel.class_box.currentIndex())
    assert session.target is None
    panel.class_box.activated.emit(panel.class_box.findText("4: ", Qt.MatchFlag.MatchStartsWith))
    assert session.target == 4


def test_other_methods_are_computed_in_the_worker(qtbot, viewer):
    session = viewer.session
    session.set_method_params("smoothgrad", {"n_iter": 2})
    session.set_method_params("integrated_gradients", {"n_iter": 2})
    for kind in ("gradient", "smoothgrad", "integrated_gradients", "occlusion"):
        session.set_method_kind(kind)
        relevance = wait_for_heatmap(qtbot, viewer)
        assert session.explanation.method.kind == kind
        assert np.isfinite(relevance).all()
    assert "Occlusion" in viewer.window.main_view.caption.text()


def test_cancel_stops_a_long_explanation_and_the_viewer_stays_usable(qtbot, viewer):
    session = viewer.session
    snapshot = model_snapshot(viewer)
    session.set_method_params("occlusion", {"window": 2, "stride": 1, "batch_size": 4})
    session.set_method_kind("occlusion")
    qtbot.waitUntil(
        lambda: session.status.state == "running" and session.status.fraction > 0, timeout=30_000
    )
    assert viewer.window.cancel_button.isVisibleTo(viewer.window)
    viewer.window.actions.cancel.trigger()
    qtbot.waitUntil(lambda: session.status.state == "cancelled", timeout=30_000)
    wait_idle(qtbot, viewer)
    assert not session.explanation_is_current
    assert "F5" in viewer.window.main_view.caption.text()
    session.set_method_kind("lrp")
    wait_for_heatmap(qtbot, viewer)
    assert_model_unchanged(viewer, snapshot)


def test_an_unknown_device_is_refused_with_a_message(qtbot, viewer):
    session = viewer.session
    viewer.controller.set_device("cuda:99")
    qtbot.waitUntil(lambda: bool(viewer.reporter.errors()), timeout=10_000)
    message = viewer.reporter.errors()[-1]
    assert "cuda:99" in message.text
    assert session.device == "cpu"
    session.set_target(2)
    wait_for_heatmap(qtbot, viewer)


def test_images_are_listed_and_switching_explains_the_new_one(qtbot, viewer):
    session = viewer.session
    images = viewer.window.image_list
    assert images.count() == len(session.images) > 1
    images.setCurrentRow(1)
    assert session.current_index == 1
    wait_for_heatmap(qtbot, viewer)
    assert session.explanation_key.image[0] == str(session.images[1])
    assert viewer.preferences.recent_files[0] == session.images[1]


def test_preferences_persist_and_reset(qtbot, viewer):
    session = viewer.session
    session.set_display(cmap="bwr", opacity=0.3)
    prefs = viewer.preferences
    assert (prefs.cmap, prefs.opacity) == ("bwr", 0.3)
    viewer.window.close()
    assert prefs.geometry is not None
    assert not viewer.host.is_running()
    viewer.window.actions.reset_preferences.trigger()
    assert prefs.cmap is None and prefs.recent_files == []
    assert viewer.reporter.messages[-1].level is Level.INFO
