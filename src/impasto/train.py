"""train(cfg): build the data, the loss, the system and the trainer from the composed config; fit; export."""

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from . import checkpoint
from .config import load_style_images
from .data import ImageDataModule, build_train_dataset, load_preview
from .errors import UserError
from .losses import build_perceptual_loss
from .runtime import bf16_is_fast
from .system import LossProgressBar, StyleTransferSystem
from .transformer import TransformerConfig, TransformerNet

log = logging.getLogger(__name__)


def export_path(cfg: DictConfig) -> Path:
    return Path(cfg.export.dir).expanduser() / f"{cfg.export.name}{checkpoint.SUFFIX}"


def runs_on_gpu(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast where the hardware runs it fast (CUDA with bf16, CPUs with AMX), else fp32."""
    if precision != "auto":
        return precision
    on_gpu = runs_on_gpu(accelerator)
    if bf16_is_fast(torch.device("cuda" if on_gpu else "cpu")):
        return "bf16-mixed"
    return "16-mixed" if on_gpu else "32-true"


def progress_bar_refresh(accelerator: str) -> int:
    """Steps between progress-bar refreshes: each reads the loss from the device, a host sync on a GPU (which
    drains the queue of launched work) and free on the CPU."""
    return 10 if runs_on_gpu(accelerator) else 1


def train(cfg: DictConfig) -> Path | None:
    """Fit a style; returns the exported checkpoint's path (on rank 0; None elsewhere)."""
    target = export_path(cfg)
    if target.exists() and not cfg.export.overwrite:
        raise UserError(f"{target} exists and would be overwritten: pass export.overwrite=true to replace it, "
                        "or export.name=NAME to write another file")
    if cfg.stability.weight < 0:
        raise UserError(f"stability.weight must be 0 (off) or more, got {cfg.stability.weight}")
    if cfg.stability.noise <= 0:
        raise UserError(f"stability.noise must be positive (a std on RGB in [0, 1], e.g. 0.02), got "
                        f"{cfg.stability.noise}")
    styles, blend = load_style_images(cfg.style)  # fail on a bad style image before anything heavy starts
    pl.seed_everything(cfg.seed, workers=True)
    transformer = TransformerNet(TransformerConfig.from_dict(cfg.model))
    if cfg.init_from:
        load_weights_from_style(transformer, cfg.init_from)

    dataset, data_description = build_train_dataset(cfg.data)
    log.info("training data: %s", data_description)
    datamodule = ImageDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers)

    loss = build_perceptual_loss(cfg.loss)
    loss.set_style(styles, blend)
    if cfg.compile:  # in place (nn.Module.compile): state-dict keys, Lightning checkpoints and the export unchanged
        transformer.compile()
        loss.network.compile()
    preview = load_preview(cfg.data.preview_dir, cfg.data.size) if cfg.log.preview_every_n_steps else None
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams["data_description"] = data_description
    system = StyleTransferSystem(transformer, loss, cfg.optim.lr, preview, cfg.log.preview_every_n_steps, hparams,
                                 cfg.stability.weight, cfg.stability.noise)

    output_dir = Path(cfg.paths.output_dir)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    checkpoint_every = trainer_cfg.pop("checkpoint_every_n_steps")
    trainer_cfg["precision"] = resolve_precision(trainer_cfg["precision"], trainer_cfg["accelerator"])
    log.info("precision: %s", trainer_cfg["precision"])
    callbacks = [ModelCheckpoint(dirpath=output_dir / "checkpoints", every_n_train_steps=checkpoint_every,
                                 save_last=True, save_top_k=0),
                 LearningRateMonitor(logging_interval="step")]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(LossProgressBar(refresh_rate=progress_bar_refresh(trainer_cfg["accelerator"])))
    trainer = pl.Trainer(
        **trainer_cfg,
        max_epochs=-1,
        default_root_dir=output_dir,
        logger=TensorBoardLogger(save_dir=output_dir, name="tb", version="", default_hp_metric=False),
        callbacks=callbacks,
    )
    trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.ckpt_path)

    if not trainer.is_global_zero:
        return None
    path = checkpoint.save_style(target, system.transformer, style_meta(hparams, trainer.global_step))
    log.info("exported %s (%d steps): stylize with  python stylize.py --ckpt %s PHOTO -o OUT.jpg",
             path, trainer.global_step, path)
    return path


def load_weights_from_style(transformer: TransformerNet, path: str) -> None:
    """Start from an exported style's weights (fine-tuning); its network must be the one `model` builds."""
    source, _ = checkpoint.load_style(path)
    if source.config != transformer.config:
        raise UserError(f"init_from {path} holds a network with {source.config.to_dict()}, but model builds "
                        f"{transformer.config.to_dict()}: set model.widths and model.residual_blocks to match")
    transformer.load_state_dict(source.state_dict())


def style_meta(hparams: dict, steps: int) -> dict:
    """The export's metadata, from the run's resolved config (as saved in its hyperparameters)."""
    images = hparams["style"]["image"]
    count = 1 if isinstance(images, str) else len(images)
    blend = hparams["style"].get("blend") or [1.0] * count
    return {
        "style": hparams["style"]["name"],
        "style_image": images,
        "style_size": hparams["style"]["size"],
        "style_blend": [w / sum(blend) for w in blend],
        "steps": steps,
        "init_from": hparams.get("init_from"),
        "loss": hparams["loss"],
        "loss_network": hparams["loss"]["network"]["weights"],
        "data": hparams["data_description"],
        "image_size": hparams["data"]["size"],
        "batch_size": hparams["data"]["batch_size"],
    }


def export_lightning_checkpoint(ckpt: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Export the style in a Lightning checkpoint of train.py (an interrupted run's last.ckpt, say)."""
    ckpt, target = Path(ckpt).expanduser(), Path(target).expanduser()
    if not ckpt.is_file():
        raise UserError(f"Lightning checkpoint {ckpt} does not exist: look in outputs/<style>/<run>/checkpoints/")
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists: pass --overwrite to replace it, or another output path")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        hparams, weights = state["hyper_parameters"], state["state_dict"]
        transformer = TransformerNet(TransformerConfig.from_dict(hparams["model"]))
        transformer.load_state_dict({k.removeprefix("transformer."): v for k, v in weights.items()
                                     if k.startswith("transformer.")})
    except Exception as e:  # anything unreadable or foreign here is the user's file to fix
        raise UserError(f"{ckpt} is not a train.py checkpoint ({type(e).__name__}): pass "
                        "outputs/<style>/<run>/checkpoints/last.ckpt") from None
    return checkpoint.save_style(target, transformer, style_meta(hparams, state["global_step"]))
