"""Datasets for the build, turned into teacher pixels by the serving code (`iqaguard.imaging`).

Images are kept as uint8 [N,3,H,W] arrays: `to_pixels` always yields multiples of 1/255, so the
uint8 form is lossless and a quarter of the memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqaguard.cache import cache_dir
from iqaguard.imaging import InvalidImageError, decode_image, to_pixels

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class ImageSet:
    """uint8 pixels [N,3,H,W] as the server would produce them, optional int64 labels [N], sources.

    `files` (folder sets) names each image's file, so augmented views can be cut from the original.
    """

    pixels: np.ndarray
    labels: np.ndarray | None
    source: str
    files: tuple[Path, ...] | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at `index` (labels and files follow)."""
        labels = None if self.labels is None else self.labels[index]
        files = None if self.files is None else tuple(self.files[i] for i in np.asarray(index))
        return ImageSet(self.pixels[index], labels, self.source, files)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format, optionally gzip-compressed) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {shape} values, found {array.size}")
    return array.reshape(shape)


def fashion_arrays(root: Path | None = None, download_root: Path | None = None) -> dict[str, np.ndarray]:
    """Raw Fashion-MNIST uint8 images [N,28,28] and labels [N] for 'train' and 'test'.

    Reads the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) when present,
    otherwise lets torchvision download it into `download_root`.
    """
    root = FASHION_DIR if root is None else Path(root)
    if all((root / name).is_file() for name in FASHION_FILES.values()):
        return {key: read_idx(root / name) for key, name in FASHION_FILES.items()}
    from torchvision.datasets import FashionMNIST

    cache = Path(download_root or cache_dir("datasets"))
    arrays: dict[str, np.ndarray] = {}
    for split, train in (("train", True), ("test", False)):
        dataset = FashionMNIST(str(cache), train=train, download=True)
        arrays[f"{split}_images"] = dataset.data.numpy()
        arrays[f"{split}_labels"] = dataset.targets.numpy().astype(np.uint8)
    return arrays


def grey_to_pixels(images: np.ndarray, size: tuple[int, int], desc: str = "pixels") -> np.ndarray:
    """uint8 greyscale [N,h,w] -> uint8 [N,3,H,W] through PIL and `to_pixels`, as the server would."""
    out = np.empty((len(images), 3, *size), dtype=np.uint8)
    for index, image in enumerate(tqdm(images, desc=desc, unit="img", leave=False, mininterval=1.0)):
        pixels = to_pixels(Image.fromarray(image, mode="L"), size)
        out[index] = np.rint(pixels * 255.0).astype(np.uint8)
    return out


def load_fashion(size: tuple[int, int], root: Path | None = None) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST train (60k) and test (10k) as served pixels with labels."""
    arrays = fashion_arrays(root)
    local = all((Path(root or FASHION_DIR) / name).is_file() for name in FASHION_FILES.values())
    # Descriptions travel in manifests: name the source, not a path on the build host.
    source = "Fashion-MNIST (" + ("Debian package dataset-fashion-mnist" if local else "torchvision download") + ")"
    train = ImageSet(grey_to_pixels(arrays["train_images"], size, "train pixels"),
                     arrays["train_labels"].astype(np.int64), f"{source} (train)")
    test = ImageSet(grey_to_pixels(arrays["test_images"], size, "test pixels"),
                    arrays["test_labels"].astype(np.int64), f"{source} (test)")
    return train, test


def image_files(folder: Path) -> list[Path]:
    """All image files under `folder` (recursively), sorted for determinism."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder: Path, size: tuple[int, int], limit: int | None = None) -> ImageSet:
    """Every decodable image file under `folder` as served pixels (no labels); undecodable files are skipped."""
    files = image_files(folder)
    if limit is not None:
        files = files[:limit]
    pixels: list[np.ndarray] = []
    decoded: list[Path] = []
    skipped = 0
    for path in tqdm(files, desc="images", unit="img", mininterval=1.0):
        try:
            image = decode_image(path.read_bytes())
        except InvalidImageError:
            skipped += 1
            continue
        pixels.append(np.rint(to_pixels(image, size) * 255.0).astype(np.uint8))
        decoded.append(path)
    if not pixels:
        raise FileNotFoundError(f"no decodable images under {folder} ({skipped} files refused)")
    return ImageSet(np.stack(pixels), None, f"folder {Path(folder).name}/ ({len(pixels)} images, {skipped} refused)",
                    tuple(decoded))


def crop_views(files: Sequence[Path], size: tuple[int, int], views: int, seed: int,
               scale: tuple[float, float] = (0.35, 1.0)) -> np.ndarray:
    """uint8 [N*views,3,H,W]: per file its served pixels, then views-1 random resized crops of the original.

    Crops are cut from the decoded original (torchvision's RandomResizedCrop parameters), mirrored with
    probability 1/2 and resized by the serving `to_pixels`, so every view is a picture the server could
    have been sent. Image i's views are rows i*views ... i*views+views-1. Deterministic for a seed.
    """
    from torchvision.transforms import RandomResizedCrop

    out = np.empty((len(files) * views, 3, *size), dtype=np.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for index, path in enumerate(tqdm(files, desc="distillation crops", unit="img", mininterval=1.0)):
            image = decode_image(Path(path).read_bytes())
            for view in range(views):
                crop = image
                if view > 0:
                    top, left, height, width = RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
                    crop = image.crop((left, top, left + width, top + height))
                    if torch.rand(1).item() < 0.5:
                        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                out[index * views + view] = np.rint(to_pixels(crop, size) * 255.0).astype(np.uint8)
    return out


def as_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float32 tensor in [0,1] (exactly what `to_pixels` returned)."""
    return torch.from_numpy(pixels).float().div_(255.0)


def batches(count: int, batch_size: int) -> Iterable[slice]:
    """Consecutive slices covering range(count)."""
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))
