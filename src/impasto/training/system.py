"""The training system: composes the transformer and the perceptual loss; logs to TensorBoard."""

import logging
import math
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from ..losses import PerceptualLoss, stability_loss
from ..runtime import conv_memory_format
from ..transformer import TransformerNet

FROZEN_PREFIXES = ("loss.network.", "teacher.")  # rebuilt from their sources, never checkpointed

log = logging.getLogger(__name__)


class CosineDecay:
    """The learning rate's factor at a step: from 1 down to `final` along a half cosine over `steps`, then `final`.
    A plain object (not a lambda), so that a resumed run's scheduler restores it from the checkpoint."""

    SETTINGS = ("steps", "final")  # the run's configuration: a resumed run's, not the checkpoint's (on_train_start)

    def __init__(self, steps: int, final: float = 0.0):
        self.steps, self.final = steps, final

    def __call__(self, step: int) -> float:
        progress = min(step, self.steps) / self.steps
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


class PlateauDrop:
    """The learning rate's factor, divided by `factor` each time the loss stops falling: when a window of `window`
    steps has not come `threshold` (a fraction) below the best window for `patience` windows in a row; never below
    `floor`. `watch`: what a window is judged by, `train` (its steps' mean training loss) or `heldout` (the loss of
    fixed held-out photos at its end, which the system measures). A new crop size or watch starts afresh (the loss's
    level depends on both). A plain object like CosineDecay, so that the scheduler's checkpoint holds its state; the
    system feeds it."""

    SETTINGS = ("window", "threshold", "patience", "factor", "floor", "watch")

    def __init__(self, window: int = 500, threshold: float = 0.01, patience: int = 2, factor: float = 10.0,
                 floor: float = 0.01, watch: str = "train"):
        self.window, self.threshold, self.patience, self.factor, self.floor = window, threshold, patience, factor, floor
        self.watch = watch
        self.scale = 1.0
        self.size: int | None = None  # the crop size the windows are measured at
        self.watched = "train"  # what `best` measures: checkpoints from before `watch` existed hold training losses
        self.best, self.bad = math.inf, 0
        self._open_window()

    def _open_window(self) -> None:
        # its steps, and its finite losses' sum and count (device tensors once fed: no host sync)
        self.steps, self.total, self.finite = 0, 0.0, 0

    def __call__(self, step: int) -> float:
        return self.scale

    def add(self, loss: torch.Tensor, size: int) -> bool:
        """One step's loss, at crop `size`; True when it closes a window (then `close` takes the window's measure)."""
        if size != self.size or self.watch != self.watched:
            self.size, self.watched, self.best, self.bad = size, self.watch, math.inf, 0
            self._open_window()
        finite = torch.isfinite(loss)
        self.total = self.total + torch.where(finite, loss.detach().float(), 0.0)
        self.finite = self.finite + finite.long()
        self.steps += 1
        return self.steps >= self.window  # >=: a resumed run may have shortened the window

    def close(self, measure: float) -> bool:
        """Judge the closed window by its measure (over every rank); True when the factor dropped."""
        self._open_window()
        if measure < self.best * (1 - self.threshold):
            self.best, self.bad = measure, 0
            return False
        self.bad += 1
        if self.bad < self.patience or self.scale <= self.floor * (1 + 1e-9):
            return False
        self.scale, self.bad = max(self.scale / self.factor, self.floor), 0
        return True


