"""lrp-desktop: a PySide6 viewer for Layer-wise Relevance Propagation."""

from lrp_desktop_core import __version__

__all__ = ["__version__"]
