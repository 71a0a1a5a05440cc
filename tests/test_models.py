"""Tests of the model registry, pretrained weights (cache and download) and weight files."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision.models import get_model_weights

from lrp_desktop_core import models
from lrp_desktop_core.demo_net import DEMO_WEIGHTS, build_demo_net
from lrp_desktop_core.demos import DEMOS
from lrp_desktop_core.models import (
    ModelLoadError,
    get_spec,
    list_models,
    load_model,
    weights_label,
    weights_record,
)
from lrp_desktop_core.recommend import recommend
from lrp_desktop_core.weightfiles import pickle_imports

TORCHVISION_NAMES = torchvision.models.list_models(module=torchvision.models)


def _offline(*_args, **_kwargs):
    raise URLError("network is unreachable")


@pytest.fixture
def no_network(monkeypatch):
    """Make every download path fail loudly, so a test proves it needs none."""
    monkeypatch.setattr(models, "urlopen", _offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """Point the torch hub cache at an empty temporary folder."""
    directory = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(directory))
    return directory


@pytest.fixture
def demo_state() -> dict[str, torch.Tensor]:
    """Return a random demo-net state dict with non-trivial BatchNorm statistics."""
    model = build_demo_net()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_state_equal(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --- registry -------------------------------------------------------------------------------------


def test_registry_lists_the_demos_first_and_every_torchvision_classifier():
    names = list_models()
    assert names[0] == models.DEFAULT_MODEL == "demo"
    assert names[: len(DEMOS)] == ["demo", "demo_vit"] == list(DEMOS)
    assert set(TORCHVISION_NAMES) <= set(names)
    assert len(names) == len(set(names)) == len(TORCHVISION_NAMES) + len(DEMOS)


def test_every_torchvision_spec_builds_without_downloading(no_network, hub_dir):
    for name in TORCHVISION_NAMES:
        spec = get_spec(name)
        assert spec.name == name
        assert len(spec.class_names) == 1000
        assert spec.input_size == (spec.crop, spec.crop)
        assert spec.resize >= spec.crop
        assert spec.weights_url.startswith("https://")
    assert not hub_dir.exists()


@pytest.mark.parametrize(
    ("name", "resize", "crop", "interpolation"),
    [
        ("resnet18", 256, 224, "bilinear"),
        ("inception_v3", 342, 299, "bilinear"),
        ("efficientnet_b1", 255, 240, "bilinear"),
        ("vit_h_14", 518, 518, "bicubic"),
    ],
)
def test_spec_takes_transforms_from_torchvision_metadata(name, resize, crop, interpolation):
    spec = get_spec(name)
    assert (spec.resize, spec.crop, spec.interpolation) == (resize, crop, interpolation)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert spec.std == pytest.approx((0.229, 0.224, 0.225))
    assert spec.class_names[0] == "tench"


@pytest.mark.parametrize("name", ["squeezenet1_0", "efficientnet_b1"])
def test_preprocess_matches_torchvision_transforms(name):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8))
    expected = get_model_weights(name).DEFAULT.transforms()(image)
    actual = get_spec(name).preprocess(image)
    assert actual.shape == expected.shape == (3, get_spec(name).crop, get_spec(name).crop)
    torch.testing.assert_close(actual, expected)


def _on_meta(name: str) -> nn.Module:
    """Build a registry model without weights in memory (RegNet's builder needs real numbers)."""
    with torch.device("meta"):
        return get_spec(name).builder()


@pytest.mark.parametrize(
    ("name", "canonizer", "supported"),
    [
        ("vgg16", "none", True),
        ("vgg11_bn", "merge_batchnorm", True),
        ("resnet50", "resnet", True),
        ("resnext50_32x4d", "resnet", True),
        ("wide_resnet50_2", "resnet", True),
        ("mobilenet_v3_small", "torchvision", True),
        ("densenet121", "torchvision", True),
        ("regnet_x_400mf", "torchvision", True),
        ("squeezenet1_0", "none", True),
        ("alexnet", "none", True),
        ("vit_b_16", "torchvision", True),
        ("convnext_tiny", "torchvision", True),
        ("swin_t", "torchvision", True),
        ("swin_v2_t", "none", False),
        ("maxvit_t", "torchvision", True),
    ],
)
def test_recommendation_follows_the_structure(name, canonizer, supported):
    model = get_spec(name).builder() if name.startswith("regnet") else _on_meta(name)
    recommendation = recommend(model)
    assert (recommendation.canonizer, recommendation.supported) == (canonizer, supported)
    attention = name.startswith(("vit", "swin_t", "maxvit"))
    assert recommendation.preset == ("vit_cp" if attention else "epsilon_gamma_box")
    assert bool(recommendation.unsupported) == (not supported)


def test_input_bounds_are_the_normalised_black_and_white_images():
    spec = get_spec("squeezenet1_0")
    low, high = spec.input_bounds()
    assert low.shape == high.shape == (1, 3, 1, 1)
    black = spec.preprocess(Image.new("RGB", (256, 256), (0, 0, 0)))
    white = spec.preprocess(Image.new("RGB", (256, 256), (255, 255, 255)))
    torch.testing.assert_close(black, low[0].expand_as(black))
    torch.testing.assert_close(white, high[0].expand_as(white))


def test_unknown_name_suggests_close_names():
    with pytest.raises(ModelLoadError, match="resnet18") as caught:
        load_model("resnet181")
    assert "list_models()" in str(caught.value)


def test_torchvision_name_without_weights_gives_random_model(no_network):
    loaded = load_model("squeezenet1_0")
    assert loaded.weights_path is None and loaded.weights_sha256 is None
    assert not loaded.model.training


def test_pretrained_and_weights_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="either"):
        load_model("squeezenet1_0", weights=tmp_path / "x.pt", pretrained=True)


