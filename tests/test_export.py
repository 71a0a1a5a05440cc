"""Tests of the export of explanations, figures and reports (each format is read back)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from lrp_desktop_core.explain import Explanation, Method
from lrp_desktop_core.export import (
    explanation_record,
    save_explanation,
    save_figure,
)
from lrp_desktop_core.image import SIDE_BY_SIDE_GAP, overlay
from lrp_desktop_core.report import BASELINE_LABEL, ImagePage, ImageScores, Report, Scale

SVG = "{http://www.w3.org/2000/svg}"


def pdf_page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", data))


def fake_explanation(count: int = 2, size: int = 6) -> Explanation:
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=(count, 3, size, size)).astype(np.float32)
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], dtype=np.float32)[:count]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = np.array([0, 2])[:count]
    return Explanation(
        relevance=relevance,
        logits=logits,
        probabilities=probabilities,
        target=target,
        explained_output=logits[np.arange(count), target],
        relevance_sum=relevance.reshape(count, -1).sum(axis=1),
        seconds=0.25,
        method=Method("gradient"),
        device="cpu",
    )


def test_record_names_classes_settings_and_versions():
    explanation = fake_explanation()
    record = explanation_record(
        model_name="demo",
        method=explanation.method,
        explanation=explanation,
        index=1,
        class_names=("circle", "square", "triangle"),
        weights_path="/tmp/w.safetensors",
        weights_sha256="ab" * 32,
        image_path="x.png",
    )
    assert record["prediction"] == {
        "index": 1,
        "name": "square",
        "logit": 3.0,
        "probability": pytest.approx(float(explanation.probabilities[1, 1])),
    }
    assert record["target"] == {"index": 2, "name": "triangle"}
    assert record["explained_output"] == 1.0
    assert record["method"]["kind"] == "gradient"
    assert record["rulemap"] is None and record["canonizer"] is None
    assert record["weights"] == {
        "file": "/tmp/w.safetensors",
        "sha256": "ab" * 32,
        "pretrained": None,
        "random": False,
        "seed": None,
    }
    assert set(record["versions"]) >= {"lrp-desktop", "torch", "torchvision"}
    json.dumps(record)  # JSON-ready as it is


def test_save_explanation_writes_each_format(tmp_path):
    explanation = fake_explanation()
    display = np.full((6, 6, 3), 128, dtype=np.uint8)
    record = explanation_record(
        model_name="demo", method=explanation.method, explanation=explanation, index=0
    )
    written = save_explanation(tmp_path / "out", "sample", display, explanation, 0, record)
    assert sorted(written) == ["heatmap", "json", "npy", "overlay"]
    for kind in ("overlay", "heatmap"):
        assert written[kind].name == f"sample_{kind}.png"
        with Image.open(written[kind]) as picture:
            assert picture.size == (6, 6)
            assert not np.array_equal(np.asarray(picture.convert("RGB")), display)
    np.testing.assert_array_equal(np.load(written["npy"]), explanation.relevance[0])
    saved = json.loads(written["json"].read_text())
    assert saved["target"]["index"] == 0
    assert saved["files"] == {
        "overlay": "sample_overlay.png",
        "heatmap": "sample_heatmap.png",
        "npy": "sample.npy",
    }
    assert saved["display"]["style"] == "greyscale" and len(saved["display"]["bounds"]) == 2


def test_save_explanation_png_alias_and_side_by_side(tmp_path):
    explanation = fake_explanation()
    display = np.full((6, 6, 3), 128, dtype=np.uint8)
    written = save_explanation(
        tmp_path, "s", display, explanation, 0, {}, formats=("png", "side_by_side", "overlay")
    )
    assert list(written) == ["overlay", "side_by_side"]
    with Image.open(written["side_by_side"]) as picture:
        assert picture.size == (3 * 6 + 2 * SIDE_BY_SIDE_GAP, 6)


def test_save_explanation_draws_with_given_bounds_and_style(tmp_path):
    explanation = fake_explanation()
    display = np.full((6, 6, 3), 128, dtype=np.uint8)
    bound = float(np.abs(explanation.relevance[0].sum(0)).max()) * 4
    written = save_explanation(
        tmp_path,
        "s",
        display,
        explanation,
        0,
        {},
        formats=("overlay",),
        style="weighted",
        bounds=(-bound, bound),
        opacity=0.8,
    )
    expected = overlay(
        display, explanation.relevance[0], opacity=0.8, bounds=(-bound, bound), style="weighted"
    )[..., :3]
    with Image.open(written["overlay"]) as picture:
        np.testing.assert_array_equal(np.asarray(picture), expected)


def test_save_explanation_only_requested_formats(tmp_path):
    explanation = fake_explanation()
    display = np.zeros((6, 6, 3), dtype=np.uint8)
    written = save_explanation(tmp_path, "a", display, explanation, 1, {}, formats=("npy",))
    assert list(written) == ["npy"] and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    with pytest.raises(ValueError, match="unknown export format"):
        save_explanation(tmp_path, "a", display, explanation, 1, {}, formats=("tiff",))


def panels() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        rng.integers(0, 255, (20, 20, 3), dtype=np.uint8),
        rng.integers(0, 255, (20, 30, 4), dtype=np.uint8),
        rng.integers(0, 255, (200, 180, 3), dtype=np.uint8),
    ]


CAPTIONS = ["input", "LRP epsilon_gamma_box <signed> & more words to wrap", "Gradient"]


def test_figure_png_grid(tmp_path):
    path = save_figure(tmp_path / "fig.png", panels(), CAPTIONS, title="A title", columns=2)
    with Image.open(path) as figure:
        width, height = figure.size
    # two columns of the largest panel (200 x 180) plus margins; two rows with captions
    assert 2 * 180 < width < 2 * 180 + 60
    assert 2 * 200 < height < 2 * 200 + 200


def test_figure_svg_embeds_panels_and_captions(tmp_path):
    path = save_figure(tmp_path / "fig.svg", panels(), CAPTIONS, title="A title")
    root = ET.parse(path).getroot()
    images = root.findall(f"{SVG}image")
    assert len(images) == 3
    assert all(image.get("href").startswith("data:image/png;base64,") for image in images)
    text = " ".join(element.text for element in root.iter(f"{SVG}text"))
    assert "A title" in text and "Gradient" in text and "<signed> &" in text


def test_figure_pdf_has_one_page(tmp_path):
    data = save_figure(tmp_path / "fig.pdf", panels(), CAPTIONS).read_bytes()
    assert data.startswith(b"%PDF") and pdf_page_count(data) == 1


def test_figure_rejects_bad_requests(tmp_path):
    with pytest.raises(ValueError, match=r"fig\.jpg"):
        save_figure(tmp_path / "fig.jpg", panels(), CAPTIONS)
    with pytest.raises(ValueError, match="caption"):
        save_figure(tmp_path / "fig.png", panels(), CAPTIONS[:2])
    with pytest.raises(ValueError, match="uint8"):
        save_figure(tmp_path / "fig.png", [np.zeros((4, 4))], ["float"])


def test_report_summarises_scores_and_curves_across_images():
    picture, heatmap, _ = panels()
    scale = Scale("LRP", "coldnhot", -1.0, 1.0)

    def page(offset: float, mass: float | None) -> ImagePage:
        baseline = np.linspace(5, 2, 6)
        scores = [
            ImageScores(
                method,
                np.linspace(5, 0, 6) + offset,
                np.full(6, 5.0),
                baseline,
                {
                    "morf_aopc": 2.0 + offset,
                    "lerf_aopc": 0.1,
                    "random_aopc": 1.0,
                    "mass_accuracy": mass,
                    "rank_accuracy": None,
                },
            )
            for method in ("LRP", "Gradient")
        ]
        return ImagePage(
            "x.png",
            picture,
            [heatmap, heatmap],
            ["LRP", "Gradient"],
            [0, 0],
            [scale],
            evaluations=scores,
        )

    report = Report("demo", {"fill": "blur"}, [page(0.0, 0.5), page(2.0, None)])
    table = report.summary_table()
    assert table[0][:2] == ["method", "images"] and [row[0] for row in table[1:]] == [
        "LRP",
        "Gradient",
    ]
    assert table[1][2] == "3 \u00b1 1"  # AOPC MoRF over the two images
    assert table[1][-2] == "0.5" and table[1][-1] == "n/a"  # missing values are left out
    morf = report.mean_curves("morf")
    assert [band.label for band in morf] == ["LRP", "Gradient", BASELINE_LABEL]
    assert np.allclose(morf[0].mean, np.linspace(5, 0, 6) + 1) and np.allclose(morf[0].std, 1)
    assert morf[-1].count == 2 and np.allclose(morf[-1].std, 0)  # one baseline per image
