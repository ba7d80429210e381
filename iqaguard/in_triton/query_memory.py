"""A defence against query attacks: the first answer given in a small neighbourhood of images is the
one that stands there; a later near-identical image that gets another class is not trusted.

A query attacker searches around one image: hundreds of queries, each within its L∞ budget ε of the
original, so any two of them differ by at most 2ε. The server remembers *regions*: the signature of
the first image it answered in a neighbourhood (its served pixels, grey, 16×16 block means) and that
image's class. A query within `radius` (L∞ on the signature) of a remembered region belongs to it; one
that belongs to none founds a new region. A query whose class differs from that of the oldest region it
belongs to gets the verdict `adversarial`, and that region becomes *contested*: it is kept for
`contested_window_s` instead of `window_s`, so the attacker cannot wait a few minutes and replay the
image its search found. A region also remembers the classes the detector called adversarial in it: a
search whose first query already has another class (rejected by the detector) and then lowers its
SUSPICION until accepted keeps its class, so an accepted image with a class the detector rejected as
adversarial in the same region is flagged too.

With `radius` ≥ 2ε every query of one search falls in the region its first query founded, so the search
can only win with that first query, where the (stateless) detector alone decides. A stable scene sent
again and again keeps its class and is never flagged; retries of one image are the same image.

The memory is per server process (the guard_monitor model, one instance per set) and bounded to
`capacity` regions (a full memory forgets the least recently seen uncontested region first). Verdicts
depend on what came before: a stateful defence by design (batch composition still does not matter: a
batch is judged as the same queries sent one by one). What escapes it — replicas that do not share a
memory, searches wider than radius/2, translated or cropped images — is in the README's threat model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGNATURE_SIDE = 16
SIGNATURE_SIZE = SIGNATURE_SIDE * SIGNATURE_SIDE
_COARSE_SIZE = 16


def signature(pixels: np.ndarray) -> np.ndarray:
    """Coarse signatures [B, 256] of served pixels [B,3,H,W] in [0,1] (H, W >= 16): grey, block means 16×16."""
    grey = pixels.mean(axis=1, dtype=np.float64)
    _, height, width = grey.shape
    rows = np.linspace(0, height, SIGNATURE_SIDE + 1).astype(int)
    cols = np.linspace(0, width, SIGNATURE_SIDE + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=1), cols[:-1], axis=2)
    counts = np.outer(np.diff(rows), np.diff(cols))
    return (sums / counts).reshape(len(pixels), SIGNATURE_SIZE).astype(np.float32)


def _coarse(signatures: np.ndarray) -> np.ndarray:
    """4×4 block means of 16×16 signatures [B, 256] -> [B, 16]. Their L∞ distance never exceeds the
    signatures' (a mean of differences is at most the largest), so it filters candidates safely."""
    blocks = signatures.reshape(-1, 4, 4, 4, 4).mean(axis=(2, 4))
    return blocks.reshape(len(signatures), _COARSE_SIZE)


