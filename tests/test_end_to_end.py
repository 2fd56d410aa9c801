"""train.py and stylize.py run as a user runs them (subprocesses), on tiny data, asserting on the files they write."""

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, run

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess

TINY = ["experiment=quickstart", "data.size=64", "data.batch_size=2", "data.num_workers=0", "style.size=96",
        "model.widths=[8,16,16]", "model.residual_blocks=1", "trainer.max_steps=4", "trainer.log_every_n_steps=1",
        "trainer.checkpoint_every_n_steps=2", "log.preview_every_n_steps=2", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    result = run("train.py", *TINY, "stability.weight=0.5", "average=0.5", f"paths.checkpoint_dir={tmp / 'ck'}",
                 f"hydra.run.dir={tmp / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


def test_logs_scalars_images_and_hparams(trained):
    tmp, _ = trained
    events = EventAccumulator(str(tmp / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/content", "loss/style", "loss/tv", "loss/stability", "loss/total", "perf/images_per_s",
            "grad_norm"} <= scalars, scalars
    assert any(tag.startswith("lr") for tag in scalars), scalars
    assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars("loss/total"))
    images = events.Images("preview/content_and_stylized")
    assert [e.step for e in images][:1] == [0] and images[-1].step == 4  # untrained baseline ... final grid
    gains = events.Scalars("preview/noise_gain")  # logged with every grid
    assert [e.step for e in gains] == [e.step for e in images] and all(e.value > 0 for e in gains)
    hparams = (tmp / "run" / "tb" / "hparams.yaml").read_text()
    assert "style_weight" in hparams and "starry_night" in hparams


def test_lightning_checkpoint_is_resumable_and_has_no_vgg(trained):
    tmp, _ = trained
    state = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("transformer.") for k in state)
    assert not any(k.startswith("loss.network.") for k in state)
    resumed = run("train.py", *TINY, "trainer.max_steps=6", f"ckpt_path={tmp / 'run' / 'checkpoints' / 'last.ckpt'}",
                  f"paths.checkpoint_dir={tmp / 'ck2'}", f"hydra.run.dir={tmp / 'run2'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from impasto.style import read_meta

    meta = read_meta(tmp / "ck2" / "starry_night.quickstart.safetensors")
    assert meta["steps"] == 6
    # named the same on every machine: the shipped painting by its asset name, the data by its name
    assert meta["style_image"] == "asset:styles/starry_night.jpg" and meta["data"] == "embedded photos (19 images)"


def test_the_export_holds_the_average_of_the_weights_and_the_checkpoint_the_last(trained):
    from impasto.style import load_style, read_meta

    tmp, _ = trained
    export = tmp / "ck" / "starry_night.quickstart.safetensors"
    state = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    exported = load_style(export)[0].state_dict()
    for name, value in state["impasto_average"]["weights"].items():
        assert torch.equal(exported[name], value), name
        assert not torch.equal(exported[name], state["state_dict"][f"transformer.{name}"]), name
    assert read_meta(export)["average"] == {"decay": 0.5, "steps": 4}


def test_export_script_reproduces_the_trainings_export(trained, tmp_path):
    from conftest import assert_user_error
    from impasto.style import load_style, read_meta

    tmp, _ = trained
    out = tmp_path / "again.safetensors"
    result = cli("export", str(tmp / "run" / "checkpoints" / "last.ckpt"), str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    ours, theirs = load_style(out), load_style(tmp / "ck" / "starry_night.quickstart.safetensors")
    x = torch.rand(1, 3, 24, 24)
    torch.testing.assert_close(ours[0](x), theirs[0](x))
    assert {k: v for k, v in read_meta(out).items()} == theirs[1]
    assert_user_error(cli("export", str(tmp / "run" / "checkpoints" / "last.ckpt"), str(out)), "--overwrite")
    assert_user_error(cli("export", str(out), str(tmp_path / "x.safetensors")), "is a style file", "--painting")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    assert_user_error(cli("export", str(tmp_path / "notes.ckpt"), str(tmp_path / "x.safetensors")),
                      "not a train.py checkpoint")


def test_exported_style_stylizes_through_the_cli(trained, photo, tmp_path):
    tmp, result = trained
    ckpt = tmp / "ck" / "starry_night.quickstart.safetensors"
    assert ckpt.is_file() and ckpt.stat().st_size < 2_000_000
    out = tmp_path / "styled.png"
    styled = run("stylize.py", "--style", str(ckpt), str(photo), "-o", str(out))
    assert styled.returncode == 0, styled.stderr
    with Image.open(out) as im, Image.open(photo) as src:
        assert im.size == src.size
    many = run("stylize.py", "--style", str(ckpt), str(photo.parent), "--out-dir", str(tmp_path / "many"),
               "--size", "20")
    assert many.returncode == 0, many.stderr
    with Image.open(tmp_path / "many" / photo.name) as im:
        assert max(im.size) == 20


def test_compiled_training_exports_a_plain_style(tmp_path, photo):
    # nn.Module.compile() in place: no `_orig_mod.` prefixes in the export, which stylize.py loads as any other.
    # The peak term's hook sits inside the compiled transformer: its term must still be taken on every step.
    result = run("train.py", *TINY, "trainer.max_steps=2", "compile=true", "peak.weight=1", "peak.bound=0.01",
                 f"paths.checkpoint_dir={tmp_path / 'ck'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/peak")] == [0, 1]
    assert all(e.value > 0 for e in events.Scalars("loss/peak"))
    ckpt = tmp_path / "ck" / "starry_night.quickstart.safetensors"
    styled = run("stylize.py", "--style", str(ckpt), str(photo), "-o", str(tmp_path / "styled.png"))
    assert styled.returncode == 0, styled.stderr


def test_ddp_two_processes_export_once(tmp_path):
    # Lightning's DDP relaunches sys.argv; on CPU (gloo) this checks the Hydra relaunch and the rank-0 export.
    result = run("train.py", *TINY, "trainer.max_steps=2", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.strategy=ddp", "trainer.precision=32-true", f"paths.checkpoint_dir={tmp_path / 'ck'}",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["starry_night.quickstart.safetensors"]
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert "loss/total" in events.Tags()["scalars"]


def test_init_from_starts_from_an_exported_style(trained, tmp_path):
    from impasto.style import load_style, read_meta

    tmp, _ = trained
    source = tmp / "ck" / "starry_night.quickstart.safetensors"
    # lr 1e-30 (0 is refused): the run's export must hold the source's weights, which a fresh network would not
    with_bar = [arg for arg in TINY if not arg.startswith("trainer.enable_progress_bar")]
    result = run("train.py", *with_bar, "trainer.max_steps=1", "optim.lr=1e-30", f"init_from={source}",
                 f"paths.checkpoint_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss=" in result.stdout  # LossProgressBar shows the loss, which is not a per-step prog_bar metric
    tuned = tmp_path / "starry_night.quickstart.safetensors"
    for a, b in zip(load_style(source)[0].state_dict().values(), load_style(tuned)[0].state_dict().values()):
        torch.testing.assert_close(a, b)
    assert read_meta(tuned)["init_from"] == source.name  # the name only: no machine path travels in a style


def test_a_sweep_over_styles_and_loss_weights_runs_and_exports_every_job(tmp_path):
    from impasto.style import read_meta

    tiny = [a for a in TINY if not a.startswith("trainer.max_steps")] + ["trainer.max_steps=1"]
    styles = run("train.py", "-m", "style=starry_night,the_scream", *tiny, f"paths.checkpoint_dir={tmp_path / 'a'}",
                 f"hydra.sweep.dir={tmp_path / 'sweep_a'}")
    assert styles.returncode == 0, styles.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["starry_night.quickstart.safetensors",
                                                                   "the_scream.quickstart.safetensors"]
    weights = run("train.py", "-m", "loss.style_weight=1,4", *tiny, f"paths.checkpoint_dir={tmp_path / 'b'}",
                  f"hydra.sweep.dir={tmp_path / 'sweep_b'}")
    assert weights.returncode == 0, weights.stderr[-3000:]
    exports = sorted((tmp_path / "b").iterdir())  # one name per job, each recording its own weight
    assert [p.name for p in exports] == [f"starry_night.quickstart-{job}.safetensors" for job in (0, 1)]
    assert [read_meta(p)["loss"]["style_weight"] for p in exports] == [1, 4]
