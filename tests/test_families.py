"""Every torchvision CNN family, built by name and loaded from a file, canonized and explained.

For the smallest member of each family, in float64 and on the smallest input that runs it:

* the recommended canonizer set (decided by :func:`~lrp_desktop_core.recommend.recommend` from
  the model's structure) leaves the forward pass exact and leaves no trace once removed;
* on the bias-free model (every ``bias`` and batch-norm ``running_mean`` zero, lively batch-norm
  scales and variances) the recommended preset conserves relevance, ``sum R = logit``; so does
  ``epsilon_plus_flat`` once the relevance that the z+ rule drops is counted (see
  :func:`_counting_dropped_relevance`), and where no convolution output can be without positive
  contributions it drops none;
* the same model saved with ``torch.save`` and loaded by :func:`~lrp_desktop_core.models.load_model`
  gets the same recommendation, the same rule map and the same relevance;
* ResNeXt and Wide ResNet, with this engine's ``resnet`` canonizer, agree with zennit 0.5.1.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lrp_desktop_core import rules
from lrp_desktop_core.canonizers import get_canonizers
from lrp_desktop_core.composites import COMPOSITES
from lrp_desktop_core.models import LoadedModel, ModelSpec, get_spec, load_model
from lrp_desktop_core.recommend import Recommendation, recommend
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.types import BatchNorm

FORWARD_TOLERANCE = 1e-12
CONSERVATION_TOLERANCE = 1e-6
ORACLE_TOLERANCE = 1e-6
TINY = 1e-30
"""Epsilon and stabilizer of the conservation tests. Random-weight activations can be tiny (an
EfficientNet logit is about 1e-14), and a stabilizer of the usual 1e-6 would absorb all of their
relevance; with 1e-30 the stabilizers take none of it, so the conservation test sees the rules."""

# name: (input size, family, recommended canonizer set). 32 x 32 runs every model but these:
# AlexNet's three max pools need 63 pixels, Inception v3's stem needs 75.
# Left out as too slow for this suite, though each runs: vgg11_bn, whose 25088 x 4096 dense layer
# takes about 20 s of float64 work here (test_oracle_networks.py checks VGG against zennit), and
# wide_resnet50_2, whose blocks are ResNeXt's classes with more channels (its zennit oracle is
# below).
FAMILIES: dict[str, tuple[int, str, str]] = {
    "resnet18": (32, "ResNet", "resnet"),
    "resnext50_32x4d": (32, "ResNet", "resnet"),
    "alexnet": (64, "AlexNet", "none"),
    "squeezenet1_1": (32, "SqueezeNet", "none"),
    "densenet121": (32, "DenseNet", "torchvision"),
    "googlenet": (32, "GoogLeNet", "torchvision"),
    "inception_v3": (75, "Inception v3", "torchvision"),
    "mobilenet_v2": (32, "MobileNetV2", "torchvision"),
    "mobilenet_v3_small": (32, "MobileNetV3", "torchvision"),
    "mnasnet0_5": (32, "MNASNet", "torchvision"),
    "efficientnet_b0": (32, "EfficientNet", "torchvision"),
    "efficientnet_v2_s": (32, "EfficientNet", "torchvision"),
    "regnet_x_400mf": (32, "RegNet", "torchvision"),
    "regnet_y_400mf": (32, "RegNet", "torchvision"),
    "convnext_tiny": (32, "ConvNeXt", "torchvision"),
    "shufflenet_v2_x0_5": (32, "ShuffleNetV2", "torchvision"),
}

DROPS_NOTHING = {
    "resnet18",
    "resnext50_32x4d",
    "alexnet",
    "squeezenet1_1",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "regnet_x_400mf",
    "regnet_y_400mf",
}
"""Families where every convolution output that receives relevance has a positive contribution,
so the z+ rule of ``epsilon_plus_flat`` drops nothing. Elsewhere a convolution can see only
inputs whose contributions are all nonpositive (a depthwise convolution after a ReLU, a linear
bottleneck), and the z+ rule drops the relevance arriving there. ConvNeXt drops a little (a few
1e-7 of the logit here): its depthwise 7 x 7 convolutions read the signed residual stream, and on
the last stage's 1 x 1 map (2 x 2 at 64 pixels) a single tap whose contribution is negative
leaves an output without positive contribution."""

TINY_EPS = 1e-12
"""zennit keeps a merged batch norm's ``eps`` while setting its statistics to the identity, which
scales every merged activation by ``(1 + eps) ** -0.5``; the oracle's batch norms use this eps."""