# --- pretrained weights: cache and download -------------------------------------------------------


def test_pretrained_weights_are_taken_from_the_hub_cache(no_network, hub_dir):
    spec = get_spec("squeezenet1_0")
    state = spec.builder().state_dict()
    cached = hub_dir / "checkpoints" / Path(spec.weights_url).name
    assert models.pretrained_cache_path(spec) == cached
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    loaded = load_model("squeezenet1_0", pretrained=True)
    _assert_state_equal(loaded.model, state)
    assert loaded.weights_path == cached
    assert loaded.weights_sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()


def test_offline_download_says_which_url_failed_and_where_to_put_the_file(no_network, hub_dir):
    spec = get_spec("mobilenet_v3_small")
    with pytest.raises(ModelLoadError) as caught:
        load_model("mobilenet_v3_small", pretrained=True)
    message = str(caught.value)
    assert spec.weights_url in message
    assert str(hub_dir / "checkpoints" / Path(spec.weights_url).name) in message
    assert "weights=" in message
    assert not list((hub_dir / "checkpoints").glob("*"))


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_reports_progress_and_checks_the_hash(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 5000
    monkeypatch.setattr(models, "_DOWNLOAD_CHUNK", 100_000)
    monkeypatch.setattr(models, "urlopen", lambda url, timeout: _FakeResponse(payload))
    good = tmp_path / f"net-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    calls = []
    models.download_weights("https://example.org/net.pth", good, lambda d, t: calls.append((d, t)))
    assert good.read_bytes() == payload
    assert calls[-1] == (len(payload), len(payload)) and len(calls) == 13
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    bad = tmp_path / "net-00000000.pth"
    with pytest.raises(ModelLoadError, match="damaged"):
        models.download_weights("https://example.org/net.pth", bad)
    assert list(tmp_path.iterdir()) == [good]


# --- weight files ---------------------------------------------------------------------------------


def _save_safetensors(state, path):
    save_file(state, str(path))


@pytest.mark.parametrize(
    ("suffix", "writer"),
    [
        (".safetensors", _save_safetensors),
        (".bin", _save_safetensors),
        (".pt", lambda state, path: torch.save(state, path)),
        (".pth", lambda state, path: torch.save({"state_dict": state, "epoch": 3}, path)),
        (".pth", lambda state, path: torch.save({"model": state, "optimizer": {}}, path)),
        (".pt", lambda state, path: torch.save({f"module.{k}": v for k, v in state.items()}, path)),
        (".pt", lambda state, path: torch.save(state, path, _use_new_zipfile_serialization=False)),
    ],
    ids=[
        "safetensors",
        "safetensors_without_suffix",
        "state_dict",
        "wrapped_state_dict",
        "wrapped_model",
        "module_prefix",
        "legacy_format",
    ],
)
def test_weights_round_trip(tmp_path, demo_state, suffix, writer):
    path = tmp_path / f"weights{suffix}"
    writer(demo_state, path)
    loaded = load_model("demo", weights=path)
    _assert_state_equal(loaded.model, demo_state)
    assert loaded.weights_path == path
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not loaded.model.training


def test_default_demo_loads_its_bundled_weights():
    loaded = load_model()
    assert loaded.spec.name == "demo" and loaded.weights_path == DEMO_WEIGHTS
    assert loaded.weights_sha256 == hashlib.sha256(DEMO_WEIGHTS.read_bytes()).hexdigest()


def test_safetensors_naming_its_architecture_loads_without_a_name(tmp_path, demo_state):
    path = tmp_path / "mine.safetensors"
    save_file(demo_state, str(path), metadata={"architecture": "demo"})
    _assert_state_equal(load_model(path).model, demo_state)

    anonymous = tmp_path / "anonymous.safetensors"
    save_file(demo_state, str(anonymous))
    with pytest.raises(ModelLoadError, match="does not say which architecture"):
        load_model(anonymous)


def test_mismatched_state_dict_lists_missing_and_unexpected_keys(tmp_path, demo_state):
    del demo_state["head.fc.bias"]
    demo_state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "mismatch.pt"
    torch.save(demo_state, path)
    with pytest.raises(ModelLoadError) as caught:
        load_model("demo", weights=path)
    message = str(caught.value)
    assert "missing from the file: head.fc.bias" in message
    assert "unexpected in the file: extra.weight" in message
    assert str(path) in message


def test_state_dict_of_wrong_shape_names_the_tensors(tmp_path):
    path = tmp_path / "seven_classes.safetensors"
    save_file(build_demo_net(num_classes=7).state_dict(), str(path))
    wrong_shape = r"head\.fc\.weight \(file \(7, 64\), model \(5, 64\)\)"
    with pytest.raises(ModelLoadError, match=wrong_shape):
        load_model("demo", weights=path)


def test_full_pickled_module_needs_trust_and_lists_its_imports(tmp_path):
    model = build_demo_net().eval()
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(ModelLoadError) as caught:
        load_model("demo", weights=path)
    message = str(caught.value)
    assert "lrp_desktop_core.demo_net.DemoNet" in message
    assert "torch.nn.modules.conv.Conv2d" in message
    assert "trust=True" in message and "trust" in message

    loaded = load_model("demo", weights=path, trust=True)
    inputs = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.model(inputs), model(inputs))
    assert loaded.spec.name == "demo"


