"""The rule tree model, its undoable edits, presets, canonizers and rule files (no worker)."""

from __future__ import annotations

import copy
import json

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QAction, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QLineEdit,
    QStyleOptionViewItem,
    QTreeView,
    QWidget,
)
from torch import nn

from lrp_desktop.native import native_widget
from lrp_desktop.reporter import Level, Reporter
from lrp_desktop.requests import coverage
from lrp_desktop.rule_delegate import RuleDelegate, rule_combo
from lrp_desktop.rule_editing import (
    apply_preset,
    change_canonizer,
    load_rules,
    save_rules,
)
from lrp_desktop.rule_tree import NAME, RULE, RULE_PARAMS, RuleTreeModel, parse_params
from lrp_desktop.rules_panel import RulesPanel
from lrp_desktop.session import ModelInfo, Session
from lrp_desktop_core.models import load_model
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.rulemap import RULE_CHOICES, RuleChoice, RuleMap


@pytest.fixture(scope="module")
def demo_info():
    loaded = load_model("demo")
    skeleton = copy.deepcopy(loaded.model).to("meta")
    return ModelInfo(
        "demo#test",
        loaded.spec,
        "demo",
        loaded.weights_path,
        loaded.weights_sha256,
        skeleton,
        0,
        "cpu",
        recommend(loaded.model),
    )


@pytest.fixture
def editing(qtbot, demo_info):
    session = Session()
    reporter = Reporter()
    session.set_model(demo_info, RuleMap.recommended(demo_info.skeleton, demo_info.spec))
    return session, reporter, RuleTreeModel(session, reporter)


def test_tree_passes_the_model_tester(qtmodeltester, editing):
    _, _, model = editing
    assert model.items.rowCount() == 2  # features, head
    qtmodeltester.check(model.items)


def test_tree_groups_layers_under_their_modules(editing):
    _, _, model = editing
    fc = model.index_of_layer("head.fc")
    assert fc.data() == "fc"
    assert fc.siblingAtColumn(1).data() == "Linear"
    assert fc.siblingAtColumn(2).data() == f"{5 * 64 + 5:,}"
    assert fc.parent().data() == "head"
    assert fc.siblingAtColumn(RULE).data() == "Epsilon"
    head = model.index_of_layer("head", RULE)
    assert head.data() == "(mixed)"


def test_set_rule_is_an_undoable_edit(editing):
    session, _, model = editing
    before = session.rulemap
    cell = model.index_of_layer("head.fc", RULE)
    assert model.edit(cell, "ZPlus")
    assert session.rulemap["head.fc"].rule == "ZPlus"
    assert session.rulemap["features.stage1.conv"] == before["features.stage1.conv"]
    assert cell.data() == "ZPlus"
    session.undo_stack.undo()
    assert session.rulemap == before
    assert cell.data() == "Epsilon"
    session.undo_stack.redo()
    assert session.rulemap["head.fc"].rule == "ZPlus"


def test_parameters_are_edited_as_text(editing):
    session, reporter, model = editing
    cell = model.index_of_layer("features.stage2.conv", RULE_PARAMS)
    assert session.rulemap["features.stage2.conv"].rule == "Gamma"
    assert model.edit(cell, "gamma=0.5")
    assert session.rulemap["features.stage2.conv"].params["gamma"] == 0.5
    assert "gamma=0.5" in cell.data()
    assert not model.edit(cell, "gamma=lots")
    assert not model.edit(cell, "gamma=-1")
    assert session.rulemap["features.stage2.conv"].params["gamma"] == 0.5
    assert [m.level for m in reporter.messages] == [Level.ERROR, Level.ERROR]


def test_parse_params_reads_numbers_and_lists():
    assert parse_params("gamma=0.25, stabilizer=1e-6") == {"gamma": 0.25, "stabilizer": 1e-6}
    assert parse_params("low=[-1, -2, -3]; high=2") == {"low": [-1, -2, -3], "high": 2.0}
    with pytest.raises(ValueError, match="name=value"):
        parse_params("gamma 0.25")


def test_a_group_rule_goes_to_every_layer_it_holds_that_can_take_it(editing):
    session, reporter, model = editing
    stage1 = model.index_of_layer("features.stage1", RULE)
    assert model.edit(stage1, "Epsilon")
    assert session.rulemap["features.stage1.conv"].rule == "Epsilon"
    assert session.rulemap["features.stage1.bn"].rule == "Epsilon"
    # a ReLU and a max pooling cannot take Epsilon: left alone and reported
    assert session.rulemap["features.stage1.relu"].rule != "Epsilon"
    assert reporter.messages[-1].level is Level.WARNING
    assert "features.stage1.relu" in reporter.messages[-1].text
    assert session.undo_stack.count() == 1


def test_unfit_rule_is_refused_for_a_single_layer(editing):
    session, reporter, model = editing
    before = session.rulemap
    assert not model.edit(model.index_of_layer("head.flatten", RULE), "Gamma")
    assert session.rulemap == before
    assert "Flatten" in reporter.messages[-1].text


