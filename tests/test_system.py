"""The LightningModule's own mechanics, in process on tiny networks (a random-weight VGG, on purpose: these tests
check gradient clipping and logging, not what the weights see)."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from impasto.losses import PerceptualLoss
from impasto.training.callbacks import LossProgressBar
from impasto.training.system import CosineDecay, PlateauDrop, StyleTransferSystem
from impasto.transformer import TransformerConfig, TransformerNet
from impasto.vgg import LossNetwork


def tiny_system(paintings: int = 1, **options) -> StyleTransferSystem:
    torch.manual_seed(0)
    loss = PerceptualLoss(LossNetwork(["relu1_1", "relu2_2"], weights="random"), {"relu2_2": 1.0},
                          {"relu1_1": 1.0}, 1.0, 1.0, 1.0)
    loss.set_styles([([torch.rand(1, 3, 32, 32)], None) for _ in range(paintings)])
    config = TransformerConfig(widths=(4, 8, 8), residual_blocks=1, styles=paintings)
    return StyleTransferSystem(TransformerNet(config), loss, **{"lr": 1e-3, **options})


def cosine() -> CosineDecay:
    return CosineDecay(4, final=0.1)


def fit_recording_lr(tmp_path, max_steps: int, ckpt_path=None, save: str | None = None, lr: float = 1e-3,
                     schedule=cosine) -> list[float]:
    system, seen = tiny_system(lr=lr, lr_schedule=schedule() if schedule else None), []
    fit(tmp_path, system, max_steps, ckpt_path, save, seen)
    return seen


def fit(tmp_path, system: StyleTransferSystem, max_steps: int, ckpt_path=None, save: str | None = None,
        seen: list[float] | None = None, callbacks: tuple[pl.Callback, ...] = (), precision: str = "32-true") -> None:
    """Train on 12 random 32 px images, batch 2; `seen` collects each step's lr."""
    seen = [] if seen is None else seen

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, callbacks=[Record(), *callbacks],
                         default_root_dir=tmp_path, precision=precision)
    trainer.fit(system, DataLoader(torch.rand(12, 3, 32, 32), batch_size=2), ckpt_path=ckpt_path)
    if save:
        trainer.save_checkpoint(tmp_path / save)


def test_a_bf16_step_on_the_cpu_runs_in_channels_last_and_goes_on_from_an_fp32_runs_state(tmp_path):
    fit(tmp_path, tiny_system(), 2, save="fp32.ckpt")
    system = tiny_system()
    fit(tmp_path, system, 4, ckpt_path=tmp_path / "fp32.ckpt", precision="bf16-mixed")
    weights = [p for p in system.transformer.parameters() if p.dim() == 4]
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights)
    assert system.trainer.global_step == 4 and torch.isfinite(system.last_loss)
    for weight, state in system.trainer.optimizers[0].state.items():  # the fused step pairs them by memory order
        assert state["exp_avg"].stride() == state["exp_avg_sq"].stride() == weight.stride()


def test_the_cosine_schedule_decays_the_learning_rate_step_by_step_and_resumes_where_it_stopped(tmp_path):
    whole = fit_recording_lr(tmp_path, 6)
    expected = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, 4) / 4))) for s in range(6)]
    assert whole == pytest.approx(expected)  # 1e-3 at the start, 1e-4 from step 4 on
    first = fit_recording_lr(tmp_path, 2, save="two.ckpt")
    assert first + fit_recording_lr(tmp_path, 6, ckpt_path=tmp_path / "two.ckpt") == pytest.approx(whole)


def never_good_enough() -> PlateauDrop:
    """Windows of 2 steps, each of which must beat the best by 99 %: every window after the first drops the lr."""
    return PlateauDrop(window=2, threshold=0.99, patience=1, factor=2, floor=0.25)


