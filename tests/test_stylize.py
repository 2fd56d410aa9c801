"""stylize.py's forward pass on the shipped (real, trained) style: bf16 against fp32, colour preservation."""

import json
from pathlib import Path

import torch
from PIL import Image

from conftest import ROOT, assert_user_error, run, shipped_style
from impasto import ASSETS, runtime
from impasto.images import load_image, resize_long_side, to_tensor
from impasto.inference import Stylizer
from impasto.runtime import autocast_dtype
from impasto.style import load_style
from impasto.training.run import resolve_precision


def test_bf16_stylization_matches_fp32_within_a_few_levels():
    net, _ = load_style(shipped_style())
    photo = to_tensor(resize_long_side(load_image(ASSETS / "preview" / "chelsea.jpg", "photo"), 128)).unsqueeze(0)
    cpu = torch.device("cpu")
    fp32 = Stylizer(net, cpu, None)(photo).clamp(0, 1)
    bf16 = Stylizer(net, cpu, torch.bfloat16)(photo).clamp(0, 1)
    assert bf16.dtype == torch.float32 and bf16.shape == photo.shape
    levels = (fp32 - bf16).abs() * 255
    # A star halo's dark centre amplifies rounding: here one, in the edge margin's reflection of the cat's left side,
    # makes 48 pixels differ by 4 to 16 levels, and every other pixel by under 4.
    assert levels.mean() < 1.0 and levels.quantile(0.999) < 8 and levels.max() < 24, (levels.mean(), levels.max())
    assert not torch.equal(fp32, bf16)  # the bf16 path really ran in bf16


def test_auto_precision_is_fp32_on_cuda_and_follows_the_request_otherwise():
    """One-image passes ran faster in fp32 than in bf16 on an H100, so auto must not pick bf16 there."""
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    assert autocast_dtype("auto", cuda) is None
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cpu")) is None


