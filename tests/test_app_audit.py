"""Every CNN explained right, or a loud warning: the audit and the support marks in the viewer."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from PySide6.QtCore import Qt
from test_app_support import WAIT_MS, make_viewer, wait_for_heatmap, wait_idle
from torch import nn

from lrp_desktop.auditing import AUDIT_TITLE
from lrp_desktop.model_dialog import ModelDialog
from lrp_desktop.requests import _skeleton
from lrp_desktop.rule_tree import NAME, RULE
from lrp_desktop.support import SupportChecker
from lrp_desktop_core.models import load_model
from lrp_desktop_core.recommend import recommend

pytest_plugins = ["test_app_support"]


class Swish(nn.Module):
    """An activation computed inline: its multiplication has no rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SwishNet(nn.Module):
    """A small CNN whose activation is :class:`Swish`."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), Swish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def audit_warnings(app) -> list:
    return [message for message in app.reporter.messages if message.title == AUDIT_TITLE]


def viewer_on(qtbot, tmp_path, model_file):
    """Return a viewer that loaded ``model_file`` (with consent) and answered one picture."""
    image = tmp_path / "picture.png"
    Image.new("RGB", (90, 70), (120, 30, 200)).save(image)
    app = make_viewer(qtbot, tmp_path, answer=True)
    app.controller.open_paths([image])
    app.controller.load_model(str(model_file))
    qtbot.waitUntil(lambda: app.session.model is not None, timeout=WAIT_MS)
    return app


def test_the_demo_is_clean_and_says_what_suits_it(qtbot, viewer):
    session = viewer.session
    qtbot.waitUntil(lambda: session.audit_is_current, timeout=WAIT_MS)
    assert session.audit == ()
    assert audit_warnings(viewer) == []
    assert session.explanation.warnings == ()
    assert "may be wrong" not in viewer.window.main_view.caption.text()
    tree = viewer.window.rules_panel.model
    assert all(not tree.warning(node) for node in tree.nodes.values())
    panel = viewer.window.rules_panel
    summary = session.model.recommendation.summary()
    assert summary in panel.recommendation.text()
    assert summary in panel.canonizer_box.toolTip()


def test_the_rule_checking_thread_has_its_own_copy_of_the_skeleton(qtbot, viewer):
    qtbot.waitUntil(lambda: viewer.session.coverage_is_current, timeout=WAIT_MS)
    window_copy = viewer.session.model.skeleton
    checking_copy = viewer.structure.worker.context.skeleton
    assert checking_copy is not window_copy
    for (name, mine), (same_name, theirs) in zip(
        window_copy.named_modules(), checking_copy.named_modules(), strict=True
    ):
        assert name == same_name and type(mine) is type(theirs) and mine is not theirs
    assert {p.device.type for p in checking_copy.parameters()} == {"meta"}


@pytest.mark.parametrize(
    "name", ["demo", "resnet18", "googlenet", "efficientnet_b0", "swin_t", "densenet121"]
)
def test_the_skeleton_gets_the_recommendation_of_the_model(name):
    loaded = load_model(name) if name.startswith("demo") else load_model(name, seed=0)
    real, structural = recommend(loaded.model), recommend(_skeleton(loaded.model))
    for field in ("canonizer", "preset", "family", "reasons", "unsupported", "affine_batch_norms"):
        assert getattr(structural, field) == getattr(real, field), field
    bounds = loaded.spec.input_bounds()
    for mine, theirs in zip(
        structural.first_layer_bounds(*bounds), real.first_layer_bounds(*bounds), strict=True
    ):
        assert torch.equal(mine, theirs)


def test_a_model_is_recommended_for_once_and_preset_switches_reuse_it(qtbot, tmp_path, monkeypatch):
    from lrp_desktop import requests
    from lrp_desktop_core import recommend as recommending

    looked_at: list[nn.Module] = []

    def counted(model):
        looked_at.append(model)
        return recommend(model)

    monkeypatch.setattr(requests, "recommend", counted)
    monkeypatch.setattr(recommending, "recommend", counted)
    path = tmp_path / "swish.pt"
    torch.save(SwishNet(), path)
    app = viewer_on(qtbot, tmp_path, path)
    try:
        wait_for_heatmap(qtbot, app)
        assert len(looked_at) == 1
        recommendation = app.session.model.recommendation
        box = app.window.rules_panel.preset_box
        box.activated.emit(box.findData("epsilon_alpha2_beta1"))
        qtbot.waitUntil(lambda: not app.controller.building_preset, timeout=WAIT_MS)
        assert app.session.rulemap.preset == "epsilon_alpha2_beta1"
        assert app.structure.worker.context.recommendation is recommendation
        assert len(looked_at) == 1
    finally:
        wait_idle(qtbot, app)


def test_inline_arithmetic_warns_and_marks_its_layer(qtbot, tmp_path):
    path = tmp_path / "swish.pt"
    torch.save(SwishNet(), path)
    app = viewer_on(qtbot, tmp_path, path)
    try:
        wait_for_heatmap(qtbot, app)
        session = app.session
        assert session.audit_is_current
        assert {(finding.module, finding.op) for finding in session.audit} == {
            ("features.1", "mul"),
            ("features.1", "sigmoid"),
        }
        # one warning in the message bar, every finding behind "Details"
        [message] = audit_warnings(app)
        assert "2 operations on the relevance path have no rule" in message.text
        assert set(message.details) == {finding.message for finding in session.audit}
        bar = app.window.message_bar
        assert bar.message == message and not bar.isHidden()
        assert not bar.details_button.isHidden()
        bar.details_button.click()
        listed = bar.details_dialog.text.toPlainText()
        assert all(finding.message in listed for finding in session.audit)
        bar.details_dialog.close()
        # the rule tree marks the layer and its group, the message as tooltip
        tree = app.window.rules_panel.model
        cell = tree.index_of_layer("features.1", RULE)
        tooltip = cell.data(Qt.ItemDataRole.ToolTipRole)
        assert "mul outside any module with a rule in `features.1`" in tooltip
        assert "mul outside" in tree.index_of_layer("features.1", NAME).data(
            Qt.ItemDataRole.ToolTipRole
        )
        assert cell.data(Qt.ItemDataRole.DecorationRole) is not None
        assert cell.data(Qt.ItemDataRole.BackgroundRole) is not None
        group = tree.index_of_layer("features", RULE)
        assert group.data(Qt.ItemDataRole.DecorationRole) is not None
        clean = tree.index_of_layer("fc", RULE)
        assert "outside" not in clean.data(Qt.ItemDataRole.ToolTipRole)
        assert clean.data(Qt.ItemDataRole.DecorationRole) is None
        # the heatmap says it may be wrong, and why
        caption = app.window.main_view.caption
        assert session.explanation.warnings
        assert "may be wrong" in caption.text()
        assert "mul outside" in caption.toolTip()
        app.window.compare("current")
        qtbot.waitUntil(
            lambda: session.panel_result(session.comparison.panels[0]) is not None, timeout=WAIT_MS
        )
        assert "may be wrong" in app.window.comparison.panels[0].caption.text()
        # another rule elsewhere leaves the findings as they are: nothing new is said
        assert tree.edit(tree.index_of_layer("fc", RULE), "ZPlus")
        wait_for_heatmap(qtbot, app)
        qtbot.waitUntil(lambda: session.audit_is_current, timeout=WAIT_MS)
        assert session.audit and len(audit_warnings(app)) == 1
    finally:
        app.shutdown()


def test_model_dialog_marks_what_is_fully_supported(qtbot, tmp_path):
    checker = SupportChecker()
    dialog = ModelDialog(tmp_path, checker)
    qtbot.addWidget(dialog)
    try:
        combo = dialog.architecture

        def marked(name: str) -> tuple[int, str]:
            position = combo.findText(name, Qt.MatchFlag.MatchExactly)
            return (
                combo.itemIcon(position).cacheKey(),
                combo.itemData(position, Qt.ItemDataRole.ToolTipRole) or "",
            )

        qtbot.waitUntil(lambda: combo.currentText() == "resnet18", timeout=WAIT_MS)
        qtbot.waitUntil(lambda: marked("resnet18")[1] != "", timeout=WAIT_MS)
        icon, tooltip = marked("resnet18")
        assert icon == dialog.supported_icon.cacheKey()
        assert "ResNet (fully supported)" in tooltip
        assert dialog.support_note.text().endswith("fully supported")
        combo.setCurrentText("swin_v2_t")  # checked next, before the rest of the list
        qtbot.waitUntil(lambda: marked("swin_v2_t")[1] != "", timeout=10_000)
        icon, tooltip = marked("swin_v2_t")
        assert icon == dialog.unsupported_icon.cacheKey()
        assert "not fully supported" in tooltip
        assert "not fully supported" in dialog.support_note.text()
        assert "attention" in dialog.support_note.text()
        assert dialog.demo.toolTip().startswith("fully supported")
    finally:
        dialog.reject()
        checker.stop()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_lrp_on_a_torchscript_model_is_refused_clearly_and_other_methods_work(qtbot, tmp_path):
    path = tmp_path / "scripted.pt"
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    torch.jit.script(network).save(str(path))
    app = viewer_on(qtbot, tmp_path, path)
    try:
        qtbot.waitUntil(lambda: bool(app.reporter.errors()), timeout=WAIT_MS)
        wait_idle(qtbot, app)
        [error] = app.reporter.errors()
        assert "TorchScript model cannot be hooked" in error.text
        assert "Method and device" in error.hint
        assert app.session.status.state == "failed"
        assert audit_warnings(app) == []
        app.session.set_method_kind("gradient")
        relevance = wait_for_heatmap(qtbot, app)
        assert relevance.shape == (3, 224, 224) and abs(relevance).sum() > 0
        assert app.reporter.errors() == [error]
    finally:
        app.shutdown()
