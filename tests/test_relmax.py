"""Reference images by relevance maximisation: ranking, regions, the store and resuming."""

import numpy as np
import pytest
import torch

from lrp_desktop_core import relmax
from lrp_desktop_core.concepts import LayerNotFoundError, plain_pass
from lrp_desktop_core.explain import ExplainCancelled
from lrp_desktop_core.images import load_image
from lrp_desktop_core.models import demo_samples, load_model
from lrp_desktop_core.relmax import RANKINGS, index_references, model_hash
from lrp_desktop_core.rulemap import RuleMap

LAYER = "features.stage2.conv"


@pytest.fixture(scope="module")
def demo():
    loaded = load_model("demo")
    return loaded, RuleMap.recommended(loaded.model, loaded.spec)


@pytest.fixture(scope="module")
def full_index(demo, tmp_path_factory):
    loaded, rulemap = demo
    return index_references(
        loaded.model,
        loaded.spec,
        rulemap,
        LAYER,
        demo_samples(),
        store=tmp_path_factory.mktemp("store"),
        top_n=3,
        batch_size=4,
    )


def test_every_channel_gets_its_most_relevant_images_with_a_region(demo, full_index):
    loaded, rulemap = demo
    paths = demo_samples()
    assert full_index.channels == 32 and full_index.computed == len(paths)
    batch = torch.stack([load_image(path, loaded.spec).tensor for path in paths])
    at_layer = plain_pass(loaded.model, batch, rulemap, LAYER, None).layer_relevance
    best_per_image = at_layer.flatten(2).amax(dim=2).double().numpy()  # (images, channels)
    for channel in (0, 17, 31):
        references = full_index.references(channel)
        assert len(references) == 3
        scores = [reference.score for reference in references]
        assert scores == sorted(scores, reverse=True)
        assert references[0].path == paths[int(best_per_image[:, channel].argmax())]
        assert scores[0] == pytest.approx(best_per_image[:, channel].max(), rel=1e-5)
        top, left, bottom, right = references[0].box
        assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64
        assert (bottom - top) * (right - left) < 64 * 64  # a region, not the whole image
    assert set(RANKINGS) == set(full_index.images)
    assert len(full_index.references(5, by="activation")) == 3


def test_a_second_look_reads_the_store(demo, full_index, tmp_path):
    loaded, rulemap = demo
    store = tmp_path / "store"
    first = index_references(
        loaded.model, loaded.spec, rulemap, LAYER, demo_samples()[:4], store=store, top_n=2
    )
    again = index_references(
        loaded.model, loaded.spec, rulemap, LAYER, demo_samples()[:4], store=store, top_n=2
    )
    assert first.computed == 4 and again.computed == 0
    for by in RANKINGS:
        np.testing.assert_array_equal(first.images[by], again.images[by])
        np.testing.assert_array_equal(first.boxes[by], again.boxes[by])


def test_an_interrupted_run_resumes_and_gives_the_same_index(demo, full_index, tmp_path):
    loaded, rulemap = demo
    before = {name: value.clone() for name, value in loaded.model.state_dict().items()}
    reports = []
    with pytest.raises(ExplainCancelled):
        index_references(
            loaded.model,
            loaded.spec,
            rulemap,
            LAYER,
            demo_samples(),
            store=tmp_path,
            top_n=3,
            batch_size=4,
            progress=reports.append,
            cancel=lambda: len(reports) >= 1,
        )
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, before[name])
    assert all(not module._forward_hooks for module in loaded.model.modules())
    resumed = index_references(
        loaded.model,
        loaded.spec,
        rulemap,
        LAYER,
        demo_samples(),
        store=tmp_path,
        top_n=3,
        batch_size=4,
    )
    assert resumed.computed == len(demo_samples()) - 4
    for by in RANKINGS:
        np.testing.assert_array_equal(resumed.images[by], full_index.images[by])
        np.testing.assert_array_equal(resumed.scores[by], full_index.scores[by])
        np.testing.assert_array_equal(resumed.boxes[by], full_index.boxes[by])