def test_full_module_file_alone_gets_a_generic_spec(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    path = tmp_path / "tiny.pt"
    torch.save({"model": model, "epoch": 1}, path)
    with pytest.raises(ModelLoadError, match=r"torch\.nn\.modules\.container\.Sequential"):
        load_model(path)
    loaded = load_model(path, trust=True)
    assert loaded.spec.class_names == ("class 0", "class 1", "class 2")
    assert loaded.spec.input_size == (224, 224)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_needs_trust(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 62 * 62, 5))
    inputs = torch.randn(2, 3, 64, 64)
    path = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(path))
    with pytest.raises(ModelLoadError, match=r"TorchScript.*trust=True"):
        load_model("demo", weights=path)
    loaded = load_model("demo", weights=path, trust=True)
    torch.testing.assert_close(loaded.model(inputs), model(inputs))


def _damaged_record(path: Path) -> None:
    """Write a torch.save archive whose pickle is replaced by garbage of the same length."""
    torch.save(build_demo_net().state_dict(), path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, b"\x80\x02garbage" if name.endswith("data.pkl") else data)


def _truncated_archive(path: Path) -> None:
    torch.save(build_demo_net().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("empty.pt", lambda p: p.write_bytes(b""), "empty"),
        ("noise.pt", lambda p: p.write_bytes(bytes(range(7, 250))), "not a model file"),
        ("notes.pth", lambda p: p.write_text("these are not weights"), "not a model file"),
        ("cut.pt", _truncated_archive, "damaged or incomplete"),
        ("cut_inside.pt", _damaged_record, "cannot be read"),
        (
            "cut.safetensors",
            lambda p: p.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a'),
            "not a valid safetensors",
        ),
        ("number.pt", lambda p: torch.save(torch.tensor(3.0), p), "not model weights"),
        ("settings.pt", lambda p: torch.save({"lr": 0.1, "epochs": 3}, p), "not a state dict"),
        ("folder.pt", lambda p: p.mkdir(), "folder"),
        ("missing.pt", lambda p: None, "does not exist"),
    ],
)
def test_bad_weight_files_give_clear_errors(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)
    with pytest.raises(ModelLoadError, match=problem) as caught:
        load_model("demo", weights=path)
    assert str(path) in str(caught.value)