@dataclass
class Family:
    """The smallest member of a family, its bias-free twin and that twin loaded from a file."""

    name: str
    spec: ModelSpec
    lively: nn.Module
    bias_free: nn.Module
    loaded: LoadedModel
    images: torch.Tensor
    target: int
    recommendation: Recommendation
    snapshots: dict[int, dict]
    """Of the bias-free and the loaded model, by ``id``: every attribution must leave them so."""


def _liven(model: nn.Module, generator: torch.Generator) -> None:
    """Give batch norms non-trivial statistics and every bias a random value, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BatchNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                parameter.normal_(0.0, 0.1, generator=generator)


def _remove_additive_constants(model: nn.Module) -> None:
    """Zero every parameter named ``bias`` and every batch norm's ``running_mean``, in place."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "bias":
                parameter.zero_()
        for module in model.modules():
            if isinstance(module, BatchNorm):
                module.running_mean.zero_()


def _build(name: str) -> tuple[ModelSpec, nn.Module]:
    """Return the spec and a fresh model, in eval mode."""
    spec = get_spec(name)
    return spec, spec.builder().eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory) -> Family:
    name = request.param
    size = FAMILIES[name][0]
    spec, model = _build(name)
    _liven(model, torch.Generator().manual_seed(0))
    bias_free = copy.deepcopy(model)
    _remove_additive_constants(bias_free)
    # load_model tries the module on a float32 image, so the file holds float32 values; both
    # twins are converted to float64 only after saving, which keeps them bit-identical
    path = tmp_path_factory.mktemp(name) / f"{name}.pt"
    torch.save(bias_free, path)
    loaded = load_model(path, trust=True)
    path.unlink()
    for module in (model, bias_free, loaded.model):
        module.double()
    low, high = (bound.double() for bound in spec.input_bounds())
    generator = torch.Generator().manual_seed(1)
    images = low + (high - low) * torch.rand(
        1, 3, size, size, dtype=torch.float64, generator=generator
    )
    with torch.no_grad():
        target = int(bias_free(images).argmax())
    snapshots = {id(m): _snapshot(m) for m in (bias_free, loaded.model)}
    return Family(
        name, spec, model, bias_free, loaded, images, target, recommend(bias_free), snapshots
    )


# ---------------------------------------------------------------- helpers


def _snapshot(model: nn.Module, keep_values: bool = True) -> dict:
    """Everything about ``model`` that a canonizer or an attribution must leave as it was.

    With ``keep_values`` False the state's tensors are referenced, not copied: for the snapshot
    taken after the change, compared with one taken before.
    """
    return {
        "parameters": [(name, id(p)) for name, p in model.named_parameters()],
        "state": [
            (key, value.clone() if keep_values else value)
            for key, value in model.state_dict().items()
        ],
        "attributes": [(name, list(vars(m))) for name, m in model.named_modules()],
        "children": [(name, list(m._modules)) for name, m in model.named_modules()],
    }


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().reshape(-1).view(torch.uint8)


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    """Check that ``model`` is exactly as before.

    Same Parameter objects, a bit-identical state_dict in the same key order, no attribute or
    child module added or lost anywhere.
    """
    after = _snapshot(model, keep_values=False)
    for key in ("parameters", "attributes", "children"):
        assert after[key] == before[key], f"{key} changed"
    assert [key for key, _ in after["state"]] == [key for key, _ in before["state"]]
    for (key, new), (_, old) in zip(after["state"], before["state"]):
        assert new.dtype == old.dtype and new.shape == old.shape, key
        assert torch.equal(_bits(new), _bits(old)), key


