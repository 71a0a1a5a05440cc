"""Every bad input shows a message and leaves the viewer working, its model untouched."""

from __future__ import annotations

import torch
from PIL import Image
from safetensors.torch import save_file
from test_app_support import make_viewer, nan_weight, wait_for_heatmap, wait_idle
from torch import nn

from lrp_desktop.reporter import Level
from lrp_desktop.rule_editing import load_rules
from lrp_desktop_core.rulemap import RuleMap

pytest_plugins = ["test_app_support"]


def still_works(qtbot, app, target: int) -> None:
    """Check that the viewer explains another class of the current image."""
    app.session.set_target(target)
    wait_for_heatmap(qtbot, app)
    assert int(app.session.explanation.target[0]) == target


def new_error(qtbot, app, count_before: int):
    qtbot.waitUntil(lambda: len(app.reporter.errors()) > count_before, timeout=30_000)
    wait_idle(qtbot, app)
    return app.reporter.errors()[-1]


def test_bad_image_files_are_reported_and_dropped(qtbot, viewer, tmp_path):
    real = viewer.session.images[0]
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not a picture")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:400])
    params = [p.clone() for p in viewer.host.worker.context.loaded.model.parameters()]
    for bad in (text_file, empty, truncated):
        before = len(viewer.reporter.errors())
        viewer.controller.open_paths([bad])
        message = new_error(qtbot, viewer, before)
        assert bad.name in message.text
        assert message.hint
        assert bad not in viewer.session.images
        assert viewer.session.current_image is not None
    before = len(viewer.reporter.errors())
    assert viewer.controller.open_paths([tmp_path / "missing.png"]) == []
    assert "does not exist" in viewer.reporter.errors()[-1].text
    assert len(viewer.reporter.errors()) == before + 1
    viewer.session.set_current_image(viewer.session.images.index(real))
    still_works(qtbot, viewer, 2)
    model = viewer.host.worker.context.loaded.model
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), params, strict=True))


def test_a_folder_opens_as_a_list_and_a_folder_without_images_is_reported(qtbot, viewer, tmp_path):
    for index in range(2):
        Image.new("RGB", (80, 60), (index * 100, 50, 50)).save(tmp_path / f"pic{index}.png")
    (tmp_path / "readme.txt").write_text("not listed")
    added = viewer.controller.open_paths([tmp_path])
    assert [path.name for path in added] == ["pic0.png", "pic1.png"]
    assert viewer.session.current_image.name == "pic0.png"
    wait_for_heatmap(qtbot, viewer)
    empty = tmp_path / "nothing"
    empty.mkdir()
    viewer.controller.open_paths([empty])
    assert "holds no files" in viewer.reporter.errors()[-1].text


def test_bad_weights_keep_the_current_model(qtbot, viewer, tmp_path):
    session = viewer.session
    key = session.model.key
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 definitely not safetensors" * 10)
    mismatched = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, str(mismatched))
    for weights, expected in (
        (garbage, "garbage.safetensors"),
        (mismatched, "other.safetensors"),
        (tmp_path / "absent.pt", "absent.pt"),
    ):
        before = len(viewer.reporter.errors())
        viewer.controller.load_model("demo", weights)
        message = new_error(qtbot, viewer, before)
        assert expected in message.text
        assert session.model.key == key
    before = len(viewer.reporter.errors())
    viewer.controller.load_model("no_such_model")
    assert "no_such_model" in new_error(qtbot, viewer, before).text
    still_works(qtbot, viewer, 3)


def test_a_model_whose_structure_defeats_rule_maps_loads_for_gradients(qtbot, viewer, monkeypatch):
    def defeated(*args, **kwargs):
        raise ValueError("the layer `odd` is neither a layer nor a container")

    monkeypatch.setattr(RuleMap, "recommended", defeated)  # read by the worker at load
    before = len(viewer.reporter.errors())
    viewer.controller.load_model("demo")
    message = new_error(qtbot, viewer, before)
    assert message.title == "The model cannot be explained with LRP rules"
    assert "`odd`" in message.text and "Gradient" in message.hint
    assert viewer.session.model is not None and viewer.session.rulemap is None
    viewer.session.set_method_kind("gradient")
    still_works(qtbot, viewer, 1)


