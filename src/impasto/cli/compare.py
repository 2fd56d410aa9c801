"""impasto-compare: how good is a trained style? Its loss against Gatys's optimization on the same images and loss.

For each photo, at the same size and with the style's own loss config (same layers, weights and style image):
the fast network's output, and Gatys L-BFGS from the photo after each of `--steps` steps. Writes a table to stdout,
compare.csv and compare.json, and a panel per photo: content | fast | Gatys@100 | Gatys@500.

With `--baseline`, a second network of the same painting (an earlier snapshot) is scored on the same photos by the same
loss, and the per-photo difference of totals is summed up as a mean and its standard error: an A/B of two networks
on many photos, where `--steps 0` leaves Gatys out (it costs minutes a photo on a CPU, a network's pass a second).
"""

import argparse
import csv
import hashlib
import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..config import load_style_images
from ..errors import UserError, exit_on_user_error
from ..files import write_atomic
from ..formats import IMAGE_SUFFIXES
from ..gatys import check_finite, evaluate, optimize_pixels
from ..images import collect_files, grid, load_image, resize_long_side, save_atomic, to_tensor
from ..lookup import file_paintings, find_style
from ..losses import build_perceptual_loss
from ..runtime import autocast_dtype, pick_device
from ..style import open_style, painting_images

COLUMNS = ["image", "method", "content", "style", "tv", "total", "seconds"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="photos or folders (ideally not trained on)")
    p.add_argument("--style", required=True,
                   help="a style: its name (starry_night: checkpoints/, else the shipped one) or its .safetensors file")
    p.add_argument("--size", type=int, default=512, help="long side for both methods (default 512)")
    p.add_argument("--steps", default="50,100,200,500",
                   help="Gatys L-BFGS step counts to report (comma-separated); 0: no Gatys, the networks alone")
    p.add_argument("--painting", help="which painting of a file of several (a name alone in --style finds it too)")
    p.add_argument("--painting-image", nargs="+",
                   help="the painting's image(s), where the style's are not on this machine")
    p.add_argument("--baseline", help="another network of the painting (a file or name), scored beside --style by "
                                      "--style's loss: the report adds the mean difference of totals per photo")
    p.add_argument("--out-dir", default="compare", help="where the CSV, JSON and panels go (default ./compare)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", help="Gatys loop precision: fp32 (the default, so that the "
                   "reference is the same on every machine), auto or bf16")
    p.add_argument("--cache", help="a folder that keeps Gatys's results: a later run on the same photo, painting, "
                                   "size, loss and steps reads them instead of optimizing again (minutes a photo on "
                                   "a CPU)")
    return p.parse_args(argv)


def parse_steps(text: str) -> list[int]:
    if text.strip() == "0":
        return []
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--steps takes comma-separated integers, got {text!r}") from None
    if not steps or steps[0] <= 0:
        raise UserError(f"--steps needs positive step counts, or 0 alone for none, got {text!r}")
    return steps


def style_images(meta: dict, override: list[str] | None) -> list[str]:
    """The style's painting images: impasto's own (asset:...) wherever it is installed, others where they were."""
    if override:
        return override
    found = painting_images(meta)
    for path in found:
        if not Path(path).exists():
            raise UserError(f"style image {path} recorded in the style is not on this machine: pass "
                            "--painting-image PATH")
    return found


