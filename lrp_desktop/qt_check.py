"""Check, before Qt starts, that its platform plugin can load, and say what to install if not.

Without this, a desktop lacking one of the X11 libraries that Qt's ``xcb`` plugin needs (Qt >= 6.5
needs ``libxcb-cursor0``, which stock Debian and Ubuntu installs often lack) sees a dump of Qt
plugin messages and an abort (exit code 134). :func:`platform_problem` finds the missing libraries
with ``ldd`` on the plugin that PySide6 ships and returns one message naming them and the
``apt-get`` and ``dnf`` lines that install them. This module imports neither Qt nor torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["SYSTEM_PACKAGES", "missing_libraries", "platform_problem", "xcb_plugin"]

SYSTEM_PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}
"""System library (soname) -> (Debian/Ubuntu package, Fedora package), for what PySide6's ``xcb``
platform plugin and the Qt libraries under it link against beyond what PySide6 bundles."""

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_CANNOT_OPEN = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")


def xcb_plugin() -> Path | None:
    """Return the ``xcb`` platform plugin that PySide6 ships, or None where there is none."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        plugin = Path(location) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def missing_libraries(library: Path) -> list[str]:
    """Return the shared libraries that ``library`` needs (directly or not) and the loader lacks.

    Uses ``ldd`` (which lists every missing one); where ``ldd`` is not installed, tries to load the
    library and reads the first missing one from the loader's error.
    """
    ldd = shutil.which("ldd")
    if ldd is not None:
        try:
            result = subprocess.run(
                [ldd, str(library)], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return []
        return list(dict.fromkeys(_NOT_FOUND.findall(result.stdout)))
    try:
        ctypes.CDLL(str(library))
    except OSError as error:
        return _CANNOT_OPEN.findall(str(error))[:1]
    return []


def _install_lines(missing: list[str]) -> list[str]:
    """Return the apt-get and dnf lines that install the packages holding ``missing``."""
    known = [SYSTEM_PACKAGES[name] for name in missing if name in SYSTEM_PACKAGES]
    if not known:
        return []
    debian = " ".join(dict.fromkeys(deb for deb, _ in known))
    fedora = " ".join(dict.fromkeys(rpm for _, rpm in known))
    return [
        "Install them with",
        f"  Debian/Ubuntu: sudo apt-get install {debian}",
        f"  Fedora:        sudo dnf install {fedora}",
    ]


def platform_problem(
    environ: Mapping[str, str] | None = None,
    find_missing: Callable[[Path], list[str]] | None = None,
    plugin: Path | None = None,
) -> str | None:
    """Return why Qt's platform plugin will not load here, as a message for the user, or None.

    Only Qt's X11 platform (``xcb``) is checked, and only on Linux: the one Qt picks when
    ``QT_QPA_PLATFORM`` is unset (outside a Wayland session) or names it. Other platforms
    (``offscreen``, ``wayland``, ...) are left to Qt.

    Parameters
    ----------
    environ : mapping of str to str, optional
        The environment to read (default: ``os.environ``).
    find_missing : callable, optional
        ``find_missing(plugin)`` returns the missing libraries (default :func:`missing_libraries`);
        tests replace it.
    plugin : Path, optional
        The plugin to check (default: :func:`xcb_plugin`).
    """
    environ = os.environ if environ is None else environ
    find_missing = missing_libraries if find_missing is None else find_missing
    if not sys.platform.startswith("linux"):
        return None
    requested = environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        if requested.split(";")[0].split(":")[0] != "xcb":
            return None
    elif environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") == "wayland":
        return None
    plugin = plugin if plugin is not None else xcb_plugin()
    missing = find_missing(plugin) if plugin is not None else []
    if missing:
        lines = [
            "lrp-desktop: Qt cannot load its X11 platform plugin (xcb): these system "
            f"libraries are missing: {', '.join(missing)}.",
            *_install_lines(missing),
            "(Run headless with QT_QPA_PLATFORM=offscreen, e.g. for --screenshot.)",
        ]
        return "\n".join(lines)
    if not environ.get("DISPLAY") and (requested or not environ.get("WAYLAND_DISPLAY")):
        return (
            "lrp-desktop: no display to open a window on (DISPLAY is not set). Start it from "
            "a desktop session, or run headless with QT_QPA_PLATFORM=offscreen "
            "(e.g. with --screenshot PATH)."
        )
    return None
