"""Type checks against torchvision's classes, once torchvision is imported.

What happens while it is not imported is checked in a subprocess (``test_without_torchvision.py``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types

import torchvision
from torch import nn

from lrp_desktop_core.composites import _mlp_block
from lrp_desktop_core.torchvision_types import (
    may_need_torchvision,
    torchvision_imported,
    torchvision_types,
    torchvision_version,
)


def test_the_classes_are_torchvisions_once_it_is_imported():
    assert torchvision_types("ops", "MLP") == (torchvision.ops.MLP,)
    found = torchvision_types("ops.misc", "Permute", "MLP")
    assert found == (torchvision.ops.misc.Permute, torchvision.ops.misc.MLP)
    mlp = torchvision.ops.MLP(4, [8, 4])
    assert _mlp_block(mlp) is mlp and _mlp_block(nn.Linear(4, 4)) is None


def test_a_torchvision_still_being_imported_counts_as_not_imported(monkeypatch):
    assert torchvision_imported()
    half_imported = types.ModuleType("torchvision")
    half_imported.__spec__ = types.SimpleNamespace(_initializing=True)
    monkeypatch.setitem(sys.modules, "torchvision", half_imported)
    assert not torchvision_imported()
    assert torchvision_types("ops", "MLP") == ()


def test_the_version_is_read_without_importing_torchvision(monkeypatch):
    imported = torchvision.__version__
    monkeypatch.delitem(sys.modules, "torchvision")
    assert torchvision_version() == imported  # from its version.py, local label included


def test_a_version_file_is_read_as_data_and_never_run(monkeypatch, tmp_path):
    package = tmp_path / "torchvision"
    package.mkdir()
    ran = tmp_path / "ran"
    (package / "version.py").write_text(
        f"__version__ = '9.8.7+local'\nopen({str(ran)!r}, 'w').close()\n"
    )
    monkeypatch.delitem(sys.modules, "torchvision")
    spec = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert torchvision_version() == "9.8.7+local" and not ran.exists()
    (package / "version.py").write_text("__version__ = compute()\n")  # not a plain string
    assert torchvision_version() == importlib.metadata.version("torchvision")


def test_a_refused_or_missing_torchvision_is_named_so(monkeypatch):
    def refuse(name):
        raise ImportError(f"refused: {name}")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delitem(sys.modules, "torchvision")
    monkeypatch.setattr(importlib.util, "find_spec", refuse)
    assert torchvision_version() == importlib.metadata.version("torchvision")
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert torchvision_version() == "not installed"


def test_only_the_demos_surely_load_without_torchvision(tmp_path):
    assert not may_need_torchvision(None)
    assert not may_need_torchvision("demo") and not may_need_torchvision("demo_vit")
    assert may_need_torchvision("resnet18") and may_need_torchvision(tmp_path / "model.pt")
