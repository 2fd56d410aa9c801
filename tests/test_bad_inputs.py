"""Bad input: one `error:` line naming the file and what to do, a non-zero exit, no traceback, nothing overwritten."""

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_user_error, cli, run


def test_style_image_missing(tmp_path):
    result = run("train.py", "style=mine", f"style.image={tmp_path / 'nope.jpg'}", f"hydra.run.dir={tmp_path}")
    assert_user_error(result, "nope.jpg", "does not exist")


def test_style_image_not_an_image(tmp_path):
    fake = tmp_path / "painting.jpg"
    fake.write_text("definitely not a JPEG")
    result = run("train.py", "style=mine", f"style.image={fake}", f"hydra.run.dir={tmp_path}")
    assert_user_error(result, "painting.jpg", "not a readable image")


def test_empty_data_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    result = run("train.py", "data=folder", f"data.root={tmp_path / 'photos'}", f"hydra.run.dir={tmp_path / 'r'}",
                 f"paths.checkpoint_dir={tmp_path / 'ck'}")
    assert_user_error(result, "photos", "holds no images")


def test_unknown_style_lists_the_available_ones(tmp_path):
    assert_user_error(run("train.py", "style=mona_lisa"), "mona_lisa", "starry_night")


def test_existing_export_is_not_overwritten(tmp_path):
    (tmp_path / "starry_night.safetensors").write_bytes(b"precious")
    result = run("train.py", f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_user_error(result, "starry_night.safetensors", "export.overwrite=true")
    assert (tmp_path / "starry_night.safetensors").read_bytes() == b"precious"


def test_ckpt_that_is_not_an_impasto_checkpoint(tmp_path, photo):
    other = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    assert_user_error(run("stylize.py", "--style", str(other), str(photo), "-o", str(tmp_path / "o.png")),
                      "model.safetensors", "not an impasto style")


def test_missing_input_image(tmp_path, tiny_ckpt):
    assert_user_error(run("stylize.py", "--style", str(tiny_ckpt), str(tmp_path / "missing.jpg"), "-o",
                          str(tmp_path / "o.png")), "missing.jpg", "does not exist")


def test_output_is_never_overwritten_without_asking(tmp_path, photo, tiny_ckpt):
    ckpt = tiny_ckpt
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert_user_error(run("stylize.py", "--style", str(ckpt), str(photo), "-o", str(out)), "out.png", "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert_user_error(run("stylize.py", "--style", str(ckpt), str(photo), "-o", str(photo)), "is the input itself")


def test_unknown_precision(tmp_path, photo, tiny_ckpt):
    assert_user_error(run("stylize.py", "--style", str(tiny_ckpt), str(photo), "-o", str(tmp_path / "o.png"),
                          "--precision", "fp8"), "fp8", "auto, fp32 or bf16")
    assert not (tmp_path / "o.png").exists()


def test_a_size_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, photo, tiny_ckpt):
    """Not left to the OS, which kills the process without a word once it runs out (an OOM kill, exit 137)."""
    out = tmp_path / "huge.png"
    result = run("stylize.py", "--style", str(tiny_ckpt), str(photo), "-o", str(out), "--size", "1000000")
    assert_user_error(result, "photo.png", "1000000x", "GiB of cpu memory", "pass --size")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    suggested = int(result.stderr.split("pass --size ")[1].split()[0])
    assert 0 < suggested < 1000000


def test_free_memory_is_known_on_this_cpu():
    from impasto.runtime import free_memory

    free = free_memory(torch.device("cpu"))
    assert free is not None and 2**28 < free < 2**50  # between 256 MiB and a petabyte


def test_a_container_memory_limit_counts_as_the_free_memory(tmp_path):
    from impasto.memory import cgroup_headroom

    (tmp_path / "memory.max").write_text("max\n")  # cgroup v2 without a limit
    (tmp_path / "memory.current").write_text("1000\n")
    assert cgroup_headroom(tmp_path) is None
    (tmp_path / "memory.max").write_text("8000\n")
    assert cgroup_headroom(tmp_path) == 7000
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("5000\n")
    (v1 / "memory.usage_in_bytes").write_text("1500\n")
    assert cgroup_headroom(tmp_path / "v1") == 3500


def test_stability_and_peak_settings_are_checked(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}"]
    assert_user_error(run("train.py", "stability.noise=0", *common), "stability.noise")
    assert_user_error(run("train.py", "stability.weight=-1", *common), "stability.weight")
    assert_user_error(run("train.py", "peak.weight=-1", *common), "peak.weight")


def test_init_from_a_network_of_another_shape(tmp_path, tiny_ckpt):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}"]
    assert_user_error(run("train.py", f"init_from={tiny_ckpt}", *common), "init_from", "model.widths")
    assert_user_error(run("train.py", f"init_from={tmp_path / 'none.safetensors'}", *common), "does not exist")


