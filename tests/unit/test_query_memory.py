"""The probe memory: an answer that disagrees with near-identical recent images is flagged; stable
scenes, retries and different images are not; a batch is judged as the same queries one by one."""

from __future__ import annotations

import numpy as np
import pytest

from iqaguard.in_triton.query_memory import SIGNATURE_SIZE, ProbeRule, QueryMemory, digest, signature


def _around(base: np.ndarray, rng: np.random.Generator, count: int, spread: float = 0.03) -> np.ndarray:
    return (base + rng.uniform(-spread, spread, size=(count, SIGNATURE_SIZE))).astype(np.float32)


def test_a_flip_among_near_identical_queries_is_flagged() -> None:
    rng = np.random.default_rng(0)
    memory = QueryMemory(ProbeRule())
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    probing = _around(base, rng, 20)
    assert not memory.observe(probing, np.arange(20), np.full(20, 3), now=0.0).any()  # same class: a stable scene
    flip = _around(base, rng, 1)
    assert memory.observe(flip, np.array([99]), np.array([5]), now=1.0).tolist() == [True]
    elsewhere = rng.random((1, SIGNATURE_SIZE)).astype(np.float32) + 2.0  # far from everything seen
    assert memory.observe(elsewhere, np.array([100]), np.array([5]), now=2.0).tolist() == [False]


def test_retries_too_few_neighbours_and_old_queries_do_not_count() -> None:
    rng = np.random.default_rng(1)
    rule = ProbeRule(neighbours=3, window_s=60.0)
    memory = QueryMemory(rule)
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    same = np.repeat(base[None], 5, axis=0)
    memory.observe(same, np.full(5, 7), np.full(5, 1), now=0.0)  # five retries of one image: one neighbour
    assert not memory.observe(_around(base, rng, 1), np.array([8]), np.array([2]), now=1.0).any()
    memory.observe(_around(base, rng, 2), np.array([9, 10]), np.array([1, 1]), now=2.0)
    assert memory.observe(_around(base, rng, 1), np.array([11]), np.array([2]), now=3.0).tolist() == [True]
    assert not memory.observe(_around(base, rng, 1), np.array([12]), np.array([2]), now=100.0).any(), "window"


def test_a_batch_is_judged_as_the_same_queries_one_by_one() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    signatures = _around(base, rng, 12)
    digests, classes = np.arange(12), np.array([4] * 6 + [6, 4, 6, 6, 4, 6])
    batched = QueryMemory(ProbeRule()).observe(signatures, digests, classes, now=0.0)
    single = QueryMemory(ProbeRule())
    one_by_one = [single.observe(signatures[i : i + 1], digests[i : i + 1], classes[i : i + 1], 0.0)[0]
                  for i in range(12)]  # fmt: skip
    assert batched.tolist() == one_by_one and batched[6] and not batched[7]


def test_capacity_bounds_the_memory() -> None:
    rng = np.random.default_rng(3)
    memory = QueryMemory(ProbeRule(capacity=4))
    base = rng.random(SIGNATURE_SIZE).astype(np.float32)
    memory.observe(_around(base, rng, 3), np.arange(3), np.zeros(3, int), now=0.0)
    memory.observe(rng.random((4, SIGNATURE_SIZE)).astype(np.float32) + 5, np.arange(10, 14), np.zeros(4, int), 1.0)
    assert not memory.observe(_around(base, rng, 1), np.array([20]), np.array([1]), now=2.0).any()


def test_signature_and_digest_of_served_pixels() -> None:
    rng = np.random.default_rng(4)
    pixels = rng.random((2, 3, 28, 28)).astype(np.float32)
    signatures = signature(pixels)
    assert signatures.shape == (2, SIGNATURE_SIZE) and signatures.dtype == np.float32
    flat = np.full((1, 3, 224, 224), 0.25, np.float32)
    assert np.allclose(signature(flat), 0.25)
    nudged = pixels.copy()
    nudged[0, :, 5, 5] += 8 / 255  # one pixel moved by 8 levels: the signature barely moves, the digest changes
    assert np.abs(signature(nudged) - signatures).max() <= 8 / 255 / 3
    assert digest(nudged)[0] != digest(pixels)[0] and digest(nudged)[1] == digest(pixels)[1]
    with pytest.raises(ValueError):
        QueryMemory(ProbeRule()).observe(signatures, np.arange(3), np.zeros(3, int), now=0.0)


def test_the_served_rule_is_the_documented_default() -> None:
    """guard_monitor's config parameters and ProbeRule's defaults (used by the red team's measurement) agree."""
    from support import CHECKED_IN_REPOSITORY

    from iqaguard.repository.check import load_config

    config = load_config(CHECKED_IN_REPOSITORY / "guard_monitor" / "config.pbtxt")
    params = {key: value.string_value for key, value in config.parameters.items()}
    rule = ProbeRule()
    assert (float(params["probe_radius"]), int(params["probe_neighbours"])) == (rule.radius, rule.neighbours)
    assert (float(params["probe_window_s"]), int(params["probe_capacity"])) == (rule.window_s, rule.capacity)
