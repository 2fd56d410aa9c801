"""Training images: the `data` config group's sources, random crops, and the LightningDataModule.

Sources (`data.source`):
- ``embedded``: the photos shipped in impasto/assets/photos (works offline on a fresh machine; a demo, not COCO).
- ``coco``: a COCO train2014 image folder at `data.root` (scripts/download_coco.sh fetches it).
- ``folder``: any folder of images at `data.root`, searched recursively.
- ``hf``: a Hugging Face `datasets` dataset: a hub id, a local imagefolder, or a folder written by save_to_disk;
  `data.streaming=true` reads it as a stream (no full download), split between DDP ranks.
- ``auto``: COCO if `data.root` holds images, else the embedded photos, said loudly in the log.
"""

import atexit
import functools
import logging
import multiprocessing
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from .. import ASSETS
from ..errors import UserError
from ..images import list_images, load_image, to_tensor

log = logging.getLogger(__name__)

EMBEDDED_PHOTOS = ASSETS / "photos"
EMBEDDED_PREVIEW = ASSETS / "preview"


class RandomScaleCrop:
    """Shorter side to `size`·U(min_zoom, max_zoom), a random `size`² crop and a random horizontal flip -> a uint8
    tensor (3, size, size). Crops stay 8-bit until the device: a quarter of float32's bytes through the workers'
    shared memory, the pinned buffers and the copy to the GPU."""

    def __init__(self, size: int, max_zoom: float = 1.0, min_zoom: float = 1.0):
        self.size = size
        self.min_zoom = max(1.0, float(min_zoom))
        self.max_zoom = max(self.min_zoom, float(max_zoom))

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        short = self.size * rng.uniform(self.min_zoom, self.max_zoom)
        scale = short / min(image.size)
        w, h = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
        x, y = rng.randint(0, w - self.size), rng.randint(0, h - self.size)
        # Resample the crop alone, from its box in the source: the pixels around it are never computed.
        sx, sy = image.width / w, image.height / h
        box = (x * sx, y * sy, (x + self.size) * sx, (y + self.size) * sy)
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return pixels.view(self.size, self.size, 3).permute(2, 0, 1)


MAX_TRIES = 10  # unreadable images passed over in a row before the data is declared broken


class TrainingImages(Dataset):
    """Random crops of images, indexed by (image index, draw seed) pairs from EndlessSampler: a crop is a function
    of the pair alone, whichever worker makes it. An unreadable image is passed over for the next one (COCO has a
    few); each item says which it passed over, so the main process can warn once per file and count them."""

    def __init__(self, transform: RandomScaleCrop):
        self.transform = transform

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        index, draw = item
        rng = random.Random(draw)
        bad: list[tuple[int, str]] = []
        for attempt in range(MAX_TRIES):
            i = (index + attempt) % len(self)
            try:
                return self.transform(self.load(i), rng), bad
            except UserError as e:
                bad.append((i, str(e)))
        # Not raised here: an error raised in a DataLoader worker reaches the user wrapped in a traceback.
        return torch.zeros(3, self.transform.size, self.transform.size, dtype=torch.uint8), bad


class ImageFiles(TrainingImages):
    """Image files on disk."""

    def __init__(self, paths: list[Path], transform: RandomScaleCrop):
        super().__init__(transform)
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index], "training image")


