"""Training images: the `data` config group's sources, random crops, and the LightningDataModule.

Sources (`data.source`):
- ``embedded``: the photos shipped in impasto/assets/photos (works offline on a fresh machine; a demo, not COCO).
- ``coco``: a COCO train2014 image folder at `data.root` (scripts/download_coco.sh fetches it).
- ``folder``: any folder of images at `data.root`, searched recursively.
- ``hf``: a Hugging Face `datasets` dataset: a hub id, a local imagefolder, or a folder written by save_to_disk;
  `data.streaming=true` reads it as a stream (no full download), split between DDP ranks.
- ``auto``: COCO if `data.root` holds images, else the embedded photos, said loudly in the log.
"""

import logging
import random
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import ASSETS
from .errors import UserError
from .images import list_images, load_image, to_tensor

log = logging.getLogger(__name__)

EMBEDDED_PHOTOS = ASSETS / "photos"
EMBEDDED_PREVIEW = ASSETS / "preview"


class RandomScaleCrop:
    """Shorter side to `size`·U(1, max_zoom), a random `size`² crop and a random horizontal flip -> tensor."""

    def __init__(self, size: int, max_zoom: float = 1.0):
        self.size = size
        self.max_zoom = max(1.0, float(max_zoom))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        short = self.size * random.uniform(1.0, self.max_zoom)
        scale = short / min(image.size)
        w, h = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        x, y = random.randint(0, w - self.size), random.randint(0, h - self.size)
        image = image.crop((x, y, x + self.size, y + self.size))
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)


class ImageFiles(Dataset):
    """Image files on disk; an unreadable file is replaced by another one (COCO has a few) instead of ending a run."""

    def __init__(self, paths: list[Path], transform: RandomScaleCrop):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        for attempt in range(10):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return self.transform(load_image(path))
            except UserError as e:
                log.warning("skipping %s", e)
        raise UserError(f"10 unreadable images in a row near {self.paths[index]}: check the data folder")


class HFImages(Dataset):
    """One image column of a Hugging Face dataset."""

    def __init__(self, dataset, column: str, transform: RandomScaleCrop):
        self.dataset = dataset
        self.column = column
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.dataset[index][self.column].convert("RGB"))


class HFStream(IterableDataset):
    """A streamed Hugging Face dataset: shuffled through a buffer, split between DDP ranks when iteration starts
    (the process group exists only then), and between DataLoader workers by `datasets` itself."""

    def __init__(self, dataset, column: str, transform: RandomScaleCrop, seed: int, buffer_size: int):
        self.dataset = dataset
        self.column = column
        self.transform = transform
        self.seed = seed
        self.buffer_size = buffer_size
        self.epoch = 0

    def __iter__(self):
        import torch.distributed as dist
        from datasets.distributed import split_dataset_by_node

        ds = self.dataset
        if dist.is_available() and dist.is_initialized():
            ds = split_dataset_by_node(ds, rank=dist.get_rank(), world_size=dist.get_world_size())
        ds = ds.shuffle(seed=self.seed + self.epoch, buffer_size=self.buffer_size)
        self.epoch += 1
        for example in ds:
            yield self.transform(example[self.column].convert("RGB"))


def _folder_images(root: Path, what: str, hint: str) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"{what} {root} does not exist: {hint}")
    paths = list_images(root)
    if not paths:
        raise UserError(f"{what} {root} holds no images (jpg, png, …): {hint}")
    return paths


def _load_hf(cfg) -> "object":
    try:
        import datasets
    except ImportError:
        raise UserError("data=hf needs the 'datasets' package: pip install datasets") from None
    path = str(cfg.path)
    local = Path(path).expanduser()
    try:
        if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[cfg.split]
            if cfg.streaming:
                ds = ds.to_iterable_dataset(num_shards=max(1, cfg.num_workers))
        elif local.is_dir():
            ds = datasets.load_dataset("imagefolder", data_dir=str(local), split=cfg.split, streaming=cfg.streaming)
        else:
            ds = datasets.load_dataset(path, name=cfg.get("name"), split=cfg.split, streaming=cfg.streaming)
    except UserError:
        raise
    except Exception as e:  # datasets raises many types (not found, offline, bad split); all are the user's to fix
        raise UserError(f"cannot load Hugging Face dataset {path!r} split {cfg.split!r}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if ds.column_names is not None and cfg.image_column not in ds.column_names:
        raise UserError(f"dataset {path!r} has no column {cfg.image_column!r}: set data.image_column to one of "
                        f"{ds.column_names}")
    return ds


def build_train_dataset(cfg) -> tuple[Dataset, str]:
    """The training dataset for the `data` config and a one-line description of where it comes from."""
    crop = RandomScaleCrop(cfg.size, cfg.max_zoom)
    source = cfg.source
    if source == "auto":
        root = Path(cfg.root).expanduser()
        if root.is_dir() and list_images(root):
            source = "coco"
        else:
            log.warning("COCO not found at %s: training on the %d embedded photos instead, a demo that styles "
                        "but generalises less. For a real run: scripts/download_coco.sh, or data=folder "
                        "data.root=PATH, or data=hf data.path=ID", root, len(list_images(EMBEDDED_PHOTOS)))
            source = "embedded"
            crop = RandomScaleCrop(cfg.size, cfg.embedded_max_zoom)  # as data=embedded crops them
    if source == "embedded":
        paths = list_images(EMBEDDED_PHOTOS)
        return ImageFiles(paths, crop), f"embedded photos ({len(paths)} images, {EMBEDDED_PHOTOS})"
    if source in ("coco", "folder"):
        root = Path(cfg.root).expanduser()
        hint = ("run scripts/download_coco.sh or set data.root" if source == "coco"
                else "set data.root to a folder of training photos")
        paths = _folder_images(root, "data folder", hint)
        return ImageFiles(paths, crop), f"{source} ({len(paths)} images, {root})"
    if source == "hf":
        ds = _load_hf(cfg)
        if cfg.streaming:
            stream = HFStream(ds, cfg.image_column, crop, seed=0, buffer_size=cfg.shuffle_buffer)
            return stream, f"hf {cfg.path} [{cfg.split}] (streamed)"
        return HFImages(ds, cfg.image_column, crop), f"hf {cfg.path} [{cfg.split}] ({len(ds)} images)"
    raise UserError(f"unknown data.source {source!r}: use auto, embedded, coco, folder or hf")


def load_preview(folder: str | None, size: int) -> torch.Tensor:
    """Fixed content images (never trained on) for TensorBoard: shorter side `size`, centre-cropped square."""
    root = Path(folder).expanduser() if folder else EMBEDDED_PREVIEW
    images = []
    for path in _folder_images(root, "preview folder", "set data.preview_dir to a folder of photos"):
        image = load_image(path)
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        images.append(to_tensor(image.crop((left, top, left + size, top + size))))
    return torch.stack(images)


class ImageDataModule(pl.LightningDataModule):
    """Shuffled batches of random crops; Lightning adds the distributed sampler under DDP."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int):
        super().__init__()
        if not isinstance(dataset, IterableDataset) and len(dataset) < batch_size:
            raise UserError(f"the training set has {len(dataset)} images, fewer than one batch of {batch_size}: "
                            "lower data.batch_size or add images")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        shuffle = not isinstance(self.dataset, IterableDataset)  # a stream shuffles through its own buffer
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())
