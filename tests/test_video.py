"""stylize.py on videos: every frame stylized at its own time, the audio copied, bad input refused, at tiny sizes."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from conftest import assert_user_error, cli, run, shipped_style
from impasto.formats import CONTAINERS
from impasto.images import to_tensor
from impasto.inference import Stylizer
from impasto.style import load_style
from impasto.video import FrameTimes, read_frames, stylize_video

SHIPPED = shipped_style()
FRAMES, WIDTH, HEIGHT = 9, 64, 48


def write_clip(path, codec: str, options: dict, audio: str | None, frames: int = FRAMES) -> None:
    """`frames` frames of a moving gradient at 12 frames/s, with a tone in `audio` codec if given."""
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=12, options=options)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = out.add_stream(audio, rate=16000, layout="mono") if audio else None
        x = np.linspace(0, 255, WIDTH)[None, :, None]
        y = np.linspace(0, 255, HEIGHT)[:, None, None]
        for i in range(frames):
            rgb = np.concatenate([(x + 20 * i) % 256 + 0 * y, y + 0 * x, np.full_like(x + y, 40 * i % 256)], axis=2)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound:
            samples = sound.codec_context.frame_size or 1024
            for i in range(12):
                t = (np.arange(samples) + i * samples) / 16000
                frame = av.AudioFrame.from_ndarray((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None],
                                                   format="s16", layout="mono")
                frame.sample_rate, frame.pts = 16000, i * samples
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def frames_of(path) -> tuple[list[float], list[torch.Tensor]]:
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
    return [f.time for f in decoded], [to_tensor(f.to_image()) for f in decoded]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, "libx264", {"qp": "0"}, "aac")  # lossless: the same frames on every run
    return path


def test_stylize_py_styles_every_frame_keeps_times_and_copies_the_audio(tmp_path, clip):
    out = tmp_path / "out" / "clip_starry.mp4"
    result = run("stylize.py", "--style", str(SHIPPED), str(clip), "-o", str(out), "--device", "cpu", "--batch", "4",
                 "--precision", "fp32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{FRAMES} frames" in result.stderr and "audio copied" in result.stderr

    times_in, frames_in = frames_of(clip)
    times_out, frames_out = frames_of(out)
    assert len(frames_out) == FRAMES and frames_out[0].shape == (3, HEIGHT, WIDTH)
    assert times_out == pytest.approx(times_in, abs=1e-3)
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]

    # each output frame is the network's stylization of its own input frame, through the same H.264 encoding (its
    # 4:2:0 chroma alone costs a finely stroked style 6-7 dB, so the frames are compared after the encoder, not before)
    net, _ = load_style(SHIPPED)
    stylized = iter(Stylizer(net, torch.device("cpu"), None)(torch.stack(frames_in)).clamp(0, 1))
    reference = tmp_path / "reference.mp4"
    stylize_video(lambda batch: torch.stack([next(stylized) for _ in batch]), clip, reference, batch=4)
    expected = frames_of(reference)[1]
    for i in (0, FRAMES - 1):
        error = (frames_out[i] - expected[i]).square().mean()
        other = (frames_out[i] - expected[(i + FRAMES // 2) % FRAMES]).square().mean()
        assert 10 * torch.log10(1 / error.clamp_min(1e-12)) > 40, f"frame {i}: PSNR against its own stylization"
        assert error < other / 4, f"frame {i} is closer to another frame's stylization"


def test_frame_times_follow_the_packets_when_frame_pts_are_shuffled():
    """The first frames of opencv's Megamind.avi (MPEG-4, packed B-frames in AVI): the packets' pts and the
    decoded frames' own pts are both out of order; the display times are 1, 2, 3, …"""
    packets = [1, 2, 4, 3, 5, 7, 6, 8, 10, 9]
    frames = [1, 2, 3, 5, 4, 6, 8, 7, 9, 11]  # what the decoder stamps on its frames, in display order
    times = FrameTimes()
    out = []
    for i, pts in enumerate(packets):
        times.add_packet(pts, size=100)
        if i >= 1:  # a decoder one frame behind, as with B-frames
            out.append(times.next(frames[i - 1]))
    out.append(times.next(frames[-1]))
    assert out == list(range(1, 11))


def test_frame_times_skip_empty_packets_and_stay_increasing():
    times = FrameTimes()
    for pts, size in ((0, 9), (11, 0), (17, 9)):  # tree.avi: an empty packet repeats the frame before it
        times.add_packet(pts, size)
    assert [times.next(None), times.next(None)] == [0, 17]
    assert [times.next(17), times.next(None)] == [18, 19]  # no packet times left: the frame's, kept rising


def test_avi_with_b_frames_in_mkv_out_keeps_every_frame_time(tmp_path):
    clip = tmp_path / "clip.avi"
    write_clip(clip, "mpeg4", {"bf": "2", "qscale": "2"}, None)
    out = tmp_path / "clip.mkv"
    net, _ = load_style(SHIPPED)
    written = stylize_video(Stylizer(net, torch.device("cpu"), None), clip, out, batch=2)
    assert written["frames"] == FRAMES and (written["width"], written["height"]) == (WIDTH, HEIGHT)
    times_in, _ = frames_of(clip)
    times_out, _ = frames_of(out)
    assert times_out == pytest.approx(times_in, abs=1e-3)