class HFImages(TrainingImages):
    """One image column of a Hugging Face dataset."""

    def __init__(self, dataset, column: str, transform: RandomScaleCrop):
        super().__init__(transform)
        self.dataset = dataset
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Image.Image:
        try:
            return self.dataset[index][self.column].convert("RGB")
        except Exception as e:  # a broken image inside the dataset: passed over like an unreadable file
            raise UserError(f"training image {index} of the dataset is not readable ({type(e).__name__})") from None


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
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed} {self.epoch} {worker.id if worker else 0}")
        for example in ds:
            yield self.transform(example[self.column].convert("RGB"), rng), []


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
        raise UserError("data=hf needs the 'datasets' package: pip install 'impasto[hf]'") from None
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
    """The training dataset for the `data` config and a one-line description of it that names no machine's paths
    (it goes into the export): the source, `data.set_name` or the folder's name, and the count."""
    crop = RandomScaleCrop(cfg.size, cfg.max_zoom, cfg.get("min_zoom", 1.0))
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
        return ImageFiles(paths, crop), f"embedded photos ({len(paths)} images)"
    if source in ("coco", "folder"):
        root = Path(cfg.root).expanduser()
        hint = ("run scripts/download_coco.sh or set data.root" if source == "coco"
                else "set data.root to a folder of training photos")
        paths = _folder_images(root, "data folder", hint)
        log.info("training images from %s", root)
        return ImageFiles(paths, crop), f"{source} {cfg.get('set_name') or root.name} ({len(paths)} images)"
    if source == "hf":
        ds = _load_hf(cfg)
        local = Path(str(cfg.path)).expanduser()
        name = cfg.get("set_name") or (local.name if local.is_dir() else cfg.path)  # a hub id names itself
        if cfg.streaming:
            stream = HFStream(ds, cfg.image_column, crop, seed=0, buffer_size=cfg.shuffle_buffer)
            return stream, f"hf {name} [{cfg.split}] (streamed)"
        return HFImages(ds, cfg.image_column, crop), f"hf {name} [{cfg.split}] ({len(ds)} images)"
    raise UserError(f"unknown data.source {source!r}: use auto, embedded, coco, folder or hf")


def load_fixed(folder: str | None, size: int, setting: str = "data.preview_dir") -> torch.Tensor:
    """Fixed photos, never trained on (the preview's, or the held-out ones the plateau schedule may watch): shorter
    side `size`, centre-cropped square; `setting` names the folder's in errors (None: the embedded preview)."""
    root = Path(folder).expanduser() if folder else EMBEDDED_PREVIEW
    images = []
    for path in _folder_images(root, setting, f"set {setting} to a folder of photos"):
        image = load_image(path)
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        images.append(to_tensor(image.crop((left, top, left + size, top + size))))
    return torch.stack(images)