class StyleTransferSystem(pl.LightningModule):
    """Trains `transformer` to minimise `loss`, with Adam at `lr` (times `lr_schedule(step)` where there is one).
    `preview`: fixed photos shown in TensorBoard every `preview_every_n_steps`. `stability_weight`/`stability_noise`:
    the video stability term (off at 0). `seed`: the stability noise's, per step. `recipe`: what the export's
    metadata takes from the run (style.recipe), kept with the other plain arguments as the hyperparameters (in every
    checkpoint, for impasto-export, and in TensorBoard). `trained`: the transformer's paintings this run trains, one
    per step in turn (default: its first), each against the loss's target of the same rank. `norms_only`: train only
    the norms' scales and shifts; every convolution stays as it is. `prior`: what the run started from
    (style.prior_meta), kept in its checkpoints with the seconds trained. `teacher`: a trained network whose
    stylization of the batch the transformer also learns (distillation: pixel MSE, times `teacher_weight`); with the
    loss's weights all 0 it is the whole objective, and a step runs no VGG. `teacher_paintings`: the teacher's index
    of each of the transformer's paintings. `heldout`: fixed photos never trained on, scored in every trained painting
    at the end of each of the plateau schedule's windows when it watches them (its `watch`). `average`: a decay in
    [0, 1); above 0 the system keeps an average of the trained weights over its steps (about their plain mean at first,
    then each step weighing 1 - average; the weights before the first step do not count), checkpointed, and
    take_average() puts it in the transformer for the export. `peak_weight`/`peak_bound`: a penalty on the residual
    stream (the residual blocks' output) wherever it leaves [-bound, bound], the mean of the squared excess times the
    weight (off at 0): the droplet is a spike there."""

    def __init__(self, transformer: TransformerNet, loss: PerceptualLoss, *, lr: float,
                 lr_schedule: CosineDecay | PlateauDrop | None = None, preview: torch.Tensor | None = None,
                 preview_every_n_steps: int = 500,
                 stability_weight: float = 0.0, stability_noise: float = 0.02, seed: int = 0,
                 recipe: dict | None = None, trained: list[int] | None = None, norms_only: bool = False,
                 prior: dict | None = None, teacher: TransformerNet | None = None,
                 teacher_paintings: list[int] | None = None, teacher_weight: float = 1.0,
                 heldout: torch.Tensor | None = None, average: float = 0.0, peak_weight: float = 0.0,
                 peak_bound: float = 20.0):
        super().__init__()
        if not 0.0 <= average < 1.0:
            raise ValueError(f"average is a decay in [0, 1), got {average}")
        if peak_weight < 0 or peak_bound < 0:
            raise ValueError(f"peak weight and bound are 0 or more, got {peak_weight} and {peak_bound}")
        self.transformer = transformer
        self.loss = loss
        self.teacher = teacher.requires_grad_(False).eval() if teacher is not None else None
        self.teacher_paintings = list(teacher_paintings or range(transformer.config.styles))
        self.teacher_weight = teacher_weight
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.stability_weight = stability_weight
        self.stability_noise = stability_noise
        self.preview_every_n_steps = preview_every_n_steps
        self.register_buffer("preview", preview, persistent=False)
        if isinstance(lr_schedule, PlateauDrop) and lr_schedule.watch == "heldout" and heldout is None:
            raise ValueError("a plateau schedule that watches held-out photos needs `heldout`")
        self.register_buffer("heldout", heldout, persistent=False)
        # the schedule's settings as configured: restoring a checkpoint overwrites the object's, see on_train_start
        self._schedule_settings = {name: getattr(lr_schedule, name) for name in getattr(lr_schedule, "SETTINGS", ())}
        self.recipe = recipe
        self.save_hyperparameters(ignore=["transformer", "loss", "lr_schedule", "preview", "prior", "teacher",
                                          "teacher_paintings", "heldout"])
        self.seed = seed
        self.trained = list(trained or [0])
        self.norms_only = norms_only
        if norms_only:
            transformer.requires_grad_(False)
            for norm in transformer.norms():
                norm.requires_grad_(True)
        self.prior = prior
        # wall seconds of training, and the CPU seconds this process spent (all its threads), over every sitting
        self.seconds, self.cpu_seconds = 0.0, 0.0
        self._sitting_clock, self._cpu_clock = time.perf_counter(), time.process_time()
        self._clock: tuple[float, int] | None = None
        self.last_loss: torch.Tensor | None = None
        self._size = 0  # the step's crop size
        self._layout = torch.contiguous_format
        self._optimizer: torch.optim.Optimizer | None = None
        self._noise: torch.Generator | None = None
        # steps skipped for a non-finite gradient: in a row, and in all (device tensors: no host sync to count)
        self.register_buffer("skipped", torch.zeros(2, dtype=torch.long))
        self.average_decay = average
        self.averaged_steps = 0
        self._average: dict[str, torch.Tensor] = {}
        self._loaded_average: dict | None = None  # a checkpoint's, taken up at on_train_start
        self.peak_weight, self.peak_bound = peak_weight, peak_bound
        self._stream: list[torch.Tensor] | None = None  # a list while a step's pass runs
        if peak_weight:  # the stream as the step's own pass leaves the blocks: no second pass
            transformer.residuals.register_forward_hook(self._keep_stream)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.transformer(content)

    # --- hooks, in Lightning's order -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # The layout is set before DDP and the optimizer see the parameters; moving to the GPU keeps it.
        self._layout = conv_memory_format(self.trainer.strategy.root_device, self.trainer.precision)
        self.to(memory_format=self._layout)

    def configure_optimizers(self):
        # Fused Adam skips a step on the device when told to (its `found_inf`), which is how a non-finite step is
        # skipped without a host sync. A GradScaler (fp16) skips such steps itself and must unscale first.
        fused = getattr(self.trainer.precision_plugin, "scaler", None) is None
        params = [p for p in self.transformer.parameters() if p.requires_grad]
        self._optimizer = torch.optim.Adam(params, lr=self.lr, fused=fused)
        if self.lr_schedule is None:
            return self._optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(self._optimizer, self.lr_schedule)
        return {"optimizer": self._optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        if self.lr_schedule is not None:  # a resumed run goes on with its own settings (window, steps, ...)
            vars(self.lr_schedule).update(self._schedule_settings)
        self._take_configured_lr()
        self._state_in_weights_layout()
        self._clock = (time.perf_counter(), self.global_step)
        self._sitting_clock, self._cpu_clock = self._clock[0], time.process_time()
        if self.global_step == 0:  # the untrained network: the baseline for every later grid (not on resume)
            self._log_preview()
        self._start_average()

    def _state_in_weights_layout(self) -> None:
        """Adam's moments laid out as their weights: fp32 and bf16 train in different layouts on the CPU, and the fused
        step pairs a weight's elements with its moments' by their order in memory, not by index."""
        for optimizer in self.trainer.optimizers:
            for weight, state in optimizer.state.items():
                for key, value in state.items():
                    if torch.is_tensor(value) and value.shape == weight.shape and value.stride() != weight.stride():
                        state[key] = torch.empty_like(weight).copy_(value)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        batch = batch.contiguous(memory_format=self._layout)
        rank = self.painting_rank(self.global_step)
        if self.transformer.config.styles > 1:
            self.transformer.select(self.trained[rank])
        self._stream = [] if self.peak_weight else None
        stylized = self.transformer(batch)
        if self.loss.weighted():
            terms = self.loss(stylized, self.loss.content_targets(batch), style=rank)
        else:  # a teacher alone: no VGG pass
            terms = {"total": stylized.new_zeros(())}
        if self.teacher is not None:
            target = self.teacher_target(batch, self.trained[rank])
            terms["teacher"] = self.teacher_weight * F.mse_loss(stylized.float(), target.float())
            terms["total"] = terms["total"] + terms["teacher"]
        if self.stability_weight:  # a second pass of the (cheap) transformer on the same batch plus noise
            noisy = batch + self.stability_noise * torch.randn(batch.shape, generator=self._step_noise(batch.device),
                                                               device=batch.device, dtype=batch.dtype)
            terms["stability"] = self.stability_weight * stability_loss(stylized, self.transformer(noisy),
                                                                        self.stability_noise)
            terms["total"] = terms["total"] + terms["stability"]
        if self.peak_weight:
            terms["peak"] = self.peak_weight * self.peak_excess(self._stream[0])
            self._stream = None
            terms["total"] = terms["total"] + terms["peak"]
        self.log_dict({f"loss/{name}": value for name, value in terms.items()}, prog_bar=False)
        self.last_loss = terms["total"].detach()  # for LossProgressBar, not self.log(prog_bar=True): see there
        self._size = batch.shape[-1]
        return terms["total"]

    def _keep_stream(self, module, inputs, output: torch.Tensor) -> None:
        if self._stream == []:  # the step's first pass (the stability term makes a second)
            self._stream.append(output)

    def peak_excess(self, stream: torch.Tensor) -> torch.Tensor:
        """The mean squared amount by which the residual stream leaves [-peak_bound, peak_bound], in fp32."""
        return F.relu(stream.float().abs() - self.peak_bound).square().mean()

    def on_after_backward(self) -> None:
        # The plateau watch is fed here, before any callback can checkpoint it (a resumed run's windows are the same),
        # and after the backward pass, which needs the norms' mix as the step left it (held-out passes change it).
        if isinstance(self.lr_schedule, PlateauDrop):
            self._watch_plateau(self.last_loss, self._size)

    def _watch_plateau(self, loss: torch.Tensor, size: int) -> None:
        """Feed the plateau schedule; at a window's end, its measure over every rank (so that all drop together)."""
        watch = self.lr_schedule
        if not watch.add(loss, size):
            return
        reduce = self.trainer.strategy.reduce
        mean = (reduce(watch.total, reduce_op="sum") / reduce(watch.finite, reduce_op="sum")).item()
        metrics = {"loss/window": mean}
        if watch.watch == "heldout":  # every rank scores the same photos; the mean makes their decisions one
            losses = reduce(self.heldout_losses(), reduce_op="mean")
            names = self.recipe["trained"] if self.recipe else [str(i) for i in self.trained]
            metrics.update({f"heldout/{name}": value.item() for name, value in zip(names, losses)})
            mean = metrics["heldout/mean"] = losses.mean().item()
        if self.logger is not None and self.trainer.is_global_zero:  # every window, whatever log_every_n_steps
            self.logger.log_metrics(metrics, step=self.global_step)
        if watch.close(mean):
            log.info("the %s loss over %d steps has not come %g %% below its best %d times in a row: lr %g from "
                     "step %d on", watch.watch, watch.window, 100 * watch.threshold, watch.patience,
                     self.lr * watch.scale, self.global_step + 1)

    @torch.no_grad()
    def heldout_losses(self, chunk: int = 8) -> torch.Tensor:
        """The mean total loss of the held-out photos in each trained painting, in fp32 (`chunk` photos a pass)."""
        mix = self.transformer.norms()[0].mix.clone() if self.transformer.config.styles > 1 else None
        sums = torch.zeros(len(self.trained), device=self.heldout.device)
        with torch.autocast(self.device.type, enabled=False):
            for photos in self.heldout.split(chunk):
                photos = photos.contiguous(memory_format=self._layout)
                targets = self.loss.content_targets(photos)
                for rank, painting in enumerate(self.trained):
                    if mix is not None:
                        self.transformer.select(painting)
                    sums[rank] += self.loss(self.transformer(photos), targets, style=rank)["total"] * len(photos)
        if mix is not None:  # the painting the step trains, as it was
            self.transformer.select(mix)
        return sums / len(self.heldout)

    @torch.no_grad()
    def teacher_target(self, batch: torch.Tensor, painting: int) -> torch.Tensor:
        """The teacher's stylization of `batch` in `painting`, clamped as a viewer sees it."""
        if self.teacher.config.styles > 1:
            self.teacher.select(self.teacher_paintings[painting])
        return self.teacher(batch).clamp(0, 1)

    def painting_rank(self, step: int) -> int:
        """Which of the trained paintings a step trains: by the step alone, so that a resumed run goes on exactly."""
        return step % len(self.trained)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Clipping by norm measures the total norm anyway: logged as grad_norm, before clipping so spikes show as
        # they are, at no extra cost. Without a clip the norm is still measured (and the gradients scaled by 1).
        by_norm = gradient_clip_algorithm in (None, "norm")
        limit = gradient_clip_val if gradient_clip_val and by_norm else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.transformer.parameters(), limit)
        self.log("grad_norm", norm)
        self._skip_step_unless_finite(norm)
        if gradient_clip_val and not by_norm:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _skip_step_unless_finite(self, grad_norm: torch.Tensor) -> None:
        """A non-finite gradient norm (which a non-finite loss gives too) skips the optimizer step: weights and Adam's
        moments stay as they were. Decided on the device; under DDP the norm, and so the decision, is every rank's."""
        bad = ~torch.isfinite(grad_norm)
        if self._optimizer is not None and self._optimizer.defaults.get("fused"):
            self._optimizer.found_inf = bad.float().reshape(())
        in_a_row, total = self.skipped
        self.skipped.copy_(torch.stack([(in_a_row + bad) * bad, total + bad]))
        self.log("skipped_steps", self.skipped[1].float())

    def _step_noise(self, device: torch.device) -> torch.Generator:
        """A generator seeded by (seed, step, rank): the noise of a step is the same in a resumed run."""
        if self._noise is None or self._noise.device != device:
            self._noise = torch.Generator(device=device)
        return self._noise.manual_seed((self.seed * 100_003 + self.global_step) * 1024 + self.global_rank)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.average_decay:  # here, not at the batch's end: the callbacks checkpoint before the module's hook runs
            self._update_average()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step
        every = self.trainer.log_every_n_steps
        if step % every == 0 and self._clock is not None:
            start, start_step = self._clock
            now = time.perf_counter()
            if step > start_step:
                images = (step - start_step) * batch.shape[0] * self.trainer.world_size
                self.log("perf/images_per_s", images / (now - start), rank_zero_only=True)
            self._clock = (now, step)
        if self.preview_every_n_steps and step % self.preview_every_n_steps == 0:
            self._log_preview()

    def tick(self) -> None:
        """Add the wall and CPU time since the last tick to the totals: at each checkpoint (ResumableCheckpoints),
        so that a checkpoint and the export made at the end of the run hold the same figures."""
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds += now - self._sitting_clock
        self.cpu_seconds += cpu - self._cpu_clock
        self._sitting_clock, self._cpu_clock = now, cpu

    def on_train_end(self) -> None:
        self._log_preview()  # the final grid, whatever the preview interval

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The frozen VGG (and teacher) are rebuilt from their sources on load; keeping them out saves ~50 MB.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]
        checkpoint["impasto_seconds"] = self.seconds
        checkpoint["impasto_cpu_seconds"] = self.cpu_seconds
        checkpoint["impasto_prior"] = self.prior
        checkpoint["impasto_device"] = self.trainer.strategy.root_device.type
        if self._average:
            checkpoint["impasto_average"] = {"steps": self.averaged_steps, "weights": dict(self._average)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():
            if key.startswith(FROZEN_PREFIXES):
                state[key] = value
        state.setdefault("skipped", self.skipped)  # checkpoints written before the count existed
        self.seconds = checkpoint.get("impasto_seconds", 0.0)
        self.cpu_seconds = checkpoint.get("impasto_cpu_seconds", 0.0)
        self.prior = checkpoint.get("impasto_prior", self.prior)
        self._loaded_average = checkpoint.get("impasto_average")

    # --- the weights' average -------------------------------------------------------------------------------------
    def _trained_parameters(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.transformer.named_parameters() if p.requires_grad}

    def _start_average(self) -> None:
        """The average a resumed run's checkpoint holds, else none yet (the first step's weights begin it)."""
        loaded, self._loaded_average = self._loaded_average, None
        if not self.average_decay:
            return
        params = self._trained_parameters()
        if loaded is None or loaded["weights"].keys() != params.keys():  # none, or of other trained weights
            self._average, self.averaged_steps = {}, 0
            return
        self._average = {name: p.detach().clone().copy_(loaded["weights"][name]) for name, p in params.items()}
        self.averaged_steps = loaded["steps"]

    @torch.no_grad()
    def _update_average(self) -> None:
        params = self._trained_parameters()
        if not self._average:
            self._average = {name: p.detach().clone() for name, p in params.items()}
        self.averaged_steps += 1
        # debiased: each step's weights by decay ** (steps since), over the sum of those factors, so none before
        decay = self.average_decay
        weight = (1 - decay) / (1 - decay ** self.averaged_steps)
        for name, p in params.items():
            self._average[name].lerp_(p, weight)

    @torch.no_grad()
    def take_average(self) -> bool:
        """Put the averaged weights in the transformer, for the export once training is over; False if none."""
        if not self._average:
            return False
        for name, p in self._trained_parameters().items():
            p.copy_(self._average[name])
        return True

    # --- helpers ------------------------------------------------------------------------------------------------
    def _take_configured_lr(self) -> None:
        """A resumed run trains at the lr it is given: the checkpoint's optimizer (and schedule) hold the old one,
        which would otherwise win over optim.lr without a word. The schedule's factor at this step is kept. The held
        base lr is the group's lr over that factor: a checkpoint of a run that took its schedule up at a resume has no
        `initial_lr` in its groups. Where they agree, nothing changes."""
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        factor = self.lr_schedule(schedulers[0].last_epoch) if self.lr_schedule is not None and schedulers else 1.0
        groups = self._optimizer.param_groups
        held = groups[0]["lr"] / factor
        if math.isclose(held, self.lr, rel_tol=1e-6):
            return
        for group in groups:
            group["lr"] = self.lr * factor
            if "initial_lr" in group:
                group["initial_lr"] = self.lr
        for scheduler in schedulers:
            scheduler.base_lrs = [self.lr] * len(scheduler.base_lrs)
        log.info("optim.lr=%g replaces the checkpoint's %g", self.lr, held)

    @torch.no_grad()
    def stylize_preview(self, noise_std: float = 0.0) -> torch.Tensor:
        """The preview photos stylized (not clamped); with `noise_std`, plus the same fixed noise at every call."""
        x = self.preview
        if noise_std:
            x = x + noise_std * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device)
        with torch.autocast(self.device.type, enabled=False):
            return self.transformer(x)

    def _log_preview(self) -> None:
        if self.preview is None or not self.trainer.is_global_zero or self.logger is None:
            return
        stylized = self.stylize_preview()
        grid = make_grid(torch.cat([self.preview, stylized.clamp(0, 1)]), nrow=len(self.preview), padding=4)
        experiment = self.logger.experiment
        experiment.add_image("preview/content_and_stylized", grid.float().cpu(), self.global_step)
        # how much the network amplifies input noise, the root of video flicker: watched whether or not it is trained
        noisy = self.stylize_preview(self.stability_noise)
        experiment.add_scalar("preview/noise_gain", stability_loss(stylized, noisy, self.stability_noise).item(),
                              self.global_step)