def test_audio_a_container_cannot_hold_is_left_out_and_said(tmp_path, clip):
    net, _ = load_style(SHIPPED)
    out = tmp_path / "clip.webm"
    written = stylize_video(Stylizer(net, torch.device("cpu"), None), clip, out, size=32)
    assert written["audio"] == "aac left out: .webm cannot hold it"
    assert (written["width"], written["height"]) == (32, 24)
    with av.open(str(out)) as c:
        assert not c.streams.audio and c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.video[0].average_rate == Fraction(12)


@pytest.mark.parametrize("degrees, corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_a_sideways_phone_video_comes_out_upright(tmp_path, degrees, corner):
    """Stored 64x32 with a white block top-left and a display rotation (counter-clockwise degrees): the output is
    upright and the block sits where ffmpeg 9's autorotate puts it (checked once by hand with its CLI)."""
    clip = tmp_path / "phone.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        video.set_display_rotation(degrees)
        coded = np.zeros((32, 64, 3), np.uint8)
        coded[:8, :16] = 255
        for _ in range(3):
            out.mux(video.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")))
        out.mux(video.encode(None))
    written = stylize_video(lambda x: x, clip, tmp_path / "upright.mp4", size=32)  # the identity, as a network
    turned = degrees != 180
    assert (written["width"], written["height"]) == ((16, 32) if turned else (32, 16))
    with av.open(str(tmp_path / "upright.mp4")) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation == 0
        luma = torch.from_numpy(frame.to_ndarray(format="rgb24")).float().mean(-1)
    h, w = luma.shape
    rows = slice(h - h // 4, h) if corner.startswith("bottom") else slice(0, h // 4)
    cols = slice(0, w // 4) if corner.endswith("left") else slice(w - w // 4, w)
    assert luma[rows, cols].mean() > 200 and luma.mean() < 60, luma
    # flicker.py's frames are the ones stylize_video stylizes: upright, at the same size
    frames = read_frames(clip, size=32)
    assert frames.shape == (3, 3, h, w)
    torch.testing.assert_close(frames[0].mean(0), luma / 255, atol=0.1, rtol=0)


@pytest.mark.parametrize("matrix, value_range", [("ITU709", "MPEG"), ("ITU601", "MPEG"), ("ITU601", "JPEG")])
def test_colours_survive_every_input_matrix_and_range(tmp_path, matrix, value_range):
    """Colour bars in BT.709 or BT.601, limited or full range (as phones write), through the identity: the output,
    tagged BT.709 limited, decodes to the same colours."""
    bars = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
                     (200, 120, 50), (128, 128, 128)], np.uint8)
    image = np.repeat(np.repeat(bars[None], 32, axis=0), 32, axis=1)  # 32 x 256, bars 32 wide
    clip = tmp_path / "bars.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 256, 32, "yuv420p"
        video.codec_context.colorspace = {"ITU709": 1, "ITU601": 6}[matrix]
        video.codec_context.color_range = {"MPEG": 1, "JPEG": 2}[value_range]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        out.mux(video.encode(frame.reformat(format="yuv420p", dst_colorspace=matrix, dst_color_range=value_range)))
        out.mux(video.encode(None))
    stylize_video(lambda x: x, clip, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as c:
        frame = next(c.decode(video=0))
        assert (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc) == (1, 1, 1, 1)
        rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range).astype(int)
    centres = rgb[16, 16::32]
    assert np.abs(centres - bars).max() <= 6, centres


def test_odd_sizes_round_down_to_even(tmp_path, clip):
    net, _ = load_style(SHIPPED)
    written = stylize_video(Stylizer(net, torch.device("cpu"), None), clip, tmp_path / "o.mp4", size=35)
    assert (written["width"], written["height"]) == (34, 26)  # 35x26.25 -> 35x26 -> even


def test_a_cut_off_video_stylizes_the_frames_that_decode_and_warns(tmp_path):
    # AVI keeps its header's length: a cut-off file still opens, as a broken download would
    clip = tmp_path / "clip.avi"
    write_clip(clip, "mpeg4", {"qscale": "2"}, None, frames=60)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 7 // 10])
    result = run("stylize.py", "--style", str(SHIPPED), str(cut), "-o", str(tmp_path / "cut.mp4"), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert 0 < len(frames_of(tmp_path / "cut.mp4")[0]) < 60
    assert "warning: " in result.stderr and "declares 5.0 s" in result.stderr, result.stderr
    whole = run("stylize.py", "--style", str(SHIPPED), str(clip), "-o", str(tmp_path / "whole.mp4"), "--device", "cpu")
    assert whole.returncode == 0 and "warning" not in whole.stderr, whole.stderr


def test_video_bad_inputs(tmp_path, clip):
    ckpt = ["--style", str(SHIPPED), "--device", "cpu"]
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert_user_error(run("stylize.py", *ckpt, str(fake), "-o", str(tmp_path / "o.mp4")), "fake.mp4",
                      "not a readable video")
    assert_user_error(run("stylize.py", *ckpt, str(clip), "-o", str(tmp_path / "o.png")), "o.png", "video suffix")
    assert_user_error(run("stylize.py", *ckpt, str(clip), "-o", str(tmp_path / "o.mp4"), "--batch", "0"), "--batch")
    assert_user_error(run("stylize.py", *ckpt, str(clip), "-o", str(tmp_path / "o.mp4"), "--size", "1000000"),
                      "frames at a time", "GiB of cpu memory", "--batch")
    existing = tmp_path / "kept.mp4"
    existing.write_bytes(b"precious")
    assert_user_error(run("stylize.py", *ckpt, str(clip), "-o", str(existing)), "exists", "--overwrite")
    assert existing.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_without_pyav_images_still_work_and_a_video_says_what_to_install(tmp_path, clip, photo):
    """stylize.py imports PyAV only for a video: on a machine without it, images run and a video gets one line."""
    hide_av = "import sys; sys.modules['av'] = None; from impasto.cli.stylize import main; main(sys.argv[1:])"
    ckpt = ["--style", str(SHIPPED), "--device", "cpu"]
    result = run("-c", hide_av, *ckpt, str(photo), "-o", str(tmp_path / "photo_out.png"))
    assert result.returncode == 0 and (tmp_path / "photo_out.png").exists(), result.stderr[-2000:]
    assert_user_error(run("-c", hide_av, *ckpt, str(clip), "-o", str(tmp_path / "o.mp4")), "impasto[video]")


def test_a_folder_of_photos_and_videos_is_stylized_into_out_dir(tmp_path, clip, photo):
    result = run("stylize.py", "--style", str(SHIPPED), str(tmp_path), "--out-dir", str(tmp_path / "styled"),
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 image(s), 1 video(s)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "styled").iterdir()) == ["clip.mp4", "photo.png"]
    # compare.py scores photos only: a folder holding just a video is an error there, not a crash
    only_video = tmp_path / "videos"
    only_video.mkdir()
    clip.rename(only_video / clip.name)
    assert_user_error(cli("compare", "--style", str(SHIPPED), str(only_video), "--device", "cpu"),
                      "videos", "holds none of", ".jpg")


def test_flicker_measures_output_change_and_counts_only_unmoved_pixels_as_static():
    from impasto.cli.flicker import flicker

    torch.manual_seed(0)
    still = 0.4 * torch.rand(1, 3, 32, 40).expand(5, -1, -1, -1).clone()  # below 0.4: inverted, it moves by 0.2+
    moving = still.clone()
    moving[1::2, :, :, :20] = 1 - moving[1::2, :, :, :20]  # the left half changes every frame, the right half never
    identity = flicker(lambda x: x, moving)
    assert identity["static_fraction"] == 0.5 and identity["output"] == identity["input"] > 50
    assert identity["output_static"] == 0  # what held still in the input holds still in the output
    shaky = flicker(lambda x: x + 0.1 * torch.rand(len(x), 1, 1, 1), still)  # a network that flickers by itself
    assert shaky["input"] == 0 and shaky["static_fraction"] == 1 and shaky["output_static"] > 1


def test_flicker_py_reports_every_style_on_every_video(tmp_path, clip, tiny_ckpt):
    import json

    result = cli("flicker", str(clip), "--style", str(SHIPPED), str(tiny_ckpt), "--size", "32",
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])["flicker"]
    assert [(r["style"], r["frames"]) for r in rows] == [(str(SHIPPED), FRAMES), (str(tiny_ckpt), FRAMES)]
    assert all(r["input"] > 0 and r["output"] >= 0 for r in rows)
    assert_user_error(cli("flicker", str(tmp_path / "none.mp4"), "--style", str(SHIPPED)), "does not exist")
    assert_user_error(cli("flicker", str(clip), "--style", str(SHIPPED), "--frames", "1"), "--frames")


@pytest.mark.parametrize("suffix", sorted(CONTAINERS))
def test_a_variable_frame_rate_keeps_every_frame_time_in_every_container_written(tmp_path, suffix):
    """Frames at 0, 1, 3, 4, 7, 8 and 12 twelfths of a second (a phone's clip when the light drops) into .mov, .avi
    and every other container impasto writes: the same times out, and the frames in their order."""
    clip = tmp_path / "vfr.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i, pts in enumerate((0, 1, 3, 4, 7, 8, 12)):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts = pts
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    stylize_video(lambda x: x, clip, tmp_path / f"out{suffix}")  # the identity, as a network
    times, frames = frames_of(tmp_path / f"out{suffix}")
    assert times == pytest.approx(frames_of(clip)[0], abs=1e-3) and len(times) == 7
    levels = [f.mean().item() * 255 for f in frames]
    assert all(abs(level - 30 * i) < 6 for i, level in enumerate(levels)), levels
