"""The black-box red-team attack against in-process oracles: it stays in budget, it finds evasions where
there are some, and a guard that sees every change stops it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqaguard.redteam.run import SECTION_END, SECTION_START, section, write_section
from iqaguard.redteam.square import Answer, attack_loss, evasion_rates, square_attack, square_fraction

SIZE = 12


class LinearOracle:
    """A fixed linear classifier over pixels; `guard` turns the answer into a verdict; checks every query."""

    def __init__(self, base: np.ndarray, eps: int, guard=None) -> None:
        rng = np.random.default_rng(1)
        self.weights = rng.normal(size=(SIZE * SIZE * 3, 3)) / 40
        self.base, self.eps, self.guard = base.astype(np.int16), eps, guard
        self.calls: list[int] = []

    def answers_for(self, images: np.ndarray) -> list[Answer]:
        logits = (images.reshape(len(images), -1) / 255.0) @ self.weights
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return [Answer(p, 0.0, "accept") for p in probs]

    def __call__(self, images: np.ndarray) -> list[Answer]:
        self.calls.append(len(images))
        distance = np.abs(images.astype(np.int16)[:, None] - self.base[None]).reshape(len(images), len(self.base), -1)
        assert (distance.max(-1).min(1) <= self.eps).all(), "a query left the L∞ ball of every base image"
        answers = self.answers_for(images)
        if self.guard is None:
            return answers
        return [self.guard(image, answer) for image, answer in zip(images, answers, strict=True)]


def _images(count: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(60, 196, size=(count, SIZE, SIZE, 3), dtype=np.uint8)


def test_the_attack_finds_evasions_within_its_budgets() -> None:
    images = _images()
    oracle = LinearOracle(images, eps=24)
    labels = [int(np.argmax(a.probs)) for a in oracle.answers_for(images)]
    outcomes = square_attack(oracle, images, labels, 24, 300, np.random.default_rng(0))
    assert sum(oracle.calls) <= len(images) * 300
    assert all(1 <= o.queries <= 300 for o in outcomes)
    rates = evasion_rates(outcomes, [10, 100, 300])
    assert rates[10] <= rates[100] <= rates[300] and rates[300] >= 0.5, rates


def test_a_guard_that_sees_every_change_stops_it() -> None:
    images = _images(4)
    originals = {im.tobytes() for im in images}

    def guard(image: np.ndarray, answer: Answer) -> Answer:
        changed = image.tobytes() not in originals
        return Answer(answer.probs, 1.0 if changed else 0.0, "adversarial" if changed else "accept")

    oracle = LinearOracle(images, eps=24, guard=guard)
    labels = [int(np.argmax(a.probs)) for a in oracle.answers_for(images)]
    outcomes = square_attack(oracle, images, labels, 24, 50, np.random.default_rng(0))
    assert not any(o.evaded for o in outcomes) and all(o.queries == 50 for o in outcomes)
    assert evasion_rates(outcomes, [50]) == {50: 0.0}


def test_loss_and_schedule() -> None:
    flipped = Answer(np.array([0.2, 0.7, 0.1]), 0.1, "accept")
    loss, evaded = attack_loss(flipped, 0)
    assert evaded and loss == pytest.approx(4.0 * 0.1)
    flagged = Answer(np.array([0.2, 0.7, 0.1]), 0.9, "adversarial")
    assert attack_loss(flagged, 0)[1] is False
    same = attack_loss(Answer(np.array([0.7, 0.2, 0.1]), 0.0, "accept"), 0)
    assert not same[1] and same[0] == pytest.approx(np.log(0.7 / 0.2))
    fractions = [square_fraction(step, 1000, 0.1) for step in (1, 10, 100, 999)]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] == 0.1
    with pytest.raises(ValueError, match="uint8"):
        square_attack(lambda x: [], np.zeros((1, 4, 4, 3), np.float32), [0], 2, 10, np.random.default_rng(0))


def test_report_section_is_replaced_not_repeated(tmp_path: Path) -> None:
    results = {"ensemble": "robust_classifier_fashion", "attacker": "black-box", "attacked": 5, "candidates": 9,
               "budgets": [100, 400], "black_box": {"8/255": {"evasion": {"100": 0.2, "400": 0.4},
                                                          "median_queries_to_evade": 120.0}}}
    report = tmp_path / "report.md"
    report.write_text("# Build report\n\ntext\n")
    write_section(report, section(results))
    results["black_box"]["8/255"]["evasion"]["400"] = 0.6
    write_section(report, section(results))
    text = report.read_text()
    assert text.startswith("# Build report") and text.count(SECTION_START) == 1 and text.count(SECTION_END) == 1
    assert "| 8/255 | 20.0% | 60.0% | 120 | — |" in text


def test_white_box_pgd_stays_in_budget_and_its_evasions_are_real() -> None:
    import torch
    from support.fixture_models import fixture_modules

    from iqaguard.iqa import brisque
    from iqaguard.redteam.whitebox import GuardMembers, guard_pgd

    modules = fixture_modules(seed=0)
    members = GuardMembers(modules["teacher"], modules["student"], modules["detector"])
    images = np.random.default_rng(0).integers(40, 216, size=(6, 32, 32, 3), dtype=np.uint8)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.no_grad():
        logits, _, _ = members.answer(pixels, torch.from_numpy(brisque(pixels.numpy())))
    labels = [int(i) for i in logits.argmax(1)]
    outcomes = guard_pgd(members, images, labels, 16, 10, np.random.default_rng(0))
    assert len(outcomes) == 6
    for outcome, base, label in zip(outcomes, images, labels, strict=True):
        assert np.abs(outcome.image.astype(int) - base.astype(int)).max() <= 16
        assert 0 <= outcome.steps <= 10
        adversarial = torch.from_numpy(outcome.image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
        with torch.no_grad():
            logits, _, verdicts = members.answer(adversarial, torch.from_numpy(brisque(adversarial.numpy())))
        assert outcome.evaded == (int(logits.argmax()) != label and verdicts[0] == "accept")


def test_held_out_images_follow_the_builds_recorded_split_options(tmp_path: Path) -> None:
    """A folder set's split depends on the build's calibration options; the red team reads them from the
    manifest (a `make redteam PROFILE=natural` once crashed for want of the resolved --frr-confidence)."""
    from PIL import Image

    from iqaguard.redteam.run import held_out_images

    rng = np.random.default_rng(0)
    for index in range(130):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"photo_{index:03d}.png")
    default, labels = held_out_images("natural", tmp_path, {})  # nothing recorded: the profile's own confidence
    assert default.shape == (26, 224, 224, 3) and default.dtype == np.uint8 and labels is None
    recorded = {"size": 32, "eval_clean": 20, "frr_confidence": 0.9, "seed": 3}
    images, _ = held_out_images("custom", tmp_path, recorded)
    assert images.shape == (20, 32, 32, 3)
    again, _ = held_out_images("custom", tmp_path, recorded)
    other, _ = held_out_images("custom", tmp_path, {**recorded, "seed": 4})
    assert np.array_equal(images, again) and not np.array_equal(images, other)
