"""train(cfg): build the data, the loss, the system and the trainer from the composed config; fit; export."""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from ..config import load_style_images, style_configs, sweep_suffix
from ..errors import Interrupted, UserError, check_fraction
from ..files import refuse_overwrite
from ..lookup import painting_names
from ..losses import build_perceptual_loss
from ..memory import keep_freed_host_memory
from ..runtime import bf16_is_fast, cpu_bf16_speedup
from ..style import (
    SUFFIX,
    images_per_painting,
    load_weights_into,
    open_source,
    prior_meta,
    recipe,
    save_style,
    style_meta,
)
from ..transformer import TransformerConfig, TransformerNet
from .callbacks import DivergenceGuard, LossProgressBar, ResumableCheckpoints, SittingTimer
from .data import ImageDataModule, build_train_dataset, load_fixed
from .system import CosineDecay, PlateauDrop, StyleTransferSystem

log = logging.getLogger(__name__)


def export_path(cfg: DictConfig) -> Path:
    return Path(cfg.export.dir).expanduser() / f"{cfg.export.name}{sweep_suffix()}{SUFFIX}"


def runs_on_gpu(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast where the hardware runs it fast (CUDA with bf16, CPUs where it measures faster), else
    fp32."""
    if precision != "auto":
        return precision
    on_gpu = runs_on_gpu(accelerator)
    if bf16_is_fast(torch.device("cuda" if on_gpu else "cpu"), training=True):
        return "bf16-mixed"
    return "16-mixed" if on_gpu else "32-true"


def bf16_finding() -> str:
    """What decided auto on this CPU, for the log."""
    speedup = cpu_bf16_speedup()
    if speedup is None:
        return "this CPU has no bf16 kernels"
    return f"on this CPU bf16 ran a convolution's training step {speedup['step']:.2f} times as fast as fp32"


def steps_between_reads(accelerator: str) -> int:
    """Steps between reads of the device (the bar's loss, the divergence counters, a DDP stop vote): each is a host
    sync on a GPU, which drains the queue of launched work, and free on the CPU."""
    return 10 if runs_on_gpu(accelerator) else 1


def divergence_advice(cfg: DictConfig, precision: str) -> str:
    """The knob most likely to blame for a diverged run, and the others."""
    loss = cfg.loss
    weights = f"loss.style_weight={loss.style_weight}, loss.content_weight={loss.content_weight}"
    if precision.startswith("16"):
        return f"fp16 overflows easily: use trainer.precision=bf16-mixed or 32-true (or lower optim.lr={cfg.optim.lr})"
    if cfg.optim.lr > 1e-2:
        return f"the learning rate optim.lr={cfg.optim.lr} is high: try 1e-3 (or lower {weights})"
    return (f"lower the learning rate optim.lr={cfg.optim.lr} or the loss weights ({weights}), or set "
            f"trainer.gradient_clip_val (now {cfg.trainer.gradient_clip_val})")


@dataclass
class Run:
    """A training run as train() builds it, before fit: what benchmarks time and tests poke."""

    system: StyleTransferSystem
    datamodule: ImageDataModule
    trainer: pl.Trainer
    checkpoints: ResumableCheckpoints


def train(cfg: DictConfig) -> Path | None:
    """Fit a style; returns the exported checkpoint's path (on rank 0; None elsewhere)."""
    if not OmegaConf.is_dict(cfg.optim):  # `optim=adam`, meant for the Gatys method, replaces the settings
        raise UserError(f"optim holds training's optimizer settings (optim.lr=...), not an option ({cfg.optim!r}); "
                        "the Gatys method's optimizer is impasto-gatys solver=adam")
    target = export_path(cfg)
    refuse_overwrite(target, cfg.export.overwrite, "export.overwrite=true", "export.name=NAME to write another file")
    if not runs_on_gpu(cfg.trainer.accelerator):  # before any thread starts: see keep_freed_host_memory
        keep_freed_host_memory()
    ckpt_path = cfg.ckpt_path
    if ckpt_path == "last":  # go on from this run folder's state, else from the last export, else from init_from
        state = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        ckpt_path = str(state) if state.is_file() else None
        if ckpt_path is None and target.is_file():
            cfg.init_from = str(target)
        log.info("sitting: %s", f"resuming from {state}" if ckpt_path else
                 f"starting from {cfg.init_from}" if cfg.init_from else "starting from scratch")
    elif ckpt_path is not None and not Path(ckpt_path).expanduser().is_file():
        raise UserError(f"ckpt_path {ckpt_path} does not exist: pass a run's checkpoints/last.ckpt, or ckpt_path=last")
    run = build(cfg)
    system, datamodule, trainer, checkpoints = run.system, run.datamodule, run.trainer, run.checkpoints
    if ckpt_path is not None:
        check_resumable(ckpt_path, system)
    trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)

    unreadable = len(datamodule.unreadable.files)
    if unreadable:
        log.warning("%d unreadable training image(s) were passed over (warned above, logged as "
                    "data/unreadable_images)", unreadable)
    if not trainer.is_global_zero:
        return None
    images = images_per_painting(trainer.global_step, cfg.data.batch_size * trainer.world_size,
                                            len(system.trained))
    meta = style_meta(system.recipe, trainer.global_step, system.prior, images, system.seconds,
                                 trainer.strategy.root_device.type, system.cpu_seconds)
    if system.take_average():  # the export holds the average; the checkpoint, written already, the last weights
        meta["average"] = {"decay": system.average_decay, "steps": system.averaged_steps}
    if checkpoints.stopped_by is not None and cfg.ckpt_path == "last":  # a sitting ends: its snapshot, as at time
        path = save_style(target, system.transformer, meta, cfg.export.half)
        raise Interrupted(checkpoints.stopped_by,
                          f"{checkpoints.stopped_by.name}: the sitting stopped at step {trainer.global_step}; its "
                          f"snapshot is {path}. The same command goes on from {checkpoints.path}")
    if checkpoints.stopped_by is not None:
        partial = target.with_name(f"{target.stem}.partial-step{trainer.global_step}{SUFFIX}")
        save_style(partial, system.transformer, {**meta, "partial": True})
        raise Interrupted(checkpoints.stopped_by,
                          f"{checkpoints.stopped_by.name}: stopped at step {trainer.global_step} of "
                          f"{trainer.max_steps}. To resume, run the same command with ckpt_path={checkpoints.path} "
                          f"added. The style so far is in {partial}")
    try:
        path = save_style(target, system.transformer, meta, cfg.export.half)
    except UserError as e:  # a full disk, say: the run itself is safe in its checkpoint
        raise UserError(f"{e}; the trained run is whole in {checkpoints.path}: export it with impasto-export "
                        "once there is room") from None
    stylize = "python stylize.py" if Path(sys.argv[0]).name == "train.py" else "impasto-stylize"
    held = painting_names(meta)  # a file of several paintings is stylized with one of them named
    painting = f" --painting {held[system.trained[0]]}" if len(held) > 1 else ""
    log.info("exported %s (%d steps): stylize with  %s --style %s%s PHOTO -o OUT.jpg",
             path, trainer.global_step, stylize, path, painting)
    return path


def check_resumable(path: str, system: StyleTransferSystem) -> None:
    """A one-line refusal of a ckpt_path that is not this run's kind of checkpoint (truncated, foreign, or of
    another network), before Lightning meets it halfway through loading."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        weights, step = state["state_dict"], int(state["global_step"])
    except Exception as e:  # any unreadable or foreign file is the user's to fix
        raise UserError(f"ckpt_path {path} is not a train.py checkpoint ({type(e).__name__}): pass a run's "
                        "checkpoints/last.ckpt") from None
    ours = {k: v.shape for k, v in system.state_dict().items() if k.startswith("transformer.")}
    theirs = {k: v.shape for k, v in weights.items() if k.startswith("transformer.")}
    if ours != theirs:
        raise UserError(f"ckpt_path {path} (step {step}) holds another network than this run builds: resume with the "
                        "overrides of the run that wrote it (model.*, style=[...])")


def lr_schedule(cfg: DictConfig) -> CosineDecay | PlateauDrop | None:
    schedule = cfg.optim.get("schedule", "constant")
    if schedule == "constant":
        return None
    if schedule not in ("cosine", "plateau"):
        raise UserError(f"optim.schedule is constant, cosine or plateau, got {schedule!r}")
    check_fraction(cfg.optim.final_lr_fraction, "optim.final_lr_fraction (a fraction of optim.lr)")
    if schedule == "plateau":
        plateau = cfg.optim.plateau
        check_counts(cfg, ("optim.plateau.window", "optim.plateau.patience"))
        check_numbers(cfg, ("optim.plateau.threshold", "optim.plateau.factor"))
        if not 0 <= plateau.threshold < 1:
            raise UserError(f"optim.plateau.threshold is a fraction of the loss from 0 to 1, got {plateau.threshold}")
        if not plateau.factor > 1:
            raise UserError(f"optim.plateau.factor divides the lr: more than 1, got {plateau.factor}")
        watch = plateau.get("watch", "train")
        if watch not in ("train", "heldout"):
            raise UserError(f"optim.plateau.watch is train or heldout, got {watch!r}")
        if watch == "heldout" and not cfg.data.get("heldout_dir"):
            raise UserError("optim.plateau.watch=heldout judges each window by held-out photos: set data.heldout_dir "
                            "to a folder of photos the run does not train on")
        return PlateauDrop(plateau.window, plateau.threshold, plateau.patience, plateau.factor,
                           cfg.optim.final_lr_fraction, watch)
    if not cfg.trainer.max_steps or cfg.trainer.max_steps < 1:
        raise UserError("optim.schedule=cosine decays over trainer.max_steps: set it (a time limit alone gives the "
                        "schedule no end)")
    return CosineDecay(cfg.trainer.max_steps, cfg.optim.final_lr_fraction)


def check_numbers(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """A setting that must be a number and was given as text (optim.lr=abc) is one line, not a TypeError later."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key} must be a number, got {value!r}")