def test_the_model_hash_follows_the_weights(demo):
    loaded, _ = demo
    other = load_model("demo").model
    assert model_hash(loaded.model) == model_hash(other)
    with torch.no_grad():
        next(other.parameters())[0].add_(1)
    assert model_hash(loaded.model) != model_hash(other)


def test_a_bad_layer_fails_before_loading_images(demo, tmp_path):
    loaded, rulemap = demo
    with pytest.raises(LayerNotFoundError, match=r"features\.stage3\.conv"):
        index_references(
            loaded.model,
            loaded.spec,
            rulemap,
            "features.stage3.cov",
            [tmp_path / "x.png"],
            store=tmp_path,
        )


def test_an_interruption_while_finding_regions_resumes_there(
    demo, full_index, tmp_path, monkeypatch
):
    loaded, rulemap = demo
    settings = {"store": tmp_path, "top_n": 3, "batch_size": 4}
    regions = []  # the images whose regions were found, one conditional pass each
    found = relmax.conditional_relevance

    def counted(model, image, *args, **kwargs):
        regions.append(image.clone())
        return found(model, image, *args, **kwargs)

    monkeypatch.setattr(relmax, "conditional_relevance", counted)
    with pytest.raises(ExplainCancelled):
        index_references(
            loaded.model,
            loaded.spec,
            rulemap,
            LAYER,
            demo_samples(),
            cancel=lambda: len(regions) >= 2,
            **settings,
        )
    assert len(regions) == 2
    folder = next(tmp_path.iterdir())
    assert not (folder / "references.npz").exists()  # a partial index is never taken as finished
    before = len(regions)
    resumed = index_references(
        loaded.model, loaded.spec, rulemap, LAYER, demo_samples(), **settings
    )
    assert resumed.computed == 0  # the scan was done
    images = full_index.images["relevance"]
    assert len(regions) - before == len(np.unique(images[images >= 0])) - 2
    assert not (folder / "partial.npz").exists()
    for by in RANKINGS:
        np.testing.assert_array_equal(resumed.images[by], full_index.images[by])
        np.testing.assert_array_equal(resumed.boxes[by], full_index.boxes[by])


def test_the_model_hash_is_kept_until_a_weight_changes(monkeypatch):
    model = load_model("demo").model
    digests = []
    digest = relmax._digest
    monkeypatch.setattr(relmax, "_digest", lambda m: digests.append(1) or digest(m))
    first = model_hash(model)
    assert model_hash(model) == first and len(digests) == 1  # the second call reads no weights
    weight = next(model.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight[0].add_(1)
    changed = model_hash(model)
    assert changed != first and len(digests) == 2
    with torch.no_grad():
        weight.copy_(original)
    assert model_hash(model) == first  # the same values, the same hash
    model.get_parameter(next(n for n, _ in model.named_parameters())).data = weight.detach() * 2
    assert model_hash(model) not in (first, changed)  # a new tensor in its place


def test_a_vit_block_is_indexed_by_its_features_with_patches_as_regions(tmp_path):
    loaded = load_model("demo_vit")
    rulemap = RuleMap.recommended(loaded.model, loaded.spec)
    layer = "encoder.layers.encoder_layer_1"  # (N, 65, 64): a class token and 8 x 8 patches
    index = index_references(
        loaded.model, loaded.spec, rulemap, layer, demo_samples()[:4], store=tmp_path, top_n=2
    )
    assert index.channels == 64  # the features, not the tokens
    boxes = index.boxes["activation"].reshape(-1, 4)
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    whole = (heights == 64) & (widths == 64)  # the class token stands for the whole image
    patch = (heights == 8) & (widths == 8) & (boxes[:, 0] % 8 == 0) & (boxes[:, 1] % 8 == 0)
    assert np.all(whole | patch) and patch.any()
