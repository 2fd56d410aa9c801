"""stylize.py (impasto-stylize): apply a trained style to photos and videos, one forward pass per image or frame: the
command line over impasto.inference.

Imports only the transformer, the style reader and the image helpers (and PyAV, for a video): no Lightning,
Hydra or datasets.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import EXIT_USER_ERROR, UserError, check_fraction, exit_on_user_error
from ..files import refuse_overwrite
from ..formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES, check_output, is_video
from ..lookup import MODELS, find_style, trained_images

# torch, Pillow and PyAV are imported where they are used, after the arguments parse: `--help` and a usage error
# answer at once, without the second that importing torch takes.
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Stylize photos and videos with a trained impasto style.")
    p.add_argument("inputs", nargs="+", help="image or video files, or folders of them; - reads one image from stdin")
    p.add_argument("--style",
                   help="a style: its name (starry_night: checkpoints/, else the shipped one), its file "
                        "(.safetensors, .onnx), or a blend of one file's paintings by weight "
                        "(starry_night:0.7,the_scream:0.3)")
    p.add_argument("--painting",
                   help="for a style file of several paintings: which one (NAME), or a blend by weight")
    p.add_argument("--model", choices=MODELS, default="full",
                   help="which shipped network paints a style named by name: full (the default), or thin: about "
                        "four times faster on a CPU, for now less faithful (docs/paintings.md)")
    p.add_argument("--ckpt", help=argparse.SUPPRESS)  # --style's older name
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", help="output file, for a single input; - writes the image to stdout (JPEG, or "
                                            "PNG for a photo with transparency)")
    out.add_argument("--out-dir", help="output folder; each output keeps its input's file name")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="resize so the longer side has SIZE pixels (default: input size)")
    size.add_argument("--scale", type=float, help="resize by this factor (default: 1)")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="refuse photos larger than this, unread (default 200: a 108-megapixel phone photo passes; "
                        "what does not fit in memory whole runs in tiles)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, …")
    p.add_argument("--precision", default="auto",
                   help="auto (bf16 on CPUs with AMX, where it is faster; fp32 elsewhere, CUDA included), fp32 or "
                        "bf16")
    p.add_argument("--strength", type=float, default=1.0,
                   help="how much of the style to apply, from 0 (the photo) to 1 (the full style, the default); "
                        "mixed in the OKLab colour space, which keeps colours from turning milky halfway")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep each input's colours and take only the strokes (the luminance) from the style")
    p.add_argument("--tile", type=int, default=None,
                   help="stylize images in tiles of TILE pixels, with the whole image's statistics (the same "
                        "result up to rounding, in far less memory); by default only images too large for a whole "
                        "pass are tiled, at 1024")
    p.add_argument("--batch", type=int, default=4, help="video frames per forward pass (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--sheet", action="store_true",
                   help="one picture of the photo in every painting, labelled: every shipped painting, or every "
                        "painting of --style's file (at --size, default 512)")
    p.add_argument("--json", action="store_true",
                   help="one JSON line on stdout per output: input, output, size, style, strength, device, seconds")
    args = p.parse_args(argv)
    if args.ckpt:  # `--ckpt FILE --style NAME` as it was: the style file, then its painting
        args.painting = args.painting or args.style
        args.style = args.ckpt
    return args


STDIO = Path("-")  # an input read from stdin, an output written to stdout


def plan_outputs(inputs: list[Path], output: str | None, out_dir: str | None) -> list[Path]:
    """Each input's output path, or a UserError for a plan that cannot work at all (existing outputs are checked
    per file, as it comes: see stylize_all). `-o -` is stdout, for one image."""
    if output == "-":
        if len(inputs) != 1 or is_video(inputs[0]):
            raise UserError("-o - writes one image to stdout: give one photo")
        return [STDIO]
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
        if src != STDIO and dst.resolve() == src.resolve():
            raise UserError(f"output {dst} is the input itself: choose another output path")
    return outputs


def read_photo(src: Path, args: argparse.Namespace):
    """The input photo (from stdin for -), within --max-megapixels."""
    from ..images import TooManyPixels, load_photo

    source = sys.stdin.buffer.read() if src == STDIO else src
    try:
        return load_photo(source, name="stdin", max_megapixels=args.max_megapixels)
    except TooManyPixels as e:
        raise UserError(f"{e}: pass --max-megapixels to raise the limit") from None


def stylize_file(stylizer, src: Path, dst: Path, args: argparse.Namespace) -> tuple[str, tuple[int, int]]:
    """One image, as a viewer shows it (upright, in sRGB, its alpha and camera metadata kept); says how it ran, and
    the output's size."""
    from ..images import encode_image, long_side_size, resize_long_side, save_atomic

    photo = read_photo(src, args)
    width, height = long_side_size(*photo.rgb.size, args.size, args.scale)
    tile = stylizer.plan(src, width, height, args.tile)  # before the resize, which could be the first not to fit
    out = stylizer.stylize_pil(resize_long_side(photo.rgb, args.size, args.scale), tile)
    if dst == STDIO:
        sys.stdout.buffer.write(encode_image(out, "PNG" if photo.alpha else "JPEG", alpha=photo.alpha, exif=photo.exif))
        sys.stdout.buffer.flush()
    else:
        save_atomic(out, dst, alpha=photo.alpha, exif=photo.exif)
    return f"{width}x{height}" + (f", in {tile}-pixel tiles" if tile else ""), (width, height)


