"""stylize.py: apply a trained style to photos and videos, one forward pass per image or frame: the command line
over impasto.inference.

Imports only the transformer, the checkpoint reader and the image helpers (and PyAV, for a video): no Lightning,
Hydra or datasets.
"""

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from .checkpoint import load_style
from .errors import EXIT_USER_ERROR, UserError, exit_on_user_error
from .images import (
    IMAGE_SUFFIXES,
    collect_files,
    load_image,
    long_side_size,
    resize_long_side,
    save_atomic,
    to_pil,
    to_tensor,
)
from .inference import check_memory, stylizer
from .runtime import autocast_dtype, pick_device
from .video import VIDEO_SUFFIXES, check_output, is_video, stylize_video

MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stylize.py",
                                description="Stylize photos and videos with a trained impasto style.")
    p.add_argument("inputs", nargs="+", help="image or video files, or folders of them")
    p.add_argument("--ckpt", required=True, help="a style checkpoint, e.g. checkpoints/starry_night.safetensors")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="output file, for a single input")
    out.add_argument("--out-dir", help="output folder; each output keeps its input's file name")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="resize so the longer side has SIZE pixels (default: input size)")
    size.add_argument("--scale", type=float, help="resize by this factor (default: 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, …")
    p.add_argument("--precision", default="auto",
                   help="auto (bf16 on CPUs with AMX; fp32 elsewhere, CUDA included, where it ran faster on an "
                        "H100), fp32 or bf16")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep each input's colours and take only the strokes (the luminance) from the style")
    p.add_argument("--batch", type=int, default=4, help="video frames per forward pass (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p.parse_args(argv)


def plan_outputs(inputs: list[Path], output: str | None, out_dir: str | None) -> list[Path]:
    """Each input's output path, or a UserError for a plan that cannot work at all (existing outputs are checked
    per file, as it comes: see stylize_all)."""
    if output is not None:
        if len(inputs) != 1:
            raise UserError(f"-o takes one input, got {len(inputs)}: use --out-dir DIR for several")
        outputs = [Path(output).expanduser()]
    else:
        outputs = [Path(out_dir).expanduser() / p.name for p in inputs]
        names = [o.name for o in outputs]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise UserError(f"several inputs are named {clashes[0]}: stylize them into separate --out-dir folders")
    for src, dst in zip(inputs, outputs):
        if is_video(src):
            check_output(dst)
        elif dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"output {dst} needs an image suffix (.jpg, .png, …)")
        if dst.resolve() == src.resolve():
            raise UserError(f"output {dst} is the input itself: choose another output path")
    return outputs


def stylize_file(forward: Callable[[torch.Tensor], torch.Tensor], src: Path, dst: Path, size: int | None,
                 scale: float | None, check: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    image = load_image(src, "input image")
    if check is not None:  # before the resize, which could be the first thing not to fit
        check(*long_side_size(image.width, image.height, size, scale))
    image = resize_long_side(image, size, scale)
    save_atomic(to_pil(forward(to_tensor(image).unsqueeze(0))[0]), dst)
    return image.size


def stylize_one(forward: Callable[[torch.Tensor], torch.Tensor], check: Callable[..., None], src: Path, dst: Path,
                args: argparse.Namespace) -> None:
    if dst.exists() and not args.overwrite:
        raise UserError(f"output {dst} exists: pass --overwrite to replace it")
    start = time.perf_counter()
    if is_video(src):
        v = stylize_video(forward, src, dst, args.size, args.scale, args.batch, check)
        seconds = time.perf_counter() - start
        print(f"{src} -> {dst} ({v['width']}x{v['height']}, {v['frames']} frames, {seconds:.1f} s, "
              f"{v['frames'] / seconds:.1f} frames/s, audio {v['audio']})", file=sys.stderr)
        if v["declared_seconds"] and v["seconds"] < 0.9 * v["declared_seconds"]:  # FFmpeg stops quietly
            print(f"warning: {src} declares {v['declared_seconds']:.1f} s but its frames stop at "
                  f"{v['seconds']:.1f} s: a cut-off or damaged file?", file=sys.stderr)
    else:
        w, h = stylize_file(forward, src, dst, args.size, args.scale, check)
        print(f"{src} -> {dst} ({w}x{h}, {time.perf_counter() - start:.2f} s)", file=sys.stderr)


def stylize_all(forward: Callable[[torch.Tensor], torch.Tensor], net: torch.nn.Module, device: torch.device,
                dtype: torch.dtype | None, inputs: list[Path], outputs: list[Path],
                args: argparse.Namespace) -> list[Path]:
    """Stylize every input it can; one `error:` line for each it cannot (unreadable, too large, output exists), and
    on to the next. Returns the inputs skipped."""
    skipped = []
    for src, dst in zip(inputs, outputs):
        try:
            stylize_one(forward, partial(check_memory, net, device, dtype, src), src, dst, args)
            continue
        except UserError as e:
            reason = str(e)
        except torch.cuda.OutOfMemoryError:  # beyond check_memory's estimate: one line, not a traceback
            fewer = " or --batch" if is_video(src) else ""
            reason = f"{src}: out of {device.type} memory: pass a smaller --size{fewer}"
        print(f"error: {reason}", file=sys.stderr)
        skipped.append(src)
    return skipped


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        if args.size is not None and args.size <= 0 or args.scale is not None and args.scale <= 0:
            raise UserError("--size and --scale must be positive")
        if args.batch <= 0:
            raise UserError(f"--batch must be positive, got {args.batch}")
        device = pick_device(args.device)
        dtype = autocast_dtype(args.precision, device)
        net, meta = load_style(args.ckpt, device)
        inputs = collect_files(args.inputs, MEDIA_SUFFIXES)
        outputs = plan_outputs(inputs, args.output, args.out_dir)
        forward = stylizer(net, device, dtype, args.preserve_color)
        videos = sum(map(is_video, inputs))
        print(f"style {meta['style']} ({meta['steps']} steps) on {device}, {'bf16' if dtype else 'fp32'}: "
              f"{len(inputs) - videos} image(s), {videos} video(s)", file=sys.stderr)
    skipped = stylize_all(forward, net, device, dtype, inputs, outputs, args)
    if len(inputs) > 1 or skipped:
        print(f"{len(inputs) - len(skipped)} written, {len(skipped)} skipped", file=sys.stderr)
    if skipped:
        sys.exit(EXIT_USER_ERROR)
