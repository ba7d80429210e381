"""Sample images for load tests: clean, distorted and adversarial, from a folder or made synthetically.

A pool folder holds one subfolder per kind: ``clean/``, ``distorted/``, ``adversarial/`` (e.g. the
build's held-out samples, or ``python -m iqaguard.bench.image_pool DIR`` to write the synthetic pool there).
Without one named, the pool is the newest build's held-out samples (real PGD images that fooled its
teacher; the folder the served teacher's latest manifest names under "samples", the teacher of the
set the load test calls) when that folder holds every kind.
Otherwise it is the synthetic pool, made in memory from scikit-image's photos:

- clean: the photos, as JPEG;
- distorted: Gaussian blur, heavy JPEG compression, Gaussian noise (as JPEG q=90), 8× down-and-up
  sampling (Pillow);
- adversarial (SYNTHETIC): random-sign L∞ noise of 8/255 at 224×224, the shape of an FGSM step but
  without a gradient, so it need not fool any model. Real attacks come from the build's held-out set.
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from iqaguard_client.files import IMAGE_SUFFIXES
from PIL import Image, ImageFilter

from iqaguard.contract import ENSEMBLE, TEACHER
from iqaguard.repository.layout import MANIFEST_FILE, default_repository, latest_version, model_file
from iqaguard.repository.manifest import read_manifest, resolve_from_repository
from iqaguard.repository.sets import set_for_ensemble

KINDS = ("clean", "distorted", "adversarial")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel")
ADVERSARIAL_SIZE = (224, 224)
ADVERSARIAL_EPS = 8 / 255


@dataclass(frozen=True)
class PoolImage:
    """One encoded sample image, its kind (clean/distorted/adversarial) and a readable name."""

    kind: str
    name: str
    data: bytes


@dataclass(frozen=True)
class ImagePool:
    """Sample images by kind, and where they came from (printed with every load-test run)."""

    images: dict[str, tuple[PoolImage, ...]]
    origin: str

    def __post_init__(self) -> None:
        for kind in KINDS:
            if not self.images.get(kind):
                raise ValueError(f"image pool ({self.origin}) has no {kind} images")

    def pick(self, weights: Sequence[float], rng: random.Random) -> PoolImage:
        """A random image: its kind drawn by `weights` (in KINDS order), then uniformly within the kind."""
        kind = rng.choices(KINDS, weights=weights)[0]
        return rng.choice(self.images[kind])

    def describe(self) -> str:
        counts = ", ".join(f"{len(self.images[kind])} {kind}" for kind in KINDS)
        return f"{counts} ({self.origin})"


def kind_weights(text: str) -> tuple[float, ...]:
    """Parse "clean,distorted,adversarial" weights, e.g. "6,3,1"; at least one must be positive."""
    weights = tuple(float(part) for part in text.split(","))
    if len(weights) != len(KINDS) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"kind weights want {len(KINDS)} non-negative numbers ({','.join(KINDS)}), got {text!r}")
    return weights


def _encode(image: Image.Image, encoding: str) -> bytes:
    """Encode as "PNG" or "JPEG-<quality>"."""
    buffer = io.BytesIO()
    if encoding.startswith("JPEG-"):
        image.save(buffer, format="JPEG", quality=int(encoding.removeprefix("JPEG-")))
    else:
        image.save(buffer, format=encoding)
    return buffer.getvalue()


def _noisy(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float32) / 255.0
    noisy = array + rng.normal(0.0, sigma, array.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8))


def _resampled(image: Image.Image, factor: int) -> Image.Image:
    small = image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.Resampling.BILINEAR)
    return small.resize(image.size, Image.Resampling.BILINEAR)


def _sign_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image.resize(ADVERSARIAL_SIZE[::-1], Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=array.shape)
    perturbed = np.clip(array + ADVERSARIAL_EPS * signs, 0.0, 1.0)
    return Image.fromarray(np.rint(perturbed * 255.0).astype(np.uint8))


def synthetic_pool(seed: int = 0, why: str = "") -> ImagePool:
    """Clean, distorted and synthetic-adversarial images made from scikit-image's sample photos.

    `why` (e.g. why no build samples were used) is added to the pool's origin.
    """
    from skimage import data as samples

    rng = np.random.default_rng(seed)
    images: dict[str, list[PoolImage]] = {kind: [] for kind in KINDS}
    # label -> (distortion, encoding): the noise goes out as JPEG q=90 to keep requests a sensible size.
    distortions: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
        "blur-r4": (lambda im: im.filter(ImageFilter.GaussianBlur(4)), "PNG"),
        "jpeg-q5": (lambda im: im, "JPEG-5"),
        "noise-sigma0.15": (lambda im: _noisy(im, 0.15, rng), "JPEG-90"),
        "resample-8x": (lambda im: _resampled(im, 8), "PNG"),
    }
    for photo in PHOTOS:
        image = Image.fromarray(getattr(samples, photo)()).convert("RGB")
        images["clean"].append(PoolImage("clean", f"{photo}.jpg", _encode(image, "JPEG-92")))
        for label, (distort, encoding) in distortions.items():
            name = f"{photo}_{label}.{'png' if encoding == 'PNG' else 'jpg'}"
            images["distorted"].append(PoolImage("distorted", name, _encode(distort(image), encoding)))
        adversarial = _encode(_sign_noise(image, rng), "PNG")
        images["adversarial"].append(PoolImage("adversarial", f"{photo}_sign-noise-8of255.png", adversarial))
    origin = "synthetic pool: scikit-image photos, Pillow distortions, random-sign noise as stand-in adversarials"
    if why:
        origin += f"; {why}"
    return ImagePool({kind: tuple(items) for kind, items in images.items()}, origin)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_pool(folder: Path, origin: str = "") -> ImagePool:
    """Read a pool folder with clean/, distorted/ and adversarial/ subfolders of image files."""
    images = {}
    for kind in KINDS:
        images[kind] = tuple(PoolImage(kind, f"{kind}/{p.name}", p.read_bytes()) for p in _image_files(folder / kind))
    return ImagePool(images, origin or f"folder {folder}")


def build_samples(repository: Path, ensemble: str = ENSEMBLE) -> tuple[Path | None, str]:
    """The sample folder of the newest build of the set `ensemble` serves (named by its teacher's latest
    manifest) and a description, or (None, why not) when there is none or it lacks a kind."""
    try:
        teacher = set_for_ensemble(repository, ensemble).model(TEACHER)
    except KeyError as error:
        return None, str(error).strip("'\"")
    version = latest_version(repository / teacher)
    if version is None:
        return None, f"no built {teacher} in {repository}"
    version_dir = model_file(repository, teacher, version).parent
    manifest_path = version_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        return None, f"no {manifest_path} (a teacher not made by the build)"
    try:
        samples = read_manifest(version_dir).get("samples")
    except (OSError, ValueError) as error:
        return None, f"cannot read {manifest_path}: {error}"
    if not isinstance(samples, dict) or not samples.get("path"):
        return None, f"{manifest_path} names no sample folder (built before builds wrote samples)"
    folder = resolve_from_repository(samples["path"], repository)
    missing = [kind for kind in KINDS if not (folder / kind).is_dir() or not _image_files(folder / kind)]
    if missing:
        return None, f"build samples {folder} lack {', '.join(missing)} images"
    return folder, f"build held-out samples of {teacher} version {version}: {folder}"


def image_pool(
    folder: str | Path | None = None, seed: int = 0, repository: str | Path | None = None, ensemble: str = ENSEMBLE
) -> ImagePool:
    """The pool in `folder` when given; else the samples of the build in `repository` of the set `ensemble`
    serves; else the synthetic pool."""
    if folder:
        return load_pool(Path(folder))
    samples, description = build_samples(Path(repository or default_repository()), ensemble)
    return load_pool(samples, description) if samples else synthetic_pool(seed, why=description)


def write_pool(pool: ImagePool, folder: Path) -> None:
    """Write a pool as a folder that load_pool reads back (file names made filesystem-safe)."""
    for kind in KINDS:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(pool.images[kind]):
            (folder / kind / f"{index:03d}_{Path(image.name).name}").write_bytes(image.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic load-test image pool to a folder.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pool = synthetic_pool(args.seed)
    write_pool(pool, args.folder)
    print(f"wrote {pool.describe()} to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
