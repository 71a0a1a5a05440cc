"""Dialogs, drag and drop, the hover read-out, multi-layer rule edits, recent files, downloads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QItemSelectionModel, QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from test_app_support import WAIT_MS, wait_for_heatmap, wait_idle

from lrp_desktop import requests, support
from lrp_desktop.export_dialog import ExportDialog
from lrp_desktop.heatmap_view import HoverInfo
from lrp_desktop.model_dialog import LISTING, ModelChoice, ModelDialog
from lrp_desktop.support import SupportChecker
from lrp_desktop.worker import PROGRESS_INTERVAL
from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.models import load_model as real_load_model

pytest_plugins = ["test_app_support"]


def test_model_dialog_turns_each_choice_into_load_arguments(qtbot, tmp_path):
    dialog = ModelDialog(tmp_path)
    qtbot.addWidget(dialog)
    assert dialog.choice() == ModelChoice("demo")
    dialog.torchvision.setChecked(True)
    dialog.architecture.setCurrentText("resnet18")
    assert dialog.choice() == ModelChoice("resnet18", pretrained=True)
    assert "cache" in dialog.cache_note.text() or "download" in dialog.cache_note.text()
    dialog.random.setChecked(True)
    dialog.seed.setValue(7)
    assert dialog.choice() == ModelChoice("resnet18", seed=7)
    dialog.own_weights.setChecked(True)
    with pytest.raises(ValueError, match="no file"):
        dialog.choice()
    dialog.weights_path.edit.setText(str(tmp_path / "w.pth"))
    assert dialog.choice() == ModelChoice("resnet18", tmp_path / "w.pth")
    dialog.file.setChecked(True)
    dialog.file_path.edit.setText(str(tmp_path / "model.safetensors"))
    assert dialog.choice() == ModelChoice(str(tmp_path / "model.safetensors"))
    dialog.file_architecture.setCurrentText("vgg16")
    assert dialog.choice() == ModelChoice("vgg16", tmp_path / "model.safetensors")
    dialog.torchvision.setChecked(True)
    dialog.architecture.setCurrentText("not_a_network")
    with pytest.raises(ValueError, match="not a known architecture"):
        dialog.choice()


def test_the_model_dialog_offers_the_demos_at_once_and_torchvision_once_listed_off_the_gui_thread(
    qtbot, tmp_path, monkeypatch
):
    listed_on, release = [], threading.Event()
    real_list_models = support.list_models

    def slow_list_models() -> list[str]:
        listed_on.append(threading.current_thread())
        release.wait(60)
        return real_list_models()

    monkeypatch.setattr(support, "list_models", slow_list_models)
    checker = SupportChecker()
    dialog = ModelDialog(tmp_path, checker)
    qtbot.addWidget(dialog)
    try:
        assert dialog.demo_name.count() == len(DEMOS) and dialog.choice() == ModelChoice("demo")
        assert dialog.names == [] and dialog.architecture.count() == 0
        assert dialog.support_note.text() == LISTING
        dialog.torchvision.setChecked(True)
        with pytest.raises(ValueError, match="still being listed"):
            dialog.choice()
        release.set()
        qtbot.waitUntil(lambda: dialog.architecture.currentText() == "resnet18", timeout=WAIT_MS)
        assert listed_on and listed_on[0] is not threading.main_thread()
        assert dialog.choice() == ModelChoice("resnet18", pretrained=True)
        assert dialog.file_architecture.findText("vgg16", Qt.MatchFlag.MatchExactly) > 0
        again = ModelDialog(tmp_path, checker)  # the list is kept: offered at once
        qtbot.addWidget(again)
        assert again.names == dialog.names and len(listed_on) == 1
        again.reject()
    finally:
        release.set()
        dialog.reject()
        checker.stop()


def test_the_model_dialog_says_when_torchvision_cannot_be_imported(qtbot, tmp_path, monkeypatch):
    def refused() -> list[str]:
        raise ImportError("No module named 'torchvision'")

    monkeypatch.setattr(support, "list_models", refused)
    checker = SupportChecker()
    dialog = ModelDialog(tmp_path, checker)
    qtbot.addWidget(dialog)
    try:
        dialog.torchvision.setChecked(True)
        qtbot.waitUntil(lambda: not dialog.torchvision.isEnabled(), timeout=WAIT_MS)
        note = dialog.support_note.text()
        assert "No module named 'torchvision'" in note and "pip install torchvision" in note
        assert dialog.choice() == ModelChoice("demo")  # moved back to what can be chosen
        dialog.reject()
        monkeypatch.undo()
        again = ModelDialog(tmp_path, checker)  # a later dialog tries again
        qtbot.addWidget(again)
        qtbot.waitUntil(lambda: "resnet18" in again.names, timeout=WAIT_MS)
        assert again.torchvision.isEnabled()
        again.reject()
    finally:
        checker.stop()


def test_export_dialog_gives_each_kind_its_suffix(qtbot, tmp_path):
    dialog = ExportDialog(tmp_path, "circle", has_comparison=False)
    qtbot.addWidget(dialog)
    assert not dialog.buttons_by_kind["figure"].isEnabled()
    assert dialog.choice().path == tmp_path / "circle.png"
    dialog.buttons_by_kind["raw"].setChecked(True)
    dialog.path_edit.setText(str(tmp_path / "out.npy"))
    assert dialog.choice().path == tmp_path / "out"
    dialog = ExportDialog(tmp_path, "circle", has_comparison=True)
    qtbot.addWidget(dialog)
    dialog.buttons_by_kind["figure"].setChecked(True)
    dialog.format_box.setCurrentText(".svg")
    assert dialog.choice().path == tmp_path / "circle.svg"
    dialog.buttons_by_kind["report"].setChecked(True)
    assert dialog.choice().path == tmp_path / "circle.pdf"


def test_dropping_files_opens_them(qtbot, viewer, tmp_path):
    dropped = tmp_path / "dropped.png"
    Image.new("RGB", (70, 50), (200, 40, 40)).save(dropped)
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(dropped))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        data,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    viewer.window.dropEvent(event)
    assert viewer.session.current_image == dropped.resolve()
    wait_for_heatmap(qtbot, viewer)
    viewer.window.recent_menu.aboutToShow.emit()
    entries = [action.text() for action in viewer.window.recent_menu.actions()]
    assert str(dropped.resolve()) in entries


def test_hovering_shows_pixel_and_relevance_in_the_status_bar(qtbot, viewer):
    view = viewer.window.main_view.view
    shown = []
    view.hovered.connect(shown.append)
    centre = view.view_box.mapViewToScene(QPointF(10.5, 20.5))
    view._on_mouse_moved(centre)
    info = shown[-1]
    assert isinstance(info, HoverInfo) and (info.x, info.y) == (10, 20)
    relevance = viewer.session.explanation.relevance[0].sum(axis=0)
    assert info.relevance == pytest.approx(float(relevance[20, 10]), rel=1e-5)
    text = viewer.window.hover_label.text()
    assert "x 10, y 20" in text and "relevance" in text
    view._on_mouse_moved(QPointF(-500, -500))
    assert shown[-1] is None and viewer.window.hover_label.text() == ""


def test_apply_rule_to_selected_layers(qtbot, viewer):
    panel = viewer.window.rules_panel
    tree = panel.model
    selection = panel.tree.selectionModel()
    for name in ("features.stage2.conv", "features.stage3.conv"):
        selection.select(
            tree.index_of_layer(name),
            QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows,
        )
    assert panel.selected_layers() == ["features.stage2.conv", "features.stage3.conv"]
    assert "2 layer(s)" in panel.editor.selection_label.text()
    panel.editor.rule_box.setCurrentIndex(panel.editor.rule_box.findData("AlphaBeta"))
    panel.editor.editors["alpha"].setText("3")
    panel.editor.editors["beta"].setText("2")
    viewer.window.actions.apply_rule.trigger()
    rulemap = viewer.session.rulemap
    for name in ("features.stage2.conv", "features.stage3.conv"):
        assert rulemap[name].rule == "AlphaBeta"
        assert rulemap[name].params["alpha"] == 3.0
    assert viewer.session.undo_stack.undoText().startswith("set 2 layers")
    panel.editor.editors["alpha"].setText("1")  # alpha - beta must be 1
    viewer.window.actions.apply_rule.trigger()
    assert viewer.session.rulemap == rulemap
    assert viewer.reporter.errors()[-1].title == "The rule was not applied"
    wait_for_heatmap(qtbot, viewer)


def test_a_download_shows_progress_and_can_be_cancelled(qtbot, viewer, monkeypatch):
    session = viewer.session
    fractions = []
    viewer.host.progress.connect(lambda _id, fraction, _text: fractions.append(fraction))

    def downloading_load(
        source, weights=None, *, pretrained=False, progress=None, trust=False, seed=None
    ):
        for done in range(1, 4):
            time.sleep(PROGRESS_INTERVAL * 1.5)  # progress is passed on at most this often
            progress(done * 100, 400)
        return real_load_model("demo")

    monkeypatch.setattr(requests, "load_model", downloading_load)
    first = session.model.key
    viewer.controller.load_model("demo", pretrained=True)
    qtbot.waitUntil(lambda: session.model.key != first, timeout=30_000)
    assert 0.25 in fractions and 0.75 in fractions
    wait_for_heatmap(qtbot, viewer)

    def endless_download(
        source, weights=None, *, pretrained=False, progress=None, trust=False, seed=None
    ):
        while True:
            progress(1, 400)

    monkeypatch.setattr(requests, "load_model", endless_download)
    key = session.model.key
    viewer.controller.load_model("demo", pretrained=True)
    qtbot.waitUntil(lambda: viewer.host.busy and session.status.state == "running", timeout=10_000)
    viewer.controller.cancel()
    wait_idle(qtbot, viewer)
    assert session.model.key == key
    assert Path(session.current_image).is_file()