def test_a_folder_with_bad_files_stylizes_every_good_one(tmp_path, tiny_ckpt):
    from PIL import Image

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for i in range(9):
        Image.effect_noise((30, 24), 40).convert("RGB").save(photos / f"p{i}.jpg")
    (photos / "p4b.jpg").write_text("a text file named .jpg, sorted among the photos")
    out.mkdir()
    (out / "p7.jpg").write_bytes(b"an earlier result")
    result = run("stylize.py", "--style", str(tiny_ckpt), str(photos), "--out-dir", str(out))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "p4b.jpg" in errors[0] and "p7.jpg" in errors[1] and "--overwrite" in errors[1]
    assert "8 written, 2 skipped" in result.stderr.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.jpg" for i in range(9))  # nothing partial
    assert (out / "p7.jpg").read_bytes() == b"an earlier result"
    again = run("stylize.py", "--style", str(tiny_ckpt), str(photos), "--out-dir", str(out), "--overwrite")
    assert again.returncode != 0 and "9 written, 1 skipped" in again.stderr


def test_non_finite_weights_are_neither_written_nor_read(tmp_path, photo):
    from impasto.errors import UserError
    from impasto.style import save_style
    from impasto.transformer import TransformerConfig, TransformerNet

    net = TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1))
    with torch.no_grad():
        net.head[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(UserError, match="not finite"):
        save_style(tmp_path / "broken.safetensors", net, {"style": "broken", "steps": 1})
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob(".*"))
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}  # as a diverged export of old would be
    metadata = {"format": "impasto-style", "format_version": "1",
                "meta": '{"style": "broken", "steps": 1, "network": {"widths": [4, 8, 8], "residual_blocks": 1}}'}
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata=metadata)
    assert_user_error(run("stylize.py", "--style", str(tmp_path / "broken.safetensors"), str(photo), "-o",
                          str(tmp_path / "o.png")), "broken.safetensors", "not finite", "diverged")
    assert not (tmp_path / "o.png").exists()


def test_gatys_stops_on_a_non_finite_loss_and_writes_nothing(tmp_path, photo):
    out = tmp_path / "out.png"
    result = cli("gatys", f"content={photo}", "size=32", "steps=5", "solver=adam", "solver.lr=1e30",
                 "log_every_n_steps=1", f"output={out}", f"hydra.run.dir={tmp_path / 'run'}", "style.size=64")
    assert_user_error(result, "not finite", "solver.lr")
    assert not out.exists()


def test_compare_stops_on_a_non_finite_loss(tmp_path, photo):
    from omegaconf import OmegaConf

    from conftest import ROOT
    from impasto.style import save_style
    from impasto.transformer import TransformerConfig, TransformerNet

    net = TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e30)  # finite weights whose output overflows
    loss = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "loss" / "gatys.yaml"))
    ckpt = save_style(tmp_path / "huge.safetensors", net, {"style": "huge", "steps": 1, "loss": loss,
                                                           "style_image": str(photo), "style_size": 64})
    result = cli("compare", "--style", str(ckpt), str(photo), "--size", "32", "--steps", "2",
                 "--out-dir", str(tmp_path / "cmp"))
    assert_user_error(result, "photo.png, fast network", "not finite")