@contextmanager
def _canonized(model: nn.Module, canonizer: str) -> Iterator[None]:
    instances = [i for canonizer_ in get_canonizers(canonizer) for i in canonizer_.apply(model)]
    try:
        yield
    finally:
        for instance in reversed(instances):
            instance.remove()


def _relative_difference(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output - reference).abs().max() / reference.abs().max()).item()


@contextmanager
def _counting_dropped_relevance(monkeypatch) -> Iterator[list[float]]:
    """Count the relevance the z+ rule drops at outputs without positive contribution.

    ``ZPlus`` divides the arriving relevance by its stabilized sum of positive contributions;
    where that sum is exactly zero, no input has a positive contribution and the relevance
    arriving there reaches no input. The count is patched into the class before the composite
    builds its rules, which bind the gradient mapper when they are made.
    """
    dropped = [0.0]
    share_of_total = rules.ZPlus._share_of_total

    def counting(self, out_grad, outputs):
        dead = (outputs[0] + outputs[1]) == 0
        dropped[0] += (out_grad * dead).sum().item()
        return share_of_total(self, out_grad, outputs)

    with monkeypatch.context() as patch:
        patch.setattr(rules.ZPlus, "_share_of_total", counting)
        yield dropped


def _explain(model: nn.Module, rulemap: RuleMap, images: torch.Tensor, target: int):
    """Return the relevance of ``images`` and the target's logit."""
    with rulemap.to_composite().context(model):
        inputs = images.clone().requires_grad_()
        output = model(inputs)
        seed = torch.zeros_like(output)
        seed[:, target] = output[:, target]
        (relevance,) = torch.autograd.grad(output, inputs, seed)
    return relevance.detach(), output[0, target].item()


# ---------------------------------------------------------------- recommendation


def test_recommendation_comes_from_the_structure(family):
    _, family_name, canonizer = FAMILIES[family.name]
    ours = family.recommendation
    assert (ours.family, ours.canonizer) == (family_name, canonizer)
    assert ours.supported, ours.unsupported
    from_file = recommend(family.loaded.model)
    for field in ("canonizer", "preset", "family", "reasons", "unsupported", "affine_batch_norms"):
        assert getattr(from_file, field) == getattr(ours, field), field
    transforms = (ours.input_transform, from_file.input_transform)
    assert (
        (transforms[0] is None)
        == (transforms[1] is None)
        == (family.name not in ("googlenet", "inception_v3"))
    )
    if transforms[0] is not None:
        assert all(torch.equal(a, b) for a, b in zip(*(t.buffers() for t in transforms)))


# ---------------------------------------------------------------- canonizers


def _canonizers_to_check(family: Family) -> list[str]:
    """Return the recommended set, and the full torchvision set where that is a different one."""
    return sorted({family.recommendation.canonizer, "torchvision"})


@pytest.mark.parametrize("twin", ["lively", "bias_free"])
def test_canonizers_are_exact_and_leave_no_trace(family, twin):
    """The canonized forward equals the original, and removed canonizers leave no trace.

    Once removed, they leave the same Parameter objects, a bit-identical state_dict, no
    attribute and no module name behind.

    Both twins: the lively one exercises the merged biases, but with random weights its output
    hardly depends on its input (GoogLeNet's changes by 1e-14 when the input changes by 1e-8), so
    only the bias-free one, whose output scales with its input, shows errors in the input path.
    """
    model, images = getattr(family, twin), family.images
    before = family.snapshots[id(model)] if twin == "bias_free" else _snapshot(model)
    names = [name for name, _ in model.named_modules()]
    with torch.no_grad():
        reference = model(images)
    for canonizer in _canonizers_to_check(family):
        with _canonized(model, canonizer), torch.no_grad():
            canonized = model(images)
        difference = _relative_difference(canonized, reference)
        assert difference <= FORWARD_TOLERANCE, f"{canonizer}: {difference:.2e}"
        _assert_unchanged(model, before)
        assert [name for name, _ in model.named_modules()] == names
    with torch.no_grad():
        assert torch.equal(model(images), reference)