def test_the_plateau_schedule_divides_the_learning_rate_when_the_loss_stalls_and_resumes_mid_window(tmp_path):
    whole = fit_recording_lr(tmp_path, 10, schedule=never_good_enough)
    # the first window sets the best; each later one divides the lr by 2, down to the floor (a quarter)
    assert whole == pytest.approx([1e-3] * 4 + [5e-4] * 2 + [2.5e-4] * 4)
    first = fit_recording_lr(tmp_path, 3, save="three.ckpt", schedule=never_good_enough)  # a window half done
    resumed = fit_recording_lr(tmp_path, 10, ckpt_path=tmp_path / "three.ckpt", schedule=never_good_enough)
    assert first + resumed == pytest.approx(whole)
    fit_recording_lr(tmp_path, 3, save="constant.ckpt", schedule=None)  # a sitting that takes the schedule up
    switched = fit_recording_lr(tmp_path, 10, ckpt_path=tmp_path / "constant.ckpt", schedule=never_good_enough)
    assert switched == pytest.approx([1e-3] * 4 + [5e-4] * 2 + [2.5e-4])  # its windows count from the resume


def test_a_schedule_taken_up_at_a_resume_keeps_its_dropped_rate_at_the_next_resume(tmp_path):
    """A constant-rate sitting's checkpoint has no schedule in it; the sitting that takes the plateau schedule up drops
    the rate, and the next one goes on at the dropped rate (or at a new lr times the same factor) from its first step,
    not at the base lr for a step."""
    fit_recording_lr(tmp_path, 3, save="constant.ckpt", schedule=None)
    fit_recording_lr(tmp_path, 8, ckpt_path=tmp_path / "constant.ckpt", save="dropped.ckpt", schedule=never_good_enough)
    same = fit_recording_lr(tmp_path, 10, ckpt_path=tmp_path / "dropped.ckpt", schedule=never_good_enough)
    assert same == pytest.approx([5e-4, 2.5e-4])  # as the switched run of the test above, steps 8 and 9
    lower = fit_recording_lr(tmp_path, 10, ckpt_path=tmp_path / "dropped.ckpt", lr=1e-4, schedule=never_good_enough)
    assert lower == pytest.approx([5e-5, 2.5e-5])


def test_a_resumed_run_keeps_its_own_plateau_settings_not_the_checkpoints(tmp_path):
    fit_recording_lr(tmp_path, 3, save="three.ckpt", schedule=never_good_enough)  # windows of 2; the second half done

    def longer() -> PlateauDrop:
        return PlateauDrop(window=4, threshold=0.99, patience=1, factor=2, floor=0.25)

    resumed = fit_recording_lr(tmp_path, 10, ckpt_path=tmp_path / "three.ckpt", schedule=longer)
    # the open window runs to 4 steps (steps 2-5), the next to step 9; windows of 2 would have dropped at step 4
    assert resumed == pytest.approx([1e-3] * 3 + [5e-4] * 4)


def test_the_plateau_watch_counts_progress_by_the_threshold_waits_out_its_patience_and_restarts_at_a_new_size():
    watch = PlateauDrop(window=2, threshold=0.1, patience=2, factor=10, floor=0.01)

    def window(loss: float, size: int = 256) -> bool:
        assert not watch.add(torch.tensor(loss), size)
        assert watch.add(torch.tensor(float("nan")), size)  # a non-finite step is left out of the mean
        return watch.close((watch.total / watch.finite).item())

    assert not window(3.0) and not window(2.0)  # progress: the best is 2.0
    assert not window(1.9) and watch.bad == 1  # 5 % lower is not 10 %
    assert window(1.85) and watch.scale == pytest.approx(0.1)  # the second window in a row without progress
    assert not window(1.7) and watch.best == pytest.approx(1.7)  # 15 % below 2.0: progress at the new rate
    assert not window(2.5, size=128) and watch.best == pytest.approx(2.5)  # a new crop size: a fresh watch
    assert watch.scale == pytest.approx(0.1)  # ... at the rate reached
    assert not window(2.5, size=128) and window(2.5, size=128) and watch.scale == pytest.approx(0.01)
    assert not any(window(2.5, size=128) for _ in range(4)) and watch.scale == pytest.approx(0.01)  # the floor
    watch.watch = "heldout"  # another measure (a resumed run's setting): a fresh watch too
    assert not window(9.0, size=128) and watch.best == pytest.approx(9.0) and watch.watched == "heldout"