def compare(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The rows, and the precision Gatys's loop ran in."""
    steps = parse_steps(args.steps)
    if args.size <= 0:
        raise UserError(f"--size must be positive, got {args.size}")
    device = pick_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    net, meta = open_style(args.style, device, args.painting)
    if meta.get("blend"):
        raise UserError("impasto-compare scores one painting against Gatys: pass --painting NAME, not a blend")
    baseline = open_baseline(args.baseline, device, meta["style"]) if args.baseline else None
    photos = collect_files(args.inputs, IMAGE_SUFFIXES)  # photos only: Gatys has no video mode
    style_cfg = OmegaConf.create({"image": style_images(meta, args.painting_image), "size": meta.get("style_size", 512),
                                  "blend": meta.get("style_blend")})
    styles, blend = load_style_images(style_cfg)
    loss = build_perceptual_loss(meta["loss"]).to(device)
    loss.set_style([s.to(device) for s in styles], blend)

    out_dir = Path(args.out_dir).expanduser()
    rows: list[dict] = []
    for photo in photos:
        content = to_tensor(resize_long_side(load_image(photo, "input image"), args.size)).unsqueeze(0).to(device)
        # both passes before either loss: a pass timed right after the VGG's runs slow, on memory just handed back
        networks = {"fast": net, **({"baseline": baseline} if baseline is not None else {})}
        passes = {method: timed_pass(network, content) for method, network in networks.items()}
        for method, (image, seconds) in passes.items():
            terms = evaluate(loss, image, content)
            check_finite(terms, f"{photo.name}, {method} network", "its output is not a usable image; check the "
                         "checkpoint (stylize a photo with it) and compare with --precision fp32")
            rows.append({"image": photo.name, "method": method, **terms, "seconds": seconds})
        columns = [("content", content)] + [(method, image) for method, (image, _) in passes.items()]
        if steps:
            cache = None
            if args.cache:
                key = gatys_key(photo, args.size, style_cfg, meta["loss"], steps, dtype)
                cache = Path(args.cache).expanduser() / f"{key}.pt"
            snapshots = gatys_snapshots(loss, content, steps, dtype, cache)
            for n in steps:
                image, seconds = snapshots[n]
                terms = evaluate(loss, image.clamp(0, 1), content)
                check_finite(terms, f"{photo.name}, Gatys after {n} steps", "L-BFGS diverged: compare with "
                             "--precision fp32, or at another --size")
                rows.append({"image": photo.name, "method": f"gatys@{n}", **terms, "seconds": seconds})
            shown = [n for n in (100, 500) if n in steps] or steps[-2:]
            columns += [(f"Gatys@{n}", snapshots[n][0].clamp(0, 1)) for n in shown]
        labels, row = zip(*columns)
        save_atomic(grid([list(row)], max(row[0].shape[-2:]), labels=list(labels)), out_dir / f"panel_{photo.stem}.png")
    return rows, "bf16" if dtype else "fp32"


def gatys_snapshots(loss, content: torch.Tensor, steps: list[int], dtype, cache: Path | None
                    ) -> dict[int, tuple[torch.Tensor, float]]:
    """Gatys L-BFGS from the photo: its image and seconds after each of `steps`, read from `cache` when it is there."""
    if cache is not None and cache.is_file():
        return {n: (image.to(content.device), seconds) for n, (image, seconds) in
                torch.load(cache, map_location="cpu", weights_only=True).items()}
    snapshots: dict[int, tuple[torch.Tensor, float]] = {}
    start = time.perf_counter()

    def on_step(step: int, _terms: dict, image: torch.Tensor) -> None:
        if step in steps:
            snapshots[step] = (image.detach().clone(), time.perf_counter() - start)

    optimize_pixels(loss, content, content, steps[-1], "lbfgs", 1.0, dtype, on_step)
    if cache is not None:
        cpu = {n: (image.cpu(), seconds) for n, (image, seconds) in snapshots.items()}
        write_atomic(cache, lambda tmp: torch.save(cpu, tmp))
    return snapshots


def timed_pass(network: torch.nn.Module, content: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.inference_mode():
        image = network(content).clamp(0, 1)
    return image, time.perf_counter() - start


def open_baseline(arg: str, device: torch.device, painting: str) -> torch.nn.Module:
    """--baseline's network, set to paint the compared painting."""
    try:
        path, named = find_style(arg)  # a painting named out of a file of several must be the compared one
        if named is not None and named != painting:
            raise UserError(f"it paints {named}, not {painting}: an A/B compares one painting")
        held = file_paintings(path)  # [] for a file that is not a style, which open_style then refuses
        if named is None and held and painting not in held:  # a file of another painting (or others)
            raise UserError(f"it paints {', '.join(held)}, not {painting}: an A/B compares one painting")
        net, meta = open_style(str(path), device, painting)
    except UserError as e:
        raise UserError(f"--baseline {arg}: {e}") from None
    if meta["style"] != painting:
        raise UserError(f"--baseline {arg}: it paints {meta['style']}, not {painting}: an A/B compares one painting")
    return net


def gatys_key(photo: Path, size: int, style_cfg, loss_cfg: dict, steps: list[int], dtype) -> str:
    """What Gatys's result depends on, hashed: the photo's and the paintings' bytes, the size, the loss, the steps."""
    digest = hashlib.sha256()
    for path in [photo, *style_cfg.image]:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    digest.update(json.dumps([size, style_cfg.size, OmegaConf.to_container(style_cfg.blend) if style_cfg.blend
                              else None, loss_cfg, steps, str(dtype)], sort_keys=True).encode())
    return digest.hexdigest()[:24]


def matched_steps(rows: list[dict]) -> dict[str, str]:
    """Per image: where the fast network's total loss falls among the Gatys step counts measured."""
    verdicts = {}
    for image in dict.fromkeys(r["image"] for r in rows):
        fast = next(r["total"] for r in rows if r["image"] == image and r["method"] == "fast")
        gatys = [r for r in rows if r["image"] == image and r["method"].startswith("gatys@")]
        if not gatys:
            continue
        better = [r["method"] for r in gatys if r["total"] <= fast]
        if not better:
            verdicts[image] = f"fast's loss is lower than every Gatys count measured (up to {gatys[-1]['method']})"
        elif better[0] == gatys[0]["method"]:
            verdicts[image] = f"fast's loss is higher than {gatys[0]['method']}'s, the fewest steps measured"
        else:
            before = gatys[[r["method"] for r in gatys].index(better[0]) - 1]["method"]
            verdicts[image] = f"fast's loss lies between {before}'s and {better[0]}'s"
    return verdicts


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per method, the mean of each column over the images: the row a style is judged by."""
    images = list(dict.fromkeys(r["image"] for r in rows))
    means = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        means.append({"image": f"mean of {len(images)}", "method": method,
                      **{k: round(sum(r[k] for r in mine) / len(mine), 4) for k in COLUMNS[2:]}})
    return means


def paired(rows: list[dict]) -> dict | None:
    """fast − baseline per photo, per term: the mean and its standard error (None for one photo), or None without
    a baseline. Per photo, because photos differ far more from each other than two snapshots of a network do."""
    by_image = {(r["image"], r["method"]): r for r in rows}
    images = [i for i, m in by_image if m == "baseline"]
    if not images:
        return None
    summary: dict = {"photos": len(images)}
    for key in COLUMNS[2:6]:
        diffs = [by_image[i, "fast"][key] - by_image[i, "baseline"][key] for i in images]
        mean = sum(diffs) / len(diffs)
        spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else None
        summary[key] = {"mean": round(mean, 4),
                        "standard_error": round(spread / math.sqrt(len(diffs)), 4) if spread is not None else None}
    return summary


def paired_line(summary: dict) -> str:
    total = summary["total"]
    error = f" ± {total['standard_error']:.4f} (standard error)" if total["standard_error"] is not None else ""
    return (f"fast − baseline, total: {total['mean']:+.4f}{error} over {summary['photos']} photos; "
            f"content {summary['content']['mean']:+.4f}, style {summary['style']['mean']:+.4f}, "
            f"tv {summary['tv']['mean']:+.4f} (lower is better)")


def write_reports(rows: list[dict], means: list[dict], verdicts: dict[str, str], out_dir: Path,
                  pairs: dict | None = None, precision: str = "fp32") -> None:
    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in COLUMNS} for r in rows)

    write_atomic(out_dir / "compare.csv", write_csv)
    report = json.dumps({"rows": rows, "means": means, "matched": verdicts, "paired": pairs,
                         "gatys_precision": precision}, indent=1)
    write_atomic(out_dir / "compare.json", lambda tmp: Path(tmp).write_text(report))


def format_table(rows: list[dict]) -> str:
    lines = [f"{'image':<24} {'method':<10} {'content':>9} {'style':>9} {'tv':>9} {'total':>9} {'seconds':>8}"]
    for r in rows:
        lines.append(f"{r['image'][:24]:<24} {r['method']:<10} {r['content']:>9.4f} {r['style']:>9.4f} "
                     f"{r['tv']:>9.4f} {r['total']:>9.4f} {r['seconds']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        rows, precision = compare(args)
        means = mean_rows(rows)
        verdicts = matched_steps(rows + means)
        pairs = paired(rows)
        write_reports(rows, means, verdicts, Path(args.out_dir).expanduser(), pairs, precision)
        if len({r["image"] for r in rows}) == 1:  # the mean of one photo is its own row: not printed twice
            verdicts.pop(means[0]["image"], None)
            means = []
        print(format_table(rows + means))
        for image, verdict in verdicts.items():
            print(f"{image}: {verdict}")
        if pairs:
            print(paired_line(pairs))


if __name__ == "__main__":
    main()
