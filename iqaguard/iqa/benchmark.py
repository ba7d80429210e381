"""BRISQUE speed on one core: iqaguard vs the `brisque` reference package, measured in the same run.

    python -m iqaguard.iqa.benchmark            (or: make bench-iqa)

Prints milliseconds per 224x224 image for both (single-image calls, median wall time and CPU time),
the ratio, batched 224x224 throughput, small-image batch throughput (28x28 Fashion-MNIST when
its Debian package is installed, 32x32 photo crops), and what batch invariance costs: an image's
features are computed with per-image matrix products, which the run checks bit for bit and times
against one fused product over the batch. All BLAS/OpenMP pools are limited to one
thread: the module re-executes itself with the thread variables set, since numpy reads them at import.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
FASHION_TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


def _ensure_one_thread() -> None:
    """Re-exec this module with one-thread pools unless that is already the environment."""
    if all(os.environ.get(var) == "1" for var in _THREAD_VARS):
        return
    env = {**os.environ, **dict.fromkeys(_THREAD_VARS, "1")}
    os.execve(sys.executable, [sys.executable, "-m", "iqaguard.iqa.benchmark", *sys.argv[1:]], env)


@dataclass
class Timing:
    """Per-call wall-clock median and minimum, and mean CPU time of this process, in ms."""

    median_ms: float
    min_ms: float
    cpu_ms: float


def measure(fn: Callable[[], object], calls: int, warmup: int = 2) -> Timing:
    for _ in range(warmup):
        fn()
    walls = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / calls
    return Timing(statistics.median(walls) * 1e3, min(walls) * 1e3, cpu * 1e3)


def photos_224():
    """The skimage photos resized to 224x224: float32 [P, 3, 224, 224] in [0, 1]."""
    import numpy as np
    from skimage import data, transform

    images = []
    for name in PHOTOS:
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
        images.append(transform.resize(image, (224, 224), anti_aliasing=True))
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def fashion_mnist(limit: int):
    """Fashion-MNIST test images as the fashion teacher sees them: float32 [N, 3, 28, 28], or None."""
    import numpy as np

    if not FASHION_TEST_IMAGES.exists():
        return None
    with gzip.open(FASHION_TEST_IMAGES) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:limit]
    return np.repeat(raw, 3, axis=1).astype(np.float32) / 255


def photo_crops(count: int, side: int, seed: int = 0):
    """Random side x side crops of the photos at half resolution: float32 [count, 3, side, side]."""
    import numpy as np
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    sources = [transform.rescale(getattr(data, n)(), 0.5, channel_axis=-1) for n in ("chelsea", "coffee")]
    crops = []
    for i in range(count):
        image = sources[i % len(sources)]
        y, x = rng.integers(0, image.shape[0] - side), rng.integers(0, image.shape[1] - side)
        crops.append(image[y : y + side, x : x + side])
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="BRISQUE speed on one core: iqaguard vs `brisque`.")
    parser.add_argument("--calls", type=int, default=200, help="single-image calls timed for iqaguard")
    parser.add_argument("--reference-calls", type=int, default=30, help="calls timed for the reference")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the batched 224x224 run")
    parser.add_argument("--small-batch", type=int, default=4096, help="batch size of the small-image runs")
    args = parser.parse_args(argv)
    _ensure_one_thread()

    import numpy as np

    with warnings.catch_warnings():  # the reference's own imports raise deprecation warnings
        warnings.simplefilter("ignore")
        import cv2
        from brisque import BRISQUE
    cv2.setNumThreads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # numpy warns inside the reference

    from iqaguard.iqa import brisque

    print(f"BRISQUE benchmark, one thread on {cpu_name()} ({os.cpu_count()} cores visible), "
          f"python {platform.python_version()}, numpy {np.__version__}, cv2 {cv2.__version__}")
    print("times per call: median wall clock (min), and CPU time of this process\n")

    batch = photos_224()
    reference = BRISQUE(url=False)
    as_hwc = [np.ascontiguousarray(img.transpose(1, 2, 0)) for img in batch]  # the reference's layout
    singles = [img[None] for img in batch]
    cycle = {"ours": 0, "ref": 0}

    def ours_one() -> None:
        brisque(singles[cycle["ours"] % len(singles)])
        cycle["ours"] += 1

    def ref_one() -> None:
        reference.score(as_hwc[cycle["ref"] % len(as_hwc)])
        cycle["ref"] += 1

    mine = measure(ours_one, args.calls)
    ref = measure(ref_one, args.reference_calls)
    print("224x224 RGB, one image per call")
    print(f"  iqaguard.iqa.brisque  {mine.median_ms:8.3f} ms  (min {mine.min_ms:.3f})  cpu {mine.cpu_ms:.3f} ms")
    print(f"  brisque 0.2.0         {ref.median_ms:8.3f} ms  (min {ref.min_ms:.3f})  cpu {ref.cpu_ms:.3f} ms")
    print(f"  speed-up              {ref.median_ms / mine.median_ms:8.1f} x  (cpu {ref.cpu_ms / mine.cpu_ms:.1f} x)")

    big = np.concatenate([batch] * (-(-args.batch // len(batch))))[: args.batch]
    t = measure(lambda: brisque(big), calls=5, warmup=1)
    print(f"\n224x224 RGB, batches of {args.batch}")
    print(f"  iqaguard.iqa.brisque  {t.median_ms / args.batch:8.3f} ms/image  "
          f"({args.batch / t.median_ms * 1e3:,.0f} images/s, cpu {t.cpu_ms / args.batch:.3f} ms/image)")

    fashion = fashion_mnist(args.small_batch)
    small = []
    if fashion is not None:
        small.append((f"28x28 Fashion-MNIST test images (grey as RGB), batches of {len(fashion)}", fashion))
    else:
        print(f"\n(no {FASHION_TEST_IMAGES}: the 28x28 run uses photo crops instead)")
        small.append((f"28x28 photo crops, batches of {args.small_batch}", photo_crops(args.small_batch, 28)))
    small.append((f"32x32 photo crops, batches of {args.small_batch}", photo_crops(args.small_batch, 32)))
    for label, images in small:
        t = measure(lambda images=images: brisque(images), calls=5, warmup=1)
        one = images[0].transpose(1, 2, 0).copy()
        r = measure(lambda one=one: reference.score(one), calls=args.reference_calls)
        per_image_us = t.median_ms / len(images) * 1e3
        print(f"\n{label}")
        print(f"  iqaguard.iqa.brisque  {per_image_us:8.1f} us/image  ({len(images) / t.median_ms * 1e3:,.0f} "
              f"images/s, cpu {t.cpu_ms / len(images) * 1e3:.1f} us/image)")
        print(f"  brisque 0.2.0         {r.median_ms * 1e3:8.1f} us/image  (one image per call)  "
              f"speed-up {r.median_ms * 1e3 / per_image_us:.0f} x")
    report_invariance(small[0][1], brisque)


def report_invariance(images, brisque: Callable) -> None:
    """Check batch invariance on `images` and time the blur step both ways (the only place it costs)."""
    import numpy as np

    from iqaguard.iqa.features import _band_matrix, gaussian_blur

    order = np.random.default_rng(0).permutation(len(images))[:256]
    alone = np.concatenate([brisque(images[i : i + 1]) for i in order[:32]])
    mixed = brisque(images[order])[:32]
    identical = np.array_equal(alone, mixed)
    grey = images[:, 0].copy()
    n, h, w = grey.shape
    band_h, band_w = _band_matrix(h), _band_matrix(w)

    def fused() -> None:  # one GEMM per axis over the whole batch: rows are not batch-invariant
        (np.matmul(band_h, grey).reshape(n * h, w) @ band_w.T).reshape(n, h, w)

    per_image = measure(lambda: gaussian_blur(grey), calls=5, warmup=1)
    one_gemm = measure(fused, calls=5, warmup=1)
    print(f"\nbatch invariance ({h}x{w}, batches of {n})")
    print(f"  same image alone and at other batch positions: {'bit-identical' if identical else 'DIFFERENT'}")
    print(f"  blur step, per-image products (served)  {per_image.median_ms / n * 1e3:8.2f} us/image")
    print(f"  blur step, one GEMM over the batch      {one_gemm.median_ms / n * 1e3:8.2f} us/image  "
          f"(invariance costs {per_image.median_ms / one_gemm.median_ms:.2f} x on this step)")


if __name__ == "__main__":
    main()