def _coarse_distances(queries: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """L∞ distances [B, R] between coarse signatures [B, 16] and [R, 16], one dimension at a time (no [B,R,16])."""
    distances = np.zeros((len(queries), len(regions)), dtype=np.float32)
    for dim in range(queries.shape[1]):
        np.maximum(distances, np.abs(queries[:, dim, None] - regions[None, :, dim]), out=distances)
    return distances


@dataclass(frozen=True)
class ProbeRule:
    """Regions of `radius` (L∞ on the signature) around the first image answered there. `radius` 0.13 holds a
    whole L∞ search of ε ≤ 16/255 in one region (2ε ≤ radius). A region nobody queried for `window_s` is
    forgotten, a contested one after `contested_window_s`; at most `capacity` regions are kept."""

    radius: float = 0.13
    window_s: float = 600.0
    contested_window_s: float = 86_400.0
    capacity: int = 8192


class QueryMemory:
    """The regions one model set has answered recently, and which new answers contradict them."""

    def __init__(self, rule: ProbeRule) -> None:
        self.rule = rule
        self.clear()

    def clear(self) -> None:
        """Forget every region (the live version changed: its answers are not the old version's)."""
        capacity = self.rule.capacity
        self._signatures = np.zeros((capacity, SIGNATURE_SIZE), dtype=np.float32)
        self._coarse = np.zeros((capacity, _COARSE_SIZE), dtype=np.float32)
        self._classes = np.zeros(capacity, dtype=np.int64)
        self._founded = np.zeros(capacity)
        self._seen = np.full(capacity, -np.inf)
        self._contested = np.zeros(capacity, dtype=bool)
        self._rejected: list[set[int]] = [set() for _ in range(capacity)]  # classes the detector called adversarial
        self._order = 0  # founding order: ties in time (one batch) keep the order of arrival

    @property
    def regions(self) -> int:
        """Regions held now (live or not yet reused)."""
        return int(np.isfinite(self._seen).sum())

    def observe(
        self, signatures: np.ndarray, classes: np.ndarray, now: float, adversarial: np.ndarray | None = None
    ) -> np.ndarray:
        """Answer a batch of queries in order, with the detector's verdict on each (`adversarial`: bool [B],
        None for none); return for each whether its answer contradicts the region it falls in (bool [B]).
        A batch gives the same answers as its queries sent one by one."""
        count = len(classes)
        signatures = np.asarray(signatures, dtype=np.float32).reshape(count, SIGNATURE_SIZE)
        classes = np.asarray(classes).reshape(count)
        adversarial = np.zeros(count, bool) if adversarial is None else np.asarray(adversarial, bool).reshape(count)
        coarse = _coarse(signatures)
        flagged = np.zeros(count, dtype=bool)
        radius = self.rule.radius
        live = np.flatnonzero(self._live(now))  # a batch only makes regions more alive, except evicted ones
        close = _coarse_distances(coarse, self._coarse[live]) <= radius  # [B, live], one pass for the batch
        evicted: set[int] = set()
        founded: dict[int, None] = {}  # regions this batch founded, in order (their slots may be evicted ones)
        for index in range(count):
            answer = int(classes[index])
            candidates = live[close[index]]
            if evicted:
                candidates = candidates[~np.isin(candidates, list(evicted))]
            if founded:
                candidates = np.concatenate([candidates, np.fromiter(founded, dtype=np.int64)])
            near = candidates[np.abs(self._signatures[candidates] - signatures[index]).max(axis=1) <= radius]
            if not len(near):
                region = self._found(signatures[index], coarse[index], answer, now)
                evicted.add(region)
                founded[region] = None
            else:
                region = int(near[np.argmin(self._founded[near])])
                self._seen[near] = now
                if answer != int(self._classes[region]) or answer in self._rejected[region]:
                    flagged[index] = True
                    self._contested[region] = True
            if adversarial[index]:
                self._rejected[region].add(answer)
        return flagged

    def _live(self, now: float) -> np.ndarray:
        kept_for = np.where(self._contested, self.rule.contested_window_s, self.rule.window_s)
        return now - self._seen <= kept_for

    def _found(self, sig: np.ndarray, coarse: np.ndarray, answer: int, now: float) -> int:
        live = self._live(now)
        if not live.all():
            slot = int(np.argmin(live))  # an empty or expired slot
        else:  # full: the least recently seen uncontested region, else the least recently seen one
            slot = int(np.argmin(np.where(self._contested, np.inf, self._seen)))
            if self._contested[slot]:
                slot = int(np.argmin(self._seen))
        self._signatures[slot], self._coarse[slot], self._classes[slot] = sig, coarse, answer
        self._seen[slot], self._contested[slot] = now, False
        self._founded[slot], self._rejected[slot] = self._order, set()
        self._order += 1
        return slot
