import pytest
import torch
from PIL import Image

from impasto.data import EMBEDDED_PHOTOS, ImageDataModule, build_train_dataset, load_preview
from impasto.errors import UserError
from omegaconf import OmegaConf


def data_cfg(**kw):
    base = {"source": "folder", "root": None, "size": 32, "max_zoom": 1.5, "embedded_max_zoom": 2.0, "batch_size": 2,
            "num_workers": 0, "preview_dir": None, "path": None, "name": None, "split": "train",
            "image_column": "image", "streaming": False, "shuffle_buffer": 8}
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
    assert len(dataset) == 5 and "5 images" in description
    batch = next(iter(ImageDataModule(dataset, 2, 0).train_dataloader()))
    assert batch.shape == (2, 3, 32, 32) and 0 <= batch.min() and batch.max() <= 1


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
    assert len(dataset) == 3 and dataset[0].shape == (3, 32, 32)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"picture": [Image.new("RGB", (40, 40))] * 2},
                               features=datasets.Features({"picture": datasets.Image()})).save_to_disk(str(saved))
    with pytest.raises(UserError, match="no column 'image'"):
        build_train_dataset(data_cfg(source="hf", path=str(saved)))
    dataset, _ = build_train_dataset(data_cfg(source="hf", path=str(saved), image_column="picture"))
    assert len(dataset) == 2


def test_preview_is_a_fixed_square_batch():
    preview = load_preview(None, 48)
    assert preview.shape[1:] == (3, 48, 48) and len(preview) >= 3
    torch.testing.assert_close(preview, load_preview(None, 48))


def test_hf_streaming_yields_batches(tmp_path):
    pytest.importorskip("datasets", reason="datasets is a declared dependency; install it")
    write_images(tmp_path / "hf", 5)
    dataset, description = build_train_dataset(data_cfg(source="hf", path=str(tmp_path / "hf"), streaming=True))
    assert "streamed" in description
    batches = list(ImageDataModule(dataset, 2, 0).train_dataloader())
    assert len(batches) == 2 and batches[0].shape == (2, 3, 32, 32)  # 5 images, drop_last
