"""impasto-gatys and impasto-compare as a user runs them, on tiny sizes."""

import csv
import json
import time

import pytest
from PIL import Image

from conftest import assert_user_error, cli, tiny_style

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess

TINY = ["size=40", "style.size=64", "log_every_n_steps=2"]


def test_gatys_writes_image_tensorboard_and_metrics(tmp_path, photo):
    out, metrics = tmp_path / "out.png", tmp_path / "m.json"
    started = time.perf_counter()
    result = cli("gatys", f"content={photo}", "steps=4", *TINY, f"output={out}", f"metrics={metrics}",
                 f"hydra.run.dir={tmp_path / 'run'}", "preserve_color=true")
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as im:
        assert max(im.size) == 40
    m = json.loads(metrics.read_text())
    assert m["steps"] == 4 and m["final_loss"]["total"] > 0
    phases = m["timings"]  # what bench.py gatys reports: the run's phases, adding up to its time
    assert list(phases) == ["setup_s", "first_step_s", "steps_s", "finish_s"] and min(phases.values()) >= 0
    assert phases["steps_s"] > 0 and phases["setup_s"] > 0
    assert sum(phases.values()) < wall  # the run's own clock inside the process's, which adds start-up and imports
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # atomic: no temporary file left


def test_reconstruction_and_multiscale_and_adam(tmp_path, photo):
    out = tmp_path / "style_only.png"
    result = cli("gatys", f"content={photo}", "steps=2", *TINY, "reconstruct=style", "layer=relu2_1",
                 "init=noise", "solver=adam", "scales=[24,40]", f"output={out}", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as im:
        assert max(im.size) == 40


def test_gatys_bad_inputs(tmp_path, photo):
    base = [f"hydra.run.dir={tmp_path / 'r'}", f"output={tmp_path / 'o.png'}", "steps=1", *TINY]
    assert_user_error(cli("gatys", f"content={tmp_path / 'missing.jpg'}", *base), "missing.jpg")
    fake = tmp_path / "fake.png"
    fake.write_text("no image")
    assert_user_error(cli("gatys", f"content={fake}", *base), "fake.png", "not a readable image")
    assert_user_error(cli("gatys", f"content={photo}", f"style.image={fake}", *base), "fake.png")
    assert_user_error(cli("gatys", f"content={photo}", *base, "steps=-3"), "steps", "-3")
    assert_user_error(cli("gatys", f"content={photo}", *base,
                          f"style.image=[{photo},{photo}]", "style.blend=[1.0]"), "style.blend", "2 style images")
    assert_user_error(cli("gatys", f"content={photo}", *base, "reconstruct=content"), "init=noise")
    assert_user_error(cli("gatys", f"content={photo}", *base, "device=cpu", "cuda_graph=true"),
                      "CUDA graphs need a CUDA device")


def test_compare_table_has_its_rows_and_columns(tmp_path, photo, tiny_ckpt):
    out_dir = tmp_path / "cmp"
    other = tmp_path / "other.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(other)
    result = cli("compare", "--style", str(tiny_ckpt), str(photo), str(other), "--size", "32", "--steps",
                 "2,4", "--out-dir", str(out_dir), "--painting-image", str(photo))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out_dir / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["fast", "gatys@2", "gatys@4"] * 2
    report = json.loads((out_dir / "compare.json").read_text())
    fast_mean = next(r for r in report["means"] if r["method"] == "fast")
    assert fast_mean["image"] == "mean of 2" and "mean of 2" in report["matched"] and "mean of 2" in result.stdout
    assert report["gatys_precision"] == "fp32"  # by default on every machine, wherever bf16 would be faster
    assert fast_mean["total"] == pytest.approx((float(rows[0]["total"]) + float(rows[3]["total"])) / 2, abs=1e-4)
    assert set(rows[0]) == {"image", "method", "content", "style", "tv", "total", "seconds"}
    assert all(float(r["total"]) > 0 for r in rows)
    assert float(rows[2]["total"]) < float(rows[1]["total"])  # more Gatys steps, lower loss
    assert "gatys@4" in result.stdout and photo.name in json.loads((out_dir / "compare.json").read_text())["matched"]
    with Image.open(out_dir / "panel_photo.png") as panel:
        assert panel.width > 4 * 32  # content | fast | two Gatys snapshots


def test_compare_reads_gatys_from_its_cache_the_second_time(tmp_path, photo, tiny_ckpt):
    cache = tmp_path / "cache"
    args = ["--style", str(tiny_ckpt), str(photo), "--size", "32", "--steps", "2,3", "--painting-image", str(photo),
            "--cache", str(cache)]
    first = cli("compare", *args, "--out-dir", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr[-2000:]
    kept = list(cache.glob("*.pt"))
    assert len(kept) == 1
    written = kept[0].stat().st_mtime_ns
    second = cli("compare", *args, "--out-dir", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert kept[0].stat().st_mtime_ns == written  # read, not optimized and written again
    rows = [json.loads((tmp_path / d / "compare.json").read_text())["rows"] for d in "ab"]
    assert [r["method"] for r in rows[0]] == ["fast", "gatys@2", "gatys@3"]
    assert [r["total"] for r in rows[0]] == [r["total"] for r in rows[1]]


def test_compare_scores_a_baseline_photo_by_photo_without_gatys(tmp_path, photo, tiny_ckpt):
    other = tmp_path / "other.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(other)
    snapshot = tiny_style(tmp_path / "snapshot.safetensors", "tiny", seed=5)
    out_dir = tmp_path / "ab"
    common = [str(photo), str(other), "--size", "32", "--steps", "0", "--painting-image", str(photo)]
    result = cli("compare", "--style", str(tiny_ckpt), "--baseline", str(snapshot), *common, "--out-dir", str(out_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out_dir / "compare.json").read_text())
    rows = report["rows"]
    assert [r["method"] for r in rows] == ["fast", "baseline"] * 2  # no Gatys row
    diffs = [rows[0]["total"] - rows[1]["total"], rows[2]["total"] - rows[3]["total"]]
    assert diffs[0] != 0 and diffs[1] != 0  # two different networks
    pairs = report["paired"]
    assert pairs["photos"] == 2 and pairs["total"]["mean"] == pytest.approx(sum(diffs) / 2, abs=1e-4)
    assert pairs["total"]["standard_error"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2, abs=1e-4)
    assert "fast − baseline, total:" in result.stdout and "over 2 photos" in result.stdout
    assert report["matched"] == {}
    with Image.open(out_dir / "panel_photo.png") as panel:
        assert panel.width > 3 * 32  # content | fast | baseline

    same = cli("compare", "--style", str(tiny_ckpt), "--baseline", str(tiny_ckpt), *common, "--out-dir",
               str(tmp_path / "same"))
    assert same.returncode == 0, same.stderr[-2000:]
    assert json.loads((tmp_path / "same" / "compare.json").read_text())["paired"]["total"]["mean"] == 0


def test_compare_bad_inputs(tmp_path, photo, tiny_ckpt):
    assert_user_error(cli("compare", "--style", str(tiny_ckpt), str(photo), "--steps", "0,x"), "--steps")
    assert_user_error(cli("compare", "--style", str(tiny_ckpt), str(photo), "--steps", "0,50"), "0 alone")
    another = tiny_style(tmp_path / "another.safetensors", "another", seed=1)
    assert_user_error(cli("compare", "--style", str(tiny_ckpt), "--baseline", str(another), str(photo), "--steps", "0",
                          "--painting-image", str(photo)), "--baseline", "another")
    assert_user_error(cli("compare", "--style", "starry_night", "--baseline", "the_scream", str(photo), "--steps", "0"),
                      "--baseline the_scream", "paints the_scream, not starry_night")
    assert_user_error(cli("compare", "--style", str(photo), str(photo)), "photo.png", "not an impasto")
