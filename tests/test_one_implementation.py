"""One implementation per method and per decision (issue 14, item 4).

``explain`` (what the app and ``lrp-explain`` call) computes every attribution method with the
classes of :mod:`lrp_desktop_core.attribution`, so the two entry points give bit-identical numbers
for the same settings; target resolution, device names and the images of a folder are each decided
by one function that every caller uses.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_explain import small_net

from lrp_desktop_core import attribution, cli_args, cli_run, evaluate, explain, images, models
from lrp_desktop_core.attribution import (
    Gradient,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    expand_targets,
    occlude_independent,
    resolve_target,
)
from lrp_desktop_core.devices import parse_device
from lrp_desktop_core.explain import Method
from lrp_desktop_core.rulemap import RuleChoice, RuleMap


def _double_net() -> torch.nn.Module:
    return small_net().double()


def _inputs() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(2, 3, 8, 8, dtype=torch.float64)


TARGETS = [1, 4]


def _one_hot(count: int = 2, classes: int = 5) -> torch.Tensor:
    seed = torch.zeros(count, classes, dtype=torch.float64)
    seed[torch.arange(count), TARGETS] = 1
    return seed


def _assert_identical(explained: np.ndarray, direct: torch.Tensor) -> None:
    """Check that the class's float64 result, rounded to float32, is ``explain``'s to the bit.

    ``explain`` returns float32.
    """
    assert direct.dtype == torch.float64
    np.testing.assert_array_equal(explained, direct.detach().float().numpy())


def test_gradient_is_the_same_through_explain_and_the_class():
    model, x = _double_net(), _inputs()
    explained = explain.explain(model, x, Method("gradient"), TARGETS).relevance
    _assert_identical(explained, Gradient(model)(x, _one_hot())[1])
    _assert_identical(explained, Gradient(model)(x, TARGETS)[1])


def test_lrp_is_the_gradient_class_under_the_rule_maps_composite():
    model, x = _double_net(), _inputs()
    rule = RuleChoice("Epsilon", {"epsilon": 1e-6})
    rules = RuleMap(dict.fromkeys(("0", "5"), rule), preset="eps")
    explained = explain.explain(model, x, Method("lrp", rules), TARGETS).relevance
    seed = _one_hot()
    with Gradient(model, rules.to_composite()) as attributor:
        direct = attributor(x, lambda output: output * seed)[1]
    _assert_identical(explained, direct)


@pytest.mark.parametrize(("n_iter", "noise_level", "seed"), [(4, 0.2, 5), (1, 0.3, 0)])
def test_smoothgrad_is_the_same_through_explain_and_the_class(n_iter, noise_level, seed):
    model, x = _double_net(), _inputs()
    params = {"n_iter": n_iter, "noise_level": noise_level, "seed": seed}
    explained = explain.explain(model, x, Method("smoothgrad", params=params), TARGETS).relevance
    direct = SmoothGrad(model, noise_level=noise_level, n_iter=n_iter, seed=seed)(x, _one_hot())
    _assert_identical(explained, direct[1])


def test_smoothgrad_takes_its_last_sample_at_the_input_as_zennit_does():
    model, x = _double_net(), _inputs()
    params = {"n_iter": 1, "noise_level": 0.5}
    one = explain.explain(model, x, Method("smoothgrad", params=params), TARGETS).relevance
    plain = explain.explain(model, x, Method("gradient"), TARGETS).relevance
    np.testing.assert_array_equal(one, plain)


def test_smoothgrad_without_a_seed_draws_from_the_global_generator():
    model, x = _double_net(), _inputs()
    torch.manual_seed(11)
    first = SmoothGrad(model, n_iter=3)(x, _one_hot())[1]
    torch.manual_seed(11)
    second = SmoothGrad(model, n_iter=3)(x, _one_hot())[1]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_integrated_gradients_is_the_same_through_explain_and_the_class():
    model, x = _double_net(), _inputs()
    method = Method("integrated_gradients", params={"n_iter": 6})
    explained = explain.explain(model, x, method, TARGETS).relevance
    _assert_identical(explained, IntegratedGradients(model, n_iter=6)(x, _one_hot())[1])


@pytest.mark.parametrize(("window", "stride", "batch_size"), [(4, 4, 64), (3, 2, 1), (5, 3, 3)])
def test_occlusion_is_the_same_through_explain_and_the_class(window, stride, batch_size):
    model, x = _double_net(), _inputs()
    params = {"window": window, "stride": stride, "batch_size": batch_size}
    explained = explain.explain(model, x, Method("occlusion", params=params), TARGETS).relevance
    with torch.no_grad():
        reference = model(x)
    seed = _one_hot()
    attributor = Occlusion(
        model,
        occlusion_fn=partial(occlude_independent, invert=True),
        window=(window, window),
        stride=(stride, stride),
        batch_size=batch_size,
    )
    direct = attributor(x, lambda output: (reference - output) * seed)[1]
    _assert_identical(explained, direct)


def test_occlusion_batches_change_no_number():
    model, x = _double_net(), _inputs()
    one = Occlusion(model, window=(3, 3), stride=(2, 2))(x, TARGETS)[1]
    many = Occlusion(model, window=(3, 3), stride=(2, 2), batch_size=7)(x, TARGETS)[1]
    torch.testing.assert_close(one, many, rtol=1e-12, atol=1e-12)


def test_the_methods_are_implemented_once():
    """Explain keeps no method implementation of its own."""
    for name in ("_smoothgrad", "_integrated_gradients", "_window_starts", "_resolve_target"):
        assert not hasattr(explain, name), name
    assert explain.resolve_target is attribution.resolve_target


def test_attributor_callback_reports_every_step_and_can_stop():
    model, x = _double_net(), _inputs()
    steps = []
    SmoothGrad(model, n_iter=3, callback=lambda done, total: steps.append((done, total)))(x, 0)
    assert steps == [(1, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        IntegratedGradients(model, n_iter=5, callback=stop)(x, 0)


# --- one target resolution ---------------------------------------------------------------------


def test_one_target_resolution_for_explain_attributors_and_evaluation():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert resolve_target(None, logits).tolist() == [1, 0]
    assert resolve_target(2, logits).tolist() == [2, 2]
    assert resolve_target(np.array([0, 2]), logits).tolist() == [0, 2]
    for bad, message in ((3, "out of range"), ([0, 1, 2], "one target per sample")):
        with pytest.raises(ValueError, match=message):
            resolve_target(bad, logits)
        with pytest.raises(ValueError, match=message):
            Gradient(torch.nn.Linear(4, 3))(torch.randn(2, 4), bad)
    assert evaluate._targets(4, 3).tolist() == [4, 4, 4]
    assert expand_targets([1, 2], 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="one target per sample"):
        evaluate._targets([1, 2], 3)


# --- one device parser -------------------------------------------------------------------------


def test_one_device_parser_for_the_cli_and_the_app():
    pytest.importorskip("PySide6")
    from lrp_desktop import devices as app_devices

    assert parse_device("cpu") == torch.device("cpu")
    assert app_devices.check_device("cpu") == cli_run._device("cpu") == torch.device("cpu")
    for bad in ("tpu", "not a device"):
        with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
            parse_device(bad)
        with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
            app_devices.check_device(bad)
        with pytest.raises(cli_args.UsageError, match="cpu, cuda or cuda:N"):
            cli_run._device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            parse_device("cuda")
    else:
        assert parse_device("cuda") == torch.device("cuda", 0)
        with pytest.raises(ValueError, match="does not exist"):
            parse_device(f"cuda:{torch.cuda.device_count()}")


# --- one list of the images in a folder --------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "a_mask.png", "b.JPG", "B_MASK.PNG", "notes.txt", "sub/c.png"):
        if name.endswith("txt"):
            (folder / name).write_text("not an image")
        else:
            Image.new("RGB", (4, 4)).save(folder / name, format="PNG")
    return folder


def test_one_list_of_folder_images_without_masks(tmp_path):
    folder = _folder(tmp_path)
    assert [p.name for p in images.image_files(folder)] == ["a.png", "b.JPG"]
    assert [p.name for p in images.image_files(folder, recursive=True)] == [
        "a.png",
        "b.JPG",
        "c.png",
    ]
    assert images.mask_file(folder / "a.png") == folder / "a_mask.png"
    collected = [path.name for path, _ in cli_run.collect_images([folder])]
    assert collected == ["a.png", "b.JPG"]
    assert all(not images.is_mask_file(path) for path in models.demo_samples())


def test_the_app_lists_a_folder_through_the_same_function(tmp_path):
    pytest.importorskip("PySide6")
    from lrp_desktop import controller

    assert controller.image_files is images.image_files
    assert [p.name for p in controller.image_files(_folder(tmp_path))] == ["a.png", "b.JPG"]
