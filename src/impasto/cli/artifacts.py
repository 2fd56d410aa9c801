"""impasto-artifacts: how much a style's artifacts show, measured on photos across sizes.

Numbers per photo and size (long side), each the worst over the image:
- dark_blob: instance norm's "droplet", a patch that is near black (luminance under 40/255) and flat (local std
  under 4/255) in the output where the photo has texture (local std over 8/255): the largest share of a window of
  1/32 of the long side that it covers. 1 where a droplet covers a window; strokes score low, but a palette that paints
  the photo's own shadows flat and black scores high.
- droplet: the same, counted only where the photo is bright (its local mean luminance over 120/255): a black patch
  on a bright part, which no shadow of the photo explains.
- edge_line: a line along a border (padding). The mean change between a border's outer two pixel rows and the next
  two, over the same between pairs of rows further in, and over the photo's own where that is above 1; the worst
  of the four sides. About 1 or less without a line.
- edge_top_left, edge_bottom_right: the same step, the mean of the top and left borders and of the bottom and
  right ones. Johnson's stride-2 grid pads the top and left only, so a line there and not on the other two is its.
- residual_peak: the largest activation leaving the residual blocks, which a droplet spikes.
Writes a grid per style (photos down, sizes across) to look at, grid_NAME.jpg (two styles of one name: grid_NAME_N.jpg,
N their place among the --style arguments), and prints one JSON line.
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError, exit_on_user_error
from ..formats import IMAGE_SUFFIXES
from ..images import collect_files, grid, load_image, resize_long_side, save_atomic, to_tensor
from ..lookup import file_paintings, find_style
from ..style import open_style

LUMA = (0.299, 0.587, 0.114)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) luma in [0, 255]."""
    return 255 * (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def local_mean(y: torch.Tensor, size: int = 9) -> torch.Tensor:
    return F.avg_pool2d(y, size, 1, size // 2, count_include_pad=False)


def local_std(y: torch.Tensor, size: int = 9) -> torch.Tensor:
    return (local_mean(y.square(), size) - local_mean(y, size).square()).clamp_min(0).sqrt()


def dark_blob(stylized: torch.Tensor, photo: torch.Tensor, bright: bool = False) -> float:
    """The largest share of a window (1/32 of the long side, 16 px at least) that is near black and flat in the
    output where the photo has texture (and, if `bright`, is bright): 1 where a droplet covers a window."""
    y, x = luminance(stylized.clamp(0, 1)), luminance(photo)
    blob = (y < 40) & (local_std(y) < 4) & (local_std(x) > 8)
    if bright:
        blob &= local_mean(x) > 120
    window = min(max(16, round(max(photo.shape[-2:]) / 32)), *photo.shape[-2:])
    return float(F.avg_pool2d(blob.float(), window, stride=max(1, window // 4)).max())


def border_steps(image: torch.Tensor) -> list[float]:
    """For the top, bottom, left and right border: the change between its outer two pixel rows and the next two,
    over the mean change between neighbouring pairs of rows further in."""
    y = luminance(image.clamp(0, 1))[0, 0]
    ratios = []
    for side in (y, y.flip(0), y.T, y.T.flip(0)):  # rows counted from that border
        pairs = side[: (side.shape[0] // 2) * 2].reshape(-1, 2, side.shape[1]).mean(1)
        steps = (pairs[1:] - pairs[:-1]).abs().mean(1)
        ratios.append(float(steps[0] / steps[1:].mean().clamp_min(1e-6)))
    return ratios


def edge_sides(stylized: torch.Tensor, photo: torch.Tensor) -> list[float]:
    """Each border's step in the output (top, bottom, left, right), over the photo's own step there where that is
    above 1 (a photo's frame or horizon is not the network's line)."""
    return [out / max(1.0, own) for out, own in zip(border_steps(stylized), border_steps(photo))]


def edge_line(stylized: torch.Tensor, photo: torch.Tensor) -> float:
    """The worst border's step: see edge_sides."""
    return max(edge_sides(stylized, photo))


@torch.inference_mode()
def measure(net: torch.nn.Module, photo: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The stylization of `photo` (1, 3, H, W) and its artifact numbers."""
    peaks = []
    hook = net.residuals.register_forward_hook(lambda m, i, out: peaks.append(float(out.abs().max())))
    try:
        stylized = net(photo)
    finally:
        hook.remove()
    top, bottom, left, right = edge_sides(stylized, photo)
    return stylized, {"dark_blob": round(dark_blob(stylized, photo), 3),
                      "droplet": round(dark_blob(stylized, photo, bright=True), 3),
                      "edge_line": round(max(top, bottom, left, right), 3),
                      "edge_top_left": round((top + left) / 2, 3), "edge_bottom_right": round((bottom + right) / 2, 3),
                      "residual_peak": round(peaks[0], 2)}


def painting_for(style: str, painting: str | None) -> str | None:
    """`painting` where `style` is a file of several paintings and its name picks none (`paintings`, a path);
    None for a one-painting file and for a name that picks its own (`the_scream`)."""
    if painting is None:
        return None
    path, picked = find_style(style)
    return painting if picked is None and len(file_paintings(path)) > 1 else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="impasto-artifacts", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="photos or folders, ideally never trained on")
    p.add_argument("--style", action="append", required=True, help="a style, by name or file (repeat for several)")
    p.add_argument("--painting", help="which painting of a file of several (or a blend, a:0.5,b:0.5), in each --style "
                   "that is such a file and whose name does not pick a painting itself")
    p.add_argument("--sizes", default="256,512,1024,2048", help="long sides to stylize at (comma-separated)")
    p.add_argument("--out-dir", default="artifacts", help="where the grids go (default ./artifacts)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        try:
            sizes = [int(s) for s in args.sizes.split(",")]
        except ValueError:
            raise UserError(f"--sizes takes comma-separated integers, got {args.sizes!r}") from None
        photos = collect_files(args.inputs, IMAGE_SUFFIXES)
        images = [load_image(p, "input image") for p in photos]
        report = {"sizes": sizes, "photos": [p.name for p in photos], "styles": {}}
        styles = list(dict.fromkeys(args.style))
        stems = [Path(style).stem for style in styles]
        specs = [painting_for(style, args.painting) for style in styles]
        opened = [open_style(style, spec=spec) for style, spec in zip(styles, specs)]
        if args.painting and not any(specs):
            raise UserError(f"--painting {args.painting}: no --style is a file of several paintings")
        for number, (style, (net, _)) in enumerate(zip(styles, opened), 1):  # each opened first: errors come early
            # Two styles of one name (a new file beside the shipped painting) keep a grid each and a row each.
            twin = stems.count(Path(style).stem) > 1
            key, label = (style, f"{Path(style).stem}_{number}") if twin else (Path(style).name, Path(style).stem)
            rows, per_photo, by_size = [], {}, {}
            for path, image in zip(photos, images):
                row = []
                for size in sizes:
                    photo = to_tensor(resize_long_side(image, size)).unsqueeze(0)
                    stylized, numbers = measure(net, photo)
                    row.append(stylized.clamp(0, 1))
                    per_photo.setdefault(path.name, {})[str(size)] = numbers
                    for name, value in numbers.items():
                        by_size.setdefault(str(size), {}).setdefault(name, []).append(value)
                rows.append(row)
            summary = {size: {name: {"mean": round(sum(v) / len(v), 3), "max": max(v)} for name, v in numbers.items()}
                       for size, numbers in by_size.items()}
            out = Path(args.out_dir) / f"grid_{label}.jpg"
            save_atomic(grid(rows), out)
            report["styles"][key] = {"summary": summary, "photos": per_photo, "grid": str(out)}
        print(json.dumps(report))


if __name__ == "__main__":
    main()
