"""The check that Qt's platform plugin loads, and the one message ``lrp-desktop`` prints if not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrp_desktop import qt_check
from lrp_desktop.qt_check import missing_libraries, platform_problem, xcb_plugin

PLUGIN = Path("libqxcb.so")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xcb is Linux's")


def never_called(plugin: Path) -> list[str]:
    raise AssertionError("the xcb plugin should not be checked here")


@linux_only
def test_a_missing_library_is_named_with_the_packages_that_hold_it():
    message = platform_problem(
        {"DISPLAY": ":0"}, lambda plugin: ["libxcb-cursor.so.0", "libxcb-icccm.so.4"], PLUGIN
    )
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in message
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in message
    assert "sudo dnf install xcb-util-cursor xcb-util-wm" in message
    assert "QT_QPA_PLATFORM=offscreen" in message


@linux_only
def test_an_unknown_library_is_still_named():
    message = platform_problem(
        {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, lambda plugin: ["libfoo.so.3"], PLUGIN
    )
    assert "libfoo.so.3" in message and "apt-get" not in message


@linux_only
@pytest.mark.parametrize(
    "environ",
    [
        {"QT_QPA_PLATFORM": "offscreen"},
        {"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"},
        {"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"},
    ],
)
def test_other_platforms_are_left_to_qt(environ):
    assert platform_problem(environ, never_called, PLUGIN) is None


@linux_only
def test_nothing_is_said_when_every_library_loads():
    assert platform_problem({"DISPLAY": ":0"}, lambda plugin: [], PLUGIN) is None
    assert (
        platform_problem({"QT_QPA_PLATFORM": "xcb:foo", "DISPLAY": ":1"}, lambda plugin: [], PLUGIN)
        is None
    )


@linux_only
def test_no_display_is_said_before_qt_aborts():
    message = platform_problem({}, lambda plugin: [], PLUGIN)
    assert "DISPLAY" in message and "QT_QPA_PLATFORM=offscreen" in message


@linux_only
def test_the_real_probe_reads_the_shipped_plugin():
    plugin = xcb_plugin()
    assert plugin is not None and plugin.is_file()
    missing = missing_libraries(plugin)
    assert all(".so" in name for name in missing)
    assert missing_libraries(Path(__file__)) == []  # not a library: nothing to report


@linux_only
def test_lrp_desktop_prints_one_message_and_exits_1(tmp_path):
    # a fresh process, so that no QApplication exists yet; the probe says a library is missing
    code = (
        "import sys, lrp_desktop.qt_check as q\n"
        "q.missing_libraries = lambda plugin: ['libxcb-cursor.so.0']\n"
        "from lrp_desktop.__main__ import main\n"
        "sys.exit(main(['--screenshot', sys.argv[1]]))\n"
    )
    dropped = ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")
    environ = {k: v for k, v in os.environ.items() if k not in dropped}
    environ["DISPLAY"] = ":0"
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [sys.executable, "-c", code, str(shot)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("lrp-desktop: Qt cannot load its X11 platform plugin (xcb)")
    assert "sudo apt-get install libxcb-cursor0" in result.stderr
    assert "sudo dnf install xcb-util-cursor" in result.stderr
    assert "qt.qpa" not in result.stderr and not shot.exists()


def test_the_package_table_covers_what_the_plugin_links():
    assert all(deb and rpm for deb, rpm in qt_check.SYSTEM_PACKAGES.values())
    assert {
        "libxcb-cursor.so.0",
        "libxcb-icccm.so.4",
        "libxcb-keysyms.so.1",
        "libxkbcommon-x11.so.0",
    } <= set(qt_check.SYSTEM_PACKAGES)
