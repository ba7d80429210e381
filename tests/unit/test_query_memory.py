"""The probe memory: the first answer in a neighbourhood stands; a later near-identical image with another
class is flagged, also after a flood of queries with the new class; stable scenes, retries and different
images are not; contested regions outlive the window; a batch is judged as the same queries one by one."""

from __future__ import annotations

import numpy as np
import pytest

from iqaguard.in_triton.query_memory import SIGNATURE_SIZE, ProbeRule, QueryMemory, signature


def _around(base: np.ndarray, rng: np.random.Generator, count: int, spread: float = 0.06) -> np.ndarray:
    """Signatures of a search of L∞ budget `spread` around `base` (any two within 2·spread)."""
    return (base + rng.uniform(-spread, spread, size=(count, SIGNATURE_SIZE))).astype(np.float32)


def test_a_flip_in_a_searched_neighbourhood_is_flagged_even_after_a_flood_of_the_new_class() -> None:
    rng = np.random.default_rng(0)
    memory = QueryMemory(ProbeRule())
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    assert not memory.observe(_around(base, rng, 20), np.full(20, 3), now=0.0).any()  # a stable scene
    flood = memory.observe(_around(base, rng, 200), np.full(200, 5), now=1.0)
    assert flood.all(), "the majority of later answers does not move the first answer"
    elsewhere = rng.random((1, SIGNATURE_SIZE)).astype(np.float32) + 2.0  # far from everything seen
    assert memory.observe(elsewhere, np.array([5]), now=2.0).tolist() == [False]
    assert memory.regions == 2


def test_the_second_query_of_a_search_is_already_judged() -> None:
    rng = np.random.default_rng(1)
    memory = QueryMemory(ProbeRule())
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    assert memory.observe(_around(base, rng, 2), np.array([1, 2]), now=0.0).tolist() == [False, True]


def test_retries_of_one_image_and_distinct_images_are_not_flagged() -> None:
    rng = np.random.default_rng(2)
    memory = QueryMemory(ProbeRule())
    images = rng.random((50, SIGNATURE_SIZE)).astype(np.float32)
    classes = rng.integers(0, 10, size=50)
    assert not memory.observe(np.repeat(images, 3, axis=0), np.repeat(classes, 3), now=0.0).any()


def test_quiet_regions_are_forgotten_but_contested_ones_outlive_the_window() -> None:
    rng = np.random.default_rng(3)
    rule = ProbeRule(window_s=60.0, contested_window_s=3600.0)
    memory = QueryMemory(rule)
    quiet, probed = rng.random((2, SIGNATURE_SIZE)).astype(np.float32) + np.array([[0.0], [3.0]], np.float32)
    memory.observe(np.stack([quiet, probed]), np.array([1, 1]), now=0.0)
    assert memory.observe(_around(probed, rng, 1), np.array([2]), now=10.0).tolist() == [True]  # contested now
    replay = np.stack([_around(quiet, rng, 1)[0], _around(probed, rng, 1)[0]])
    assert memory.observe(replay, np.array([2, 2]), now=500.0).tolist() == [False, True], "replay after the window"
    assert memory.observe(_around(probed, rng, 1), np.array([2]), now=5000.0).tolist() == [False]


def test_an_accepted_image_with_a_class_the_detector_rejected_nearby_is_flagged() -> None:
    """A search whose first query already has another class, rejected by the detector, then lowers
    SUSPICION until accepted: same class as the region's first answer, but that answer was rejected."""
    rng = np.random.default_rng(9)
    memory = QueryMemory(ProbeRule())
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    first = memory.observe(_around(base, rng, 3), np.array([4, 4, 4]), 0.0, adversarial=np.array([True, True, False]))
    assert first.tolist() == [False, True, True]
    other = rng.random((1, SIGNATURE_SIZE)).astype(np.float32) + 3.0
    assert not memory.observe(np.concatenate([other, other]), np.array([4, 4]), 1.0,
                              adversarial=np.array([False, False])).any()  # fmt: skip


def test_a_search_wider_than_the_radius_founds_new_regions() -> None:
    """What the radius buys and no more: two queries farther apart than it are judged independently."""
    rng = np.random.default_rng(4)
    memory = QueryMemory(ProbeRule(radius=0.13))
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    moved = base + np.float32(0.2)
    assert memory.observe(np.stack([base, moved]), np.array([1, 2]), now=0.0).tolist() == [False, False]


