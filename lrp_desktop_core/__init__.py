"""lrp_desktop_core: a Qt-free Layer-wise Relevance Propagation engine for PyTorch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrp-desktop")
    """The installed distribution's version (its one source is ``pyproject.toml``)."""
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
