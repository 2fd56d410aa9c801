"""Video in, stylized video out: frames decoded, stylized a batch at a time, encoded; the audio copied untouched.

PyAV (FFmpeg's libraries) is imported only when a video is given, so stylizing images never needs it.
"""

import heapq
import io
import queue
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch

from .errors import UserError
from .files import write_atomic
from .formats import CONTAINERS
from .images import long_side_size


def _import_av():
    try:
        import av
        import numpy  # noqa: F401  PyAV hands frames over as numpy arrays
    except ImportError as e:
        raise UserError(f"stylizing video needs PyAV and NumPy ({e.name} is missing): pip install "
                        "'impasto[video]'") from None
    return av


def _open_input(av, src: Path):
    try:
        container = av.open(str(src))
    except (av.FFmpegError, ValueError) as e:
        raise UserError(f"input video {src} is not a readable video ({type(e).__name__}): give an MP4, MKV, MOV, "
                        "WebM or AVI file") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"input video {src} has no video stream")
    return container


def _quarter_turns(av, src: Path) -> int:
    """Counter-clockwise quarter turns that stand the coded frames upright: phone videos are stored sideways with a
    display rotation, which FFmpeg puts on each decoded frame. The convention is ffmpeg's own autorotate's."""
    try:
        with av.open(str(src)) as probe:
            for frame in probe.decode(video=0):
                return round(frame.rotation / 90) % 4
    except av.FFmpegError:
        pass  # a first frame that does not decode: the stylizing pass says so
    return 0


def _audio_fits(av, audio_in, muxer: str) -> bool:
    """Whether the input's audio can be copied as is into `muxer` (WebM, say, takes only Opus and Vorbis)."""
    try:
        with av.open(io.BytesIO(), "w", format=muxer) as probe:
            probe.add_stream_from_template(audio_in)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False


class FrameTimes:
    """Each decoded frame's display time, from the pts of the packets fed to the decoder.

    Frames leave the decoder in display order, but their own pts can come out shuffled (MPEG-4 with packed B-frames
    in AVI, such as opencv's Megamind.avi). The packets' pts are the right set of times, and each frame takes the
    earliest not yet used: the decoder cannot emit a frame before it has the packets of every earlier one. An empty
    packet (AVI's "repeat the last frame") yields no frame and no time. Times come out strictly increasing, as
    encoders require.
    """

    def __init__(self):
        self.queue: list[int] = []
        self.last: int | None = None

    def add_packet(self, pts: int | None, size: int) -> None:
        if size and pts is not None:
            heapq.heappush(self.queue, pts)

    def next(self, frame_pts: int | None) -> int:
        pts = heapq.heappop(self.queue) if self.queue else frame_pts
        if pts is None:
            pts = 0 if self.last is None else self.last + 1
        if self.last is not None:
            pts = max(pts, self.last + 1)
        self.last = pts
        return pts


class Writer:
    """A thread that runs `write` on each item put, in order, while the caller decodes and stylizes the next batch:
    decoding, the network and encoding overlap (on a GPU, the copy of a batch back to the CPU waits here too). At
    most `depth` items wait; an error on the thread is raised in the caller at its next put or at the end."""

    def __init__(self, write: Callable[[object], None], depth: int = 2):
        self.write, self.items = write, queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="video-writer", daemon=True)

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as e:  # handed to the caller, who raises it
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.items.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


# Output colour: BT.709, limited range, converted so and tagged so. Untagged video is read as BT.601 or BT.709
# depending on the player and the size, which shifts saturated colours.
BT709 = {"format": "yuv420p", "dst_colorspace": "ITU709", "dst_color_range": "MPEG", "dst_color_trc": 1,
         "dst_color_primaries": 1}


def _tag_bt709(codec_context) -> None:
    codec_context.colorspace = codec_context.color_primaries = codec_context.color_trc = 1  # BT.709
    codec_context.color_range = 1  # limited ("MPEG")


def _displayed_size(video_in, turns: int, size: int | None, scale: float | None = None) -> tuple[int, int]:
    """(width, height) of the upright picture, at long side `size` or scaled by `scale`."""
    coded = video_in.codec_context.width, video_in.codec_context.height
    return long_side_size(*(coded[::-1] if turns % 2 else coded), size, scale)


def _to_batch(frames: list, width: int, height: int, turns: int) -> torch.Tensor:
    """Decoded frames -> (N, 3, height, width) float in [0, 1], upright: resized as images are (Lanczos), before
    they turn, so a sideways frame is resized to (height, width)."""
    import numpy as np

    if turns % 2:
        width, height = height, width
    # PyAV reads each frame with its own matrix and range (full-range phone video, BT.709 HD, …)
    rgb = [f.to_ndarray(width=width, height=height, format="rgb24", interpolation="LANCZOS") for f in frames]
    batch = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float().div(255)
    return torch.rot90(batch, turns, dims=(2, 3)).contiguous() if turns else batch


