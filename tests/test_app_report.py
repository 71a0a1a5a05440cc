"""Vector reports (issue 11) and the evaluation plot.

Text layer, embedded fonts, no JPEG, a summary page first, one random baseline per image shared by
the app's plot and the report; ``lrp-explain --report``; the evaluation plot's means, bands,
colours and legend beside the plot.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_app_compare import wait_for_panels

from lrp_desktop.exporting import comparison_report
from lrp_desktop_core import cli_report
from lrp_desktop_core.cli import main
from lrp_desktop_core.models import demo_samples
from lrp_desktop_core.report import BASELINE_LABEL

pytest_plugins = ["test_app_support"]

POPPLER = all(shutil.which(tool) for tool in ("pdftotext", "pdffonts", "pdftoppm"))
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftotext) not installed")
#: Where the rendered pages are kept for a person to look at.
PICTURES = Path("/tmp/issue11")


def pdf_text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def assert_vector_pdf(path: Path) -> None:
    """Fonts embedded, no JPEG stream."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    assert b"/DCTDecode" not in data
    fonts = subprocess.run(
        ["pdffonts", str(path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()[2:]
    assert fonts and all(" yes " in line for line in fonts)  # every font embedded


@pytest.fixture
def evaluated(qtbot, viewer):
    """Two methods on two images, evaluated with a chosen fill and region size."""
    session = viewer.session
    for path in session.images[2:]:
        session.remove_image(path)
    for image in session.images:
        viewer.window.compare("epsilon_plus", image)
        viewer.window.compare("gradient", image)
    wait_for_panels(qtbot, viewer)
    settings = viewer.window.comparison.evaluation_settings
    settings.region_size.setValue(16)
    settings.fill.setCurrentText("mean")
    settings.steps.setValue(5)
    viewer.window.evaluate()
    qtbot.waitUntil(lambda: session.evaluation is not None, timeout=120_000)
    return viewer


def test_evaluate_uses_the_settings_and_one_baseline_per_image(evaluated):
    evaluation = evaluated.session.evaluation
    assert (evaluation.region_size, evaluation.steps, evaluation.fill) == (16, 5, "mean")
    specs = evaluated.session.comparison.panels
    by_image = {}
    for spec, curves in zip(specs, evaluation.panels, strict=True):
        by_image.setdefault(spec.image, []).append(curves.random)
    for baselines in by_image.values():
        assert all(np.array_equal(baselines[0], other) for other in baselines[1:])


def test_plot_shows_mean_curves_with_bands_distinct_colours_and_legend_outside(qtbot, evaluated):
    plot = evaluated.window.comparison.plot
    evaluation = evaluated.session.evaluation
    means = plot.curve_items()
    assert len(means) == 3  # two methods and the random baseline, each a mean over two images
    gradient = [
        c.morf
        for c, s in zip(evaluation.panels, evaluated.session.comparison.panels, strict=True)
        if s.method.kind == "gradient"
    ]
    assert np.allclose(plot.means["Gradient"].yData, np.mean(gradient, axis=0))
    assert set(plot.means) == {"LRP epsilon_plus", "Gradient", BASELINE_LABEL}
    assert len(plot.bands) == 3  # a +- std band for each
    colours = {item.opts["pen"].color().name() for item in means}
    assert len(colours) == 3
    names = [label.text for _, label in plot.legend.items]
    assert any("Gradient" in name and "mean" in name for name in names)
    # the legend lives in its own cell of the layout, below the plot, not over it
    window = evaluated.window
    window.resize(1400, 1000)
    window.show()
    qtbot.waitExposed(window)
    window.comparison.splitter.setSizes([400, 500])  # the window opened after Evaluate
    qtbot.wait(100)  # the layout settles
    assert plot.item.vb.sceneBoundingRect().height() > 100
    assert plot.legend.parentItem() is not plot.item.vb
    legend_box = plot.legend.sceneBoundingRect()
    assert legend_box.top() >= plot.item.sceneBoundingRect().bottom() - 1
    assert not legend_box.intersects(plot.item.vb.sceneBoundingRect())
    assert legend_box.right() <= plot.canvas.width()  # no label cut off
    plot.per_image.setChecked(True)
    assert len(plot.curve_items()) == 3 + 4 + 2  # per panel MoRF, per image baseline
    qtbot.wait(100)
    PICTURES.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(PICTURES / "evaluation_window.png"))


@needs_poppler
def test_report_is_vector_with_summary_and_the_apps_baseline(qtbot, evaluated, tmp_path):
    window = evaluated.window
    (path,) = window.export("report", tmp_path / "report.pdf")
    assert_vector_pdf(path)
    text = pdf_text(path)
    model = evaluated.session.model
    pages = text.split("\f")
    summary = pages[0]
    assert "Report" in summary and model.spec.title in summary
    assert "random weights" in summary or "weights" in summary
    for needed in ("LRP epsilon_plus", "Gradient", "AOPC", "fill mean", "16 px", "\u00b1"):
        assert needed in summary, needed
    assert len([page for page in pages if page.strip()]) == 1 + 2  # summary, one per image
    # the report's baseline is the app's: the same arrays as the plot
    report = comparison_report(evaluated.session, window.comparison.panel_bounds())
    plot_baseline = window.comparison.plot.means[BASELINE_LABEL].yData
    page_baselines = [page.evaluations[0].random for page in report.pages]
    assert np.allclose(plot_baseline, np.mean(page_baselines, axis=0))
    for page in report.pages:  # and every panel of an image carries that image's one baseline
        assert all(item.random is page.evaluations[0].random for item in page.evaluations)
    PICTURES.mkdir(parents=True, exist_ok=True)
    for page in (1, 2):
        subprocess.run(
            [
                "pdftoppm",
                "-png",
                "-r",
                "60",
                "-f",
                str(page),
                "-l",
                str(page),
                "-singlefile",
                str(path),
                str(PICTURES / f"report_page{page}"),
            ],
            check=True,
        )
        assert (PICTURES / f"report_page{page}.png").stat().st_size > 5_000


@needs_poppler
def test_cli_writes_the_same_report_for_a_batch(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in demo_samples()[:3]:
        shutil.copy(path, folder / path.name)
    report = tmp_path / "batch.pdf"
    assert (
        main(
            [
                str(folder),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
                "--evaluate",
                "--region-size",
                "16",
                "--format",
                "json",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    assert_vector_pdf(report)
    text = pdf_text(report)
    pages = [page for page in text.split("\f") if page.strip()]
    assert len(pages) == 4
    assert "AOPC" in pages[0] and "\u00b1" in pages[0] and "fill blur" in pages[0]
    assert all(path.name in text for path in folder.iterdir())


def test_cli_refuses_a_report_that_is_not_a_pdf(tmp_path, capsys):
    image = demo_samples()[0]
    assert main([str(image), "--out", str(tmp_path), "--report", str(tmp_path / "r.png")]) == 2
    assert "--report" in capsys.readouterr().err


@needs_poppler
def test_figures_are_vector_pdf_and_svg_with_text_and_mean_curves(qtbot, evaluated, tmp_path):
    window = evaluated.window
    pdf = window.export("figure", tmp_path / "figure.pdf")[0]
    assert_vector_pdf(pdf)
    text = pdf_text(pdf)
    assert "LRP epsilon_plus" in text and "Gradient" in text and "mean \u00b1 std" in text
    assert evaluated.session.model.spec.title in text
    svg = window.export("figure", tmp_path / "figure.svg")[0].read_text()
    assert "<text" in svg and "Gradient" in svg and "image/png" in svg and "jpeg" not in svg
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-singlefile", str(pdf), str(PICTURES / "figure")],
        check=True,
    )


def test_a_report_without_qt_names_the_problem_and_its_fix(tmp_path, monkeypatch):
    def broken_qt(name):
        raise ImportError("libEGL.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cli_report.importlib, "import_module", broken_qt)
    problem = cli_report.check(tmp_path / "report.pdf")
    assert "libEGL.so.1" in problem and "apt-get" in problem
    assert "pip install --force-reinstall PySide6" in problem
    assert "[gui]" not in problem  # no such extra: PySide6 is a dependency of lrp-desktop
