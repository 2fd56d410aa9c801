"""The LightningModule's own mechanics, in process on tiny networks (a random-weight VGG, on purpose: these tests
check gradient clipping and logging, not what the weights see)."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from impasto.losses import PerceptualLoss
from impasto.system import LossProgressBar, StyleTransferSystem
from impasto.transformer import TransformerConfig, TransformerNet
from impasto.vgg import LossNetwork


def tiny_system() -> StyleTransferSystem:
    torch.manual_seed(0)
    loss = PerceptualLoss(LossNetwork(["relu1_1", "relu2_2"], weights="random"), {"relu2_2": 1.0},
                          {"relu1_1": 1.0}, 1.0, 1.0, 1.0)
    loss.set_style([torch.rand(1, 3, 32, 32)])
    return StyleTransferSystem(TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1)), loss, 1e-3)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_grad_norm_is_the_norm_before_clipping_and_the_clip_applies(clip):
    system = tiny_system()
    params = list(system.transformer.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    logged = {}
    system.log = lambda name, value, **kwargs: logged.update({name: value})
    system.configure_gradient_clipping(None, clip, "norm")
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    torch.testing.assert_close(logged["grad_norm"], before)
    torch.testing.assert_close(after, before if clip is None else torch.tensor(clip), rtol=1e-4, atol=0)


def test_the_loss_reaches_the_bar_without_a_per_step_progress_bar_metric(tmp_path):
    # Lightning reads every prog_bar metric at the end of every step (a host sync on a GPU); the bar reads the
    # loss itself, only when it refreshes.
    system, bar = tiny_system(), LossProgressBar(refresh_rate=2)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[bar], default_root_dir=tmp_path)
    trainer.fit(system, DataLoader(torch.rand(6, 3, 32, 32), batch_size=2))
    assert trainer.progress_bar_metrics == {}
    assert float(bar.get_metrics(trainer, system)["loss"]) == pytest.approx(system.last_loss.item(), rel=1e-3)
