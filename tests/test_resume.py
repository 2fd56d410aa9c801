"""Nothing lost in training: a killed run resumes to the very weights of an uninterrupted one (the exports hold the
average of every step's weights, so each step's must match); SIGTERM and Ctrl+C stop with a checkpoint and a partial
export; a diverged run exports nothing; bad photos are counted, not fatal. train.py runs as a user runs it, in a
subprocess, on tiny settings."""

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, assert_user_error, run
from impasto.style import load_style, read_meta

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess

STEPS = 30
TINY = ["experiment=quickstart", "data.size=64", "data.batch_size=2", "style.size=96", "model.widths=[8,16,16]",
        "model.residual_blocks=1", "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=4",
        "log.preview_every_n_steps=0", "trainer.enable_progress_bar=false", "stability.weight=0.5",
        f"trainer.max_steps={STEPS}", "average=0.9"]
EXPORT = "starry_night.quickstart.safetensors"


def paths(root) -> list[str]:
    return [f"paths.checkpoint_dir={root / 'ck'}", f"hydra.run.dir={root / 'run'}"]


def weights(path) -> dict[str, torch.Tensor]:
    return load_style(path)[0].state_dict()


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:  # bit for bit: the same data, noise and optimizer state, in the same order
        assert torch.equal(wa[key], wb[key]), (key, (wa[key] - wb[key]).abs().max())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    result = run("train.py", *TINY, "data.num_workers=2", *paths(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_meta(root / "ck" / EXPORT)["average"] == {"decay": 0.9, "steps": STEPS}
    return root / "ck" / EXPORT


def start(root, *extra: str) -> subprocess.Popen:
    """train.py in its own process group, as a shell starts a foreground job (workers included)."""
    return subprocess.Popen([sys.executable, "train.py", *TINY, "data.num_workers=2", *paths(root), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for_first_checkpoint(process: subprocess.Popen, ckpt) -> None:
    deadline = time.monotonic() + 120
    while not ckpt.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)


def checkpoint_step(ckpt) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


def test_a_run_killed_at_a_random_moment_resumes_to_the_same_weights(uninterrupted, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    process = start(tmp_path)
    wait_for_first_checkpoint(process, ckpt)
    time.sleep(random.Random(STEPS).uniform(0, 0.5))  # after the first checkpoint, mid-step or mid-write: seeded
    assert process.poll() is None, "the run ended before the kill: this test needs a slower run (more STEPS)"
    os.killpg(process.pid, signal.SIGKILL)  # the process and its data workers, as a node failure would
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(ckpt)
    assert 4 <= killed_at < STEPS and killed_at % 4 == 0
    assert not (tmp_path / "ck" / EXPORT).exists()
    assert sorted(p.name for p in ckpt.parent.iterdir()) in (["last.ckpt"], [".last.ckpt.tmp", "last.ckpt"])

    resumed = run("train.py", *TINY, "data.num_workers=2", *paths(tmp_path), f"ckpt_path={ckpt}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_meta(tmp_path / "ck" / EXPORT)["steps"] == STEPS
    assert_same_weights(tmp_path / "ck" / EXPORT, uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_with_a_checkpoint_and_a_partial_export_and_the_run_resumes(signum, uninterrupted, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    process = start(tmp_path)
    wait_for_first_checkpoint(process, ckpt)
    # SIGTERM to the trainer alone (a cluster's scheduler); SIGINT to the whole group, workers too (Ctrl+C)
    process.send_signal(signum) if signum == signal.SIGTERM else os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    stopped_at = checkpoint_step(ckpt)
    assert f"{signal.Signals(signum).name}: stopped at step {stopped_at} of {STEPS}" in stderr
    assert 4 <= stopped_at < STEPS  # the checkpoint holds the step it stopped at, not the last periodic one
    partial = tmp_path / "ck" / f"starry_night.quickstart.partial-step{stopped_at}.safetensors"
    assert str(partial) in stderr and read_meta(partial)["steps"] == stopped_at and read_meta(partial)["partial"]
    assert not (tmp_path / "ck" / EXPORT).exists()

    printed = re.search(r"run the same command with (ckpt_path=\S+) added", stderr)  # the command it prints resumes
    assert printed and printed.group(1) == f"ckpt_path={ckpt}", stderr[-3000:]
    resumed = run("train.py", *TINY, "data.num_workers=2", *paths(tmp_path), printed.group(1))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path / "ck" / EXPORT, uninterrupted)


def test_a_second_ctrl_c_quits_at_once_without_finishing_the_step(tmp_path):
    """Steps of seconds (full widths, 256 px): the second Ctrl+C comes mid-step, and the run ends there, writing
    nothing more."""
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    process = start(tmp_path, "model.widths=[32,64,128]", "model.residual_blocks=5", "data.size=256",
                    "trainer.checkpoint_every_n_steps=1", "trainer.max_steps=1000")
    wait_for_first_checkpoint(process, ckpt)
    saved = ckpt.stat().st_mtime_ns
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    said = stdout + stderr
    assert "stopping after this step" in said and "stopped at step" not in said, said[-3000:]
    assert process.returncode in (130, -signal.SIGINT), (process.returncode, said[-3000:])
    assert ckpt.stat().st_mtime_ns == saved and not list((tmp_path / "ck").glob("*.safetensors"))


def test_a_diverging_run_stops_in_one_line_and_exports_nothing(tmp_path):
    result = run("train.py", *TINY, "data.num_workers=0", "optim.lr=1e4", "trainer.gradient_clip_val=null",
                 "trainer.max_steps=200", *paths(tmp_path))
    assert_user_error(result, "training diverged", "not finite", "optim.lr=10000.0")
    assert not (tmp_path / "ck").exists()


def test_a_training_folder_with_bad_files_trains_through_and_counts_them(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(18):
        Image.effect_noise((80, 72), 40 + 5 * i).convert("RGB").save(photos / f"photo{i:02}.jpg")
    (photos / "notes.jpg").write_text("a text file named .jpg")
    whole = (photos / "photo00.jpg").read_bytes()
    (photos / "photo00.jpg").write_bytes(whole[: len(whole) // 2])  # a truncated download: 2 bad of 19
    result = run("train.py", *TINY, "data=folder", f"data.root={photos}", "data.num_workers=2",
                 "trainer.max_steps=40", *paths(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "skipping unreadable training image" in line]
    assert len(warnings) == 2, warnings  # once per file, however often it is drawn (about 4 times each here)
    assert any("notes.jpg" in w for w in warnings) and any("photo00.jpg" in w and "truncated" in w for w in warnings)
    assert "2 unreadable training image(s) were passed over" in output
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("data/unreadable_images")[-1].value == 2
    assert (tmp_path / "ck" / EXPORT).is_file()


def test_a_training_folder_of_mostly_bad_files_stops_in_one_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        (photos / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not really")
    for i in range(4):
        Image.effect_noise((80, 72), 50).convert("RGB").save(photos / f"photo{i}.jpg")
    result = run("train.py", *TINY, "data=folder", f"data.root={photos}", "data.num_workers=2", *paths(tmp_path))
    assert_user_error(result, "unreadable", "broken")  # one line, also from inside a DataLoader worker
    assert not (tmp_path / "ck").exists()
