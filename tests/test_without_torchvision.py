"""The engine on models that are not torchvision's, in an interpreter that refuses torchvision.

Importing torchvision takes about as long as importing torch; the bundled demo and a user's own
network need nothing from it. Every test here runs its code in a fresh interpreter in which any
import of torchvision fails, and checks the engine still gives what it gives with torchvision.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from torch import nn

from lrp_desktop_core.canonizers import _without_torchvision
from lrp_desktop_core.demo_net import build_demo_net
from lrp_desktop_core.torchvision import TorchvisionCanonizer

REFUSE_TORCHVISION = """
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            raise ImportError(f"refused: {name}")
        return None

sys.meta_path.insert(0, Refuse())
"""
"""Run first in a subprocess: every import of torchvision fails there (until the finder goes)."""

ATTENTION_NET = """
import torch
from torch import nn

class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU())
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.attention(tokens, tokens, tokens, need_weights=False)[0].mean(1))
"""
"""A network of plain torch layers with a batch norm to merge and multi-head attention."""


def run_without_torchvision(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that refuses to import torchvision."""
    script = REFUSE_TORCHVISION + ATTENTION_NET + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"


def attention_net() -> nn.Module:
    namespace: dict = {}
    exec(ATTENTION_NET, namespace)
    return namespace["AttentionNet"]().eval()


def canonized(
    model: nn.Module, canonizers: list, images: torch.Tensor
) -> tuple[list, torch.Tensor]:
    """Return the (name, class) of every module and the output while ``canonizers`` are applied."""
    applied = [instance for canonizer in canonizers for instance in canonizer.apply(model)]
    try:
        with torch.no_grad():
            output = model(images)
        return [(name, type(module).__name__) for name, module in model.named_modules()], output
    finally:
        for instance in reversed(applied):
            instance.remove()


def test_other_models_are_canonized_without_torchvision_as_with_it():
    images = torch.randn(2, 3, 64, 64)
    for model in (build_demo_net(5).eval(), attention_net()):
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_var.uniform_(0.5, 2.0)
        structure, output = canonized(model, [TorchvisionCanonizer()], images)
        structure_without, output_without = canonized(model, _without_torchvision(), images)
        assert structure_without == structure
        assert torch.equal(output_without, output)
    assert ("attention.canonizer_core", "AttentionCore") in structure


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
    assert_ok(result)


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
    assert_ok(result)


def test_recommend_and_the_structural_set_work_without_torchvision():
    result = run_without_torchvision(
        """
        import sys
        from lrp_desktop_core.canonizers import get_canonizers
        from lrp_desktop_core.demo_net import build_demo_net
        from lrp_desktop_core.recommend import ATTENTION_PRESET, recommend

        demo = recommend(build_demo_net(5))
        assert (demo.canonizer, demo.family) == ("merge_batchnorm", "custom model"), demo
        attention = recommend(AttentionNet())
        assert attention.canonizer == "torchvision" and attention.preset == ATTENTION_PRESET
        assert any("multi-head attention" in reason for reason in attention.reasons)
        model = AttentionNet()
        applied = [i for c in get_canonizers("torchvision") for i in c.apply(model)]
        assert hasattr(model.attention, "canonizer_core")
        for instance in reversed(applied):
            instance.remove()
        assert not hasattr(model.attention, "canonizer_core")
        assert "torchvision" not in sys.modules
        print("ok")
        """
    )
    assert_ok(result)


def test_a_set_built_before_torchvision_is_imported_rewrites_its_blocks_when_applied_after():
    result = run_without_torchvision(
        """
        import sys
        from lrp_desktop_core.canonizers import get_canonizers

        [early] = get_canonizers("torchvision")
        sys.meta_path.pop(0)  # torchvision may be imported from here on
        import torchvision

        model = torchvision.models.resnet18().eval()
        applied = early.apply(model)
        assert hasattr(model.layer1[0], "canonizer_sum")
        for instance in reversed(applied):
            instance.remove()
        print("ok")
        """
    )
    assert_ok(result)


def test_the_window_shows_the_demos_first_heatmap_without_torchvision(tmp_path):
    shot = tmp_path / "window.png"
    result = run_without_torchvision(
        f"""
        import runpy, sys
        sys.argv = ["lrp-desktop", "--fresh", "--screenshot", {str(shot)!r}]
        try:
            runpy.run_module("lrp_desktop", run_name="__main__")
        except SystemExit as end:
            assert end.code in (0, None), end.code
        assert "torchvision" not in sys.modules
        print("ok")
        """
    )
    assert_ok(result)
    assert shot.stat().st_size > 0