class EndlessSampler(Sampler):
    """This rank's (image index, draw seed) pairs, without end: epoch e is a permutation seeded by (seed, e), each
    step takes the next batch_size × world_size images of it, this rank the rank-th batch_size of those, and an
    epoch's remainder is dropped. Every pair is a function of its position alone, so a run resumed at step k
    draws exactly what the uninterrupted run drew from step k on, with or without workers, on any rank."""

    def __init__(self, size: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if size < batch_size * world_size:
            raise UserError(f"the training set has {size} images, fewer than one step's {batch_size * world_size} "
                            f"(data.batch_size {batch_size} × {world_size} processes): lower data.batch_size or "
                            "add images")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_step = self.batch_size * self.world_size
        steps_per_epoch = self.size // per_step
        step, epoch, order = self.start_step, None, None
        while True:
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                order = torch.randperm(self.size, generator=generator).tolist()
            first = (step % steps_per_epoch) * per_step + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                yield order[position], (self.seed * 100_003 + epoch) * 2**32 + position
            step += 1


def collate_crops(items: list[tuple[torch.Tensor, list[tuple[int, str]]]]):
    """A batch of crops, and for each crop the (index, reason) of every unreadable image passed over on its way."""
    return default_collate([crop for crop, _ in items]), [passed for _, passed in items]


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader workers leave Ctrl+C and SIGTERM to the main process, which stops the run cleanly (a worker
    that died of the signal would end the run with a worker error instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@functools.cache
def kill_workers_at_exit() -> None:
    """The workers ignore SIGTERM, which is what Python's exit sends the workers it finds still up (a run that ended
    in an error leaves them so), and would then wait for them forever: at exit they are killed instead."""
    def kill() -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # else torch reports the killed workers as a second error
        for child in multiprocessing.active_children():
            if child.daemon:  # a DataLoader's workers; nothing else of a run's is daemonic
                child.kill()

    atexit.register(kill)  # after multiprocessing's own exit handler, so it runs before it


class UnreadableImages:
    """The training images passed over: each warned once and counted; too large a share stops the run."""

    MIN_DRAWS = 20  # draws before the share is judged: a few early bad files are no verdict on the data

    def __init__(self, max_fraction: float):
        self.max_fraction = max_fraction
        self.files: dict[int, str] = {}
        self.draws = 0
        self.failed_draws = 0

    def record(self, passed_over: list[list[tuple[int, str]]]) -> bool:
        """Count one batch (what each crop passed over); True when a file was seen for the first time."""
        flat = [b for passed in passed_over for b in passed]
        if any(len(passed) >= MAX_TRIES for passed in passed_over):
            raise UserError(f"{MAX_TRIES} unreadable training images in a row, the last: {flat[-1][1]}: check the "
                            "data")
        self.draws += len(passed_over) + len(flat)
        self.failed_draws += len(flat)
        new = False
        for index, reason in flat:
            if index not in self.files:
                self.files[index] = reason
                new = True
                log.warning("skipping unreadable training image (counted once, passed over each time it is "
                            "drawn): %s", reason)
        if self.draws >= self.MIN_DRAWS and self.failed_draws > self.max_fraction * self.draws:
            raise UserError(f"{self.failed_draws} of {self.draws} training images drawn were unreadable, more than "
                            f"data.max_bad_fraction={self.max_fraction}: check the data (the first: "
                            f"{next(iter(self.files.values()))})")
        return new


class ImageDataModule(pl.LightningDataModule):
    """Batches of random crops. Map-style sources go through EndlessSampler, which splits them between DDP ranks
    itself and starts a resumed run where it stopped; there are no epochs, so the workers start once."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int = 0,
                 max_bad_fraction: float = 0.5):
        super().__init__()
        if not isinstance(dataset, IterableDataset) and len(dataset) < batch_size:
            raise UserError(f"the training set has {len(dataset)} images, fewer than one batch of {batch_size}: "
                            "lower data.batch_size or add images")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.unreadable = UnreadableImages(max_bad_fraction)

    def train_dataloader(self) -> DataLoader:
        if self.num_workers:
            kill_workers_at_exit()
        common = dict(batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_crops,
                      worker_init_fn=ignore_interrupts, persistent_workers=self.num_workers > 0,
                      pin_memory=torch.cuda.is_available(), drop_last=True)
        trainer = self.trainer
        if isinstance(self.dataset, IterableDataset):  # a stream shuffles through its own buffer
            if trainer is not None and trainer.global_step:
                log.warning("a streamed dataset starts a fresh shuffle when a run resumes: the data order after "
                            "step %d differs from the uninterrupted run's", trainer.global_step)
            return DataLoader(self.dataset, **common)
        sampler = EndlessSampler(len(self.dataset), self.batch_size, self.seed,
                                 rank=trainer.global_rank if trainer else 0,
                                 world_size=trainer.world_size if trainer else 1,
                                 # restored from the checkpoint before this is called: where a resumed run goes on
                                 start_step=trainer.global_step * trainer.accumulate_grad_batches if trainer else 0)
        return DataLoader(self.dataset, sampler=sampler, **common)

    def on_before_batch_transfer(self, batch, dataloader_idx: int) -> torch.Tensor:
        crops, passed_over = batch
        if self.unreadable.record(passed_over) and self.trainer is not None and self.trainer.logger:
            self.trainer.logger.log_metrics({"data/unreadable_images": len(self.unreadable.files)},
                                            step=self.trainer.global_step)
        return crops

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        return to_float(batch)


def to_float(crops: torch.Tensor) -> torch.Tensor:
    """uint8 crops -> float32 in [0, 1], on whichever device they are."""
    return crops.float().div_(255) if crops.dtype == torch.uint8 else crops
