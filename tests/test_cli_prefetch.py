"""``lrp-explain`` loads images in background threads: the results equal the sequential path's."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lrp_desktop_core.cli import main
from lrp_desktop_core.cli_run import Row, loaded_batches
from lrp_desktop_core.images import ImageLoadError
from lrp_desktop_core.models import demo_samples, get_spec


@pytest.fixture
def folder(tmp_path) -> Path:
    """Seven demo samples with a corrupt image sorted into the middle."""
    images = tmp_path / "images"
    images.mkdir()
    samples = [path for path in demo_samples() if "_mask" not in path.stem][:7]
    for path in samples:
        shutil.copy(path, images / path.name)
    names = sorted(path.name for path in images.iterdir())
    corrupt = images / (names[3][:-4] + "_broken.png")  # sorts between the 4th and 5th
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return images


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_prefetch_gives_the_same_outputs_in_the_same_order(folder, tmp_path, capsys):
    outputs = {}
    for prefetch in ("0", "2"):
        out = tmp_path / f"out{prefetch}"
        code = main(
            [str(folder), "--out", str(out), "--batch-size", "3", "--prefetch", prefetch, "--quiet"]
        )
        err = capsys.readouterr().err
        assert code == 1  # the corrupt image fails, the rest are explained
        assert "_broken.png" in err and "skipped" in err
        assert "images/s" in err
        outputs[prefetch] = out
    sequential, prefetched = (_rows(outputs[key] / "summary.csv") for key in ("0", "2"))
    assert [row["image"] for row in prefetched] == [row["image"] for row in sequential]
    assert sorted(row["image"] for row in sequential) == [row["image"] for row in sequential]
    assert [row["status"] for row in prefetched].count("failed") == 1
    assert prefetched[4]["status"] == "failed" and "_broken" in prefetched[4]["image"]
    for before, after in zip(sequential, prefetched, strict=True):
        assert before == after
    npys = sorted(path.name for path in outputs["0"].glob("*.npy"))
    assert len(npys) == 7 and npys == sorted(path.name for path in outputs["2"].glob("*.npy"))
    for name in npys:
        np.testing.assert_array_equal(np.load(outputs["0"] / name), np.load(outputs["2"] / name))
        stem = name[:-4]
        records = [json.loads((outputs[key] / f"{stem}.json").read_text()) for key in ("0", "2")]
        assert records[0]["prediction"] == records[1]["prediction"]


def test_loaded_batches_keep_order_and_errors_and_stop_early(folder):
    spec = get_spec("demo")
    rows = [Row(path, path.stem) for path in sorted(folder.iterdir())]
    batches = [rows[first : first + 2] for first in range(0, len(rows), 2)]
    for ahead in (0, 1, 3):
        seen = [item for batch in loaded_batches(batches, spec, ahead) for item in batch]
        assert [row for row, _ in seen] == rows
        failed = [row.stem for row, image in seen if isinstance(image, ImageLoadError)]
        assert failed == [rows[4].stem]
    first = next(iter(loaded_batches(batches, spec, 2)))  # abandoned after one batch
    assert len(first) == 2
