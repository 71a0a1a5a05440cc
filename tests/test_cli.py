"""End-to-end tests of ``lrp-explain`` on the bundled demo samples, run in-process."""

from __future__ import annotations

import csv
import functools
import json
import operator
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrp_desktop_core.cli import main
from lrp_desktop_core.cli_args import parse_shard
from lrp_desktop_core.cli_run import collect_images, shard_paths
from lrp_desktop_core.models import demo_samples, load_model
from lrp_desktop_core.rulemap import RuleChoice, RuleMap


@pytest.fixture
def samples(tmp_path) -> Path:
    """Three demo samples with their masks, and one sample without a mask."""
    folder = tmp_path / "images"
    folder.mkdir()
    chosen = demo_samples()[:4]
    for index, path in enumerate(chosen):
        shutil.copy(path, folder / path.name)
        mask = path.with_name(f"{path.stem}_mask.png")
        if index < 3 and mask.exists():
            shutil.copy(mask, folder / mask.name)
    return folder


def first_image(folder: Path) -> Path:
    return collect_images([folder])[0][0]


def read_summary(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_explains_a_folder_into_overlays_relevance_records_and_summary(samples, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(samples), "--out", str(out), "--batch-size", "3"]) == 0
    stems = sorted(path.stem for path in samples.glob("*.png") if "_mask" not in path.stem)
    for stem in stems:
        for kind in ("overlay", "heatmap"):
            with Image.open(out / f"{stem}_{kind}.png") as picture:
                assert picture.size == (64, 64)
        assert np.load(out / f"{stem}.npy").shape == (3, 64, 64)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["model"] == "demo" and record["method"]["kind"] == "lrp"
        assert record["canonizer"] == "merge_batchnorm"
        assert record["rulemap"]["preset"] == "epsilon_gamma_box"
        assert record["weights"]["sha256"] and record["target"]["name"]
        assert record["warnings"] == []
        assert record["recommendation"]["canonizer"] == "merge_batchnorm"
        assert record["recommendation"]["preset"] == "epsilon_gamma_box"
    rows = read_summary(out / "summary.csv")
    assert [Path(row["image"]).stem for row in rows] == stems
    assert all(row["status"] == "ok" and row["predicted_name"] for row in rows)
    assert all(row["warnings"] == "0" for row in rows)
    relevance = np.load(out / f"{stems[0]}.npy")
    assert float(rows[0]["relevance_sum"]) == pytest.approx(float(relevance.sum()), rel=1e-3)
    err = capsys.readouterr().err
    assert "4/4 images" in err and "may be wrong" not in err


def test_the_model_is_recommended_for_once_per_run(samples, tmp_path, monkeypatch):
    from lrp_desktop_core import cli_run
    from lrp_desktop_core import recommend as recommending

    real = recommending.recommend
    looked_at: list[nn.Module] = []

    def counted(model: nn.Module):
        looked_at.append(model)
        return real(model)

    monkeypatch.setattr(cli_run, "recommend", counted)
    monkeypatch.setattr(recommending, "recommend", counted)
    image = str(first_image(samples))
    assert main([image, "--out", str(tmp_path / "lrp")]) == 0
    assert len(looked_at) == 1
    record = json.loads(next((tmp_path / "lrp").glob("*.json")).read_text())
    assert record["recommendation"]["canonizer"] == record["canonizer"] == "merge_batchnorm"
    looked_at.clear()
    assert main([image, "--out", str(tmp_path / "gradient"), "--method", "gradient"]) == 0
    assert looked_at == []


