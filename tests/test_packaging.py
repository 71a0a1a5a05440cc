"""The built wheel holds both packages and the bundled demos; the version has one source."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

import lrp_desktop
import lrp_desktop_core
from lrp_desktop_core.demo_net import DEMO_DIR, DEMO_SAMPLES_DIR, DEMO_WEIGHTS
from lrp_desktop_core.demos import DEMOS

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_comes_from_the_package_metadata():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert lrp_desktop_core.__version__ == lrp_desktop.__version__ == version("lrp-desktop")
    assert declared == version("lrp-desktop"), "stale install: run pip install -e '.[dev]' again"
    sources = [
        path
        for path in ROOT.glob("lrp_desktop*/**/*.py")
        if re.search(r"^__version__ = ['\"]\d", path.read_text(encoding="utf-8"), re.M)
    ]
    assert sources == [], "the version is written only in pyproject.toml"


def test_the_demos_lie_inside_the_package():
    package = Path(lrp_desktop_core.__file__).resolve().parent
    assert DEMO_DIR.is_relative_to(package)
    assert DEMO_WEIGHTS.is_file() and all(demo.weights.is_file() for demo in DEMOS.values())
    assert (DEMO_SAMPLES_DIR / "samples.json").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    """Build the wheel from a copy of the source tree (no build folder left in the checkout)."""
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("lrp_desktop", "lrp_desktop_core"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
        ],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("lrp_desktop-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_holds_both_packages_and_the_demos(wheel):
    names = set(wheel.namelist())
    assert {
        "lrp_desktop/__init__.py",
        "lrp_desktop/__main__.py",
        "lrp_desktop_core/__init__.py",
        "lrp_desktop_core/cli.py",
    } <= names
    package = Path(lrp_desktop_core.__file__).resolve().parent
    bundled = {
        path.relative_to(package.parent).as_posix()
        for path in DEMO_DIR.rglob("*")
        if path.is_file()
    }
    assert {
        f"lrp_desktop_core/demo_data/{name}"
        for name in (
            "demo_net.safetensors",
            "demo_vit.safetensors",
            "samples/samples.json",
            "samples/circle_01.png",
            "samples/circle_01_mask.png",
        )
    } <= bundled
    assert bundled <= names
    assert not any(name.startswith(("tests/", "bench/", "resources/")) for name in names)


def test_the_wheel_declares_the_version_and_both_commands(wheel):
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    assert f"\nVersion: {version('lrp-desktop')}\n" in wheel.read(metadata).decode()
    (entry_points,) = [
        name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")
    ]
    text = wheel.read(entry_points).decode()
    assert "lrp-desktop = lrp_desktop.__main__:main" in text
    assert "lrp-explain = lrp_desktop_core.cli:main" in text