# ---------------------------------------------------------------- conservation


@pytest.mark.parametrize("preset", ["recommended", "epsilon_plus_flat"])
def test_bias_free_model_conserves_relevance(family, preset, monkeypatch):
    chosen = None if preset == "recommended" else preset
    results = []
    for model, spec in ((family.bias_free, family.spec), (family.loaded.model, family.loaded.spec)):
        rulemap = RuleMap.recommended(model, spec, chosen, epsilon=TINY, stabilizer=TINY)
        with _counting_dropped_relevance(monkeypatch) as dropped:
            relevance, logit = _explain(model, rulemap, family.images, family.target)
        _assert_unchanged(model, family.snapshots[id(model)])
        results.append((rulemap, relevance, logit, dropped[0]))
    (rulemap, relevance, logit, dropped), from_file = results
    total = relevance.sum().item()
    print(
        f"{family.name} {preset}: sum R / logit = {total / logit:.12f}, "
        f"dropped / logit = {dropped / logit:.3g}, logit = {logit:.3g}"
    )
    assert torch.isfinite(relevance).all() and logit != 0.0
    assert abs(total + dropped - logit) <= CONSERVATION_TOLERANCE * abs(logit), (
        f"sum R = {total:.6g}, dropped = {dropped:.6g}, logit = {logit:.6g}"
    )
    if preset == "recommended" or family.name in DROPS_NOTHING:
        assert dropped == 0.0
    # the model from the file: same rules, same relevance
    assert from_file[0] == rulemap
    assert from_file[2] == logit and from_file[3] == dropped
    torch.testing.assert_close(from_file[1], relevance, rtol=1e-12, atol=0.0)


# ---------------------------------------------------------------- zennit oracle


ORACLE_PRESETS = {
    "resnext50_32x4d": ("epsilon_plus_flat", "epsilon_gamma_box"),
    # zennit's Gamma rule takes about 8 s on Wide ResNet's 69 million weights, whatever the input
    # size; zennit's Gamma on these ResNet blocks is checked on ResNeXt, whose blocks are the same
    "wide_resnet50_2": ("epsilon_plus_flat",),
}


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(ORACLE_PRESETS))
def test_resnet_variant_matches_zennit(name):
    """Zennit's presets read no activation input here (Pass), so in-place ReLUs are harmless.

    See ``test_oracle_networks.py`` for the preset where they are not.
    """
    zennit_composites = pytest.importorskip("zennit.composites")
    zennit_torchvision = pytest.importorskip("zennit.torchvision")
    spec, model = _build(name)
    _liven(model, torch.Generator().manual_seed(2))
    for module in model.modules():
        if isinstance(module, BatchNorm):
            module.eps = TINY_EPS
    model.double()
    low, high = (bound.double() for bound in spec.input_bounds())
    generator = torch.Generator().manual_seed(3)
    images = low + (high - low) * torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        target = int(model(images).argmax())
    for preset in ORACLE_PRESETS[name]:
        kwargs = {"low": low, "high": high} if preset == "epsilon_gamma_box" else {}
        ours = COMPOSITES[preset](canonizers=get_canonizers("resnet"), **kwargs)
        theirs = zennit_composites.COMPOSITES[preset](
            canonizers=[zennit_torchvision.ResNetCanonizer()], **kwargs
        )
        results = []
        for composite in (ours, theirs):
            with composite.context(model):
                inputs = images.clone().requires_grad_()
                output = model(inputs)
                seed = torch.zeros_like(output)
                seed[0, target] = 1.0
                (relevance,) = torch.autograd.grad(output, inputs, seed)
            results.append(relevance)
        ours_relevance, reference = results
        scale = reference.abs().max().item()
        difference = (ours_relevance - reference).abs().max().item()
        print(f"{name} {preset} vs zennit: {difference / scale:.2e} of max|R|")
        assert scale > 0 and difference <= ORACLE_TOLERANCE * scale, f"{preset}: {difference:.2e}"