def test_optim_means_trainings_settings_and_is_not_an_option(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}"]
    assert_user_error(run("train.py", "optim=adam", *common), "optim.lr", "solver=adam")
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_cosine_schedule_needs_an_end_and_a_fraction(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", "optim.schedule=cosine"]
    assert_user_error(run("train.py", "trainer.max_steps=-1", *common), "trainer.max_steps")
    assert_user_error(run("train.py", "optim.final_lr_fraction=2", *common), "final_lr_fraction")
    assert_user_error(run("train.py", "optim.schedule=linear", *common[:2]), "constant, cosine or plateau")
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_plateau_schedule_with_settings_that_cannot_work_is_one_line(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", "optim.schedule=plateau"]
    assert_user_error(run("train.py", "optim.plateau.window=0", *common), "optim.plateau.window")
    assert_user_error(run("train.py", "optim.plateau.patience=1.5", *common), "optim.plateau.patience")
    assert_user_error(run("train.py", "optim.plateau.factor=1", *common), "optim.plateau.factor", "more than 1")
    assert_user_error(run("train.py", "optim.plateau.threshold=abc", *common), "optim.plateau.threshold")
    assert_user_error(run("train.py", "optim.plateau.watch=val", *common), "optim.plateau.watch", "train or heldout")
    assert_user_error(run("train.py", "optim.plateau.watch=heldout", *common), "data.heldout_dir")
    assert_user_error(run("train.py", "optim.plateau.watch=heldout", f"data.heldout_dir={tmp_path / 'none'}", *common),
                      "data.heldout_dir", "does not exist")
    assert_user_error(run("train.py", "data.heldout_size=0", *common), "data.heldout_size", "positive whole number")
    teacher_alone = ["loss.content_weight=0", "loss.style_weight=0", "loss.tv_weight=0", "teacher=starry_night"]
    assert_user_error(run("train.py", "optim.plateau.watch=heldout", f"data.heldout_dir={tmp_path}", *teacher_alone,
                          *common), "optim.plateau.watch=heldout", "all 0")
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_trainer_or_model_setting_that_cannot_work_is_one_line(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", "data=embedded"]
    assert_user_error(run("train.py", "+trainer.max_time=00:00:3:00", *common), "trainer settings", "DD:HH:MM:SS")
    assert_user_error(run("train.py", "model.down_kernel=5", *common), "model settings", "down_kernel is 3 or 4")
    assert_user_error(run("train.py", "teacher=nope", *common), "no style named 'nope'")
    assert_user_error(run("train.py", "loss.content_weight=0", "loss.style_weight=0", "loss.tv_weight=0", *common),
                      "all 0: nothing to learn")
    assert not list(tmp_path.glob("*.safetensors"))


def test_training_numbers_that_cannot_train_and_checkpoints_that_cannot_resume_are_one_line(tmp_path):
    common = [f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", "data=embedded"]
    for override, needle in (("optim.lr=-1", "optim.lr must be a positive number"),
                             ("optim.lr=0", "optim.lr must be a positive number"),
                             ("data.batch_size=0", "data.batch_size must be a positive whole number"),
                             ("data.size=0", "data.size must be a positive whole number"),
                             ("data.batch_size=true", "data.batch_size must be a positive whole number, got True"),
                             ("data.size=8", "data.size must be 16 pixels or more"),
                             ("optim.lr=abc", "optim.lr must be a number, got 'abc'"),
                             ("average=1", "average is 0 (export the last weights) or a decay below 1"),
                             ("average=high", "average must be a number, got 'high'"),
                             ("data.bogus=1", "Could not override 'data.bogus'; To append"),
                             ("model=nope", "Available options in 'model': full, thin"),
                             ("trainer.max_steps=[1", "no viable alternative")):
        assert_user_error(run("train.py", override, *common), needle)
    missing = tmp_path / "none.ckpt"
    assert_user_error(run("train.py", f"ckpt_path={missing}", *common), "does not exist")
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    assert_user_error(run("train.py", f"ckpt_path={truncated}", *common), "not a train.py checkpoint")
    import torch

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"transformer.stem.0.weight": torch.zeros(2, 3, 9, 9)}, "global_step": 3}, other)
    assert_user_error(run("train.py", f"ckpt_path={other}", *common), "another network", "step 3")
    assert not list(tmp_path.glob("*.safetensors"))


@pytest.mark.parametrize("scale", ["nan", "inf", "-1", "0"])
def test_a_scale_that_is_not_a_positive_finite_number_is_one_line(tmp_path, photo, scale):
    result = run("stylize.py", "--style", "starry_night", str(photo), "-o", str(tmp_path / "o.png"), "--scale", scale)
    assert_user_error(result, "--scale")
    assert not (tmp_path / "o.png").exists()


def full_disk(tmp_path, kib: int):
    """A tmpfs of `kib` KiB mounted in tmp_path (root only), or a skip that says why; unmounted after."""
    import contextlib
    import os
    import subprocess

    @contextlib.contextmanager
    def mounted():
        folder = tmp_path / "disk"
        folder.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                                               capture_output=True).returncode:
            pytest.skip("mounting a small tmpfs (a full disk) needs root")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)

    return mounted()


