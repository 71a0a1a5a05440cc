"""``lrp-desktop`` from a cold start: a window before torch, and a screenshot in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.models import DEFAULT_MODEL
from lrp_desktop_core.names import DEFAULT_MODEL as NAMED_DEFAULT
from lrp_desktop_core.names import DEMO_NAMES


def test_the_torch_free_names_match_the_catalogues():
    assert tuple(DEMOS) == DEMO_NAMES
    assert NAMED_DEFAULT == DEFAULT_MODEL


def test_the_path_to_the_first_window_does_not_import_torch():
    code = (
        "import sys\n"
        "import lrp_desktop.__main__ as command\n"
        "from PySide6.QtWidgets import QApplication\n"
        "command.parse_args(['--model', 'demo'])\n"
        "qt_app = QApplication([])\n"
        "window = command._loading_window()\n"
        "window.show()\n"
        "qt_app.processEvents()\n"
        "print(window.isVisible(), 'torch' in sys.modules)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.split() == ["True", "False"], result.stderr


def test_a_screenshot_from_a_cold_start(tmp_path):
    shot = tmp_path / "shot.png"
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        LRP_DESKTOP_TIMINGS="1",
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "-m", "lrp_desktop", "--screenshot", str(shot), "--timeout", "150"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    events = [
        line.split()[1:-1]
        for line in result.stderr.splitlines()
        if line.startswith("lrp-desktop-timing:")
    ]
    assert events[:2] == [["window", "shown"], ["engine", "loaded"]]
    assert ["first", "heatmap"] in events
    with Image.open(shot) as picture:
        assert picture.width >= 800 and picture.height >= 600


WATCH_TORCHVISION = """
import importlib.abc, sys, threading

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            print("torchvision imported on", threading.current_thread().name, flush=True)
        return None

sys.meta_path.insert(0, Watch())
"""
"""Run first in a subprocess: says which thread first imports torchvision."""


def test_a_torchvision_model_on_the_command_line_loads_torchvision_with_the_engine(tmp_path):
    shot = tmp_path / "shot.png"
    code = WATCH_TORCHVISION + (
        "import runpy\n"
        f"sys.argv = ['lrp-desktop', '--model', 'resnet18', '--random-weights', "
        f"'--screenshot', {str(shot)!r}, '--timeout', '200']\n"
        "try:\n"
        "    runpy.run_module('lrp_desktop', run_name='__main__')\n"
        "except SystemExit as end:\n"
        "    assert end.code in (0, None), end.code\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    watched = [line for line in result.stdout.splitlines() if line.startswith("torchvision")]
    assert watched == ["torchvision imported on lrp-desktop-engine"], result.stdout
    with Image.open(shot) as picture:
        assert picture.width >= 800
