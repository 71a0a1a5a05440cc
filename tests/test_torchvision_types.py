"""Type checks against torchvision's classes, with and without torchvision imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torchvision
from torch import nn

from lrp_desktop_core.composites import _mlp_block
from lrp_desktop_core.torchvision_types import torchvision_types

REFUSE_TORCHVISION = """
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            raise ImportError(f"refused: {name}")
        return None

sys.meta_path.insert(0, Refuse())
"""
"""Run first in a subprocess: every import of torchvision fails there."""


def run_without_torchvision(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that refuses to import torchvision."""
    script = REFUSE_TORCHVISION + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )


def test_the_classes_are_torchvisions_once_it_is_imported():
    assert torchvision_types("ops", "MLP") == (torchvision.ops.MLP,)
    found = torchvision_types("ops.misc", "Permute", "MLP")
    assert found == (torchvision.ops.misc.Permute, torchvision.ops.misc.MLP)
    mlp = torchvision.ops.MLP(4, [8, 4])
    assert _mlp_block(mlp) is mlp and _mlp_block(nn.Linear(4, 4)) is None


def test_the_rule_modules_work_without_importing_torchvision():
    result = run_without_torchvision(
        """
        import sys
        import torch
        from torch import nn
        from lrp_desktop_core.channel_axis import declared_axis
        from lrp_desktop_core.composites import _mlp_block
        from lrp_desktop_core.coverage import rule_coverage
        from lrp_desktop_core.rulemap import RuleMap
        from lrp_desktop_core.torchvision_types import torchvision_types

        assert torchvision_types("ops", "MLP") == ()
        assert _mlp_block(nn.Linear(4, 4)) is None
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(), nn.Flatten()).eval()
        assert declared_axis(model[0], 1) == 1
        rulemap = RuleMap.from_preset(model, "epsilon_plus")
        layers = {layer.name: layer for layer in rule_coverage(model, rulemap.to_composite())}
        assert "inactive in eval mode" in layers["2"].reason
        assert "torchvision" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_demo_loads_and_is_explained_without_importing_torchvision():
    result = run_without_torchvision(
        """
        import sys
        import numpy as np
        from PIL import Image
        from lrp_desktop_core.explain import Method, explain
        from lrp_desktop_core.models import demo_samples, is_registered, load_model
        from lrp_desktop_core.rulemap import RuleMap

        assert is_registered("demo") and is_registered("demo_vit")
        loaded = load_model("demo")
        images = loaded.spec.preprocess(Image.open(demo_samples()[0]))[None]
        low, high = loaded.spec.input_bounds()
        rulemap = RuleMap.from_preset(
            loaded.model, "epsilon_gamma_box", "merge_batchnorm", low=low, high=high
        )
        relevance = explain(loaded.model, images, Method("lrp", rulemap)).relevance
        assert relevance.shape == (1, 3, 64, 64) and np.isfinite(relevance).all()
        assert "torchvision" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