def test_a_full_disk_skips_each_output_it_cannot_write_and_leaves_no_partial_file(tmp_path):
    from conftest import ROOT

    with full_disk(tmp_path, 48) as disk:
        result = run("stylize.py", "--style", "udnie", str(ROOT / "src/impasto/assets/preview"), "--out-dir", str(disk),
                     "--size", "256")
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert errors and all("No space left on device" in line for line in errors)
        written = int(result.stderr.split(" written")[0].split()[-1])
        assert f"{written} written, {len(errors)} skipped" in result.stderr and written + len(errors) == 4
        from PIL import Image

        for image in disk.iterdir():  # every file there is whole, and nothing hidden is left behind
            assert not image.name.startswith("."), image
            Image.open(image).load()
    through = run("stylize.py", "--style", "udnie", str(ROOT / "src/impasto/assets/preview/chelsea.jpg"), "-o",
                  str(ROOT / "README.md" / "x.jpg"))
    assert_user_error(through, "README.md is a file, not a folder")


def test_a_cut_off_or_misshapen_style_file_is_one_line(tmp_path, photo):
    import json

    import torch
    from safetensors.torch import save_file

    from impasto.lookup import SHIPPED_STYLES

    data = (SHIPPED_STYLES / "paintings.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    assert_user_error(run("stylize.py", "--style", str(cut), "--painting", "udnie", str(photo), "-o",
                          str(tmp_path / "a.png")), "cut short (truncated)")
    wrong = tmp_path / "wrong.safetensors"
    meta = {"style": "w", "steps": 0, "network": {"widths": [32, 64, 128], "residual_blocks": 5}}
    save_file({"stem.0.weight": torch.zeros(2)}, str(wrong),
              metadata={"format": "impasto-style", "format_version": "1", "meta": json.dumps(meta)})
    assert_user_error(run("stylize.py", "--style", str(wrong), str(photo), "-o", str(tmp_path / "b.png")),
                      "not the weights of the network it describes")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_a_live_ones_stays(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from impasto.files import write_bytes_atomic

    target = tmp_path / "style.safetensors"
    writer = ("import sys, time; from pathlib import Path; from impasto.files import write_atomic; "
              "write_atomic(sys.argv[1], lambda tmp: (Path(tmp).write_bytes(b'half'), time.sleep(600)))")
    dead, alive = (subprocess.Popen([sys.executable, "-c", writer, str(target)]) for _ in range(2))
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(".style.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    try:
        assert len(list(tmp_path.glob(".style.*"))) == 2  # the killed export's leftover is there
        write_bytes_atomic(target, b"whole")
        left = [p.name for p in tmp_path.glob(".style.*")]
        assert left == [n for n in left if f"-{alive.pid}." in n] and len(left) == 1  # the live writer's alone
        assert target.read_bytes() == b"whole"
    finally:
        alive.kill()
        alive.wait()
