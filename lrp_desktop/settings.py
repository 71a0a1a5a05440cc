"""Persistent preferences of the viewer, kept in a :class:`QSettings` store.

Window geometry, recent files, the last folders used, the device, the look of the heatmap
(colour map, opacity, overlay style) and the layer view's folder of reference images survive a
restart. Tests inject a settings object that writes
to a temporary INI file, so they never touch the user's real preferences.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from lrp_desktop_core.image import OVERLAY_STYLES

ORGANISATION = "lrp-desktop"
APPLICATION = "lrp-desktop"
MAX_RECENT_FILES = 10

#: Folder kinds remembered separately, so an image dialog does not open in the weights folder.
FOLDER_KINDS = ("images", "weights", "rules", "export")


def default_settings() -> QSettings:
    """Return the user's settings store (organisation and application "lrp-desktop")."""
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION
    )


def fresh_settings(folder: Path) -> QSettings:
    """Return a store in ``folder`` (empty at first), leaving the user's store untouched.

    For ``--fresh`` and ``--screenshot``: the defaults apply, so that pictures do not depend on who
    takes them.
    """
    return QSettings(str(Path(folder) / "settings.ini"), QSettings.Format.IniFormat)


class Preferences:
    """Typed access to the viewer's persistent preferences.

    Parameters
    ----------
    settings
        The store to read and write; the user's store when omitted.
    """

    def __init__(self, settings: QSettings | None = None) -> None:
        self.settings = settings if settings is not None else default_settings()

    # -- window -------------------------------------------------------------------------
    @property
    def geometry(self) -> QByteArray | None:
        """The main window's saved geometry, or None before the first exit."""
        value = self.settings.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self.settings.setValue("window/geometry", value)

    @property
    def window_state(self) -> QByteArray | None:
        """The main window's saved dock and toolbar layout."""
        value = self.settings.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self.settings.setValue("window/state", value)

    # -- files --------------------------------------------------------------------------
    @property
    def recent_files(self) -> list[Path]:
        """Recently opened images, newest first, at most :data:`MAX_RECENT_FILES`."""
        value = self.settings.value("files/recent", [])
        if isinstance(value, str):  # an INI file holding a single entry gives back a string
            value = [value]
        return [Path(item) for item in value or [] if item]

    def add_recent_file(self, path: Path) -> None:
        """Put ``path`` first in the recent files, dropping duplicates and the oldest."""
        path = Path(path).resolve()
        entries = [path] + [item for item in self.recent_files if item != path]
        self.settings.setValue("files/recent", [str(item) for item in entries[:MAX_RECENT_FILES]])

    def clear_recent_files(self) -> None:
        """Forget every recent file."""
        self.settings.remove("files/recent")

    def last_folder(self, kind: str) -> Path:
        """Return the folder last used for ``kind`` (one of :data:`FOLDER_KINDS`), else home."""
        if kind not in FOLDER_KINDS:
            raise ValueError(f"unknown folder kind {kind!r}; expected one of {FOLDER_KINDS}")
        value = self.settings.value(f"folders/{kind}", "")
        folder = Path(value) if value else Path.home()
        return folder if folder.is_dir() else Path.home()

    def set_last_folder(self, kind: str, path: Path) -> None:
        """Remember the folder of ``path`` (or ``path`` itself if it is a folder) for ``kind``."""
        if kind not in FOLDER_KINDS:
            raise ValueError(f"unknown folder kind {kind!r}; expected one of {FOLDER_KINDS}")
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        self.settings.setValue(f"folders/{kind}", str(folder))

    @property
    def reference_folder(self) -> Path | None:
        """The layer view's folder of reference images, or None (also when it is gone)."""
        value = self.settings.value("concepts/reference_folder", "")
        folder = Path(value) if value else None
        return folder if folder is not None and folder.is_dir() else None

    def set_reference_folder(self, folder: Path) -> None:
        """Remember ``folder`` as the layer view's folder of reference images."""
        self.settings.setValue("concepts/reference_folder", str(Path(folder).resolve()))

    # -- computation and display --------------------------------------------------------
    @property
    def device(self) -> str:
        """The device last chosen for computing ("cpu", "cuda:0", ...)."""
        return str(self.settings.value("compute/device", "cpu"))

    @device.setter
    def device(self, value: str) -> None:
        self.settings.setValue("compute/device", value)

    @property
    def cmap(self) -> str | None:
        """The colour map last chosen, or None for the default."""
        value = self.settings.value("display/cmap", "")
        return str(value) or None

    @cmap.setter
    def cmap(self, value: str) -> None:
        self.settings.setValue("display/cmap", value)

    @property
    def opacity(self) -> float | None:
        """The heatmap opacity last chosen (0 to 1), or None for the default."""
        value = self.settings.value("display/opacity", None)
        try:
            return min(1.0, max(0.0, float(value))) if value is not None else None
        except (TypeError, ValueError):
            return None

    @opacity.setter
    def opacity(self, value: float) -> None:
        self.settings.setValue("display/opacity", float(value))

    @property
    def overlay_style(self) -> str | None:
        """The overlay style last chosen (in ``image.OVERLAY_STYLES``), or None for the default."""
        value = str(self.settings.value("display/overlay", ""))
        return value if value in OVERLAY_STYLES else None

    @overlay_style.setter
    def overlay_style(self, value: str) -> None:
        self.settings.setValue("display/overlay", value)

    def reset(self) -> None:
        """Forget every preference; the defaults apply from now on."""
        self.settings.clear()
        self.settings.sync()

    def sync(self) -> None:
        """Write pending changes to the store."""
        self.settings.sync()
