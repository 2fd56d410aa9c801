"""Photos as viewers show them: EXIF orientation, colour profiles, alpha, grayscale, palette, CMYK and 16-bit inputs,
and what the outputs carry (sRGB profile, camera metadata, JPEG quality), through stylize.py as a user runs it."""

import io
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageCms, JpegImagePlugin

from conftest import run
from impasto.images import EXIF_ORIENTATION, load_photo, to_tensor

MAKE = 0x010F  # the EXIF tag of the camera's maker


def gradient(width: int, height: int) -> Image.Image:
    """Red rising left to right, green top to bottom: any turn or flip shows."""
    x = torch.linspace(0, 255, width).view(1, width).expand(height, width)
    y = torch.linspace(0, 255, height).view(height, 1).expand(height, width)
    rgb = torch.stack([x, y, torch.full_like(x, 90)], dim=-1).round().byte()
    return Image.frombytes("RGB", (width, height), rgb.numpy().tobytes())


def write_png16(path: Path, rgb: torch.Tensor) -> None:
    """A 16-bit RGB PNG (Pillow writes 16-bit grayscale only); `rgb` (H, W, 3) in 0..65535."""
    h, w, _ = rgb.shape
    big_endian = rgb.to(torch.int32).view(h, w * 3)
    rows = b"".join(b"\x00" + struct.pack(f">{w * 3}H", *row.tolist()) for row in big_endian)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_exif_orientation_is_applied_and_dropped_and_the_cameras_data_kept(tmp_path):
    stored = gradient(40, 24)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # a phone held upright: stored sideways, shown turned 90° clockwise
    exif[MAKE] = "TestCam"
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=98)
    photo = load_photo(tmp_path / "phone.jpg")
    assert photo.rgb.size == (24, 40)
    shown = to_tensor(photo.rgb)
    # Turned clockwise: the stored left column (no red) is the top row, the stored bottom row (full green) the left.
    assert shown[0, 0].mean() < 0.1 and shown[0, -1].mean() > 0.9
    assert shown[1, :, 0].mean() > 0.9 and shown[1, :, -1].mean() < 0.1


def test_every_kind_of_photo_in_a_folder_comes_out_upright_and_whole(tmp_path, tiny_ckpt):
    """One folder, as a user's would be: the good files all written, in the right size and channels; the bad ones
    one line each; a non-zero exit."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    exif[MAKE] = "TestCam"
    gradient(40, 24).save(photos / "phone.jpg", exif=exif.tobytes())
    gradient(30, 20).convert("CMYK").save(photos / "print.jpg")
    gradient(30, 20).convert("L").save(photos / "gray.png")
    gray16 = Image.new("I;16", (30, 20))
    gray16.putdata([(i * 997) % 65536 for i in range(600)])
    gray16.save(photos / "gray16.png")
    write_png16(photos / "deep.png", torch.full((20, 30, 3), 32768))
    rgba = gradient(30, 20).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((30, 20)))
    rgba.save(photos / "cutout.png")
    gradient(30, 20).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(photos / "palette.gif.png")
    gradient(30, 20).save(photos / "broken_profile.png", icc_profile=b"not a profile")
    (photos / "notes.jpg").write_text("not an image")
    (photos / "cut.png").write_bytes((photos / "gray.png").read_bytes()[:60])

    result = run("stylize.py", "--style", str(tiny_ckpt), str(photos), "--out-dir", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "cut.png" in errors[0] and "notes.jpg" in errors[1], errors
    assert result.stderr.splitlines()[-1] == "8 written, 2 skipped"

    def opened(name: str) -> Image.Image:
        im = Image.open(out / name)
        profile = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile), name  # tagged as what it is
        return im

    phone = opened("phone.jpg")
    assert phone.size == (24, 40) and phone.mode == "RGB"
    assert EXIF_ORIENTATION not in phone.getexif() and phone.getexif()[MAKE] == "TestCam"
    assert JpegImagePlugin.get_sampling(phone) == 0  # 4:4:4
    assert max(phone.quantization[0]) <= 12  # quality 95; at Pillow's default 75 the steps reach 61
    for name in ("print.jpg", "gray.png", "gray16.png", "deep.png", "palette.gif.png", "broken_profile.png"):
        im = opened(name)
        assert im.size == (30, 20) and im.mode == "RGB", (name, im.size, im.mode)
    cutout = opened("cutout.png")
    assert cutout.mode == "RGBA" and cutout.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()


def test_deep_and_cmyk_inputs_keep_their_tones():
    """16-bit and CMYK decode to the colours a viewer shows: Pillow's own conversion clips 16-bit gray to white."""
    gray16 = Image.new("I;16", (8, 8), 32768)
    buffer = io.BytesIO()
    gray16.save(buffer, format="PNG")
    assert abs(to_tensor(load_photo_from(buffer)).mean().item() - 0.5) < 0.01
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    buffer = io.BytesIO()
    cyan.save(buffer, format="JPEG", quality=100)
    r, g, b = to_tensor(load_photo_from(buffer)).mean(dim=(1, 2)).tolist()
    assert r < 0.1 and g > 0.9 and b > 0.9


def load_photo_from(buffer) -> Image.Image:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(buffer.getvalue())
        f.flush()
        return load_photo(f.name).rgb


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_transparent_input_written_as_jpeg_drops_alpha_and_as_png_keeps_it(tmp_path, tiny_ckpt, suffix):
    rgba = gradient(30, 20).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "in.png")
    result = run("stylize.py", "--style", str(tiny_ckpt), str(tmp_path / "in.png"), "-o", str(tmp_path / f"o{suffix}"))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / f"o{suffix}").mode == ("RGB" if suffix == ".jpg" else "RGBA")


def matrix_profile(red, green, blue, gamma: float = 2.2) -> bytes:
    """An ICC v2 RGB display profile: its primaries' XYZ (D50) and one gamma curve, as a wide-gamut camera or
    screen profile is made."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    xyz = lambda x: b"XYZ \0\0\0\0" + b"".join(map(s15, x))  # noqa: E731
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = b"desc\0\0\0\0" + struct.pack(">I", 5) + b"test\0" + b"\0" * 79
    tags = [(b"desc", text), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + b"\0" * 12 + \
        b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + data


def test_a_photo_in_another_colour_space_is_converted_by_its_profile(tmp_path):
    """A profile whose red primary is sRGB's green (and green sRGB's red): its red pixels are green to a viewer,
    and impasto sees them as the viewer does."""
    srgb_red, srgb_green, srgb_blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    profile = matrix_profile(srgb_green, srgb_red, srgb_blue)
    Image.new("RGB", (8, 8), (200, 20, 20)).save(tmp_path / "swapped.png", icc_profile=profile)
    r, g, b = load_photo(tmp_path / "swapped.png").rgb.getpixel((4, 4))
    assert g > 180 and r < 50 and b < 50, (r, g, b)
    Image.new("RGB", (8, 8), (200, 20, 20)).save(tmp_path / "plain.png")  # no profile: taken as sRGB
    assert load_photo(tmp_path / "plain.png").rgb.getpixel((4, 4)) == (200, 20, 20)