def _to_rgb24(batch: torch.Tensor):
    """(N, 3, H, W) float -> (N, H, W, 3) uint8 numpy array, clamped to [0, 1] first."""
    return batch.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def stylize_video(forward: Callable[[torch.Tensor], torch.Tensor], src: Path, dst: Path, size: int | None = None,
                  scale: float | None = None, batch: int = 4,
                  check: Callable[[int, int, int], None] | None = None) -> dict:
    """Stylize every frame of `src` into `dst` (written atomically) and return what was written.

    Each frame keeps its timestamp, so variable frame rates survive; the audio track is copied packet for packet
    when the output container takes its codec, and left out (said in the result) when it does not. A video stored
    sideways with a display rotation is stylized and written upright, so the strokes follow the picture.
    `check(width, height, frames)` may refuse the output size before any frame is decoded.
    """
    av = _import_av()
    muxer, codec, options = CONTAINERS[dst.suffix.lower()]
    if codec not in av.codecs_available:
        raise UserError(f"this PyAV build has no {codec} encoder for {dst.suffix}: write .avi, or pip install av "
                        "from PyPI")
    with _open_input(av, src) as source:
        video_in = source.streams.video[0]
        video_in.thread_type = "AUTO"  # decode on several threads
        audio_in = source.streams.audio[0] if source.streams.audio else None
        copy_audio = audio_in is not None and _audio_fits(av, audio_in, muxer)
        turns = _quarter_turns(av, src)
        width, height = _displayed_size(video_in, turns, size, scale)
        width, height = max(2, width - width % 2), max(2, height - height % 2)  # 4:2:0 chroma needs even sizes
        if check is not None:
            check(width, height, batch)
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        time_base = video_in.time_base or 1 / rate
        times, written = FrameTimes(), 0

        def transcode(tmp: str) -> None:
            nonlocal written
            from tqdm import tqdm

            with av.open(tmp, "w", format=muxer) as output, \
                    tqdm(total=video_in.frames or None, desc=src.name, unit="frame", disable=None) as bar:
                video_out = output.add_stream(codec, rate=rate, options=options)
                video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
                _tag_bt709(video_out.codec_context)
                video_out.codec_context.time_base = time_base
                audio_out = output.add_stream_from_template(audio_in) if copy_audio else None
                pending = []

                def write(item) -> None:
                    """On the writer thread: a batch's frames encoded and muxed, or an audio packet muxed."""
                    nonlocal written
                    if isinstance(item, av.Packet):
                        output.mux(item)
                        return
                    stylized, times_out = item
                    for rgb, pts in zip(_to_rgb24(stylized), times_out):
                        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(**BT709)
                        frame.pts, frame.time_base = pts, time_base
                        output.mux(video_out.encode(frame))
                    written += len(times_out)
                    bar.update(len(times_out))

                with Writer(write) as writer:
                    def stylize_pending() -> None:
                        writer.put((forward(_to_batch(pending, width, height, turns)),
                                    [times.next(f.pts) for f in pending]))
                        pending.clear()

                    for packet in source.demux(*[video_in] + ([audio_in] if copy_audio else [])):
                        if packet.stream is video_in:
                            times.add_packet(packet.pts, packet.size)
                            pending += packet.decode()
                            if len(pending) >= batch:
                                stylize_pending()
                        elif packet.dts is not None:  # audio, copied; a None dts marks the demuxer's final flush
                            packet.stream = audio_out
                            writer.put(packet)
                    if pending:
                        stylize_pending()
                if written == 0:  # raised inside the write: the temporary file goes, an existing output stays
                    raise UserError(f"input video {src} has no frames that decode")
                output.mux(video_out.encode(None))  # drain the encoder's look-ahead

        try:
            write_atomic(dst, transcode)
        except av.FFmpegError as e:
            raise UserError(f"video {src} -> {dst} failed in FFmpeg after {written} frames: {e}") from None
        # What the input's streams say is read while the input is open: its streams go with it.
        audio = "copied" if copy_audio else ("none" if audio_in is None else
                                             f"{audio_in.codec_context.name} left out: {dst.suffix} cannot hold it")
        # The length the file declares, against the last frame written: far short means a cut-off or damaged file.
        # A cut AVI keeps its header's frame count (a count of time slots, frames or not) while FFmpeg shortens its
        # duration to what is there, so both are asked.
        declared = max(float(video_in.duration * video_in.time_base) if video_in.duration else 0.0,
                       float(video_in.frames / rate) if video_in.frames else 0.0)
    return {"width": width, "height": height, "frames": written, "audio": audio,
            "seconds": round(float(times.last * time_base), 3), "declared_seconds": round(declared, 3)}


def read_frames(src: Path, size: int | None = None, limit: int | None = None) -> torch.Tensor:
    """The first `limit` frames (all if None) of `src`, upright as stylize_video turns them, resized to long side
    `size`: (N, 3, H, W) in [0, 1]."""
    av = _import_av()
    with _open_input(av, src) as source:
        video_in = source.streams.video[0]
        turns = _quarter_turns(av, src)
        width, height = _displayed_size(video_in, turns, size)
        frames = []
        for frame in source.decode(video_in):
            frames.append(frame)
            if len(frames) == limit:
                break
        if not frames:
            raise UserError(f"input video {src} has no frame that decodes")
        return _to_batch(frames, width, height, turns)
