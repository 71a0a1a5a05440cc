"""lrp_desktop_core: a Qt-free Layer-wise Relevance Propagation engine for PyTorch."""

__version__ = "0.1.0"