def test_a_model_file_with_code_needs_consent(qtbot, tmp_path):
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    path = tmp_path / "whole_model.pt"
    torch.save(network, path)
    image = tmp_path / "picture.png"
    Image.new("RGB", (90, 70), (120, 30, 200)).save(image)
    for answer in (False, True):
        app = make_viewer(qtbot, tmp_path, answer=answer)
        try:
            app.controller.open_paths([image])
            app.controller.load_model(str(path))
            qtbot.waitUntil(lambda app=app: bool(app.reporter.questions), timeout=30_000)
            _, text, given = app.reporter.questions[0]
            assert given is answer
            assert "torch.nn.modules.container.Sequential" in text
            assert "torch.nn.modules.conv.Conv2d" in text
            if answer:
                qtbot.waitUntil(lambda app=app: app.session.model is not None, timeout=30_000)
                assert app.session.model.source == str(path)
                wait_for_heatmap(qtbot, app)
            else:
                wait_idle(qtbot, app)
                assert app.session.model is None
                assert app.reporter.messages[-1].level is Level.WARNING
        finally:
            app.shutdown()


def test_bad_rules_file_is_reported(qtbot, viewer, tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"layers": {"head.fc": {"rule": "Epsilon", "params": {"epsilon": -3}}}}')
    before = viewer.session.rulemap
    assert not load_rules(viewer.session, path, viewer.reporter)
    assert "epsilon" in viewer.reporter.errors()[-1].text
    assert viewer.session.rulemap == before
    still_works(qtbot, viewer, 4)


def test_the_error_of_a_failed_run_goes_once_a_run_succeeds(qtbot, viewer):
    bar = viewer.window.message_bar
    with nan_weight(viewer):
        viewer.session.set_target(1)
        message = new_error(qtbot, viewer, len(viewer.reporter.errors()))
        assert bar.message is message and not bar.isHidden()
    still_works(qtbot, viewer, 2)
    assert bar.isHidden()


def test_a_withdrawn_message_leaves_a_newer_one_shown(qtbot, viewer):
    bar = viewer.window.message_bar
    viewer.reporter.error("Old", "an old problem")
    old = bar.message
    viewer.reporter.error("New", "a newer problem")
    bar.withdraw(old)
    assert not bar.isHidden() and bar.message.title == "New"
    bar.withdraw(bar.message)
    assert bar.isHidden()


def test_rule_messages_go_once_the_selection_changes(qtbot, viewer):
    panel, bar = viewer.window.rules_panel, viewer.window.message_bar
    tree = panel.tree
    tree.clearSelection()
    panel.apply_to_selected()
    assert bar.message.title == "No layers selected" and not bar.isHidden()
    tree.setCurrentIndex(panel.model.index_of_layer("features.stage1"))
    assert bar.isHidden()

    panel.editor.rule_box.setCurrentIndex(panel.editor.rule_box.findData("Epsilon"))
    panel.apply_to_selected()  # the group's ReLU and max pooling cannot take Epsilon
    assert "was not given to" in bar.message.title and not bar.isHidden()
    tree.setCurrentIndex(panel.model.index_of_layer("head.fc"))
    assert bar.isHidden()


def test_the_error_of_a_failed_panel_goes_with_the_panel(qtbot, viewer):
    bar = viewer.window.message_bar
    with nan_weight(viewer):
        before = len(viewer.reporter.errors())
        viewer.window.compare("gradient")
        message = new_error(qtbot, viewer, before)
        assert bar.message is message and not bar.isHidden()
        viewer.session.remove_panel(0)
        qtbot.waitUntil(bar.isHidden, timeout=5_000)
