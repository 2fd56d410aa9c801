"""The artifact statistics find what they are named for, on images made to have it or not."""

import json
import shutil

import torch
from PIL import Image

from conftest import ROOT, assert_user_error, cli, run
from impasto.cli.artifacts import dark_blob, edge_line, edge_sides
from impasto.images import load_image, resize_long_side, to_tensor
from impasto.inference import Stylizer
from impasto.lookup import find_style, painting_names
from impasto.style import read_meta


def textured(size: int = 128) -> torch.Tensor:
    torch.manual_seed(0)
    return (0.5 + 0.2 * torch.randn(1, 1, size, size)).clamp(0, 1).expand(1, 3, size, size).clone()


def test_dark_blob_finds_a_flat_black_patch_on_texture_and_nothing_else():
    photo = textured()
    assert dark_blob(photo, photo) < 0.05
    blob = photo.clone()
    blob[..., 40:80, 50:90] = 0.02  # a droplet: near black, flat, where the photo has texture
    assert dark_blob(blob, photo) > 0.95
    shadow = photo.clone()
    shadow[..., 40:80, 50:90] *= 0.3  # darker, but still textured: a shadow or dark strokes, not a droplet
    assert dark_blob(shadow, photo) < 0.05


def test_a_droplet_is_a_black_patch_where_the_photo_is_bright_not_in_its_shadow():
    photo = textured()
    photo[..., :, :64] += 0.15  # the left half bright (luminance about 165), the right in shadow (about 50), both
    photo[..., :, 64:] *= 0.4   # textured still
    on_bright, on_shadow = photo.clone(), photo.clone()
    on_bright[..., 40:80, 10:50] = 0.02
    on_shadow[..., 40:80, 78:118] = 0.02  # a palette painting the shadow flat and black
    assert dark_blob(on_bright, photo) > 0.95 and dark_blob(on_bright, photo, bright=True) > 0.95
    assert dark_blob(on_shadow, photo) > 0.95 and dark_blob(on_shadow, photo, bright=True) < 0.05


def test_edge_line_finds_a_line_along_a_border_but_not_the_photos_own_frame():
    photo = textured()
    assert edge_line(photo, photo) < 1.5
    lined = photo.clone()
    lined[..., :2, :] = 0.0  # two dark rows along the top
    assert edge_line(lined, photo) > 2.5
    top, bottom, left, right = edge_sides(lined, photo)
    assert top > 2.5 and max(bottom, left, right) < 1.5  # the line is on its own side
    framed = lined.clone()  # the photo itself has that frame: the output only keeps it
    assert edge_line(framed, framed) < 1.01


