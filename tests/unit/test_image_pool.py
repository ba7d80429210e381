"""The load tests' image pool: synthetic, from a folder, or the build's held-out samples."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqaguard.bench.image_pool import (
    KINDS,
    build_samples,
    image_pool,
    kind_weights,
    load_pool,
    synthetic_pool,
    write_pool,
)
from iqaguard.imaging import decode_image


def test_synthetic_pool_has_every_kind_and_round_trips_through_a_folder(tmp_path: Path) -> None:
    pool = synthetic_pool(seed=1)
    assert "synthetic" in pool.origin
    for kind in KINDS:
        assert pool.images[kind] and all(image.kind == kind for image in pool.images[kind])
        for image in pool.images[kind]:
            decode_image(image.data)  # every sample is a valid image the server can decode
    adversarial = Image.open(io.BytesIO(pool.images["adversarial"][0].data))
    assert adversarial.size == (224, 224) and adversarial.format == "PNG"
    write_pool(pool, tmp_path)
    loaded = image_pool(tmp_path)
    assert {kind: len(loaded.images[kind]) for kind in KINDS} == {kind: len(pool.images[kind]) for kind in KINDS}
    assert sorted(item.data for item in loaded.images["clean"]) == sorted(item.data for item in pool.images["clean"])


def test_pool_picks_kinds_by_weight_and_refuses_an_empty_kind(tmp_path: Path) -> None:
    pool = synthetic_pool()
    rng = random.Random(0)
    assert {pool.pick((0, 0, 1), rng).kind for _ in range(50)} == {"adversarial"}
    picks = [pool.pick((3, 1, 0), rng).kind for _ in range(2000)]
    assert picks.count("clean") / len(picks) == pytest.approx(0.75, abs=0.05)
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "one.jpg").write_bytes(pool.images["clean"][0].data)
    with pytest.raises(ValueError, match="no distorted images"):
        load_pool(tmp_path)
    assert kind_weights("6,3,1") == (6.0, 3.0, 1.0)
    for bad in ("1,2", "0,0,0", "1,-1,1"):
        with pytest.raises(ValueError):
            kind_weights(bad)


def test_default_pool_is_the_builds_samples_named_by_the_teacher_manifest(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    old, new = repository / "teacher" / "2", repository / "teacher" / "3"
    for version in (old, new):
        version.mkdir(parents=True)
        (version / "model.pt").write_bytes(b"not read")
    assert "a teacher not made by the build" in build_samples(repository)[1]
    (new / "manifest.json").write_text(json.dumps({"profile": "fashion"}))  # built before samples existed
    assert "names no sample folder" in build_samples(repository)[1]
    assert "no built teacher" in build_samples(tmp_path / "nowhere")[1]
    samples = tmp_path / "reports" / "fashion" / "samples"
    for kind in KINDS:
        (samples / kind).mkdir(parents=True)
        for index in range(2):
            image = Image.fromarray(np.full((28, 28, 3), 40 * index + len(kind), np.uint8))
            image.save(samples / kind / f"{kind}_{index:04d}.png")
    (old / "manifest.json").write_text(json.dumps({"samples": {"path": str(tmp_path / "elsewhere")}}))
    (new / "manifest.json").write_text(json.dumps({"samples": {"path": str(samples), "counts": {}}}))
    pool = image_pool(repository=repository)  # the latest version's manifest decides
    assert pool.origin == f"build held-out samples of teacher version 3: {samples}"
    assert {kind: [image.name for image in pool.images[kind]] for kind in KINDS} == {
        kind: [f"{kind}/{kind}_0000.png", f"{kind}/{kind}_0001.png"] for kind in KINDS
    }
    assert "synthetic" not in pool.describe()
    assert image_pool(tmp_path / "reports" / "fashion" / "samples", repository=tmp_path).origin.startswith("folder ")
    for path in (samples / "adversarial").iterdir():
        path.unlink()
    assert build_samples(repository) == (None, f"build samples {samples} lack adversarial images")
    fallback = image_pool(repository=repository)
    assert fallback.origin.startswith("synthetic pool") and "lack adversarial images" in fallback.origin
