"""The GPU script's table, run as on a lent GPU but on the CPU; out of memory is one cell's word."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.append(str(BENCH))  # last, so that it shadows nothing

import bench_gpu  # noqa: E402  (a script folder, not a package)


def test_the_gpu_table_runs_on_the_cpu_with_every_column():
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_gpu.py"),
            "--device",
            "cpu",
            "--models",
            "resnet18",
            "--batches",
            "1",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| resnet18 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["resnet18", "1"]
    gradient, ours, zennit, ours_per_gradient, ours_per_zennit = map(float, cells[2:])
    assert min(gradient, ours, zennit) > 0
    # to the printed precision: ratios to 0.01, times to 0.1 ms
    assert ours_per_gradient == pytest.approx(ours / gradient, abs=0.01)
    assert ours_per_zennit == pytest.approx(ours / zennit, abs=0.01)


def test_running_out_of_device_memory_fills_one_cell_and_the_next_cell_works(monkeypatch):
    real = bench_gpu.time_engines
    calls = []

    def first_runs_out(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_gpu, "time_engines", first_runs_out)
    cpu = torch.device("cpu")
    assert bench_gpu.measure("resnet18", 1, cpu, 1) == "OOM"
    assert bench_gpu.format_row("resnet18", 1, "OOM") == "| resnet18 | 1 | OOM | | | | |"
    seconds = bench_gpu.measure("resnet18", 1, cpu, 1)
    assert set(seconds) == {"gradient", "ours", "zennit"}
    assert all(value > 0 for value in seconds.values())


def test_without_a_gpu_the_script_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_cuda_test_files_leave_the_viewers_out_only_without_its_packages(tmp_path):
    marked = "import pytest\n\n\n@pytest.mark.cuda\ndef test_on_the_device():\n    pass\n"
    (tmp_path / "test_app_view.py").write_text(marked)
    (tmp_path / "test_engine.py").write_text(marked)
    (tmp_path / "test_plain.py").write_text("def test_anywhere():\n    pass\n")
    (tmp_path / "helpers.py").write_text(marked)
    names = [path.name for path in bench_gpu.cuda_test_files(tmp_path, viewer=True)]
    assert names == ["test_app_view.py", "test_engine.py"]
    assert [path.name for path in bench_gpu.cuda_test_files(tmp_path, viewer=False)] == [
        "test_engine.py"
    ]


def test_the_gpu_script_lists_the_suites_cuda_tests_for_a_python_without_the_viewer(
    monkeypatch, capsys
):
    monkeypatch.setattr(bench_gpu, "viewer_importable", lambda: False)
    assert bench_gpu.main(["--cuda-tests"]) == 0
    out, err = capsys.readouterr()
    listed = {Path(line).name for line in out.splitlines()}
    assert {"test_cuda.py", "test_explain.py", "test_cli.py"} <= listed
    assert not any(name.startswith("test_app_") for name in listed)
    assert "viewer's cuda tests are left out" in err
    monkeypatch.setattr(bench_gpu, "viewer_importable", lambda: True)
    assert bench_gpu.main(["--cuda-tests"]) == 0
    assert "test_app_cuda.py" in {Path(line).name for line in capsys.readouterr().out.splitlines()}


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs in full")
def test_the_shell_scripts_parse_and_the_gpu_script_stops_without_a_gpu():
    for script in ("gpu.sh", "gpu_wheels.sh"):
        assert subprocess.run(["bash", "-n", str(BENCH / script)]).returncode == 0
    result = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), sys.executable], capture_output=True, text=True
    )
    assert result.returncode != 0 and "no CUDA device here" in result.stderr