def test_missing_model_file_without_name_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "gone.safetensors")


def test_pickle_imports_reads_stack_global_without_unpickling():
    data = pickle.dumps([OrderedDict, zipfile.ZipFile, OrderedDict], protocol=4)
    assert pickle_imports(data) == ["collections.OrderedDict", "zipfile.ZipFile"]
    assert pickle_imports(pickle.dumps(OrderedDict, protocol=2)) == ["collections.OrderedDict"]


def test_demo_samples_and_masks():
    samples = models.demo_samples()
    assert len(samples) >= 8
    for sample in samples:
        mask = models.demo_mask(sample)
        assert mask.dtype == bool and mask.any() and not mask.all()
        with Image.open(sample) as image:
            assert mask.shape == (image.height, image.width)


def test_demo_mask_is_none_without_a_mask_file(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(path)
    assert models.demo_mask(path) is None


def test_random_weights_are_seeded_named_honestly_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first = load_model("squeezenet1_1", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = load_model("squeezenet1_1", seed=3)
    for (name, value), other in zip(
        first.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), name
    assert "IMAGENET" not in first.spec.title and "IMAGENET" not in first.title
    assert first.title == "squeezenet1_1 (torchvision), random weights (seed 3)"
    assert first.weights == {
        "file": None,
        "sha256": None,
        "pretrained": None,
        "random": True,
        "seed": 3,
    }
    drawn = load_model("squeezenet1_1")
    assert isinstance(drawn.seed, int) and f"(seed {drawn.seed})" in drawn.title


def test_weights_labels_name_files_by_hash_and_pretrained_weights_by_name():
    demo = load_model("demo")
    assert demo.weights["random"] is False and demo.weights["seed"] is None
    assert demo.title.endswith(
        f"weights {demo.weights_path.name} (sha256 {demo.weights_sha256[:8]})"
    )
    record = weights_record(Path("/hub/resnet18-f37072fd.pth"), "f37072fd" * 8, "IMAGENET1K_V1")
    assert weights_label(record) == "IMAGENET1K_V1 weights"
    with pytest.raises(ValueError, match="random weights only"):
        load_model("demo", seed=1)