def test_the_cli_reports_every_size_and_writes_a_grid(tmp_path, photo, tiny_ckpt):
    result = cli("artifacts", "--style", str(tiny_ckpt), str(photo), "--sizes", "32,64",
                 "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    numbers = report["styles"]["tiny.safetensors"]
    assert set(numbers["summary"]) == {"32", "64"}
    assert set(numbers["summary"]["64"]) == {"dark_blob", "droplet", "edge_line", "edge_top_left",
                                             "edge_bottom_right", "residual_peak"}
    assert set(numbers["photos"]["photo.png"]) == {"32", "64"}
    with Image.open(tmp_path / "grid_tiny.jpg") as grid:
        assert grid.width > grid.height  # one photo down, two sizes across


def test_two_styles_of_one_name_keep_a_grid_and_a_report_each(tmp_path, photo, tiny_ckpt):
    other = tmp_path / "other" / tiny_ckpt.name  # a second file of the same name, as a retrained style beside its last
    other.parent.mkdir()
    shutil.copy(tiny_ckpt, other)
    result = cli("artifacts", "--style", str(tiny_ckpt), "--style", str(other), str(photo), "--sizes", "32",
                 "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    styles = json.loads(result.stdout.strip().splitlines()[-1])["styles"]
    assert set(styles) == {str(tiny_ckpt), str(other)}
    assert [styles[str(p)]["grid"] for p in (tiny_ckpt, other)] == [str(tmp_path / "out" / f"grid_tiny_{n}.jpg")
                                                                    for n in (1, 2)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid_tiny_1.jpg", "grid_tiny_2.jpg"]


def test_a_file_of_several_is_measured_for_the_painting_named_and_refused_without_one(tmp_path, photo):
    shipped = str(find_style("paintings")[0])
    refused = cli("artifacts", "--style", "starry_night", "--style", shipped, str(photo), "--sizes", "32",
                  "--out-dir", str(tmp_path / "refused"))
    assert_user_error(refused, "--painting NAME")
    assert not (tmp_path / "refused").exists()  # every style opens before any is measured
    result = cli("artifacts", "--style", shipped, "--painting", "the_scream", str(photo), "--sizes", "32",
                 "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])["styles"]["paintings.safetensors"]
    assert set(numbers["photos"]["photo.png"]) == {"32"}
    # by the file's name too; a name that picks a painting keeps its own, and a one-painting file takes none
    by_name = cli("artifacts", "--style", "paintings", "--style", "the_scream", "--style", "udnie", "--style",
                  "starry_night", "--painting", "udnie", str(photo), "--sizes", "32",
                  "--out-dir", str(tmp_path / "by_name"))
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    styles = json.loads(by_name.stdout.strip().splitlines()[-1])["styles"]
    assert set(styles) == {"paintings", "the_scream", "udnie", "starry_night"}
    peak = {name: row["photos"]["photo.png"]["32"]["residual_peak"] for name, row in styles.items()}
    assert peak["paintings"] == peak["udnie"] != peak["the_scream"]
    assert_user_error(cli("artifacts", "--style", "starry_night", "--painting", "udnie", str(photo), "--sizes", "32",
                          "--out-dir", str(tmp_path / "none")), "no --style is a file of several")
    assert_user_error(cli("artifacts", "--style", str(tmp_path / "gone.safetensors"), "--painting", "udnie", str(photo),
                          "--out-dir", str(tmp_path / "none")), "gone.safetensors")


def test_the_gallery_puts_each_photo_beside_each_style_and_keeps_an_existing_grid(tmp_path, photo, tiny_ckpt):
    out = tmp_path / "gallery.png"
    args = ("scripts/gallery.py", str(photo), str(photo), "--style", str(tiny_ckpt), "--style", "starry_night",
            "--size", "40", "--tile", "50", "-o", str(out))
    result = run(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as grid:  # 3 columns of 50 px and 2 rows of 41 (40 x 33 shown at 50 x 41), 6 px apart
        assert grid.size == (3 * 56 + 6, 18 + 2 * 41 + 3 * 6)
    assert_user_error(run(*args), "--overwrite")


def test_no_shipped_painting_paints_a_line_along_the_edges_or_a_droplet():
    """At 1,024 px the full network's own top border steps about 3.5 times its interior on three of the preview
    photos (Great Wave); the pass's edge margin (TransformerNet.edge) reflects the photo out first, and every
    painting's worst border then steps about as its interior does. On one photo, a stroke that happens to run along
    a border can score 1.7 (The Scream's, on the astronaut's sky): the mean of the four is the test. The droplet, a
    black patch where the photo is bright, scores 1.00 on the astronaut for the 54-photo Starry Night at this size,
    0.10 at most for the shipped files on these photos; two held-out photos still show one at 512 px for five of them
    (docs/paintings.md)."""
    photos = [to_tensor(resize_long_side(load_image(path), 1024)).unsqueeze(0)
              for path in sorted((ROOT / "src/impasto/assets/preview").glob("*.jpg"))]

    def check(stylizer: Stylizer, name: str) -> float:
        """The mean edge line over the photos, after asserting that no photo has a droplet."""
        outputs = [stylizer.image(photo) for photo in photos]
        assert max(dark_blob(out, photo, bright=True) for out, photo in zip(outputs, photos)) < 0.3, name
        return sum(edge_line(out, photo) for out, photo in zip(outputs, photos)) / len(photos)

    for painting in painting_names(read_meta(find_style("paintings")[0])):
        stylizer = Stylizer.from_style("paintings", "cpu", "fp32", painting)
        assert check(stylizer, painting) < 1.4, painting
        if find_style(painting)[1] is None:  # its file of its own too
            own = Stylizer.from_style(painting, "cpu", "fp32")
            assert check(own, f"{painting}.safetensors") < 1.4, f"{painting}.safetensors"
        if painting == "great_wave":  # the network's own borders, for contrast: what the margin takes away
            stylizer.net.edge = 0
            assert sum(edge_line(stylizer.image(photo), photo) for photo in photos) / len(photos) > 2.0
