import itertools
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFile

from impasto.errors import UserError
from impasto.training.data import (
    EMBEDDED_PHOTOS,
    EndlessSampler,
    ImageDataModule,
    UnreadableImages,
    build_train_dataset,
    load_fixed,
)


def data_cfg(**kw):
    base = {"source": "folder", "root": None, "size": 32, "max_zoom": 1.5, "embedded_max_zoom": 2.0, "batch_size": 2,
            "num_workers": 0, "preview_dir": None, "path": None, "name": None, "split": "train",
            "image_column": "image", "streaming": False, "shuffle_buffer": 8, "max_bad_fraction": 0.5,
            "set_name": None}
    return OmegaConf.create({**base, **kw})


def write_images(folder, n, size=(50, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i % 255, 90, 200)).save(folder / f"img{i}.png")


def test_folder_is_recursive_and_crops_at_training_size(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "a" / "b", 3)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    dataset, description = build_train_dataset(data_cfg(root=str(tmp_path / "a")))
    assert len(dataset) == 5 and description == "folder a (5 images)"  # no machine's path: it goes into exports
    _, named = build_train_dataset(data_cfg(root=str(tmp_path / "a"), set_name="five-test-images"))
    assert named == "folder five-test-images (5 images)"
    datamodule = ImageDataModule(dataset, 2, 0)
    batch, passed_over = next(iter(datamodule.train_dataloader()))
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.uint8 and passed_over == [[], []]
    crops = datamodule.on_after_batch_transfer(batch, 0)  # on the device: floats in [0, 1]
    assert crops.dtype == torch.float32 and 0 <= crops.min() and crops.max() <= 1
    torch.testing.assert_close(crops * 255, batch.float())


def test_auto_falls_back_to_embedded_photos(tmp_path):
    dataset, description = build_train_dataset(data_cfg(source="auto", root=str(tmp_path / "no_coco")))
    assert description.startswith("embedded") and len(dataset) == len(list(EMBEDDED_PHOTOS.glob("*.jpg")))
    assert dataset.transform.max_zoom == 2.0  # zoomed as data=embedded zooms them, not as COCO would be


def test_empty_or_missing_folders_and_coco_are_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        build_train_dataset(data_cfg(root=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="download_coco"):
        build_train_dataset(data_cfg(source="coco", root=str(tmp_path / "coco")))
    write_images(tmp_path / "one", 1)
    dataset, _ = build_train_dataset(data_cfg(root=str(tmp_path / "one")))
    with pytest.raises(UserError, match="fewer than one batch"):
        ImageDataModule(dataset, 4, 0)


def test_hf_local_imagefolder_and_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is a declared dependency; install it")
    write_images(tmp_path / "hf", 3)
    dataset, description = build_train_dataset(data_cfg(source="hf", path=str(tmp_path / "hf")))
    assert len(dataset) == 3 and dataset[0, 0][0].shape == (3, 32, 32)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"picture": [Image.new("RGB", (40, 40))] * 2},
                               features=datasets.Features({"picture": datasets.Image()})).save_to_disk(str(saved))
    with pytest.raises(UserError, match="no column 'image'"):
        build_train_dataset(data_cfg(source="hf", path=str(saved)))
    dataset, _ = build_train_dataset(data_cfg(source="hf", path=str(saved), image_column="picture"))
    assert len(dataset) == 2


def test_preview_is_a_fixed_square_batch():
    preview = load_fixed(None, 48)
    assert preview.shape[1:] == (3, 48, 48) and len(preview) >= 3
    torch.testing.assert_close(preview, load_fixed(None, 48))


def test_hf_streaming_yields_batches(tmp_path):
    pytest.importorskip("datasets", reason="datasets is a declared dependency; install it")
    write_images(tmp_path / "hf", 5)
    dataset, description = build_train_dataset(data_cfg(source="hf", path=str(tmp_path / "hf"), streaming=True))
    assert "streamed" in description
    batches = list(ImageDataModule(dataset, 2, 0).train_dataloader())
    assert len(batches) == 2 and batches[0][0].shape == (2, 3, 32, 32)  # 5 images, drop_last
    assert batches[0][1] == [[], []]


def test_sampler_is_a_function_of_the_step_and_splits_ranks_without_overlap():
    def draws(steps, start=0, rank=0, world=1, batch=3):
        return list(itertools.islice(EndlessSampler(20, batch, seed=7, rank=rank, world_size=world,
                                                    start_step=start), steps * batch))

    run = draws(12)
    assert draws(7, start=5) == run[5 * 3:]  # a resumed run draws what the whole run drew from its step on
    epoch = [index for index, _ in run[:18]]  # 20 // 3 = 6 steps an epoch: 18 distinct images, 2 dropped
    assert len(set(epoch)) == 18 and [i for i, _ in run[18:36]] != epoch  # the next epoch is reshuffled
    assert len({seed for _, seed in run}) == len(run)  # every draw crops its own way
    ranks = [draws(3, rank=r, world=2) for r in range(2)]  # 20 // 6 = 3 steps an epoch of 2 × 3 images
    assert not {i for i, _ in ranks[0]} & {i for i, _ in ranks[1]}
    assert len({i for i, _ in ranks[0] + ranks[1]}) == 18
    with pytest.raises(UserError, match="fewer than one step"):
        EndlessSampler(5, 3, world_size=2)


