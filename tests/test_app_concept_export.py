"""The layer view's exports (a vector figure of a layer's concepts, a PNG) and its settings.

The figure is PDF or SVG; the folder of reference images is kept for the next start.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from test_app_layer_view import LAYER, select_layer, wait_for_concepts
from test_app_report import assert_vector_pdf, needs_poppler, pdf_text
from test_app_support import make_viewer

from lrp_desktop.concept_export import write_concept_figure
from lrp_desktop.session import DisplaySettings
from lrp_desktop.settings import Preferences, fresh_settings
from lrp_desktop_core.concepts import concept_heatmaps
from lrp_desktop_core.images import load_image
from lrp_desktop_core.models import demo_samples, load_model
from lrp_desktop_core.rulemap import RuleMap

pytest_plugins = ["test_app_support"]

#: Where rendered pages are kept for a person to look at.
PICTURES = Path("/tmp/shots")


@needs_poppler
def test_a_layers_concepts_export_as_a_vector_figure_with_its_provenance(qtbot, viewer, tmp_path):
    select_layer(viewer, LAYER)
    view = wait_for_concepts(qtbot, viewer, LAYER)
    concepts = view.result.concepts
    pdf = tmp_path / "concepts.pdf"
    assert view.export(pdf)
    assert_vector_pdf(pdf)
    words = pdf_text(pdf)
    assert LAYER in words and "demo" in words.lower()
    assert viewer.session.rulemap.canonizer in words  # the rules it was computed with
    for channel, share in zip(concepts.channels, concepts.shares()):
        assert f"channel {channel}: share {share:+.1%}" in words
    shown = set(re.findall(r"\b\d+\b", words))
    assert {str(channel) for channel in concepts.channels} <= shown  # the bars are named
    PICTURES.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "80", "-singlefile", str(pdf), str(PICTURES / "concepts")],
        check=True,
    )
    svg = tmp_path / "concepts.svg"
    assert view.export(svg)
    assert LAYER in svg.read_text(encoding="utf-8")
    png = tmp_path / "concepts.png"
    assert view.export(png) and png.stat().st_size > 1000


@needs_poppler
def test_a_transformer_layer_draws_its_tokens_as_a_map(qtbot, tmp_path):
    loaded = load_model("demo_vit")
    rulemap = RuleMap.recommended(loaded.model, loaded.spec)
    image = load_image(demo_samples()[0], loaded.spec)
    layer = "encoder.layers.encoder_layer_1"
    concepts = concept_heatmaps(loaded.model, image.tensor[None], rulemap, layer, 4)
    pdf = write_concept_figure(
        tmp_path / "vit.pdf", concepts, image.display, DisplaySettings(), [("layer", layer)]
    )
    words = pdf_text(pdf)
    assert "relevance map of the layer, 8 x 8" in words  # 64 patches
    assert "(class" in words and "left out)" in words  # the class token, not in the grid
    assert f"channel {concepts.channels[0]}: share" in words


def test_the_reference_folder_is_kept_for_the_next_start(qtbot, tmp_path):
    folder = demo_samples()[0].parent
    first = make_viewer(qtbot, tmp_path)
    try:
        first.window.layer_view.index_folder(folder, store=tmp_path / "store")
    finally:
        first.shutdown()
    again = make_viewer(qtbot, tmp_path)
    try:
        assert again.window.layer_view.reference_folder == folder.resolve()
    finally:
        again.shutdown()
    (tmp_path / "fresh").mkdir()
    fresh = Preferences(fresh_settings(tmp_path / "fresh"))  # lrp-desktop --fresh
    assert fresh.reference_folder is None


def test_nothing_is_exported_before_the_concepts_are_shown(qtbot, viewer, tmp_path):
    view = viewer.window.layer_view
    assert view.result is None
    assert not view.export(tmp_path / "early.pdf")
    assert not (tmp_path / "early.pdf").exists()