def heldout_system(paintings: int, threshold: float) -> StyleTransferSystem:
    watch = PlateauDrop(window=2, threshold=threshold, patience=1, factor=2, floor=0.25, watch="heldout")
    return tiny_system(paintings, lr_schedule=watch, heldout=torch.rand(3, 3, 32, 32), trained=list(range(paintings)))


def test_the_heldout_watch_judges_each_window_by_the_heldout_photos_loss_in_every_painting(tmp_path):
    system = heldout_system(2, threshold=0.0)
    system.transformer.select(1)
    losses = system.heldout_losses(chunk=2)  # two passes of the three photos
    assert system.transformer.norms()[0].mix.tolist() == [0.0, 1.0]  # the painting selected before, as it was
    with torch.no_grad():
        for painting in (0, 1):
            system.transformer.select(painting)
            out = system.transformer(system.heldout)
            expected = system.loss(out, system.loss.content_targets(system.heldout), style=painting)["total"]
            torch.testing.assert_close(losses[painting], expected)
    assert not torch.allclose(losses[0], losses[1])
    # at lr 0 the network stays as it is: each window's held-out loss is the first's, never below it, so the lr drops
    # at every window after the first (the training batches' losses differ from window to window)
    system = heldout_system(2, threshold=0.0)
    system.lr = 0.0
    fit(tmp_path, system, 6)
    watch = system.lr_schedule
    assert watch.best == pytest.approx(system.heldout_losses().mean().item())
    assert watch.scale == pytest.approx(0.25) and watch.watched == "heldout"


def test_a_heldout_watch_needs_heldout_photos():
    with pytest.raises(ValueError, match="heldout"):
        tiny_system(lr_schedule=PlateauDrop(watch="heldout"))


@pytest.mark.parametrize("schedule", [None, cosine, never_good_enough])
def test_a_resumed_run_trains_at_the_learning_rate_it_is_given_not_at_the_checkpoints(schedule, tmp_path):
    fit_recording_lr(tmp_path, 2, save="two.ckpt", schedule=schedule)
    resumed = fit_recording_lr(tmp_path, 6, ckpt_path=tmp_path / "two.ckpt", lr=1e-4, schedule=schedule)
    assert resumed == pytest.approx(fit_recording_lr(tmp_path, 6, lr=1e-4, schedule=schedule)[2:])
    assert resumed[0] == pytest.approx(1e-4 * (schedule()(2) if schedule else 1))


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


def test_a_step_with_a_non_finite_gradient_is_skipped_on_the_device_and_counted(tmp_path):
    system = tiny_system()
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, default_root_dir=tmp_path)
    system.trainer = trainer
    optimizer = system.configure_optimizers()
    assert optimizer.defaults["fused"]  # found_inf is honoured by fused Adam only
    system.log = lambda *args, **kwargs: None
    params = list(system.transformer.parameters())

    def step(grad_value: float) -> None:
        for p in params:
            p.grad = torch.full_like(p, grad_value)
        system.configure_gradient_clipping(optimizer, None, "norm")
        optimizer.step()

    step(1.0)
    before = [p.detach().clone() for p in params]
    moments = [optimizer.state[p]["exp_avg"].clone() for p in params]
    for bad in (float("nan"), float("inf")):
        step(bad)
    assert all(torch.equal(a, p) for a, p in zip(before, params))  # weights untouched
    assert all(torch.equal(m, optimizer.state[p]["exp_avg"]) for m, p in zip(moments, params))  # moments too
    assert system.skipped.tolist() == [2, 2]  # in a row, in all
    step(1.0)
    assert not torch.equal(before[0], params[0])
    assert system.skipped.tolist() == [0, 2]