def report(args: argparse.Namespace, stylizer, meta: dict, src: Path, dst: Path, size, seconds: float) -> None:
    """--json's line for one output."""
    if args.json:
        print(json.dumps({"input": str(src), "output": str(dst), "size": list(size), "style": meta["style"],
                          "strength": args.strength, "device": stylizer.describe(), "seconds": round(seconds, 3)}),
              flush=True)


def stylize_one(stylizer, src: Path, dst: Path, args: argparse.Namespace, meta: dict) -> None:
    if dst != STDIO:
        refuse_overwrite(dst, args.overwrite)
    start = time.perf_counter()
    if is_video(src):
        from ..video import stylize_video

        check = lambda width, height, frames: stylizer.check_frames(src, width, height, frames)  # noqa: E731
        v = stylize_video(stylizer, src, dst, args.size, args.scale, args.batch, check)
        seconds = time.perf_counter() - start
        say(f"{src} -> {dst} ({v['width']}x{v['height']}, {v['frames']} frames, {seconds:.1f} s, "
            f"{v['frames'] / seconds:.1f} frames/s, audio {v['audio']})")
        report(args, stylizer, meta, src, dst, (v["width"], v["height"]), seconds)
        if v["declared_seconds"] and v["seconds"] < 0.9 * v["declared_seconds"]:  # FFmpeg stops quietly
            say(f"warning: {src} declares {v['declared_seconds']:.1f} s but its frames stop at "
                f"{v['seconds']:.1f} s: a cut-off or damaged file?")
    else:
        how, size = stylize_file(stylizer, src, dst, args)
        seconds = time.perf_counter() - start
        say(f"{src} -> {dst} ({how}, {seconds:.2f} s)")
        report(args, stylizer, meta, src, dst, size, seconds)


def stylize_all(stylizer, inputs: list[Path], outputs: list[Path], args: argparse.Namespace,
                meta: dict) -> list[Path]:
    """Stylize every input it can; one `error:` line for each it cannot (unreadable, too large, output exists), and
    on to the next. Returns the inputs skipped."""
    # CUDA's out-of-memory error where torch is loaded; the ONNX runtime's path never loads it.
    out_of_memory = (MemoryError, *((sys.modules["torch"].cuda.OutOfMemoryError,) if "torch" in sys.modules else ()))
    from tqdm import tqdm

    skipped = []
    # a bar over a folder, on a terminal only: its lines go above it (say), and logs stay clean
    bar = tqdm(total=len(inputs), unit="file", file=sys.stderr, leave=False,
               disable=len(inputs) < 2 or not sys.stderr.isatty())
    for src, dst in zip(inputs, outputs):
        try:
            stylize_one(stylizer, src, dst, args, meta)
            continue
        except UserError as e:
            reason = str(e)
        except out_of_memory:  # beyond the plan's estimate: one line, not a traceback
            fewer = " or --batch" if is_video(src) else " or --tile"
            reason = f"{src}: out of memory on {stylizer.describe()}: pass a smaller --size{fewer}"
        finally:
            bar.update()
        say(f"error: {reason}")
        skipped.append(src)
    bar.close()
    return skipped


