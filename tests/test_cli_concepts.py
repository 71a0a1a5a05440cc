"""``lrp-explain --layer NAME --concepts K|all`` and ``--index-concepts FOLDER``."""

import json
import shutil

import numpy as np

from lrp_desktop_core import concepts
from lrp_desktop_core.cli import main
from lrp_desktop_core.models import demo_samples


def test_concepts_are_written_per_image_sorted_by_relevance(tmp_path):
    image = demo_samples()[0]
    out = tmp_path / "out"
    arguments = [str(image), "--out", str(out), "--quiet", "--format", "npy,json"]
    assert main([*arguments, "--layer", "features.stage2.conv", "--concepts", "all"]) == 0
    concepts = np.load(out / f"{image.stem}_concepts.npz")
    channels, at_layer = concepts["channels"], concepts["layer_relevance"]
    assert concepts["relevance"].shape == (32, 3, 64, 64)
    assert sorted(channels) == list(range(32)) and np.all(np.diff(at_layer) <= 0)
    plain = np.load(out / f"{image.stem}.npy")
    summed = concepts["relevance"].astype(np.float64).sum(axis=0)
    assert np.abs(summed - plain).max() <= 1e-4 * np.abs(plain).max()
    record = json.loads((out / f"{image.stem}.json").read_text())["concepts"]
    assert record["layer"] == "features.stage2.conv"
    top = record["top_channels"]
    assert [entry["channel"] for entry in top] == channels[:10].tolist()
    assert top[0]["share"] > 0


def test_a_bad_layer_name_exits_2_naming_near_matches(tmp_path, capsys):
    image = demo_samples()[0]
    code = main([str(image), "--out", str(tmp_path), "--layer", "features.stage2.cnv"])
    assert code == 2
    assert "features.stage2.conv" in capsys.readouterr().err


def test_index_concepts_stores_reference_images_once(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in demo_samples()[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "circle_01_mask.png").write_bytes(b"not an image, and not listed")
    arguments = [
        "--index-concepts",
        str(folder),
        "--layer",
        "features.stage2.conv",
        "--concept-store",
        str(tmp_path / "store"),
        "--quiet",
    ]
    assert main(arguments) == 0
    assert "from 3 images (3 explained now" in capsys.readouterr().err
    assert main(arguments) == 0
    assert "(0 explained now" in capsys.readouterr().err


def test_the_concepts_reuse_the_plain_heatmap_of_the_explanation(tmp_path, monkeypatch):
    """Only explain() takes the whole relevance back to the input; the concepts stop at the layer.

    From there each channel's part goes on to the input, which explain() cannot do.
    """
    passes = []
    plain_pass = concepts.plain_pass

    def counted(*args, **kwargs):
        passes.append(kwargs.get("to_input", True))
        return plain_pass(*args, **kwargs)

    monkeypatch.setattr(concepts, "plain_pass", counted)
    image = demo_samples()[0]
    arguments = [str(image), "--out", str(tmp_path), "--quiet", "--format", "json"]
    assert main([*arguments, "--layer", "features.stage2.conv", "--concepts", "4"]) == 0
    assert passes == [False]
    assert (tmp_path / f"{image.stem}_concepts.npz").is_file()


def test_channel_axis_chooses_what_counts_as_a_channel(tmp_path, capsys):
    image = demo_samples()[0]
    arguments = [str(image), "--quiet", "--format", "json", "--layer", "features.stage2.conv"]
    found = tmp_path / "found"
    assert main([*arguments, "--out", str(found), "--concepts", "all"]) == 0
    rows = tmp_path / "rows"  # the feature map's rows (axis 2 of N, C, H, W) as "channels"
    assert main([*arguments, "--out", str(rows), "--concepts", "all", "--channel-axis", "2"]) == 0
    by_channel = np.load(found / f"{image.stem}_concepts.npz")
    by_row = np.load(rows / f"{image.stem}_concepts.npz")
    rows_at_layer = 32  # 64 pixels, halved by the first stage's pooling
    assert sorted(by_row["channels"]) == list(range(rows_at_layer))
    summed = [result["relevance"].astype(np.float64).sum(axis=0) for result in (by_channel, by_row)]
    np.testing.assert_allclose(summed[0], summed[1], rtol=1e-4, atol=1e-6)  # both add up
    assert not np.allclose(by_channel["relevance"][0], by_row["relevance"][0])
    assert main([*arguments, "--out", str(tmp_path / "bad"), "--channel-axis", "7"]) == 1
    assert "axis" in capsys.readouterr().err