def test_a_crop_depends_on_its_draw_not_on_the_worker(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(4):
        Image.effect_noise((90, 70), 60 + 10 * i).convert("RGB").save(tmp_path / "a" / f"noise{i}.png")
    dataset, _ = build_train_dataset(data_cfg(root=str(tmp_path / "a"), max_zoom=2.0))
    assert torch.equal(dataset[2, 123][0], dataset[2, 123][0])
    assert not torch.equal(dataset[2, 123][0], dataset[2, 124][0])

    def first_batches(workers):
        return [b for b, _ in itertools.islice(ImageDataModule(dataset, 2, workers).train_dataloader(), 4)]

    for ours, theirs in zip(first_batches(0), first_batches(2)):
        assert torch.equal(ours, theirs)


def test_unreadable_training_images_are_passed_over_and_reported(tmp_path):
    write_images(tmp_path / "a", 3)
    (tmp_path / "a" / "img1.png").write_text("not a PNG")
    whole = (tmp_path / "a" / "img2.png").read_bytes()
    (tmp_path / "a" / "img2.png").write_bytes(whole[: len(whole) // 2])  # truncated
    dataset, _ = build_train_dataset(data_cfg(root=str(tmp_path / "a")))
    crop, passed_over = dataset[1, 0]
    assert crop.shape == (3, 32, 32)  # img0, after img1 and img2
    assert [i for i, _ in passed_over] == [1, 2] and "truncated" in passed_over[1][1]
    unreadable = UnreadableImages(max_fraction=0.5)
    assert unreadable.record([passed_over, []]) and not unreadable.record([passed_over])  # new files once only
    assert sorted(unreadable.files) == [1, 2] and (unreadable.draws, unreadable.failed_draws) == (7, 4)
    with pytest.raises(UserError, match="unreadable, more than data.max_bad_fraction=0.5"):
        for _ in range(10):
            unreadable.record([passed_over])
    for i in (0, 1, 2):
        (tmp_path / "a" / f"img{i}.png").write_text("not a PNG")
    crop, passed_over = dataset[0, 0]  # nothing readable: a blank crop, and the give-up reported as such
    assert len(passed_over) == 10 and crop.abs().sum() == 0
    with pytest.raises(UserError, match="10 unreadable training images in a row"):
        UnreadableImages(max_fraction=1.0).record([[], passed_over])


def declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width × height, with no pixels: what a decompression bomb looks like unread."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_the_pixel_limit_refuses_by_the_header_before_decoding_and_lets_a_phone_photo_pass(tmp_path, monkeypatch):
    from impasto import images
    from impasto.images import TooManyPixels, load_image

    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(TooManyPixels, match=r"20000x10001, 200 megapixels, over the limit of 200"):
        load_image(declared_png(tmp_path / "bomb.png", 20000, 10001))  # one row over the default
    assert not decoded
    load_image(declared_png(tmp_path / "phone.png", 12000, 9000))  # 108 MP: over Pillow's own 89, under impasto's
    assert set(decoded) == {(12000, 9000)}
    monkeypatch.setattr(images, "MAX_MEGAPIXELS", 108)  # the limit is stated, and raised where users ask
    with pytest.raises(TooManyPixels, match="over the limit of 108"):
        load_image(declared_png(tmp_path / "phone2.png", 12001, 9000))
    assert set(decoded) == {(12000, 9000)}


def test_split_photos_holds_out_every_nth_and_never_overwrites(tmp_path):
    from conftest import assert_user_error, run

    write_images(tmp_path / "photos", 5)
    result = run("scripts/split_photos.py", str(tmp_path / "photos"), str(tmp_path / "split"), "--every", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "split" / "heldout").iterdir()) == ["img0.png", "img2.png", "img4.png"]
    assert sorted(p.name for p in (tmp_path / "split" / "train").iterdir()) == ["img1.png", "img3.png"]
    assert (tmp_path / "photos" / "img0.png").exists()  # copied, not moved
    again = run("scripts/split_photos.py", str(tmp_path / "photos"), str(tmp_path / "split"))
    assert_user_error(again, "split", "exists")


def test_min_zoom_crops_a_part_of_the_photo_at_the_photos_own_scale():
    import random

    from impasto.training.data import RandomScaleCrop

    # a 64-pixel-wide gradient: a whole-photo crop spans it all; at min_zoom 2 a crop spans about half of it
    ramp = Image.fromarray(torch.linspace(0, 255, 64).round().byte().view(1, 64, 1).expand(64, 64, 3).numpy())
    rng = random.Random(0)
    whole = RandomScaleCrop(32)(ramp, rng)[0].float()
    part = [RandomScaleCrop(32, max_zoom=2.0, min_zoom=2.0)(ramp, rng)[0].float() for _ in range(8)]
    assert whole.max() - whole.min() > 230
    assert all(90 < (p.max() - p.min()) < 150 for p in part), [float(p.max() - p.min()) for p in part]
    assert RandomScaleCrop(32, max_zoom=1.0, min_zoom=2.0).max_zoom == 2.0  # never below min_zoom


def test_a_run_that_ends_in_an_error_exits_although_its_workers_ignore_sigterm(tmp_path):
    """The data workers leave SIGTERM to the main process, so the terminate() Python's exit sends them is lost: a
    run that failed with its workers up hung at exit. It exits now, with its own error and no worker's."""
    write_images(tmp_path / "photos", 4)
    script = f"""
from omegaconf import OmegaConf
from impasto.training.data import ImageDataModule, build_train_dataset
cfg = OmegaConf.create({dict(data_cfg(root=str(tmp_path / "photos")))!r})
batches = iter(ImageDataModule(build_train_dataset(cfg)[0], 2, 1).train_dataloader())
next(batches)
raise RuntimeError("the run failed")
"""
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the process still waits on its data worker two minutes after its error")
    assert done.returncode == 1 and done.stderr.strip().endswith("RuntimeError: the run failed"), done.stderr[-500:]
    assert "worker" not in done.stderr, done.stderr[-500:]
