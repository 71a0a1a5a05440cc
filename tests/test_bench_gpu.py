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
