"""The slow Gatys method, the reference the fast network is measured against: `impasto-gatys style=starry_night
content=photo.jpg [overrides]` (conf/gatys.yaml). Style, loss and reconstruction settings in, one image out."""

import json
import logging
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from ..color import preserve_color
from ..config import CONF_DIR, load_style_images
from ..errors import UserError, exit_on_user_error
from ..files import refuse_overwrite, write_atomic
from ..gatys import check_finite, evaluate, initial_image, optimize_pixels
from ..images import load_image, resize_long_side, save_atomic, to_pil, to_tensor
from ..losses import build_perceptual_loss
from ..runtime import autocast_dtype, pick_device, sync
from ..vgg import LAYER_NAMES

log = logging.getLogger(__name__)


def loss_config_for(cfg: DictConfig) -> DictConfig:
    """The `loss` group, narrowed for a Gatys Fig. 1 reconstruction when `reconstruct` asks for one."""
    loss_cfg = cfg.loss.copy()
    if cfg.reconstruct is None:
        return loss_cfg
    if cfg.layer not in LAYER_NAMES:
        raise UserError(f"unknown layer {cfg.layer!r}: use a VGG19 layer name such as relu3_1")
    if cfg.init == "content":
        raise UserError("a reconstruction that starts from the content image is trivial: pass init=noise or "
                        "init=color")
    depth = LAYER_NAMES.index(cfg.layer)
    if cfg.reconstruct == "content":
        loss_cfg.content_layers = {cfg.layer: 1.0}
        loss_cfg.style_weight, loss_cfg.tv_weight = 0.0, 0.0
    elif cfg.reconstruct == "style":  # every style layer up to `layer`, as in the figure's rows
        kept = {n: w for n, w in loss_cfg.style_layers.items() if LAYER_NAMES.index(n) <= depth}
        if not kept:
            raise UserError(f"no style layer at or above {cfg.layer}: pick a deeper layer")
        loss_cfg.style_layers = kept
        loss_cfg.content_weight, loss_cfg.tv_weight = 0.0, 0.0
    else:
        raise UserError(f"unknown reconstruct {cfg.reconstruct!r}: use content or style")
    return loss_cfg


def output_path(cfg: DictConfig) -> Path:
    if cfg.output:
        return Path(cfg.output).expanduser()
    return Path(f"{Path(cfg.content).stem}_{cfg.style.name}.png")


def divergence_advice(cfg: DictConfig) -> str:
    return (f"nothing is written. Lower the step size solver.lr={cfg.solver.lr} ({cfg.solver.name}) or the loss "
            f"weights (loss.style_weight={cfg.loss.style_weight}), or use precision=fp32")


def run(cfg: DictConfig, log_dir: Path | None = None) -> dict:
    """Optimize, write the image atomically, and return the metrics (also written to `metrics` if set)."""
    started = time.perf_counter()
    if cfg.steps < 0:
        raise UserError(f"steps must be 0 or more, got {cfg.steps}")
    out = output_path(cfg)
    refuse_overwrite(out, cfg.overwrite, "overwrite=true", "output=PATH")
    device = pick_device(cfg.device)
    dtype = autocast_dtype(cfg.precision, device)
    photo = load_image(cfg.content, "content image")
    styles, blend = load_style_images(cfg.style)
    scales = list(cfg.scales) if cfg.scales else [cfg.size]
    if any(s <= 0 for s in scales):
        raise UserError(f"sizes must be positive, got {scales}")

    torch.manual_seed(cfg.seed)
    loss = build_perceptual_loss(loss_config_for(cfg)).to(device)
    if device.type == "cuda" and dtype is not None:
        loss.network.to(memory_format=torch.channels_last)
    loss.set_style([s.to(device) for s in styles], blend)  # style Grams once, for every scale and step
    if device.type == "cuda":  # after the style's one pass: autotune only the shapes that the loop repeats
        torch.backends.cudnn.benchmark = True

    sync(device)
    timings = {"setup_s": time.perf_counter() - started}  # device start, VGG weights, style Grams

    writer = None
    if log_dir is not None and cfg.log_every_n_steps:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir / "tb"))
    image, content = None, None
    total_steps = cfg.steps * len(scales)
    bar = tqdm(total=total_steps, desc="gatys", unit="step", disable=None)
    done = 0
    for size in scales:
        content = to_tensor(resize_long_side(photo, size)).unsqueeze(0).to(device)
        if image is None:
            start = initial_image(content, cfg.init, tuple(cfg.init_color), cfg.seed)
        else:  # coarse-to-fine: the previous scale's result, upsampled, is this scale's start
            start = F.interpolate(image, size=content.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)

        def on_step(step: int, terms: dict, current: torch.Tensor) -> None:
            bar.update(1)
            if done + step == 1:  # the first step pays for cuDNN's autotuning: timed apart from the rest
                sync(device)
                timings["first_step_s"] = time.perf_counter() - started - timings["setup_s"]
            if cfg.log_every_n_steps and step % cfg.log_every_n_steps == 0:
                values = {k: float(v) for k, v in terms.items()}  # the only host sync, every k steps
                check_finite(values, f"step {done + step}", divergence_advice(cfg))
                bar.set_postfix(loss=f"{values['total']:.4g}", size=size)
                if writer is not None:
                    for name, value in values.items():
                        writer.add_scalar(f"loss/{name}", value, done + step)
                    writer.add_image("image", current.detach()[0].clamp(0, 1).float().cpu(), done + step)

        image = optimize_pixels(loss, content, start, cfg.steps, cfg.solver.name, cfg.solver.lr, dtype, on_step,
                                cfg.cuda_graph)
        done += cfg.steps
    bar.close()
    sync(device)
    timings["steps_s"] = time.perf_counter() - started - sum(timings.values())

    terms = evaluate(loss, image, content)  # fp32, whatever precision the loop ran in
    check_finite(terms, f"after {cfg.steps} steps", divergence_advice(cfg))
    result = image.clamp(0, 1)
    if cfg.preserve_color:
        result = preserve_color(result, content).clamp(0, 1)
    save_atomic(to_pil(result[0]), out)
    if writer is not None:
        writer.add_hparams({"steps": cfg.steps, "size": scales[-1], "optimizer": cfg.solver.name,
                            "precision": "bf16" if dtype else "fp32"}, {f"final/{k}": v for k, v in terms.items()})
        writer.close()
    timings["finish_s"] = time.perf_counter() - started - sum(timings.values())  # fp32 evaluation, the PNG
    metrics = {"output": str(out), "final_loss": terms, "steps": cfg.steps, "scales": scales,
               "optimizer": cfg.solver.name, "precision": "bf16" if dtype else "fp32", "device": str(device),
               "cuda_graph": bool(cfg.cuda_graph),
               "seconds_in_run": round(sum(timings.values()), 3),
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    if cfg.metrics:
        write_atomic(Path(cfg.metrics).expanduser(), lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=1)))
    log.info("wrote %s: total loss %.4g (content %.4g, style %.4g, tv %.4g)", out, terms["total"],
             terms["content"], terms["style"], terms["tv"])
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="gatys")
def _gatys(cfg: DictConfig) -> None:
    with exit_on_user_error():
        run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    from .train import run_hydra

    run_hydra(_gatys, "gatys")


if __name__ == "__main__":
    main()
