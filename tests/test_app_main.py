"""The ``lrp-desktop`` command: screenshots, start options and their errors."""

from __future__ import annotations

import pytest
from PIL import Image
from PySide6.QtCore import QSettings

from lrp_desktop import screenshot
from lrp_desktop.__main__ import main
from lrp_desktop.screenshot import EXIT_FAILED, EXIT_TIMEOUT


@pytest.fixture(autouse=True)
def temporary_settings(tmp_path):
    """Point the user's settings store at a temporary folder for the command's own QSettings."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))


def test_screenshot_of_a_comparison(qapp, tmp_path, capsys):
    shot = tmp_path / "shots" / "compare.png"
    code = main(
        [
            "--composite",
            "epsilon_plus",
            "--compare",
            "epsilon_plus",
            "epsilon_alpha2_beta1",
            "--screenshot",
            str(shot),
            "--timeout",
            "90",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with Image.open(shot) as picture:
        assert picture.width >= 800 and picture.height >= 600
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500  # heatmaps, not an empty window
    assert str(shot) in capsys.readouterr().out
    # a screenshot neither reads nor writes the user's preferences, so it is reproducible
    assert not (tmp_path / "lrp-desktop" / "lrp-desktop.ini").exists()


def test_screenshot_ignores_saved_preferences(qapp, tmp_path, capsys):
    saved = QSettings(str(tmp_path / "lrp-desktop" / "lrp-desktop.ini"), QSettings.Format.IniFormat)
    saved.setValue("display/cmap", "hot")
    saved.setValue("display/overlay", "contour")
    saved.sync()
    seen = []
    from lrp_desktop import app as app_module

    real_build = app_module.build

    def spying_build(preferences=None, reporter=None):
        built = real_build(preferences, reporter)
        seen.append(built.session.display)
        return built

    app_module.build = spying_build
    try:
        main(["--screenshot", str(tmp_path / "b.png"), "--timeout", "0.05"])
    finally:
        app_module.build = real_build
    capsys.readouterr()
    assert seen and (seen[0].cmap, seen[0].overlay) == ("coldnhot", "greyscale")


def test_screenshot_fails_on_an_error_and_times_out(qapp, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing.png"
    assert main([str(missing), "--screenshot", str(tmp_path / "a.png")]) == EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
    # explanations that never arrive (a warm process shows the demo's within 50 ms)
    monkeypatch.setattr(screenshot, "everything_shown", lambda app: False)
    assert main(["--screenshot", str(tmp_path / "b.png"), "--timeout", "0.05"]) == EXIT_TIMEOUT
    assert "within 0.05 s" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_unknown_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--device"])
    assert exit_info.value.code == 2
    assert "--device" in capsys.readouterr().err
