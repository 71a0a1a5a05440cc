"""torchvision's classes, its version, and whether a model needs it, without importing it.

Importing torchvision takes about as long as importing torch, and a model that is not
torchvision's (the bundled demo, a user's own network) needs nothing from it. A model can only hold
an instance of a torchvision class once torchvision has been imported, to build or to unpickle it,
so while it has not been, every check against such a class is known to fail. The classes are looked
up when a check is made, never when a module is imported: a model loaded later is checked against
them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from .names import DEMO_NAMES

__all__ = [
    "may_need_torchvision",
    "torchvision_imported",
    "torchvision_types",
    "torchvision_version",
]


def torchvision_imported() -> bool:
    """Whether torchvision is imported, and its import finished.

    While another thread is still importing it, no model can hold one of its classes yet: building
    or unpickling one waits for that import to finish.
    """
    module = sys.modules.get("torchvision")
    return module is not None and not getattr(module.__spec__, "_initializing", False)


def torchvision_types(module: str, *names: str) -> tuple[type, ...]:
    """Return the classes ``names`` of ``torchvision.<module>``; () while torchvision is unimported.

    ``isinstance(obj, ())`` is False, so the result can go into ``isinstance`` as it is.

    Parameters
    ----------
    module : str
        The module below ``torchvision``, e.g. ``"ops"``.
    *names : str
        Class names in that module.
    """
    if not torchvision_imported():
        return ()
    found = importlib.import_module(f"torchvision.{module}")
    return tuple(getattr(found, name) for name in names)


def torchvision_version() -> str:
    """Return ``torchvision.__version__`` without importing torchvision where it is not imported.

    The version is read from the installed package's ``version.py`` as data (the build's local
    label, such as ``+cpu``, included), else from its distribution's metadata (without that
    label); "not installed" where there is neither.
    """
    module = sys.modules.get("torchvision")
    if module is not None:
        return module.__version__
    try:
        spec = importlib.util.find_spec("torchvision")
    except ImportError:  # refused by an import hook
        spec = None
    if spec is not None and spec.submodule_search_locations:
        version = _assigned_string(Path(spec.submodule_search_locations[0], "version.py"))
        if version is not None:
            return version
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _assigned_string(path: Path) -> str | None:
    """Return the string assigned to ``__version__`` at the top of ``path``, read as data."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in statement.targets)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        ):
            return statement.value.value
    return None


def may_need_torchvision(model: str | Path | None) -> bool:
    """Whether loading ``model`` may import torchvision (None: the default, a bundled demo).

    Only the demos surely do not: any other name is torchvision's, and a file may hold one of its
    models or the weights of one of its architectures.
    """
    return model is not None and str(model) not in DEMO_NAMES