@pytest.mark.parametrize("capacity", [8192, 2])  # 2: regions founded in the batch evict each other
def test_a_batch_is_judged_as_the_same_queries_one_by_one(capacity: int) -> None:
    rng = np.random.default_rng(5)
    bases = rng.random((3, SIGNATURE_SIZE)).astype(np.float32) * 0.2 + np.array([[0.0], [1.0], [2.0]], np.float32)
    signatures = np.concatenate([_around(base, rng, 4) for base in bases])[rng.permutation(12)]
    classes, adversarial = rng.integers(0, 3, size=12), rng.random(12) < 0.3
    batched = QueryMemory(ProbeRule(capacity=capacity)).observe(signatures, classes, 0.0, adversarial=adversarial)
    single = QueryMemory(ProbeRule(capacity=capacity))
    one_by_one = [single.observe(signatures[i : i + 1], classes[i : i + 1], 0.0, adversarial=adversarial[i : i + 1])[0]
                  for i in range(12)]  # fmt: skip
    assert batched.tolist() == one_by_one and batched.any() and not batched.all()


def test_a_full_memory_forgets_the_least_recently_seen_uncontested_region() -> None:
    rng = np.random.default_rng(6)
    memory = QueryMemory(ProbeRule(capacity=3))
    regions = rng.random((5, SIGNATURE_SIZE)).astype(np.float32) * 0.1 + np.arange(5, dtype=np.float32)[:, None]
    memory.observe(regions[:3], np.zeros(3, int), now=0.0)
    memory.observe(_around(regions[0], rng, 1, 0.01), np.array([1]), now=1.0)  # region 0 contested
    memory.observe(regions[1:2], np.zeros(1, int), now=2.0)  # region 1 seen again
    memory.observe(regions[3:4], np.zeros(1, int), now=3.0)  # full: region 2 (stalest uncontested) goes
    assert memory.regions == 3
    flags = memory.observe(np.stack([regions[0], regions[1], regions[2]]), np.array([1, 1, 1]), now=4.0)
    assert flags.tolist() == [True, True, False], "regions 0 and 1 kept, region 2 forgotten (founded anew)"


def test_clearing_forgets_the_old_versions_answers() -> None:
    rng = np.random.default_rng(7)
    memory = QueryMemory(ProbeRule())
    base = rng.random((1, SIGNATURE_SIZE)).astype(np.float32)
    memory.observe(base, np.array([1]), now=0.0)
    memory.clear()
    assert not memory.observe(base, np.array([2]), now=1.0).any() and memory.regions == 1


def test_signature_of_served_pixels() -> None:
    rng = np.random.default_rng(8)
    pixels = rng.random((2, 3, 28, 28)).astype(np.float32)
    signatures = signature(pixels)
    assert signatures.shape == (2, SIGNATURE_SIZE) and signatures.dtype == np.float32
    flat = np.full((1, 3, 224, 224), 0.25, np.float32)
    assert np.allclose(signature(flat), 0.25)
    nudged = pixels.copy()
    nudged[0] += rng.choice([-16 / 255, 16 / 255], size=(3, 28, 28)).astype(np.float32)  # an L∞ 16/255 search step
    assert np.abs(signature(nudged) - signatures).max() <= 16 / 255 + 1e-6  # tolerance: float32 block means
    with pytest.raises(ValueError):
        QueryMemory(ProbeRule()).observe(signatures, np.zeros(3, int), now=0.0)


def test_the_radius_holds_a_search_of_16_levels() -> None:
    assert ProbeRule().radius >= 2 * 16 / 255


def test_the_served_rule_is_the_documented_default() -> None:
    """guard_monitor's config parameters and ProbeRule's defaults (used by the red team's measurement) agree."""
    from support import CHECKED_IN_REPOSITORY

    from iqaguard.repository.check import load_config

    config = load_config(CHECKED_IN_REPOSITORY / "guard_monitor" / "config.pbtxt")
    params = {key: value.string_value for key, value in config.parameters.items()}
    rule = ProbeRule()
    assert params["probe_memory"] == "true"
    assert (float(params["probe_radius"]), float(params["probe_window_s"])) == (rule.radius, rule.window_s)
    assert (float(params["probe_contested_window_s"]), int(params["probe_capacity"])) == (
        rule.contested_window_s, rule.capacity)  # fmt: skip