def test_evaluate_adds_aopc_and_localisation_where_a_mask_exists(samples, tmp_path):
    out = tmp_path / "out"
    images = [str(path) for path, _ in collect_images([samples])]
    chosen = [images[0], images[-1]]  # the last has no mask
    assert (
        main([*chosen, "--out", str(out), "--evaluate", "--region-size", "32", "--format", "json"])
        == 0
    )
    rows = read_summary(out / "summary.csv")
    assert all(row["morf_aopc"] and row["random_aopc"] for row in rows)
    assert 0 <= float(rows[0]["mass_accuracy"]) <= 1 and 0 <= float(rows[0]["rank_accuracy"]) <= 1
    assert rows[1]["mass_accuracy"] == "" and rows[1]["rank_accuracy"] == ""
    record = json.loads((out / f"{Path(chosen[0]).stem}.json").read_text())
    assert record["evaluation"]["region_size"] == 32
    assert record["evaluation"]["morf_aopc"] == pytest.approx(float(rows[0]["morf_aopc"]))
    assert not list(out.glob("*.png"))


def test_shards_are_disjoint_and_cover_the_sorted_list(samples, tmp_path):
    items = list(range(10))
    parts = [shard_paths(items, part, 3) for part in (1, 2, 3)]
    assert functools.reduce(operator.iadd, parts, []) == items
    assert parse_shard("2/3") == (2, 3)
    out = tmp_path / "out"
    for part in ("1/2", "2/2"):
        assert main([str(samples), "--out", str(out), "--shard", part, "--format", "npy"]) == 0
    first = read_summary(out / "summary-1-of-2.csv")
    second = read_summary(out / "summary-2-of-2.csv")
    names = [row["image"] for row in first + second]
    assert len(first) == len(second) == 2
    assert names == sorted(str(path) for path, _ in collect_images([samples]))
    assert len(list(out.glob("*.npy"))) == 4


def test_an_unreadable_image_is_reported_and_skipped(samples, tmp_path, capsys):
    (samples / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(samples), "--out", str(out), "--quiet"]) == 1
    rows = {Path(row["image"]).name: row for row in read_summary(out / "summary.csv")}
    assert rows["broken.png"]["status"] == "failed" and "broken.png" in rows["broken.png"]["error"]
    assert sum(row["status"] == "ok" for row in rows.values()) == 4
    assert "skipped" in capsys.readouterr().err and not (out / "broken.png").exists()


def test_target_by_name_and_other_methods(samples, tmp_path):
    out = tmp_path / "out"
    image = first_image(samples)
    args = [str(image), "--out", str(out), "--method", "gradient", "--target", "Square"]
    assert main(args) == 0
    row = read_summary(out / "summary.csv")[0]
    assert row["explained_name"] == "square" and row["explained_class"] == "1"
    record = json.loads((out / f"{image.stem}.json").read_text())
    assert record["rulemap"] is None and record["recommendation"] is None
    assert record["warnings"] == [] and row["warnings"] == "0"


def test_an_edited_rule_map_file_is_used(samples, tmp_path):
    loaded = load_model()
    choice = RuleChoice("Epsilon", {"epsilon": 0.5})
    rules = RuleMap.recommended(loaded.model, loaded.spec).with_rule("head.fc", choice)
    path = rules.save(tmp_path / "rules.json")
    out = tmp_path / "out"
    image = first_image(samples)
    assert main([str(image), "--rules", str(path), "--out", str(out), "--format", "json"]) == 0
    record = json.loads((out / f"{image.stem}.json").read_text())
    assert record["rulemap"]["layers"]["head.fc"]["params"]["epsilon"] == 0.5
    assert record["method"]["label"] == "LRP epsilon_gamma_box (edited)"


