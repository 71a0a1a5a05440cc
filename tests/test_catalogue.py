"""The catalogue lists every choice once, and every registry, menu and doc agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torchvision
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMenu

from lrp_desktop.choices import add_catalogue_actions, catalogue_combo
from lrp_desktop_core import canonizers, cmap, composites, evaluate, explain, image, recommend
from lrp_desktop_core.cli_run import EVALUATION_FIELDS
from lrp_desktop_core.names import (
    CANONIZER_SETS,
    COLOUR_MAPS,
    DEFAULT_EXPORT_FORMATS,
    EXPORT_FORMATS,
    FILLS,
    HEATMAP_MODES,
    METHODS,
    MODEL_FAMILIES,
    OVERLAY_STYLES,
    PRESETS,
    SCORES,
    Catalogue,
    Entry,
    MethodEntry,
    Param,
    export_formats,
)
from lrp_desktop_core.report import SCORE_TITLES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_preset_is_catalogued_and_its_target_is_the_registered_class():
    assert list(composites.COMPOSITES) == list(PRESETS)
    for name, entry in PRESETS.items():
        assert entry.load() is composites.COMPOSITES[name]


@pytest.mark.parametrize(
    ("registry", "catalogue"),
    [
        (canonizers.CANONIZERS, CANONIZER_SETS),
        (cmap.CMAPS, COLOUR_MAPS),
        (image.OVERLAY_STYLES, OVERLAY_STYLES),
        (image.MODES, HEATMAP_MODES),
        (EVALUATION_FIELDS, SCORES),
    ],
    ids=["canonizers", "colour maps", "overlay styles", "heatmap modes", "scores"],
)
def test_the_engine_registries_hold_exactly_the_catalogued_names(registry, catalogue):
    assert list(registry) == list(catalogue)


def test_the_defaults_are_the_engines():
    assert FILLS.default == evaluate.DEFAULT_FILL == "blur"
    assert OVERLAY_STYLES.default == image.OVERLAY_STYLES[0]
    assert DEFAULT_EXPORT_FORMATS == ("overlay", "heatmap", "npy", "json")


def test_every_method_is_computed_and_its_settings_are_the_catalogued_ones():
    assert set(explain._METHODS) == set(METHODS)
    assert explain.DEFAULT_PARAMS["occlusion"] == {"window": 8, "stride": 8, "batch_size": 64}
    assert {"rollout"} == explain.CLASS_AGNOSTIC_KINDS
    assert explain.Method("smoothgrad", params={"n_iter": 5}).label() == "SmoothGrad (5 x 0.1)"
    assert explain.Method("gradient").label() == METHODS.title("gradient")
    with pytest.raises(ValueError, match="allowed: window, stride, batch_size"):
        explain.Method("occlusion", params={"n_iter": 3})


def test_conservation_is_explained_for_exactly_the_conserving_methods():
    conserving = {name for name, entry in METHODS.items() if entry.conserving}
    assert conserving == {"lrp", "integrated_gradients"}
    assert not any(entry.conserving and entry.class_agnostic for entry in METHODS.values())


def test_model_families_name_the_classes_recommend_recognises():
    families = dict(recommend._families())
    assert list(families.values()) == [entry.title for entry in MODEL_FAMILIES.values()]
    assert all(isinstance(cls, type) for cls in families)
    model = torchvision.models.resnet18()
    assert recommend.recommend(model).family == MODEL_FAMILIES.title("resnet")


def test_scores_have_their_catalogued_titles_in_reports():
    assert {name: entry.title for name, entry in SCORES.items()} == SCORE_TITLES


def test_an_entry_without_a_description_cannot_be_made():
    with pytest.raises(ValueError, match="description"):
        Entry("new", "New", " ")
    with pytest.raises(ValueError, match="description"):
        MethodEntry("new", "New", "")
    with pytest.raises(ValueError, match="description"):
        Param("steps", 3, "")


def test_a_catalogue_refuses_twins_and_an_unknown_default_and_names_its_choices():
    one, two = Entry("a", "A", "first"), Entry("b", "B", "second")
    with pytest.raises(ValueError, match="share a name"):
        Catalogue("thing", (one, Entry("a", "A again", "twin")))
    with pytest.raises(ValueError, match="default"):
        Catalogue("thing", (one, two), default="c")
    things = Catalogue("thing", (one, two))
    assert things.default == "a" and things.names == ("a", "b") and len(things) == 2
    assert things.title("b") == "B" and things.title("z") == "z" and things.description("z") == ""
    with pytest.raises(KeyError, match="unknown thing 'z'; choose one of a, b"):
        things["z"]


def test_an_entry_loads_its_target_and_says_when_it_has_none():
    assert PRESETS["epsilon_plus"].load() is composites.EpsilonPlus
    with pytest.raises(LookupError, match="no implementation"):
        METHODS["lrp"].load()


def test_export_formats_resolve_aliases_and_refuse_unknown_names():
    assert export_formats(["png", "json", "overlay"]) == ("overlay", "json")
    with pytest.raises(ValueError, match="tiff; choose from overlay, heatmap"):
        export_formats(["tiff"])


def test_combo_boxes_and_menus_show_titles_with_the_descriptions_as_tooltips(qtbot):
    combo = catalogue_combo(METHODS.values())
    qtbot.addWidget(combo)
    assert [combo.itemData(row) for row in range(combo.count())] == list(METHODS)
    assert combo.itemText(1) == "Gradient"
    assert combo.itemData(1, Qt.ItemDataRole.ToolTipRole) == METHODS.description("gradient")
    menu = QMenu()
    chosen: list[str] = []
    add_catalogue_actions(menu, PRESETS.values(), chosen.append)
    action = menu.actions()[3]
    assert action.text() == "Epsilon-Plus" and action.toolTip() == PRESETS.description(
        "epsilon_plus"
    )
    action.trigger()
    assert chosen == ["epsilon_plus"]


def _readme_choices(option: str, separator: str) -> list[str]:
    match = re.search(rf"\[{option} ([\w{re.escape(separator)}]+)\]", README.read_text())
    assert match is not None, f"README's usage lists no {option}"
    return match.group(1).split(separator)


def test_readme_lists_the_catalogued_choices_of_the_command_line():
    assert _readme_choices("--method", "|") == list(METHODS)
    assert _readme_choices("--overlay", "|") == list(OVERLAY_STYLES)
    assert _readme_choices("--format", ",") == list(EXPORT_FORMATS)


def test_readme_lists_every_method_the_app_can_compare():
    match = re.search(r"`--compare` opens panels side by side \(([^)]*)\)", README.read_text())
    assert match is not None
    listed = re.findall(r"`(\w+)`", match.group(1))
    assert listed[1:] == [name for name in METHODS if name != "lrp"]
