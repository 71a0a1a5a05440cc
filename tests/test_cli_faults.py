"""Tests of ``lrp-explain`` where numbers or files go wrong: a message each, never a traceback."""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrp_desktop_core import cli_run
from lrp_desktop_core.cli import main
from lrp_desktop_core.cli_run import collect_images
from lrp_desktop_core.explain import NonFiniteError
from lrp_desktop_core.models import demo_samples


@pytest.fixture
def samples(tmp_path) -> Path:
    """Four demo samples in a folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    for path in demo_samples()[:4]:
        shutil.copy(path, folder / path.name)
    return folder


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    """Return the rows of a summary by image file name."""
    with path.open(newline="") as handle:
        return {Path(row["image"]).name: row for row in csv.DictReader(handle)}


class BrightIsNaNNet(nn.Module):
    """A small classifier whose outputs are NaN for nearly white images (and only for those)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1)
        bright = x.mean(dim=(1, 2, 3)) > 1.8  # white is about 2.2 after ImageNet normalisation
        return self.fc(pooled) + torch.where(bright, torch.nan, 0.0)[:, None]


def test_a_float_tiff_with_nan_fails_alone_and_is_named_in_the_summary(samples, tmp_path, capsys):
    values = np.full((64, 64), 0.5, dtype=np.float32)
    values[10, 10:15] = np.nan
    Image.fromarray(values).save(samples / "nan.tif")
    out = tmp_path / "out"
    assert main([str(samples), "--out", str(out), "--quiet", "--batch-size", "5"]) == 1
    rows = read_summary(out / "summary.csv")
    assert rows["nan.tif"]["status"] == "failed"
    assert str(samples / "nan.tif") in rows["nan.tif"]["error"]
    assert "holds 5 of 4,096 values that are not finite" in rows["nan.tif"]["error"]
    assert sum(row["status"] == "ok" for row in rows.values()) == 4
    assert len(list(out.glob("*.npy"))) == 4
    err = capsys.readouterr().err
    assert "not finite" in err and "Traceback" not in err and "RuntimeWarning" not in err


def test_an_image_the_model_turns_to_nan_fails_and_its_batch_is_explained_again(
    samples, tmp_path, capsys
):
    Image.new("RGB", (64, 64), "white").save(samples / "white.png")
    model = tmp_path / "bright.pt"
    torch.save(BrightIsNaNNet().eval(), model)
    out = tmp_path / "out"
    argv = [str(samples), "--model", str(model), "--trust", "--out", str(out), "--quiet"]
    assert main([*argv, "--method", "gradient", "--batch-size", "5"]) == 1
    rows = read_summary(out / "summary.csv")
    assert rows["white.png"]["status"] == "failed"
    assert "logits" in rows["white.png"]["error"] and "NaN" in rows["white.png"]["error"]
    others = [row for name, row in rows.items() if name != "white.png"]
    assert len(others) == 4 and all(row["status"] == "ok" for row in others)
    assert sorted(path.stem for path in out.glob("*.npy")) == sorted(
        stem for path, stem in collect_images([samples]) if path.name != "white.png"
    )
    err = capsys.readouterr().err
    assert f"{samples / 'white.png'} failed" in err and "Traceback" not in err


@pytest.mark.parametrize("samples_named", [(), (0, 1)], ids=["none_named", "all_named"])
def test_a_numeric_fault_naming_no_image_or_all_fails_the_whole_batch(
    samples, tmp_path, monkeypatch, samples_named
):
    calls = []

    def faulty_explain(model, inputs, *args, **kwargs):
        calls.append(len(inputs))
        raise NonFiniteError("The relevance holds NaN or inf", "relevance", samples_named)

    monkeypatch.setattr(cli_run, "explain", faulty_explain)
    out = tmp_path / "out"
    argv = [str(samples), "--out", str(out), "--quiet", "--batch-size", "2"]
    assert main(argv) == 1
    rows = read_summary(out / "summary.csv")
    assert all(row["status"] == "failed" for row in rows.values()) and len(rows) == 4
    assert all("relevance holds NaN" in row["error"] for row in rows.values())
    assert calls == [2, 2]  # once per batch: nothing is left to explain again


