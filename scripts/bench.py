"""Benchmarks; each prints one JSON line. Run them on the GPU (through the device tool), never as unit tests.

  python scripts/bench.py optimize [--size 512 --steps 1000]  Gatys L-BFGS, eager fp32 and CUDA-graphed fp32 and bf16:
                                                             wall s with start-up, its phases and the final loss
  python scripts/bench.py train [--size 256 --batch 4 --compile]  training images/s, synthetic data on the device
  python scripts/bench.py stylize [--ckpt C]  images/s at 512x512 and 1920x1080, batch 1, fp32 and --precision (auto)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# the reference (eager fp32, optimize.py's default on CUDA) and the candidate fast paths
OPTIMIZE_MODES = {"fp32": ["precision=fp32"], "fp32_graph": ["precision=fp32", "cuda_graph=true"],
                  "bf16_graph": ["precision=bf16", "cuda_graph=true"]}


def bench_optimize(args) -> dict:
    """Each mode in its own process, timed from launch to exit: start-up counts, as a user sees it."""
    from impasto import ASSETS
    from impasto.runtime import autocast_dtype, pick_device

    content = ASSETS / "preview" / "chelsea.jpg"
    device = pick_device(args.device)
    auto = "bf16" if autocast_dtype("auto", device) else "fp32"
    result = {"bench": "optimize", "size": args.size, "steps": args.steps, "content": content.name,
              "style": "starry_night", "auto_picks": auto}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, options in OPTIMIZE_MODES.items():
            if "cuda_graph=true" in options and device.type != "cuda":
                result[mode] = "not run: CUDA graphs need a CUDA device"
                continue
            metrics = Path(tmp) / f"{mode}.json"
            start = time.perf_counter()
            run = subprocess.run([sys.executable, str(ROOT / "scripts" / "optimize.py"), f"content={content}",
                                  f"size={args.size}", f"steps={args.steps}", *options, f"device={args.device}",
                                  "log_every_n_steps=0", f"output={tmp}/{mode}.png", f"metrics={metrics}",
                                  f"hydra.run.dir={tmp}/{mode}"],
                                 capture_output=True, text=True)
            wall = time.perf_counter() - start
            if run.returncode != 0:  # reported in the line, and the other modes still run
                result[mode] = {"error": (run.stderr.strip().splitlines() or ["no message"])[-1]}
                continue
            m = json.loads(metrics.read_text())
            # startup_s: interpreter, imports and Hydra, before run() starts; the rest is run()'s own timings
            result[mode] = {"wall_s": round(wall, 2), "startup_s": round(wall - m["seconds_in_run"], 2),
                            **m["timings"], "precision": m["precision"],
                            "final_loss": round(m["final_loss"]["total"], 5), "device": m["device"]}
    return result


def bench_train(args) -> dict:
    """Training steps as train.py runs them: bf16 autocast where fast, channels_last on CUDA, optionally compiled."""
    from omegaconf import OmegaConf

    from impasto.losses import build_perceptual_loss
    from impasto.runtime import autocast_dtype, conv_memory_format, pick_device, sync
    from impasto.train import resolve_precision
    from impasto.transformer import TransformerConfig, TransformerNet

    device = pick_device(args.device)
    torch.backends.cudnn.benchmark = True  # as train.py's trainer (fixed crop size)
    if args.precision == "auto":  # train.py's own choice for batches (no loss scaler here: speed only)
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(resolve_precision("auto", device.type))
    else:
        dtype = autocast_dtype(args.precision, device)
    layout = conv_memory_format(device)
    loss = build_perceptual_loss(OmegaConf.load(ROOT / "conf" / "loss" / "gatys.yaml")).to(device, memory_format=layout)
    loss.set_style([torch.rand(1, 3, 512, 512, device=device)])
    net = TransformerNet(TransformerConfig.from_dict(OmegaConf.load(ROOT / "conf" / "model" / "johnson.yaml")))
    net = net.to(device, memory_format=layout)
    if args.compile:
        net.compile()
        loss.network.compile()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=layout)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            terms = loss(net(batch), loss.content_targets(batch))
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    return {"bench": "train", "device": str(device), "precision": precision,
            "compile": args.compile, "size": args.size, "batch": args.batch, "warmup_s": round(warmup_s, 1),
            "images_per_s": round(args.iters * args.batch / seconds, 1)}


def bench_stylize(args) -> dict:
    """stylize.py's forward pass, fp32 and --precision's choice (default auto) in one run."""
    from impasto.checkpoint import load_style
    from impasto.runtime import autocast_dtype, pick_device, sync
    from impasto.stylize import stylizer
    from impasto.transformer import TransformerNet

    device = pick_device(args.device)
    net = load_style(args.ckpt, device)[0] if args.ckpt else TransformerNet().to(device).eval()
    result = {"bench": "stylize", "device": str(device), "batch": 1}
    for mode, precision in (("fp32", "fp32"), ("fast", args.precision)):
        dtype = autocast_dtype(precision, device)
        forward = stylizer(net, device, dtype)
        result[mode] = {"precision": "bf16" if dtype else "fp32"}
        for w, h in ((512, 512), (1920, 1080)):
            x = torch.rand(1, 3, h, w, device=device)
            for _ in range(args.warmup):
                forward(x)
            sync(device)
            start = time.perf_counter()
            for _ in range(args.iters):
                forward(x)
            sync(device)
            result[mode][f"images_per_s_{w}x{h}"] = round(args.iters / (time.perf_counter() - start), 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["optimize", "train", "stylize"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--precision", default="auto", help="train, and stylize's fast path: auto, fp32 or bf16")
    p.add_argument("--compile", action="store_true", help="train: torch.compile the transformer and the VGG")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    args = p.parse_args()
    args.size = args.size or {"optimize": 512, "train": 256}.get(args.what)
    bench = {"optimize": bench_optimize, "train": bench_train, "stylize": bench_stylize}[args.what]
    print(json.dumps(bench(args)))


if __name__ == "__main__":
    main()
