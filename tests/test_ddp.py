"""DDP on the CPU (gloo), as a user runs it: train.py in a subprocess, which Lightning relaunches once per rank."""

import pytest
import torch

from conftest import run
from impasto.style import read_meta
from impasto.training.data import EMBEDDED_PREVIEW

pytestmark = pytest.mark.slow  # trains or runs a script in a subprocess

TINY = ["experiment=quickstart", "data.size=64", "data.num_workers=0", "style.size=96", "model.widths=[8,16,16]",
        "model.residual_blocks=1", "trainer.log_every_n_steps=1", "log.preview_every_n_steps=0",
        "trainer.enable_progress_bar=false", "trainer.precision=32-true", "trainer.accelerator=cpu"]
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


def train(root, *overrides: str):
    result = run("train.py", *TINY, *overrides, f"paths.checkpoint_dir={root / 'ck'}", f"hydra.run.dir={root / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(root / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def transformer_state(ckpt: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights and the step's gradients (Adam's first moment after one step is (1 - β1)·g) in one order."""
    names = [k for k in ckpt["state_dict"] if k.startswith("transformer.")]
    moments = ckpt["optimizer_states"][0]["state"]
    return [ckpt["state_dict"][n] for n in names], [moments[i]["exp_avg"] / 0.1 for i in range(len(names))]


def test_two_processes_at_batch_b_step_as_one_process_at_batch_2b(tmp_path):
    # The sampler hands rank r the r-th half of the same 2b images, each term of the loss is a mean over images,
    # and DDP averages the gradients: the step must be the same up to float rounding.
    split = train(tmp_path / "ddp", "trainer.max_steps=1", "data.batch_size=2", *DDP)
    whole = train(tmp_path / "one", "trainer.max_steps=1", "data.batch_size=4", "trainer.devices=1")
    (w_split, g_split), (w_whole, g_whole) = transformer_state(split), transformer_state(whole)
    scale = max(g.abs().max() for g in g_whole)
    for a, b in zip(g_split, g_whole):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale)
    # Adam's first step moves a weight by about lr·sign(g) whatever |g|: where the gradient is at rounding level
    # (|g| < 1e-5 of the largest), its sign, and so the weight, may differ. Everywhere else: equal within 1e-6.
    compared = 0
    for wa, wb, g in zip(w_split, w_whole, g_whole):
        clear = g.abs() > 1e-5 * scale
        torch.testing.assert_close(wa[clear], wb[clear], rtol=0, atol=1e-6)
        compared += int(clear.sum())
    assert compared > 0.99 * sum(g.numel() for g in g_whole)


def test_a_ddp_run_resumes_on_one_process(tmp_path):
    first = train(tmp_path / "ddp", "trainer.max_steps=2", "data.batch_size=2", *DDP)
    assert first["global_step"] == 2
    resumed = train(tmp_path / "one", "trainer.max_steps=4", "data.batch_size=2", "trainer.devices=1",
                    f"ckpt_path={tmp_path / 'ddp' / 'run' / 'checkpoints' / 'last.ckpt'}")
    assert resumed["global_step"] == 4
    assert read_meta(tmp_path / "one" / "ck" / "starry_night.quickstart.safetensors")["steps"] == 4


@pytest.mark.parametrize("watch", ["train", "heldout"])
def test_every_rank_judges_the_plateau_by_the_mean_loss_over_all_ranks(watch, tmp_path):
    # Each rank's own losses are of half the batch: judged alone, the ranks' lrs could part ways. Held out: every
    # rank scores the same photos, with the same weights as one process at twice the batch.
    plateau = ["optim.schedule=plateau", "optim.plateau.window=2", "trainer.max_steps=2",
               f"optim.plateau.watch={watch}", f"data.heldout_dir={EMBEDDED_PREVIEW}"]
    split = train(tmp_path / "ddp", "data.batch_size=2", *DDP, *plateau)
    whole = train(tmp_path / "one", "data.batch_size=4", "trainer.devices=1", *plateau)
    split_watch, whole_watch = (ckpt["lr_schedulers"][0]["lr_lambdas"][0] for ckpt in (split, whole))
    assert split_watch["best"] == pytest.approx(whole_watch["best"], rel=1e-4)
    assert split_watch["watched"] == whole_watch["watched"] == watch