def say(line: str) -> None:
    """A line on stderr, above the progress bar where one is shown."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def load_runtime(args: argparse.Namespace, videos: int):
    """The style ready to run, and its metadata: an .onnx style through onnxruntime, without importing torch, or a
    .safetensors one through PyTorch."""
    path, painting = find_style(args.style, args.model)
    painting = args.painting or painting
    if path.suffix.lower() == ".onnx":
        if args.device not in ("auto", "cpu") or args.precision not in ("auto", "fp32"):
            raise UserError("an .onnx style runs on the CPU in fp32 through onnxruntime: use the .safetensors style "
                            "for --device or --precision")
        if videos:
            raise UserError("an .onnx style stylizes images: use the .safetensors style for videos")
        from ..onnx_style import OnnxStyle

        style = OnnxStyle(path, args.preserve_color, args.strength, painting)
        return style, style.meta
    from ..inference import Stylizer

    stylizer = Stylizer.from_style(path, args.device, args.precision, painting,
                                   keep_colors=args.preserve_color, strength=args.strength)
    return stylizer, stylizer.meta


def sheet(args: argparse.Namespace) -> None:
    """--sheet: the photo in every painting, labelled, as one picture."""
    from ..images import grid, resize_long_side, save_atomic, to_tensor
    from ..inference import Stylizer
    from ..lookup import painting_names, shipped_folder
    from ..style import read_meta

    if len(args.inputs) != 1 or args.output is None or args.output == "-":
        raise UserError("--sheet takes one photo and -o FILE for the sheet")
    (dst,) = plan_outputs([Path(args.inputs[0])], args.output, None)
    refuse_overwrite(dst, args.overwrite)
    if args.style:
        path = find_style(args.style, args.model)[0]
        styles = [(path, name) for name in painting_names(read_meta(path))]
    else:  # each shipped painting once: from a file of its own where it has one, as find_style takes it by name,
        # in the order of the files of several (a new file of its own keeps the painting's column)
        files = [(path, painting_names(read_meta(path))) for path in sorted(shipped_folder(args.model).glob(
            "*.safetensors"))]
        files.sort(key=lambda file: len(file[1]) == 1)
        own = {names[0]: path for path, names in files if len(names) == 1}
        styles = list(dict.fromkeys((own.get(name, path), name) for path, names in files for name in names))
    photo = resize_long_side(read_photo(Path(args.inputs[0]), args).rgb, args.size or 512, args.scale)
    image = to_tensor(photo).unsqueeze(0)
    row, labels = [image], ["photo"]
    for path, painting in styles:
        stylizer = Stylizer.from_style(path, args.device, args.precision, painting,
                                       keep_colors=args.preserve_color, strength=args.strength)
        row.append(stylizer.image(image))
        labels.append(stylizer.meta["style"])
    save_atomic(grid([row], tile=max(photo.size), labels=labels), dst)
    print(f"{args.inputs[0]} -> {dst} (a sheet of {len(styles)} paintings)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        if args.json and args.output == "-":
            raise UserError("--json and -o - both write to stdout: choose one")
        if args.size is not None and args.size <= 0 or args.scale is not None and not 0 < args.scale < float("inf"):
            raise UserError("--size and --scale must be positive (and --scale finite)")
        if args.batch <= 0:
            raise UserError(f"--batch must be positive, got {args.batch}")
        if args.max_megapixels is not None and not 0 < args.max_megapixels < float("inf"):
            raise UserError(f"--max-megapixels must be a positive number, got {args.max_megapixels}")
        if args.tile is not None and args.tile < 64:
            raise UserError(f"--tile must be 64 pixels or more, got {args.tile}")
        check_fraction(args.strength, "--strength")
        if args.sheet:
            return sheet(args)
        if not args.style:
            raise UserError("pass --style STYLE (a name such as starry_night, or a file), or --sheet")
        from ..images import collect_files

        if "-" in args.inputs and (args.inputs != ["-"] or args.output is None):
            raise UserError("- reads one image from stdin: give it alone, with -o FILE or -o -")
        inputs = [STDIO] if args.inputs == ["-"] else collect_files(args.inputs, MEDIA_SUFFIXES)
        outputs = plan_outputs(inputs, args.output, args.out_dir)
        videos = sum(map(is_video, inputs))
        stylizer, meta = load_runtime(args, videos)
        print(f"style {meta['style']} ({trained_images(meta):,} training images) on {stylizer.describe()}: "
              f"{len(inputs) - videos} image(s), {videos} video(s)", file=sys.stderr)
    skipped = stylize_all(stylizer, inputs, outputs, args, meta)
    if len(inputs) > 1 or skipped:
        print(f"{len(inputs) - len(skipped)} written, {len(skipped)} skipped", file=sys.stderr)
    if skipped:
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
