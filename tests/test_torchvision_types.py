"""Type checks against torchvision's classes, once torchvision is imported.

What happens while it is not imported is checked in a subprocess (``test_without_torchvision.py``).
"""

from __future__ import annotations

import sys
import types

import torchvision
from torch import nn

from lrp_desktop_core.composites import _mlp_block
from lrp_desktop_core.torchvision_types import torchvision_imported, torchvision_types


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
