"""Property-based fuzzing of everything that reads user files, and a memory soak test.

Every outcome of reading an image, a rule map or a weights file is either a result or the error
the loader documents (:class:`ImageLoadError`, ``ValueError``, :class:`ModelLoadError`), never
another exception, and reading weights never runs code from the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save

from lrp_desktop_core.cli import main
from lrp_desktop_core.demo_net import build_demo_net
from lrp_desktop_core.explain import Method, explain
from lrp_desktop_core.images import ImageLoadError, LoadedImage, load_image
from lrp_desktop_core.models import LoadedModel, ModelLoadError, load_model
from lrp_desktop_core.rulemap import RuleMap
from lrp_desktop_core.weightfiles import WeightsFile, read_weights

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


# --- byte-level mutations -------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """Return ``original`` truncated, with bytes overwritten, inserted or deleted (or several)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# --- (a) images -----------------------------------------------------------------------------------

_IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Return a small valid image file in a random format and colour mode."""
    fmt = draw(st.sampled_from(_IMAGE_FORMATS))
    mode = draw(st.sampled_from(["RGB", "L"] if fmt == "JPEG" else ["RGB", "L", "RGBA", "P"]))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _load_image_or_error(path: Path, spec) -> LoadedImage | None:
    try:
        loaded = load_image(path, spec)
    except ImageLoadError as error:
        assert str(path) in str(error)
        return None
    assert loaded.tensor.shape == (3, *spec.input_size)
    assert torch.isfinite(loaded.tensor).all()
    return loaded


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bin"]))
def test_random_bytes_are_an_image_or_an_image_load_error(tmp_path, demo, data, suffix):
    _load_image_or_error(_write(tmp_path, f"random{suffix}", data), demo.spec)


@FUZZ
@given(data=st.data())
def test_damaged_image_files_are_an_image_or_an_image_load_error(tmp_path, demo, data):
    original = data.draw(image_bytes())
    assert _load_image_or_error(_write(tmp_path, "valid", original), demo.spec) is not None
    damaged = data.draw(mutated(original))
    _load_image_or_error(_write(tmp_path, "damaged", damaged), demo.spec)


# --- (b) rule maps --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["Epsilon", "Gamma", "ZBox", "AlphaBeta", "none", "resnet", "layers"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "layers",
                    "rule",
                    "params",
                    "canonizer",
                    "preset",
                    "version",
                    "epsilon",
                    "gamma",
                    "low",
                    "high",
                    "alpha",
                    "beta",
                    "features.0",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _valid_rule_map(demo: LoadedModel) -> dict:
    return RuleMap.recommended(demo.model, demo.spec).to_dict()


def _parse_or_value_error(text: str) -> None:
    try:
        rulemap = RuleMap.from_json(text)
    except ValueError:
        return
    assert RuleMap.from_json(rulemap.to_json()) == rulemap


@FUZZ
@given(value=json_values)
def test_random_json_is_a_rule_map_or_a_value_error(value):
    _parse_or_value_error(json.dumps(value))


@st.composite
def replaced_node(draw: st.DrawFn, tree: object) -> object:
    """Return ``tree`` with one node (chosen by a random walk) replaced by a random JSON value."""
    if isinstance(tree, dict) and tree and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(tree)))
        return {**tree, key: draw(replaced_node(tree[key]))}
    if isinstance(tree, list) and tree and draw(st.booleans()):
        index = draw(st.integers(0, len(tree) - 1))
        return [*tree[:index], draw(replaced_node(tree[index])), *tree[index + 1 :]]
    return draw(json_values | st.integers(min_value=2**1030) | st.just([]) | st.just({}))


@FUZZ
@given(data=st.data())
def test_mutated_rule_maps_are_a_rule_map_or_a_value_error(demo, data):
    tree = _valid_rule_map(demo)
    for _ in range(data.draw(st.integers(1, 3))):
        tree = data.draw(replaced_node(tree))
    _parse_or_value_error(json.dumps(tree))


@FUZZ
@given(data=st.data())
def test_damaged_rule_map_files_load_or_raise_value_error(tmp_path, demo, data):
    original = json.dumps(_valid_rule_map(demo)).encode()
    path = _write(tmp_path, "rules.json", data.draw(mutated(original)))
    try:
        RuleMap.load(path)
    except ValueError as error:
        assert str(path) in str(error)


@pytest.mark.parametrize(
    "value", [10**400, -(10**400), [10**400], "1e999", True, None, [], {}, [[1.0]]]
)
def test_odd_parameter_values_are_value_errors(value):
    text = json.dumps({"layers": {"a": {"rule": "ZBox", "params": {"low": value, "high": 1}}}})
    with pytest.raises(ValueError, match="ZBox low must"):
        RuleMap.from_json(text)


@pytest.mark.parametrize("canonizer", [["resnet"], {"a": 1}, 3, None])
def test_a_canonizer_that_is_no_name_is_a_value_error(canonizer):
    with pytest.raises(ValueError, match="canonizer"):
        RuleMap.from_dict({"layers": {}, "canonizer": canonizer})


# --- (c) weight files -----------------------------------------------------------------------------

_RAN: list[str] = []


def _record_execution(text: str) -> str:
    """Return a function a malicious pickle calls; the tests check it never runs."""
    _RAN.append(text)
    return text


class _Payload:
    def __reduce__(self):
        return _record_execution, ("code from the file ran",)


def _small_state() -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in build_demo_net().state_dict().items()}


def _weight_files(state: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """Return small valid files of each kind, and one that would run code when unpickled."""
    files = {}
    for name, obj in [
        ("state.pt", state),
        ("wrapped.pt", {"state_dict": state, "epoch": 3}),
        ("payload.pt", {"state_dict": state, "hook": _Payload()}),
    ]:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        files[name] = buffer.getvalue()
    legacy = io.BytesIO()
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    files["legacy.pt"] = legacy.getvalue()
    files["weights.safetensors"] = save(state, metadata={"architecture": "demo"})
    return files


SEED_STATE = _small_state()
WEIGHT_FILES = _weight_files(SEED_STATE)


def _read_or_model_load_error(path: Path) -> WeightsFile | None:
    try:
        return read_weights(path)
    except ModelLoadError as error:
        assert str(path) in str(error)
        return None
    finally:
        assert not _RAN, "reading weights ran code from the file"


@FUZZ
@given(data=st.binary(max_size=256), suffix=st.sampled_from([".pt", ".safetensors", ".bin"]))
def test_random_bytes_are_weights_or_a_model_load_error(tmp_path, data, suffix):
    _read_or_model_load_error(_write(tmp_path, f"random{suffix}", data))


@st.composite
def safetensors_headers(draw: st.DrawFn) -> bytes:
    """Return a safetensors-like file: a length, a random JSON header and some bytes."""
    header = json.dumps(draw(json_values)).encode()
    length = draw(st.sampled_from([len(header), len(header) + 1, 0, 2**63]) | st.integers(0, 999))
    body = draw(st.binary(max_size=64))
    return length.to_bytes(8, "little") + header + body


@FUZZ
@given(data=safetensors_headers())
def test_random_safetensors_headers_are_weights_or_a_model_load_error(tmp_path, data):
    _read_or_model_load_error(_write(tmp_path, "header.safetensors", data))


@settings(FUZZ, max_examples=80)
@given(data=st.data(), name=st.sampled_from(sorted(WEIGHT_FILES)))
def test_damaged_weight_files_load_or_raise_model_load_error(tmp_path, data, name):
    path = _write(tmp_path, name, data.draw(mutated(WEIGHT_FILES[name])))
    content = _read_or_model_load_error(path)
    if content is None:
        return
    assert content.module is None  # weights only: nothing was unpickled into a module
    with contextlib.suppress(ModelLoadError):
        load_model("demo", weights=path)


state_like = st.recursive(
    st.integers()
    | st.text(max_size=4)
    | st.none()
    | st.builds(torch.zeros, st.integers(0, 3))
    | st.just(torch.tensor([float("nan")])),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["state_dict", "model", "module.conv.weight", "net"])
            | st.integers(0, 3)
            | st.text(max_size=4),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@FUZZ
@given(content=state_like)
def test_random_pickled_structures_are_weights_or_a_model_load_error(tmp_path, content):
    path = tmp_path / "structure.pt"
    torch.save(content, path)
    if _read_or_model_load_error(path) is not None:
        with contextlib.suppress(ModelLoadError):
            load_model("demo", weights=path)


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    path = _write(tmp_path, "payload.pt", WEIGHT_FILES["payload.pt"])
    with pytest.raises(ModelLoadError, match="_record_execution"):
        read_weights(path)
    assert not _RAN


# --- (d) the command line -------------------------------------------------------------------------


@settings(FUZZ, max_examples=3)
@given(data=st.data())
def test_cli_with_a_damaged_image_returns_an_exit_code(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("images")
    _write(folder, "good.png", data.draw(image_bytes()))
    _write(folder, "fuzzed.png", data.draw(mutated(data.draw(image_bytes()))))
    out = tmp_path_factory.mktemp("out")
    code = main([str(folder), "--model", "demo", "--out", str(out), "--format", "npy"])
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        status = {Path(row["image"]).name: row["status"] for row in csv.DictReader(handle)}
    assert status["good.png"] == "ok"
    assert code == (0 if status["fuzzed.png"] == "ok" else 1)


# --- (e) memory soak ------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_a_hundred_attributions_keep_memory_flat(demo):
    method = Method("lrp", RuleMap.recommended(demo.model, demo.spec))
    inputs = torch.rand(1, 3, *demo.spec.input_size)
    for _ in range(10):  # warm up allocator pools and caches
        explain(demo.model, inputs, method)
    before = _rss_bytes()
    for _ in range(100):
        explanation = explain(demo.model, inputs, method)
    growth = _rss_bytes() - before
    assert np.isfinite(explanation.relevance).all()
    assert growth < 50 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 100 attributions"


def test_an_archive_with_a_bad_checksum_is_reported_as_damaged(tmp_path):
    """Found by fuzzing: listing the imports of a damaged archive raised zipfile.BadZipFile."""
    data = WEIGHT_FILES["payload.pt"]
    at = data.index(b"code from the file ran")  # inside data.pkl, so its CRC no longer matches
    path = _write(tmp_path, "payload.pt", data[:at] + b"C" + data[at + 1 :])
    with pytest.raises(ModelLoadError, match="damaged"):
        read_weights(path)
    assert not _RAN


def test_a_dict_of_tensors_keyed_by_numbers_is_no_state_dict(tmp_path):
    """Found by fuzzing: non-string keys raised AttributeError."""
    path = tmp_path / "numbers.pt"
    torch.save({0: torch.zeros(2)}, path)
    with pytest.raises(ModelLoadError, match="not model weights"):
        read_weights(path)


def test_the_seed_weight_files_are_valid(tmp_path):
    """The mutations start from real files: each loads, except the one that would run code."""
    expected = SEED_STATE
    for name, data in WEIGHT_FILES.items():
        path = _write(tmp_path, name, data)
        if name == "payload.pt":
            continue
        loaded = load_model("demo", weights=path).model.state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], value) for key, value in expected.items())