def test_the_bf16_probe_decides_auto_and_is_kept_per_cpu(tmp_path, monkeypatch):
    """auto's choice on a CPU is the probe's measurement, kept in the user's cache, so a later run makes the same
    choice; a cache entry that says otherwise is obeyed, and an unreadable one is measured again. On a CPU without
    bf16 kernels nothing is timed; there the cache's handling is checked with a stand-in for the probe."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runtime.cpu_bf16_speedup.cache_clear()
    cache = tmp_path / "impasto" / "bf16.json"
    cpu = torch.device("cpu")
    try:
        if runtime.bf16_kernels():
            measured = runtime.cpu_bf16_speedup()
            assert set(measured) == {"forward", "step"} and all(0 < v < 100 for v in measured.values()), measured
            assert json.loads(cache.read_text())[runtime.probe_key()] == measured
            assert (autocast_dtype("auto", cpu) is torch.bfloat16) == (measured["forward"] >= runtime.BF16_FASTER)
        else:
            assert runtime.cpu_bf16_speedup() is None and not cache.exists()
            assert autocast_dtype("auto", cpu) is None and resolve_precision("auto", "cpu") == "32-true"
            monkeypatch.setattr(runtime, "bf16_kernels", lambda: True)
            monkeypatch.setattr(runtime, "probe_bf16", lambda: {"forward": 0.5, "step": 0.5})  # the stand-in
            cache.parent.mkdir(parents=True)

        # pretend this CPU runs a pass in bf16 fast and a training step slowly: the cache is believed
        cache.write_text(json.dumps({runtime.probe_key(): {"forward": 3.0, "step": 0.5}}))
        runtime.cpu_bf16_speedup.cache_clear()
        assert autocast_dtype("auto", cpu) is torch.bfloat16 and resolve_precision("auto", "cpu") == "32-true"
        cache.write_text(json.dumps({runtime.probe_key(): {"forward": 0.5, "step": 3.0}}))
        runtime.cpu_bf16_speedup.cache_clear()
        assert autocast_dtype("auto", cpu) is None and resolve_precision("auto", "cpu") == "bf16-mixed"
        assert autocast_dtype("fp32", cpu) is None and resolve_precision("32-true", "cpu") == "32-true"

        cache.write_text("{not json")
        runtime.cpu_bf16_speedup.cache_clear()
        again = runtime.cpu_bf16_speedup()
        assert json.loads(cache.read_text()) == {runtime.probe_key(): again}
    finally:
        runtime.cpu_bf16_speedup.cache_clear()  # the rest of the suite measures with the user's cache again


def test_a_cpu_without_bf16_kernels_is_fp32_at_once(tmp_path, monkeypatch):
    """Where oneDNN has no bf16 convolutions the probe would time a reference path over a hundred times slower than
    fp32 for minutes: it is not run, nothing is cached, and auto is fp32 for passes and training alike."""
    def probe():
        raise AssertionError("the probe ran")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(runtime, "bf16_kernels", lambda: False)
    monkeypatch.setattr(runtime, "probe_bf16", probe)
    runtime.cpu_bf16_speedup.cache_clear()
    try:
        assert runtime.cpu_bf16_speedup() is None
        assert autocast_dtype("auto", torch.device("cpu")) is None and resolve_precision("auto", "cpu") == "32-true"
        assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16  # asked for, it is still there
        assert not (tmp_path / "impasto").exists()
    finally:
        runtime.cpu_bf16_speedup.cache_clear()


def test_preserve_color_keeps_the_photos_colours_and_the_styles_strokes(tmp_path):
    """--preserve-color, as a user runs it: the output's chroma is the photo's, its luminance the stylization's."""
    photo = ASSETS / "preview" / "chelsea.jpg"
    outputs = {}
    for flag in ([], ["--preserve-color"]):
        out = tmp_path / f"out{len(flag)}.png"
        result = run("stylize.py", "--style", str(shipped_style()), str(photo),
                     "--size", "96", "-o", str(out), "--precision", "fp32", *flag)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[bool(flag)] = to_tensor(load_image(out, "output")).unsqueeze(0)
    content = to_tensor(resize_long_side(load_image(photo, "photo"), 96)).unsqueeze(0)

    def luma(x):
        return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)

    def chroma(x):
        return x - luma(x)

    kept, styled = outputs[True], outputs[False]
    assert (chroma(kept) - chroma(content)).abs().mean() * 255 < 3  # the photo's colours (clipping aside)
    assert (chroma(styled) - chroma(content)).abs().mean() * 255 > 15  # which plain Starry Night replaces
    assert (luma(kept) - luma(styled)).abs().mean() * 255 < 3  # the same strokes
    assert (luma(kept) - luma(content)).abs().mean() * 255 > 15


def test_a_sheet_shows_the_photo_in_every_shipped_painting(tmp_path):
    from impasto.lookup import shipped_styles

    out = tmp_path / "sheet.jpg"
    result = run("stylize.py", "--sheet", str(ASSETS / "preview" / "chelsea.jpg"), "-o", str(out), "--size", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    sheet = load_image(out, "sheet")
    paintings = len(shipped_styles())
    assert paintings >= 6 and f"a sheet of {paintings} paintings" in result.stderr
    assert sheet.width > (paintings + 1) * 64 and sheet.height < 2 * 64 + 40  # one row: the photo, then each
    assert_user_error(run("stylize.py", "--sheet", str(ASSETS / "preview" / "chelsea.jpg"), "-o", str(out)),
                      "exists", "--overwrite")


def test_json_lines_and_stdin_to_stdout(tmp_path):
    import io
    import json
    import subprocess
    import sys

    from PIL import Image

    photo = ASSETS / "preview" / "coffee.jpg"
    result = run("stylize.py", "--style", "the_scream", str(photo), str(ASSETS / "preview" / "chelsea.jpg"),
                 "--out-dir", str(tmp_path), "--size", "48", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).name for r in lines] == ["coffee.jpg", "chelsea.jpg"]
    assert all(r["style"] == "the_scream" and r["strength"] == 1.0 and r["seconds"] > 0 and max(r["size"]) == 48
               and Path(r["output"]).is_file() and r["device"].startswith("cpu") for r in lines)
    piped = subprocess.run([sys.executable, "stylize.py", "--style", "udnie", "-", "-o", "-", "--size", "40"],
                           input=photo.read_bytes(), capture_output=True, cwd=ROOT)
    assert piped.returncode == 0, piped.stderr.decode()[-2000:]
    image = Image.open(io.BytesIO(piped.stdout))
    assert image.format == "JPEG" and max(image.size) == 40
    assert_user_error(run("stylize.py", "--style", "udnie", str(photo), "-o", "-", "--json"), "stdout")
    assert_user_error(run("stylize.py", str(photo), "-o", str(tmp_path / "x.jpg")), "--style")