def test_checkpoints_come_by_the_clock_as_well_as_by_steps(tmp_path, monkeypatch):
    """trainer.checkpoint_every_minutes: 5 minutes, steps of 100 s on a made-up clock, steps every 1,000: saved at
    steps 3, 6 and 9, each time through a temporary file renamed to last.ckpt."""
    from types import SimpleNamespace

    from impasto.training import callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    written = []
    trainer = SimpleNamespace(global_step=0, world_size=1, is_global_zero=True, lightning_module=object(),
                              strategy=SimpleNamespace(barrier=lambda name: None),
                              save_checkpoint=lambda path, weights_only: (path.write_text(str(trainer.global_step)),
                                                                          written.append(trainer.global_step)))
    saver = callbacks.ResumableCheckpoints(tmp_path, every_n_steps=1000, every_minutes=5)
    saver._saved_at, saver._saved_step = 0.0, 0  # on_train_start's, without taking the test's signals
    for step in range(1, 11):
        clock[0], trainer.global_step = 100.0 * step, step
        saver.on_train_batch_end(trainer, None, None, None, step - 1)
    assert written == [3, 6, 9] and (tmp_path / "last.ckpt").read_text() == "9"
    assert not list(tmp_path.glob(".last.ckpt*"))


def debiased_average(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """Each step's weights by decay ** (steps after it), over the sum of those factors: the plain mean at decay 1."""
    factors = [decay ** (len(steps) - 1 - i) for i in range(len(steps))]
    return {k: sum(f * s[k] for f, s in zip(factors, steps)) / sum(factors) for k in steps[0]}


def test_the_average_weighs_each_steps_weights_by_the_decay_resumes_from_its_checkpoint_and_is_what_is_taken(
        tmp_path):
    class Weights(pl.Callback):  # after each optimizer step, as the average sees them
        def __init__(self):
            self.steps = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps.append({k: v.detach().clone() for k, v in module.transformer.named_parameters()})

    def fit_average(max_steps: int, ckpt_path=None, save=None) -> tuple[StyleTransferSystem, list]:
        system, weights = tiny_system(average=0.5), Weights()
        fit(tmp_path, system, max_steps, ckpt_path, save, callbacks=(weights,))
        return system, weights.steps

    _, seen = fit_average(2, save="two.ckpt")
    resumed, later = fit_average(5, ckpt_path=tmp_path / "two.ckpt")
    assert resumed.averaged_steps == 5 and len(later) == 3
    expected = debiased_average(seen + later, 0.5)
    for name, value in resumed._average.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-7)
    last = {k: v.detach().clone() for k, v in resumed.transformer.named_parameters()}
    assert not torch.allclose(last["stem.0.weight"], expected["stem.0.weight"])  # the test can tell them apart
    assert resumed.take_average()
    for name, p in resumed.transformer.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-7)
    assert not tiny_system().take_average()  # no average kept: the last weights stay
    with pytest.raises(ValueError, match="decay"):
        tiny_system(average=1.0)


def stream_excess(system: StyleTransferSystem, photos: torch.Tensor) -> float:
    """The peak term's measure of the residual stream on `photos`, as a training pass leaves it."""
    kept = []
    hook = system.transformer.residuals.register_forward_hook(lambda module, inputs, output: kept.append(output))
    with torch.no_grad():
        system.transformer.train()(photos)
    hook.remove()
    return system.peak_excess(kept[0]).item()


def test_the_peak_term_is_the_mean_squared_excess_over_the_bound_and_training_against_it_lowers_it(tmp_path):
    assert tiny_system(peak_bound=1.0).peak_excess(torch.tensor([0.5, -3.0, 2.0, 1.0])).item() == pytest.approx(5 / 4)
    photos = torch.rand(4, 3, 32, 32)
    plain, bounded = tiny_system(lr=1e-2, peak_bound=0.5), tiny_system(lr=1e-2, peak_weight=100.0, peak_bound=0.5)
    start = stream_excess(plain, photos)
    assert start > 0.01  # the untrained stream leaves the bound, so the term has something to lower
    fit(tmp_path, plain, 12)
    fit(tmp_path, bounded, 12)
    assert stream_excess(bounded, photos) < 0.5 * min(start, stream_excess(plain, photos))