def check_counts(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """A count given as 2.5, text or true (which Python would take as 1) is one line."""
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{key} must be a positive whole number, got {value!r}")


def build(cfg: DictConfig) -> Run:
    """The data, the loss, the system and the trainer from the composed config."""
    check_numbers(cfg, ("optim.lr", "optim.final_lr_fraction", "stability.weight", "stability.noise", "average",
                       "peak.weight", "peak.bound"))
    if not cfg.optim.lr > 0 or cfg.optim.lr == float("inf"):  # 0 would export the starting network as if trained
        raise UserError(f"optim.lr must be a positive number, got {cfg.optim.lr}")
    check_counts(cfg, ("data.batch_size", "data.size"))
    if cfg.data.get("heldout_size") is not None:
        check_counts(cfg, ("data.heldout_size",))
    if cfg.data.size < TransformerNet.MIN_SIZE:
        raise UserError(f"data.size must be {TransformerNet.MIN_SIZE} pixels or more, got {cfg.data.size}")
    if not 0 <= cfg.average < 1:
        raise UserError(f"average is 0 (export the last weights) or a decay below 1 (e.g. 0.998), got {cfg.average}")
    if cfg.stability.weight < 0:
        raise UserError(f"stability.weight must be 0 (off) or more, got {cfg.stability.weight}")
    if cfg.stability.noise <= 0:
        raise UserError(f"stability.noise must be positive (a std on RGB in [0, 1], e.g. 0.02), got "
                        f"{cfg.stability.noise}")
    if cfg.peak.weight < 0 or cfg.peak.bound < 0:
        raise UserError(f"peak.weight and peak.bound are 0 or more, got {cfg.peak.weight} and {cfg.peak.bound}")
    schedule = lr_schedule(cfg)
    style_cfgs = style_configs(cfg)
    paintings = [load_style_images(c) for c in style_cfgs]  # fail on a bad style image before anything heavy starts
    names = [str(c.name) for c in style_cfgs]
    # a file, or a style's name (checkpoints/, then the shipped ones): init_from=paintings, init_from=the_scream
    source = open_source(cfg.init_from) if cfg.init_from else None
    source_meta = source[1] if source else {}
    held = painting_names(source_meta) if source else []
    # A network started from a file of several paintings keeps them all; the run's new ones are added after them.
    network_names = held + [n for n in names if n not in held] if len(held) > 1 else names
    teacher = open_source(cfg.teacher) if cfg.teacher else None
    if teacher:  # the student holds the run's paintings in the teacher's order
        taught = painting_names(teacher[1])
        missing = [n for n in names if n not in taught]
        network_names = [n for n in taught if n in names]
        if missing or (len(held) > 1 and held != network_names):
            raise UserError(f"teacher {teacher[1]['source']} holds {', '.join(taught)}: "
                            + (f"it cannot teach {', '.join(missing)}" if missing else
                               f"init_from holds {', '.join(held)}, not the run's {', '.join(network_names)}"))
    if cfg.finetune not in ("all", "norms"):
        raise UserError(f"finetune is all or norms, got {cfg.finetune!r}")
    if cfg.finetune == "norms" and not cfg.init_from:
        raise UserError("finetune=norms trains a painting's norms on a trained network: pass init_from=FILE")
    pl.seed_everything(cfg.seed, workers=True)
    try:
        model = {**cfg.model, "styles": len(network_names)}
        if source:  # the centred grid once it is there: Johnson's grid converts to it, never back
            model["down_kernel"] = max(int(model["down_kernel"]), int(source_meta["network"].get("down_kernel", 3)))
        transformer = TransformerNet(TransformerConfig.from_dict(model))
    except ValueError as e:
        raise UserError(f"model settings: {e}") from None
    if source:
        load_weights_into(transformer, source, network_names)

    dataset, data_description = build_train_dataset(cfg.data)
    log.info("training data: %s", data_description)
    datamodule = ImageDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers, cfg.seed,
                                 cfg.data.max_bad_fraction)

    loss = build_perceptual_loss(cfg.loss)
    if not loss.weighted() and not teacher:  # a step would have no objective, and no gradient to step on
        raise UserError("loss.content_weight, loss.style_weight and loss.tv_weight are all 0: nothing to learn; set "
                        "one, or learn from a trained style with teacher=STYLE")
    watched = isinstance(schedule, PlateauDrop) and schedule.watch == "heldout"
    if watched and not loss.weighted():
        raise UserError("optim.plateau.watch=heldout scores the held-out photos by the loss, whose weights are all 0 "
                        "here: watch train")
    loss.set_styles(paintings)
    if cfg.compile:  # in place (nn.Module.compile): state-dict keys, Lightning checkpoints and the export unchanged
        transformer.compile()
        loss.network.compile()
    preview = load_fixed(cfg.data.preview_dir, cfg.data.size) if cfg.log.preview_every_n_steps else None
    heldout_size = cfg.data.get("heldout_size") or cfg.data.size
    heldout = load_fixed(cfg.data.heldout_dir, heldout_size, "data.heldout_dir") if watched else None
    prior = prior_meta(network_names, [OmegaConf.to_container(c, resolve=True) for c in style_cfgs],
                                  source_meta or None)
    system = StyleTransferSystem(transformer, loss, lr=cfg.optim.lr, lr_schedule=schedule, preview=preview,
                                 preview_every_n_steps=cfg.log.preview_every_n_steps,
                                 stability_weight=cfg.stability.weight, stability_noise=cfg.stability.noise,
                                 seed=cfg.seed,
                                 recipe=recipe(OmegaConf.to_container(cfg, resolve=True), data_description,
                                               teacher[1] if teacher else None),
                                 trained=[network_names.index(n) for n in names], norms_only=cfg.finetune == "norms",
                                 prior=prior, teacher=teacher[0] if teacher else None,
                                 teacher_paintings=[taught.index(n) for n in network_names] if teacher else None,
                                 teacher_weight=cfg.teacher_weight, heldout=heldout, average=cfg.average,
                                 peak_weight=cfg.peak.weight, peak_bound=cfg.peak.bound)

    output_dir = Path(cfg.paths.output_dir)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    checkpoint_every = trainer_cfg.pop("checkpoint_every_n_steps")
    checkpoint_minutes = trainer_cfg.pop("checkpoint_every_minutes")
    max_skipped_in_a_row = trainer_cfg.pop("max_skipped_steps_in_a_row")
    max_time = trainer_cfg.pop("max_time", None)
    measured = trainer_cfg["precision"] == "auto" and not runs_on_gpu(trainer_cfg["accelerator"])
    trainer_cfg["precision"] = resolve_precision(trainer_cfg["precision"], trainer_cfg["accelerator"])
    log.info("precision: %s%s", trainer_cfg["precision"], f" ({bf16_finding()}; trainer.precision=32-true or "
             f"bf16-mixed decides otherwise)" if measured else "")
    reads = steps_between_reads(trainer_cfg["accelerator"])
    checkpoints = ResumableCheckpoints(output_dir / "checkpoints", checkpoint_every, checkpoint_minutes, reads)
    callbacks = [checkpoints, DivergenceGuard(max_skipped_in_a_row, divergence_advice(cfg, trainer_cfg["precision"]),
                                              reads),
                 LearningRateMonitor(logging_interval="step")]
    if max_time:
        try:
            callbacks.append(SittingTimer(duration=max_time, interval="step"))
        except MisconfigurationException as e:
            raise UserError(f"trainer settings: {e}") from None
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(LossProgressBar(refresh_rate=reads))
    try:
        trainer = pl.Trainer(
            **trainer_cfg,
            max_epochs=-1,
            default_root_dir=output_dir,
            logger=TensorBoardLogger(save_dir=output_dir, name="tb", version="", default_hp_metric=False),
            callbacks=callbacks,
            enable_checkpointing=False,  # ResumableCheckpoints writes them
            use_distributed_sampler=False,  # EndlessSampler splits the data between ranks
        )
    except (MisconfigurationException, TypeError) as e:  # a trainer.* value or key Lightning does not take
        raise UserError(f"trainer settings: {e}") from None
    return Run(system, datamodule, trainer, checkpoints)
