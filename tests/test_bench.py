"""bench.py goes through what users run (train.py's own construction, stylize.py's own pass and command): smoke
runs on the CPU, tiny networks and sizes. Its numbers are measured on a GPU, never asserted here."""

import json

import pytest

from conftest import ROOT, run
from impasto.training.run import resolve_precision

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
    expected = resolve_precision("auto", "cpu")  # bf16 on a CPU with AMX, fp32 elsewhere
    assert line["gflop_per_image"] > 0 and line["rows"][0]["precision"] == expected
    assert line["quality"]["fp32"]["precision"] == "32-true" and line["quality"]["fast"]["precision"] == expected
    if expected == "32-true":  # the same run twice
        assert line["quality"]["fast"]["final_loss"] == line["quality"]["fp32"]["final_loss"]


def test_stylize_bench_reports_every_mode_and_size(tmp_path):
    result = run("scripts/bench.py", "stylize", "--device", "cpu", "--sizes", "48,64", "--frame-batches", "2",
                 "--modes", "fp32,bf16+cl,thin,thin+bf16,fp32+noedge", "--warmup", "1", "--iters", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(line["modes"]) == ["fp32", "bf16+cl", "thin", "thin+bf16", "fp32+noedge"]
    assert 0 < line["thin_bound_s"]["64"] < line["bound_s"]["64"] / 4  # the thin network: a sixth of the work
    for row in line["modes"].values():
        assert row["48"]["batch1_per_s"] > 0 and row["64"]["best_batch"] in (1, 2)
    assert line["modes"]["fp32"]["psnr_vs_first_mode_db_48"] is None  # the reference itself
    assert all("psnr_vs_first_mode_db_48" not in line["modes"][m] for m in ("thin", "thin+bf16"))  # other networks
    assert line["modes"]["bf16+cl"]["psnr_vs_first_mode_db_48"] > 30
    noedge = line["modes"]["fp32+noedge"]["psnr_vs_first_mode_db_48"]  # the same network without its edge margin
    assert noedge is not None and noedge < 80


def test_startup_bench_times_stylize_as_a_user_starts_it():
    result = run("scripts/bench.py", "startup", "--iters", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < line["help_s"] < line["first_512_photo_s"] and line["first_512_photo_onnx_s"] > 0
