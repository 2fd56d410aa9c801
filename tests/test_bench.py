"""bench.py train goes through train.py's own construction (train.build): a smoke run on the CPU, tiny network.
Its numbers are measured on a GPU, never asserted here."""

import json

import pytest

from conftest import ROOT, run

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess


def test_train_bench_times_train_pys_run_and_reports_every_row():
    result = run("scripts/bench.py", "train", "--device", "cpu", "--size", "32", "--batches", "2,4", "--photos",
                 str(ROOT / "src" / "impasto" / "assets" / "photos"), "--workers", "0", "--warmup", "1",
                 "--iters", "2", "--quality-steps", "3", "--override", "model.widths=[4,8,8]",
                 "--override", "model.residual_blocks=1")
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(r["batch"], r["data"]) for r in line["rows"]] == [(2, "synthetic"), (2, "photos"), (4, "synthetic"),
                                                               (4, "photos")]
    assert all(r["images_per_s"] > 0 and r["johnson_recipe_min"] > 0 for r in line["rows"])
    assert line["gflop_per_image"] > 0 and line["rows"][0]["precision"] == "32-true"
    assert line["quality"]["fast"]["final_loss"] == line["quality"]["fp32"]["final_loss"]  # both fp32 on a CPU