def bad_rules(tmp_path: Path) -> list[str]:
    (tmp_path / "broken.json").write_text("{not json")
    RuleMap({"fc9": RuleChoice("Epsilon")}).save(tmp_path / "other.json")
    return [str(tmp_path / "broken.json"), str(tmp_path / "other.json")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "WEIGHTS"], "weights"),
        (["--rules", "BROKEN"], "not valid JSON"),
        (["--rules", "OTHER"], "does not fit the model"),
        (["--shard", "3/2"], "--shard"),
        (["--shard", "a/b"], "--shard"),
        (["--target", "hexagon"], "not a class name"),
        (["--target", "7"], "out of range"),
        (["--method", "gradient", "--composite", "epsilon_plus"], "lrp only"),
        (["--format", "png,tiff"], "--format"),
        (["--device", "tpu"], "--device"),
        (["--model", "resnet9000"], "no model called"),
        (["--out", "NOFOLDER"], "cannot create the output folder"),
    ],
)
def test_bad_usage_stops_with_exit_code_2_and_a_message(samples, tmp_path, capsys, extra, message):
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"\x00garbage" * 10)
    broken, other = bad_rules(tmp_path)
    (tmp_path / "file").write_text("")
    replace = {
        "WEIGHTS": str(weights),
        "BROKEN": broken,
        "OTHER": other,
        "NOFOLDER": str(tmp_path / "file" / "out"),
    }
    argv = [str(samples), "--out", str(tmp_path / "out")] + [replace.get(a, a) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_cuda_where_there_is_none(samples, tmp_path, capsys):
    assert main([str(samples), "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.cuda
def test_runs_on_cuda(samples, tmp_path):
    out = tmp_path / "out"
    assert main([str(samples), "--device", "cuda", "--out", str(out), "--format", "json"]) == 0
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["device"].startswith("cuda")


def test_help_explains_sharding_for_job_arrays(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--help"])
    assert raised.value.code == 0
    assert "SLURM_ARRAY_TASK_ID" in capsys.readouterr().out


def test_folder_stems_are_unique(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / folder / "x.png")
    Image.new("L", (4, 4)).save(tmp_path / "a" / "x_mask.png")
    found = collect_images([tmp_path], recursive=True)
    assert [stem for _, stem in found] == ["a__x", "b__x"]
    doubled = collect_images([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])
    assert [stem for _, stem in doubled] == ["x", "x-2"]


def test_torchvision_models_use_pretrained_weights_unless_asked_otherwise(
    samples, tmp_path, monkeypatch, capsys
):
    from lrp_desktop_core import models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    attempts = []

    def offline(url, destination, progress=None):
        attempts.append(url)
        raise models.ModelLoadError(f"Could not download {url}; put it here: {destination}")

    monkeypatch.setattr(models, "download_weights", offline)
    image = str(first_image(samples))
    code = main([image, "--model", "squeezenet1_1", "--out", str(tmp_path / "a"), "--quiet"])
    assert code == 2 and len(attempts) == 1
    assert "squeezenet1_1" in attempts[0] and str(tmp_path / "hub") in capsys.readouterr().err
    code = main(
        [
            image,
            "--model",
            "squeezenet1_1",
            "--random-weights",
            "--out",
            str(tmp_path / "b"),
            "--quiet",
        ]
    )
    assert code == 0 and len(attempts) == 1
    stem = Path(image).stem
    assert (tmp_path / "b" / f"{stem}.npy").is_file()
    weights = json.loads((tmp_path / "b" / f"{stem}.json").read_text())["weights"]
    assert weights["random"] is True and isinstance(weights["seed"], int)  # drawn, and kept


def test_same_seed_gives_bit_identical_relevance_and_records_it(samples, tmp_path):
    image = str(first_image(samples))
    stem = Path(image).stem
    runs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / name
        argv = [image, "--model", "squeezenet1_1", "--seed", seed, "--format", "npy,json"]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
        runs[name] = (np.load(out / f"{stem}.npy"), json.loads((out / f"{stem}.json").read_text()))
    assert runs["a"][0].tobytes() == runs["b"][0].tobytes()
    assert not np.array_equal(runs["a"][0], runs["c"][0])
    assert runs["a"][1]["weights"] == {
        "file": None,
        "sha256": None,
        "pretrained": None,
        "random": True,
        "seed": 5,
    }


def test_seed_is_refused_for_weights_from_a_file(samples, tmp_path, capsys):
    image = str(first_image(samples))
    assert main([image, "--seed", "1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "random weights only" in capsys.readouterr().err


def test_format_png_is_an_alias_of_overlay_and_unknown_formats_are_refused(
    samples, tmp_path, capsys
):
    image = str(first_image(samples))
    stem = Path(image).stem
    argv = [image, "--format", "png,side_by_side", "--overlay", "contour", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob(f"{stem}*")) == [
        f"{stem}_overlay.png",
        f"{stem}_side_by_side.png",
    ]
    assert main([image, "--format", "tiff", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "overlay, heatmap" in capsys.readouterr().err


class GatedNet(nn.Module):
    """Gates its input by a convolution, with the product inline in ``forward``: no rule sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x * torch.sigmoid(self.conv(x))), 1))


def test_a_model_with_arithmetic_outside_its_rules_is_warned_about_once(samples, tmp_path, capsys):
    path = tmp_path / "gated.pt"
    torch.save(nn.Sequential(GatedNet()).eval(), path)
    out = tmp_path / "out"
    argv = [str(samples), "--model", str(path), "--trust", "--out", str(out), "--batch-size", "2"]
    assert main([*argv, "--format", "json"]) == 0
    records = [json.loads(record.read_text()) for record in sorted(out.glob("*.json"))]
    assert len(records) == 4
    warnings = records[0]["warnings"]
    assert warnings and all(record["warnings"] == warnings for record in records)
    assert any("mul" in warning for warning in warnings)
    assert records[0]["recommendation"]["family"] == "custom model"
    rows = read_summary(out / "summary.csv")
    assert all(row["warnings"] == str(len(warnings)) for row in rows)
    err = capsys.readouterr().err
    assert err.count("lrp-explain: the heatmaps of gated may be wrong:") == 1
    assert all(err.count(warning) == 1 for warning in warnings)


class FaintNet(nn.Module):
    """A bias-free convolutional classifier whose outputs are about 1e-12.

    The default epsilon of 1e-6 takes nearly all of their relevance.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.mul_(1e-6)
            self.fc.weight.mul_(1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
        return self.fc(torch.flatten(pooled, 1))


def test_a_faint_model_is_warned_about_in_every_batch_it_shows_in(samples, tmp_path, capsys):
    path = tmp_path / "faint.pt"
    torch.save(FaintNet().eval(), path)
    out = tmp_path / "out"
    argv = [str(samples), "--model", str(path), "--trust", "--out", str(out), "--batch-size", "2"]
    assert main([*argv, "--format", "json"]) == 0
    records = [json.loads(record.read_text()) for record in sorted(out.glob("*.json"))]
    assert all(
        len(record["warnings"]) == 1 and "is tiny" in record["warnings"][0] for record in records
    )
    assert all(
        abs(record["relevance_sum"]) < 0.01 * abs(record["explained_output"]) for record in records
    )
    assert all(row["warnings"] == "1" for row in read_summary(out / "summary.csv"))
    err = capsys.readouterr().err
    for warning in {record["warnings"][0] for record in records}:
        assert err.count(warning) == 1  # each batch's own numbers, said once


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_lrp_on_torchscript_stops_with_a_message_and_gradients_work(samples, tmp_path, capsys):
    network = nn.Sequential(
        nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    )
    path = tmp_path / "scripted.pt"
    torch.jit.script(network.eval()).save(str(path))
    argv = [str(first_image(samples)), "--model", str(path), "--trust", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "lrp")]) == 2
    err = capsys.readouterr().err
    assert "TorchScript" in err and "Gradient" in err and "Traceback" not in err
    assert main([*argv, "--out", str(tmp_path / "gradient"), "--method", "gradient"]) == 0
    row = read_summary(tmp_path / "gradient" / "summary.csv")[0]
    assert row["status"] == "ok" and row["warnings"] == "0"
