"""The scripts prepared for a lent GPU (scripts/gpu_checks.sh, scripts/train_styles.sh) run as written: a GPU's few
minutes must not go to a script that no longer matches the commands it calls. Both run here on the CPU."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess

TINY = ["data.size=64", "data.batch_size=2", "data.num_workers=0", "style.size=96", "model.widths=[8,16,16]",
        "model.residual_blocks=1", "trainer.enable_progress_bar=false"]


def bash(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # python3 in the scripts is this interpreter, as in an activated virtual environment
    first = [env.pop("PATH_FIRST")] if "PATH_FIRST" in env else []
    path = os.pathsep.join([*first, str(Path(sys.executable).parent), os.environ["PATH"]])
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env, "PATH": path})


def test_gpu_checks_pass_bench_options_it_accepts(tmp_path):
    # `timeout` stood in for: it records each check's command instead of running it
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "timeout").write_text(f'#!/bin/sh\nshift\necho "$*" >> {tmp_path / "commands"}\n')
    (shim / "timeout").chmod(0o755)
    result = bash("gpu_checks.sh", "stylize", "train", "train_compile", "gatys", "gpu_tests",
                  env={"PATH_FIRST": str(shim), "OUT": str(tmp_path / "out"), "CLIP": "clip.mp4"})
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in (tmp_path / "commands").read_text().splitlines()]
    assert [c[1:3] for c in commands] == [["scripts/bench.py", "stylize"], ["scripts/bench.py", "train"],
                                          ["scripts/bench.py", "train"], ["scripts/bench.py", "gatys"],
                                          ["-m", "pytest"]]
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    parsed = [bench.parser().parse_args(command[2:]) for command in commands[:4]]  # an option bench.py lacks exits
    assert [args.what for args in parsed] == ["stylize", "train", "train", "gatys"]
    assert (parsed[0].style, parsed[0].video) == ("starry_night", "clip.mp4")
    unknown = bash("gpu_checks.sh", "nope", env={"PATH_FIRST": str(shim), "OUT": str(tmp_path / "out")})
    assert unknown.returncode == 2 and "unknown check nope" in unknown.stderr


def test_train_styles_trains_exports_and_scores_each_style(tmp_path):
    split = run("scripts/split_photos.py", str(ROOT / "src" / "impasto" / "assets" / "photos"),
                str(tmp_path / "photos"), "--every", "6")
    assert split.returncode == 0, split.stderr
    out = tmp_path / "out"
    env = {"OUT": str(out), "RECIPE": " ".join(TINY), "COMPARE": "--size 48 --steps 0", "COMPARE_PHOTOS": "2",
           "MINUTES": "5"}
    result = bash("train_styles.sh", str(tmp_path / "photos"), "2", "starry_night", "udnie", env=env)
    assert result.returncode == 0, result.stderr
    for style in ("starry_night", "udnie"):
        assert (out / "styles" / f"{style}.safetensors").is_file()
        rows = json.loads((out / "compare" / style / "compare.json").read_text())["rows"]
        assert [r["method"] for r in rows] == ["fast", "fast"] and all(r["total"] > 0 for r in rows)
    assert [json.loads(line)["style"] for line in (out / "train_times.jsonl").read_text().splitlines()] == [
        "starry_night", "udnie"]
    assert not list(out.glob("runs/*/checkpoints"))  # the Lightning checkpoints are removed; the exports stay
    failing = bash("train_styles.sh", str(tmp_path / "photos"), "2", "no_such_painting", env=env)
    assert failing.returncode == 1 and "failed: no_such_painting" in failing.stderr