def test_a_folder_shows_a_progress_bar_on_a_terminal_and_none_in_a_log(tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    args = [sys.executable, "stylize.py", "--style", "udnie", str(ASSETS / "preview"), "--out-dir", str(tmp_path),
            "--size", "32", "--overwrite"]
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a terminal of 100 columns
    result = subprocess.run(args, cwd=ROOT, stderr=terminal, stdout=subprocess.DEVNULL, timeout=300)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        shown += chunk
    assert result.returncode == 0 and b"/4 [" in shown and b"file/s" in shown and b"4 written" in shown, shown[-2000:]
    logged = run(*args[1:])
    assert logged.returncode == 0 and "file/s" not in logged.stderr and "4 written" in logged.stderr


def test_scale_resizes_by_a_factor_and_the_pixel_limit_is_stated_and_raised(tmp_path, photo, tiny_ckpt):
    out = tmp_path / "half.png"
    result = run("stylize.py", "--style", str(tiny_ckpt), str(photo), "--scale", "0.5", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size == (22, 18) and json.loads(result.stdout)["size"] == [22, 18]  # 45x37, halved
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    result = run("stylize.py", "--style", str(tiny_ckpt), str(big), "--max-megapixels", "0.05", "-o",
                 str(tmp_path / "o.png"))
    assert_user_error(result, "300x200", "over the limit of 0.05", "pass --max-megapixels")
    result = run("stylize.py", "--style", str(tiny_ckpt), str(big), "--max-megapixels", "0.06", "--size", "64", "-o",
                 str(tmp_path / "o.png"))
    assert result.returncode == 0 and Image.open(tmp_path / "o.png").size == (64, 43), result.stderr[-2000:]


def test_a_blend_by_names_and_the_older_option_names_paint_what_they_name(tmp_path):
    """--style a:0.5,b:0.5 finds the file the paintings share; `--ckpt FILE --style NAME`, as the options were
    called before, still paints NAME of FILE, the same pixels as `--style FILE --painting NAME`."""
    from impasto.lookup import find_style

    photo = ASSETS / "preview" / "chelsea.jpg"
    common = [str(photo), "--size", "64", "--device", "cpu", "--precision", "fp32"]
    blend = run("stylize.py", "--style", "starry_night:0.5,the_scream:0.5", *common, "-o", str(tmp_path / "b.png"))
    assert blend.returncode == 0, blend.stderr[-2000:]
    path = str(find_style("paintings")[0])
    new = run("stylize.py", "--style", path, "--painting", "the_scream", *common, "-o", str(tmp_path / "new.png"))
    old = run("stylize.py", "--ckpt", path, "--style", "the_scream", *common, "-o", str(tmp_path / "old.png"))
    assert new.returncode == old.returncode == 0, new.stderr[-2000:] + old.stderr[-2000:]
    pictures = [Image.open(tmp_path / f"{n}.png").tobytes() for n in ("b", "new", "old")]
    assert pictures[1] == pictures[2] != pictures[0]
