"""What a training run does beside training: resumable checkpoints (by steps, by time, on a signal), the stop of a
diverged run, and the progress bar. Each reads the device only every `check_every_n_steps` steps: on a GPU every
read is a host sync, which drains the queue of launched work."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, Timer, TQDMProgressBar

from ..errors import UserError
from ..files import fsync

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl+C; what clusters and `kill` send before they kill


class ResumableCheckpoints(Callback):
    """`last.ckpt` every `every_n_steps` steps, every `every_minutes` minutes and at the end, written atomically so
    that a kill at any moment leaves the previous one whole. On SIGINT or SIGTERM the run finishes its step, writes
    one, and stops; `stopped_by` then names the signal (train() exports a partial style and exits)."""

    def __init__(self, dirpath: str | Path, every_n_steps: int, every_minutes: float, check_every_n_steps: int = 1):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.every_seconds = every_minutes * 60
        self.check_every_n_steps = max(1, check_every_n_steps)
        self.stopped_by: signal.Signals | None = None
        self._saved_at = time.monotonic()
        self._saved_step = -1
        self._previous_handlers: dict[int, object] = {}

    # --- signals -----------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step  # a resumed run starts from a checkpoint of this step
        if threading.current_thread() is not threading.main_thread():  # Python takes signals there only
            return
        for signum in STOP_SIGNALS:  # after Lightning's own SIGTERM handler, which would stop without a checkpoint
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self.stopped_by is not None:  # asked twice: quit now, with the signal's code (Lightning would catch an
            # exception here, and exit 1)
            print(f"\n{signal.Signals(signum).name} again: quit mid-step; {self.path} holds step {self._saved_step}",
                  file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(128 + signum)
        self.stopped_by = signal.Signals(signum)
        print(f"\n{self.stopped_by.name}: stopping after this step to write a checkpoint "
              f"({'press Ctrl+C again' if signum == signal.SIGINT else 'send it again'} to quit at once)", flush=True)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    # --- checkpoints -------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._saved_step:  # mid-accumulation, or saved already
            return
        by_steps = bool(self.every_n_steps) and step % self.every_n_steps == 0
        if not by_steps and step % self.check_every_n_steps:
            return
        by_time = time.monotonic() - self._saved_at >= self.every_seconds
        stop = self.stopped_by is not None
        if trainer.world_size > 1:  # every rank saves and stops at the same step: rank 0's clock, anyone's signal
            agreed = trainer.strategy.reduce(torch.tensor([float(by_time), float(stop)], device=pl_module.device),
                                             reduce_op="max")
            by_time, stop = bool(agreed[0]), bool(agreed[1])
            if stop and self.stopped_by is None:
                self.stopped_by = signal.SIGTERM
        if by_steps or by_time or stop:
            self.save(trainer)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self.save(trainer)
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def save(self, trainer: pl.Trainer) -> None:
        """Every rank takes part (Lightning gathers state from all); rank 0 writes a temporary file and renames it."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if hasattr(trainer.lightning_module, "tick"):  # the time trained so far, into this checkpoint
            trainer.lightning_module.tick()
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            fsync(tmp)
            os.replace(tmp, self.path)
            fsync(self.path.parent)
        trainer.strategy.barrier("impasto_checkpoint")
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step


class SittingTimer(Timer):
    """trainer.max_time as a budget for this run alone: a resumed run gets its own time, not what is left of the
    first's (Lightning's Timer restores the time spent from the checkpoint)."""

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class DivergenceGuard(Callback):
    """Stops the run, in one line naming the likely knob, once `max_skipped_in_a_row` steps in a row had a
    non-finite loss or gradient (each such step is skipped, by the optimizer itself: see StyleTransferSystem).
    The counters live on the device and are read every `check_every_n_steps` steps."""

    def __init__(self, max_skipped_in_a_row: int, advice: str, check_every_n_steps: int = 1):
        self.max_skipped_in_a_row = max_skipped_in_a_row
        self.advice = advice
        self.check_every_n_steps = max(1, check_every_n_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not self.max_skipped_in_a_row or trainer.global_step % self.check_every_n_steps:
            return
        in_a_row, skipped = (int(v) for v in pl_module.skipped.tolist())
        if in_a_row >= self.max_skipped_in_a_row:
            raise UserError(f"training diverged: the loss or its gradient was not finite for the last {in_a_row} "
                            f"steps (step {trainer.global_step}, {skipped} skipped in all), so nothing is exported; "
                            f"{self.advice}")


class LossProgressBar(TQDMProgressBar):
    """Lightning's bar plus the last step's loss, read from the device only when the bar refreshes (a metric logged
    with prog_bar=True is read at the end of every step instead). Training has no epochs (see data.EndlessSampler),
    so the bar counts toward max_steps."""

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        if trainer.max_steps > 0 and trainer.num_training_batches == float("inf"):
            return trainer.max_steps * trainer.accumulate_grad_batches
        return super().total_train_batches

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if getattr(pl_module, "last_loss", None) is not None:
            metrics["loss"] = f"{pl_module.last_loss.item():.4g}"
        return metrics
