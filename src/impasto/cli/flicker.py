"""impasto-flicker: how much does a style flicker on a video? Frames are stylized one by one, so whatever the network
does with small frame-to-frame changes (sensor noise, compression) shows as shimmering texture.

For each style and video: the mean absolute change between consecutive frames, in 1/255, of the input and of
the stylized output, over every pixel and over the pixels whose input changed by less than 2/255 ("static": there,
any change in the output is flicker, not motion). Prints a table and, last, one JSON line with every row.
"""

import argparse
import json
from pathlib import Path

import torch

from ..errors import UserError, exit_on_user_error
from ..formats import VIDEO_SUFFIXES
from ..images import collect_files
from ..inference import Stylizer
from ..runtime import pick_device
from ..video import read_frames

STATIC = 2 / 255  # an input change below this is noise, not motion


def frame_changes(frames: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N-1, H, W): mean absolute change of each pixel from the previous frame, over channels."""
    return (frames[1:] - frames[:-1]).abs().mean(1)


def flicker(forward, frames: torch.Tensor, batch: int = 8) -> dict[str, float | None]:
    """Frame-to-frame change of `frames` and of forward(frames), in 1/255 (output_static: None if nothing held
    still)."""
    stylized = torch.cat([forward(frames[i:i + batch]).clamp(0, 1).cpu() for i in range(0, len(frames), batch)])
    change_in, change_out = frame_changes(frames), frame_changes(stylized)
    static = change_in < STATIC
    return {"input": 255 * change_in.mean().item(), "output": 255 * change_out.mean().item(),
            "output_static": 255 * change_out[static].mean().item() if static.any() else None,
            "static_fraction": static.float().mean().item()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="impasto-flicker", description=__doc__.splitlines()[0])
    p.add_argument("videos", nargs="+", help="videos or folders of videos")
    p.add_argument("--style", nargs="+", required=True, help="one or more styles to compare, by name or file")
    p.add_argument("--size", type=int, default=256, help="long side of the frames (default 256)")
    p.add_argument("--frames", type=int, default=60, help="frames from the start of each video (default 60)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    with exit_on_user_error():
        if args.size <= 0 or args.frames < 2:
            raise UserError(f"--size must be positive and --frames 2 or more, got {args.size} and {args.frames}")
        videos = collect_files(args.videos, VIDEO_SUFFIXES)
        device = pick_device(args.device)
        clips = {v: read_frames(v, args.size, args.frames) for v in videos}
        rows = []
        for style in args.style:
            forward = Stylizer.from_style(style, device, "fp32")
            for video, frames in clips.items():
                r = {k: None if v is None else round(v, 3) for k, v in flicker(forward, frames).items()}
                rows.append({"style": str(style), "video": str(video), "frames": len(frames), **r})
                static = "   –  " if r["output_static"] is None else f"{r['output_static']:6.2f}"
                print(f"{Path(style).name:32} {video.name:24} input {r['input']:6.2f}  output {r['output']:6.2f}  "
                      f"static {static}  ({r['static_fraction']:.0%} of pixels static)")
    print(json.dumps({"flicker": rows, "size": args.size}))


if __name__ == "__main__":
    main()