def test_layers_without_rule_are_marked_with_the_reason(editing):
    session, _, model = editing
    cell = model.index_of_layer("features.residual.sum", RULE)
    assert model.edit(cell, "none")
    assert not session.coverage_is_current
    session.set_coverage(
        session.rulemap.fingerprint(), coverage(session.model.skeleton, session.rulemap)
    )
    assert session.coverage_is_current
    assert cell.data(Qt.ItemDataRole.DecorationRole) is not None
    tooltip = cell.data(Qt.ItemDataRole.ToolTipRole)
    assert "relevance" in tooltip and "Norm" in tooltip
    plain = model.index_of_layer("features.stage2.conv", RULE)
    assert plain.data(Qt.ItemDataRole.DecorationRole) is None
    assert RULE_CHOICES["Gamma"].description in plain.data(Qt.ItemDataRole.ToolTipRole)


def test_a_rule_change_rewrites_only_the_rows_it_changed(qtbot, editing):
    session, _, model = editing
    layouts, changed = [], set()
    model.items.layoutChanged.connect(lambda *args: layouts.append(args))
    model.items.dataChanged.connect(lambda first, last, roles: changed.add(model.node(first).name))
    fc = model.index_of_layer("head.fc", RULE)
    assert model.edit(fc, "ZPlus")
    assert "head.fc" in changed
    assert changed <= {"head.fc", "head"}  # the layer, and its group's summary at most
    assert not layouts
    changed.clear()
    # a coverage that confirms the rules changes nothing shown: nothing is rewritten
    session.set_coverage(
        session.rulemap.fingerprint(), coverage(session.model.skeleton, session.rulemap)
    )
    assert session.coverage_is_current
    session.set_coverage(
        session.rulemap.fingerprint(), coverage(session.model.skeleton, session.rulemap)
    )
    assert not layouts
    assert fc.data() == "ZPlus"


def test_the_rule_tree_view_is_made_by_qt(qtbot, editing):
    session, reporter, _ = editing
    panel = RulesPanel(session, reporter, QAction("Apply"), lambda preset: None)
    qtbot.addWidget(panel)
    assert type(panel.tree) is QTreeView  # not a binding subclass that asks Python per call
    assert panel.tree.parent() is panel
    assert panel.tree.model() is panel.model.items
    assert type(panel.model.items) is QStandardItemModel  # its items answer in C++ as well


def test_cells_edited_in_the_view_change_the_rule_map(qtbot, editing):
    session, reporter, _ = editing
    panel = RulesPanel(session, reporter, QAction("Apply"), lambda preset: None)
    qtbot.addWidget(panel)
    panel.show()
    tree, rules = panel.tree, panel.model
    params = rules.index_of_layer("features.stage2.conv", RULE_PARAMS)
    tree.setCurrentIndex(params)
    tree.edit(params)
    line = tree.viewport().findChild(QLineEdit)
    line.setText("gamma=0.75")
    qtbot.keyClick(line, Qt.Key.Key_Return)  # committed on the next pass of the event loop
    qtbot.waitUntil(lambda: session.rulemap["features.stage2.conv"].params["gamma"] == 0.75)
    assert "gamma=0.75" in params.data()
    rule = rules.index_of_layer("head.fc", RULE)
    tree.setCurrentIndex(rule)
    tree.edit(rule)
    combo = tree.viewport().findChild(QComboBox)
    position = combo.findData("ZPlus")
    combo.setCurrentIndex(position)
    combo.activated.emit(position)
    assert session.rulemap["head.fc"].rule == "ZPlus"
    assert rule.data() == "ZPlus"
    assert not rules.index_of_layer("head.fc", NAME).flags() & Qt.ItemFlag.ItemIsEditable


def test_native_widget_refuses_what_qt_cannot_create_by_name(qtbot):
    parent = QWidget()
    qtbot.addWidget(parent)
    assert type(native_widget(QLabel, parent)) is QLabel
    with pytest.raises(TypeError, match="RulesPanel"):
        native_widget(RulesPanel, parent)  # a class of this project, unknown to Qt


def test_preset_fills_the_tree_and_canonizer_change_keeps_rules(editing):
    session, _, model = editing
    apply_preset(session, "epsilon_plus")
    assert session.rulemap.preset == "epsilon_plus"
    assert model.index_of_layer("features.stage1.conv", RULE).data() == "ZPlus"
    assert model.edit(model.index_of_layer("head.fc", RULE), "Norm")
    change_canonizer(session, "none")
    assert session.rulemap.canonizer == "none"
    assert session.rulemap["head.fc"].rule == "Norm"
    assert model.items.rowCount() == 2
    session.undo_stack.undo()
    assert session.rulemap.canonizer == "merge_batchnorm"


def test_rule_combo_offers_every_rule_with_its_description(qtbot, editing):
    combo = rule_combo()
    assert combo.count() == len(RULE_CHOICES)
    for row in range(combo.count()):
        assert (
            combo.itemData(row, Qt.ItemDataRole.ToolTipRole)
            == RULE_CHOICES[combo.itemData(row)].description
        )


