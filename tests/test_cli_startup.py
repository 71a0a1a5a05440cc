"""What each command imports: nothing heavy for ``--help`` and errors, no torchvision for demos."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torchvision

# Runs a command's entry point (module ENTRY) with the given arguments, then reports its exit code
# and which of the heavy modules got imported.
PROBE = """
import json, sys
from ENTRY import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = ("torch", "torchvision", "numpy", "lrp_desktop_core.cli_run", "lrp_desktop_core.explain")
print(json.dumps({"code": code, "imported": [name for name in heavy if name in sys.modules]}))
"""


def probe(*argv: str, entry: str = "lrp_desktop_core.cli") -> tuple[dict, str]:
    script = PROBE.replace("ENTRY", entry)
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--help"], 0, "SLURM_ARRAY_TASK_ID"),
        (["--method", "bogus"], 2, "invalid choice: 'bogus'"),
        (["--composite", "nope", "x.png"], 2, "invalid choice: 'nope'"),
        (["x.png", "--shard", "3/2"], 2, "--shard 3/2"),
        (["x.png", "--format", "tiff"], 2, "--format takes overlay"),
        (["x.png", "--cmap", "nope"], 2, "known maps: gray"),
        (["--batch-size", "0", "x.png"], 2, "must be at least 1"),
        ([], 2, "give images or folders"),
    ],
)
def test_help_and_argument_errors_answer_without_torch(argv, code, message):
    result, output = probe(*argv)
    assert result == {"code": code, "imported": []}
    assert message in output


def test_good_arguments_reach_the_engine():
    result, output = probe("x.png", "--device", "tpu")
    assert result["code"] == 2 and "--device tpu" in output
    assert {"torch", "lrp_desktop_core.cli_run"} <= set(result["imported"])
    assert "torchvision" not in result["imported"]  # the default model is a bundled demo
    result, _ = probe("x.png", "--model", "resnet18", "--device", "tpu")
    assert result["code"] == 2 and "torchvision" in result["imported"]  # with the engine


def test_the_module_runs_as_a_command():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lrp_desktop_core.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("usage: lrp-explain")
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "lrp_desktop_core.cli_args" in imported and "torch" not in imported


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--help"], 0, "--compare NAME"),
        (["--compare", "bogus"], 2, "invalid choice: 'bogus'"),
        (["--composite", "nope"], 2, "invalid choice: 'nope'"),
    ],
)
def test_the_viewer_answers_help_and_argument_errors_without_torch(argv, code, message):
    result, output = probe(*argv, entry="lrp_desktop.__main__")
    assert result == {"code": code, "imported": []}
    assert message in output


def test_the_viewer_compares_every_preset_and_method_of_the_catalogue():
    from lrp_desktop.__main__ import parse_args
    from lrp_desktop_core.names import METHODS, PRESETS

    entries = ["current", *PRESETS, *(kind for kind in METHODS if kind != "lrp")]
    assert tuple(parse_args(["--compare", *entries]).compare) == tuple(entries)


def test_lrp_explain_writes_the_demos_records_and_report_without_importing_torchvision(tmp_path):
    out = tmp_path / "out"
    script = f"""
import json, sys
from pathlib import Path
from lrp_desktop_core.cli import main
from lrp_desktop_core.models import demo_samples

sample = demo_samples()[0]
out = Path({str(out)!r})
assert main([str(sample), "--out", str(out), "--report", str(out / "report.pdf")]) == 0
assert "torchvision" not in sys.modules, "imported"
print(json.loads((out / (sample.stem + ".json")).read_text())["versions"]["torchvision"])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == torchvision.__version__  # its build label included
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