def test_a_numeric_fault_is_narrowed_down_over_repeated_tries(samples, tmp_path, monkeypatch):
    explain = cli_run.explain
    calls = []

    def explain_failing_on_first_two(model, inputs, *args, **kwargs):
        calls.append(len(inputs))
        if len(inputs) > 2:
            raise NonFiniteError(f"image 1 of {len(inputs)} is bad", "logits", (0,))
        return explain(model, inputs, *args, **kwargs)

    monkeypatch.setattr(cli_run, "explain", explain_failing_on_first_two)
    out = tmp_path / "out"
    assert main([str(samples), "--out", str(out), "--quiet", "--batch-size", "4"]) == 1
    assert calls == [4, 3, 2]
    rows = list(read_summary(out / "summary.csv").values())
    assert [row["status"] for row in rows] == ["failed", "failed", "ok", "ok"]
    assert rows[0]["error"] == "explaining failed: image 1 of 4 is bad"
    assert rows[1]["error"] == "explaining failed: image 1 of 3 is bad"


def test_a_model_file_with_nan_weights_stops_with_exit_code_2_naming_the_layer(
    samples, tmp_path, capsys
):
    # Passes once load_model refuses weights holding NaN (lrp_desktop_core/weightfiles.py).
    network = nn.Sequential(
        nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    )
    with torch.no_grad():
        network[4].weight[1, 0] = torch.nan
    path = tmp_path / "nan.pt"
    torch.save(network.eval(), path)
    out = tmp_path / "out"
    argv = [str(samples), "--model", str(path), "--trust", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrp-explain: error:") and "4.weight" in err and "NaN" in err
    assert "Traceback" not in err and not out.exists()


def _explained_nothing(out: Path) -> bool:
    return not list(out.glob("*.npy")) if out.is_dir() else True


def test_an_output_path_that_is_a_file_stops_before_any_image(samples, tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("not a folder")
    assert main([str(samples), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"the output folder {out} is a file" in err and "Traceback" not in err
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("name", "extra"), [("summary.csv", []), ("summary-2-of-2.csv", ["--shard", "2/2"])]
)
def test_a_summary_path_that_is_a_folder_stops_before_any_image(
    samples, tmp_path, capsys, monkeypatch, name, extra
):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    monkeypatch.setattr(cli_run, "load_image", lambda *args: pytest.fail("an image was loaded"))
    assert main([str(samples), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert f"the summary {out / name} is a folder" in err and "Traceback" not in err
    assert _explained_nothing(out)


def test_a_read_only_output_folder_stops_before_any_image(samples, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    if os.geteuid() == 0:  # root writes anyway: make creating a file there fail as it would
        real = tempfile.TemporaryFile

        def refused(*args, dir=None, **kwargs):
            if Path(dir) == out:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    monkeypatch.setattr(cli_run, "load_image", lambda *args: pytest.fail("an image was loaded"))
    try:
        assert main([str(samples), "--out", str(out), "--quiet"]) == 2
    finally:
        out.chmod(0o700)
    err = capsys.readouterr().err
    assert f"cannot write in the output folder {out}: Permission denied" in err
    assert "Traceback" not in err and not list(out.iterdir())


def test_a_writable_output_folder_is_left_as_it_was_by_the_check(samples, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("old")
    monkeypatch.setattr(cli_run, "_run", lambda *args: [])
    assert main([str(samples), "--out", str(out), "--quiet"]) == 0
    assert [path.name for path in out.iterdir()] == ["summary.csv"]


def test_an_unsupported_model_is_said_before_any_image_even_when_every_image_fails(
    samples, tmp_path, monkeypatch, capsys
):
    real_recommend = cli_run.recommend

    def unsupported(model):
        found = real_recommend(model)
        return dataclasses.replace(found, unsupported=("the attention here has no rule yet",))

    def failing(model, inputs, method, target=None, **kwargs):
        raise NonFiniteError("The relevance holds NaN or inf.", "relevance", ())

    monkeypatch.setattr(cli_run, "recommend", unsupported)
    monkeypatch.setattr(cli_run, "explain", failing)
    assert main([str(samples), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "may be wrong:\n  - the attention here has no rule yet" in err
    assert err.index("the attention here has no rule yet") < err.index("NaN or inf")