def test_delegate_edits_the_rule_in_place(qtbot, editing):
    session, _, model = editing
    delegate = RuleDelegate(model)
    cell = model.index_of_layer("head.fc", RULE)
    editor = delegate.createEditor(None, None, cell)
    qtbot.addWidget(editor)
    delegate.setEditorData(editor, cell)
    assert editor.currentData() == "Epsilon"
    editor.setCurrentIndex(editor.findData("Norm"))
    delegate.setModelData(editor, model.items, cell)
    assert session.rulemap["head.fc"].rule == "Norm"
    assert cell.data() == "Norm"


def test_delegate_edits_parameters_through_the_rule_map(qtbot, editing):
    session, reporter, model = editing
    delegate = RuleDelegate(model)
    cell = model.index_of_layer("features.stage2.conv", RULE_PARAMS)
    parent = QWidget()
    qtbot.addWidget(parent)
    editor = delegate.createEditor(parent, QStyleOptionViewItem(), cell)
    delegate.setEditorData(editor, cell)
    assert editor.text() == cell.data() and "gamma=" in editor.text()
    editor.setText("gamma=0.5")
    delegate.setModelData(editor, model.items, cell)
    assert session.rulemap["features.stage2.conv"].params["gamma"] == 0.5
    assert "gamma=0.5" in cell.data()
    # refused text never reaches the cell: it keeps showing the rule map
    editor.setText("gamma=lots")
    delegate.setModelData(editor, model.items, cell)
    assert "gamma=0.5" in cell.data()
    assert reporter.messages[-1].level == Level.ERROR


def test_rules_round_trip_through_json(tmp_path, editing):
    session, reporter, model = editing
    model.edit(model.index_of_layer("head.fc", RULE), RuleChoice("Epsilon", {"epsilon": 0.5}))
    saved = session.rulemap
    path = tmp_path / "rules.json"
    assert save_rules(session, path, reporter)
    apply_preset(session, "epsilon_plus")
    assert load_rules(session, path, reporter)
    assert session.rulemap.fingerprint() == saved.fingerprint()


def test_rules_of_another_model_are_refused_naming_the_layers(tmp_path, editing):
    session, reporter, _ = editing
    before = session.rulemap
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    path = RuleMap.from_preset(other, "epsilon_plus").save(tmp_path / "other.json")
    assert not load_rules(session, path, reporter)
    assert session.rulemap == before
    text = reporter.messages[-1].text
    assert "'0' is in the rule map but not in the model" in text
    assert "head.fc" in text


@pytest.mark.parametrize("content", ["{not json", json.dumps({"layers": {"x": {"rule": "?"}}}), ""])
def test_bad_rules_files_are_reported(tmp_path, editing, content):
    session, reporter, _ = editing
    before = session.rulemap
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert not load_rules(session, path, reporter)
    assert session.rulemap == before
    assert reporter.messages[-1].level is Level.ERROR
    assert "bad.json" in reporter.messages[-1].text


def test_rule_editor_follows_inline_edits_and_undo_and_apply_keeps_them(qtbot, editing):
    session, reporter, _ = editing
    panel = RulesPanel(session, reporter, QAction("Apply"), lambda preset: None)
    qtbot.addWidget(panel)
    tree, editor = panel.model, panel.editor
    panel.tree.selectionModel().select(
        tree.index_of_layer("head.fc"),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )
    assert editor.rule() == "Epsilon"
    delegate = panel.tree.itemDelegateForColumn(RULE)
    cell = tree.index_of_layer("head.fc", RULE)
    combo = delegate.createEditor(panel.tree, None, cell)
    combo.setCurrentIndex(combo.findData("Norm"))
    delegate.setModelData(combo, tree, cell)  # the inline edit in the tree
    assert session.rulemap["head.fc"].rule == "Norm"
    assert editor.rule() == "Norm"
    panel.apply_to_selected()
    assert session.rulemap["head.fc"].rule == "Norm"  # Apply did not put Epsilon back
    tree.edit(tree.index_of_layer("head.fc", RULE), "Epsilon")
    tree.edit(tree.index_of_layer("head.fc", RULE_PARAMS), "epsilon=0.5")
    assert editor.editors["epsilon"].text() == "0.5"
    session.undo_stack.undo()
    assert editor.editors["epsilon"].text() != "0.5"
    session.undo_stack.undo()
    assert editor.rule() == "Norm"
    session.undo_stack.redo()
    assert editor.rule() == "Epsilon"
    panel.apply_to_selected()
    assert session.rulemap["head.fc"].rule == "Epsilon"
    assert session.undo_stack.canRedo()  # Apply changed nothing, so the redo is still there


def test_rule_editor_says_when_the_selected_rules_differ(qtbot, editing):
    session, reporter, _ = editing
    panel = RulesPanel(session, reporter, QAction("Apply"), lambda preset: None)
    qtbot.addWidget(panel)
    panel.tree.selectAll()
    assert "mixed rules" in panel.editor.selection_label.text()
