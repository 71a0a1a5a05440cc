"""lrp-desktop: a PySide6 viewer for Layer-wise Relevance Propagation."""

__version__ = "0.1.0"
