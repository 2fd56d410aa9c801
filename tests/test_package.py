"""impasto as a user of the ecosystem installs it: a wheel built from the project's tracked files, installed in a new
venv and run from a folder outside the checkout, through its console commands."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT


def tracked_copy(target: Path) -> Path:
    """The files git tracks (what a release is built from), without this checkout's build leftovers or data."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source, copy = ROOT / name, target / name
        if not os.path.lexists(source):  # deleted in the working tree, not yet in git
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy, follow_symlinks=False)
    return target


def command(venv: Path, name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(venv / "bin" / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_wheel_in_a_new_venv_trains_and_stylizes_through_its_console_commands(tmp_path):
    source = tracked_copy(tmp_path / "source")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("impasto-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("impasto/conf/train.yaml", "impasto/conf/style/starry_night.yaml",
                    "impasto/assets/styles/paintings.safetensors", "impasto/assets/styles/starry_night.safetensors",
                    "impasto/assets/styles/the_scream.safetensors",
                    "impasto/assets/styles/great_wave.safetensors",
                    "impasto/assets/styles/shipwreck_minotaur.safetensors",
                    "impasto/assets/styles/thin/paintings.safetensors",
                    "impasto/assets/photos/baboon.jpg",
                    "impasto/web/static/index.html"):
        assert shipped in names, shipped

    # The new venv takes torch and the other dependencies from this one's site-packages (a path, read-only), and
    # impasto from the wheel alone: this venv's editable install of the checkout is not on its path.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    command(venv, "pip", "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "src" / "impasto" / "assets" / "preview" / "chelsea.jpg", work / "cat.jpg")
    where = command(venv, "python", "-c", "import impasto; print(impasto.__file__)", cwd=work).stdout
    assert Path(where.strip()).is_relative_to(venv), where

    trained = command(venv, "impasto-train", "experiment=quickstart", "trainer.max_steps=2",
                      "log.preview_every_n_steps=0", cwd=work)
    export = work / "checkpoints" / "starry_night.quickstart.safetensors"
    assert export.is_file() and "impasto-stylize --style" in trained.stderr + trained.stdout
    assert (next((work / "outputs" / "starry_night").iterdir()) / "train.log").is_file()

    command(venv, "impasto-stylize", "--style", str(export), "cat.jpg", "-o", "quickstart.jpg", "--size", "96",
            cwd=work)
    command(venv, "impasto-stylize", "--style", "starry_night", "cat.jpg", "-o", "shipped.jpg", "--size", "96",
            cwd=work)
    assert Image.open(work / "quickstart.jpg").size == Image.open(work / "shipped.jpg").size == (96, 64)
    for name, answer in [("impasto-gatys", "solver: adam, lbfgs"), ("impasto-compare", "usage:"),
                         ("impasto-export", "usage:"), ("impasto-flicker", "usage:"), ("impasto-artifacts", "usage:"),
                         ("impasto-web", "usage:")]:
        assert answer in command(venv, name, "--help", cwd=work).stdout, name
