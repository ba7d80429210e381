"""A black-box attacker who knows the guard: a Square-attack-style random search (Andriushchenko et al.,
2020) against everything a client sees — PROBS, SUSPICION and VERDICT — never the weights.

Each image gets an L∞ budget `eps_levels` (in 8-bit levels, since the served image is 8-bit) and a
query budget. The attacker starts from vertical stripes of ±eps, then repeatedly changes one random
square window to a new ±eps pattern and keeps the change when the loss drops. The loss joins the two
goals the attacker has: change the teacher's answer (margin of the original class over the best other,
in log-probability) and stay unflagged (SUSPICION, weighted). An image counts as an *evasion* as soon
as one query returns another class than the clean image's and the verdict `accept`; the query count at
that moment is kept, so one run answers every smaller budget too.

The oracle is any callable taking uint8 images [N,H,W,3] and returning one Answer each; the served
ensemble over gRPC is iqaguard.redteam.oracle.ServedOracle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from iqaguard.contract import VERDICT_ACCEPT

SUSPICION_WEIGHT = 4.0  # log-probability units per unit of SUSPICION: staying unflagged matters as much as flipping
_P_SCHEDULE = ((10, 2), (50, 4), (200, 8), (500, 16), (1000, 32), (2000, 64), (4000, 128), (6000, 256), (8000, 512))


@dataclass(frozen=True)
class Answer:
    """What a client sees for one image."""

    probs: np.ndarray
    suspicion: float
    verdict: str


Oracle = Callable[[np.ndarray], Sequence[Answer]]


@dataclass
class Outcome:
    """One attacked image: whether and when it evaded, and the best loss reached."""

    evaded: bool
    queries: int  # queries spent (at the evasion when evaded)
    loss: float


def attack_loss(answer: Answer, label: int) -> tuple[float, bool]:
    """(loss to minimise, whether this answer is an evasion) for an image whose clean answer was `label`."""
    log_probs = np.log(np.clip(answer.probs.astype(np.float64), 1e-12, None))
    others = np.delete(log_probs, label)
    margin = float(log_probs[label] - others.max())
    evaded = margin < 0 and answer.verdict == VERDICT_ACCEPT
    return max(margin, 0.0) + SUSPICION_WEIGHT * float(answer.suspicion), evaded


def square_fraction(step: int, budget: int, p_init: float) -> float:
    """The share of the image a square covers at `step`: halved at fixed points of a 10,000-query schedule
    rescaled to `budget`, as the Square attack does."""
    scaled = step * 10_000 / max(budget, 1)
    divisor = 1
    for threshold, value in _P_SCHEDULE:
        if scaled > threshold:
            divisor = value
    return p_init / divisor


def square_attack(
    oracle: Oracle,
    images: np.ndarray,
    labels: Sequence[int],
    eps_levels: int,
    budget: int,
    rng: np.random.Generator,
    p_init: float = 0.1,
) -> list[Outcome]:
    """Attack every image of `images` (uint8 [N,H,W,3]) at once, one query per live image per round."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    count, height, width, _ = images.shape
    base = images.astype(np.int16)
    stripes = rng.choice([-eps_levels, eps_levels], size=(count, 1, width, 3)).astype(np.int16)
    delta = np.broadcast_to(stripes, base.shape).copy()
    current = _clip(base, delta)
    outcomes = [Outcome(False, 1, np.inf) for _ in range(count)]
    for index, answer in enumerate(oracle(current)):
        outcomes[index].loss, outcomes[index].evaded = attack_loss(answer, labels[index])
    for step in range(1, budget):
        live = [i for i, outcome in enumerate(outcomes) if not outcome.evaded]
        if not live:
            break
        side = max(1, min(height, width, round(np.sqrt(square_fraction(step, budget, p_init) * height * width))))
        candidates = delta[live].copy()
        signs = (-eps_levels, eps_levels)
        for row in range(len(live)):
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            candidates[row, top : top + side, left : left + side] = rng.choice(signs, size=(1, 1, 3))
        answers = oracle(_clip(base[live], candidates))
        for row, (index, answer) in enumerate(zip(live, answers, strict=True)):
            loss, evaded = attack_loss(answer, labels[index])
            outcomes[index].queries = step + 1
            if evaded or loss < outcomes[index].loss:
                delta[index], outcomes[index].loss, outcomes[index].evaded = candidates[row], loss, evaded
    return outcomes


def _clip(base: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return np.clip(base + delta, 0, 255).astype(np.uint8)


def evasion_rates(outcomes: Sequence[Outcome], budgets: Sequence[int]) -> dict[int, float]:
    """Share of attacked images that evaded within each query budget."""
    if not outcomes:
        return {budget: float("nan") for budget in budgets}
    return {b: sum(o.evaded and o.queries <= b for o in outcomes) / len(outcomes) for b in budgets}
