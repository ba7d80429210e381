"""A defence against query attacks: an answer that disagrees with the answers to near-identical recent
images is not trusted.

A black-box attacker who sees PROBS, SUSPICION and VERDICT searches around one image: hundreds of
queries that differ from each other by a few 8-bit levels, until one gets another class. That query
disagrees with the answers the server just gave to its near-identical neighbours — which is itself a
sign the answer is unreliable, whoever sent it. So each answered image leaves a coarse signature (its
served pixels, grey, 16×16 block means), an exact digest and the teacher's class; an image with at
least `neighbours` distinct recent images within `radius` (L∞ on the signature) whose majority class
is not its own gets the verdict `adversarial`. A stable scene sent again and again (a fixed camera, a
retried upload) keeps its class and is never flagged; identical images do not count as neighbours.

The memory is per server process (the guard_monitor model, one instance per set) and bounded: the
newest `capacity` queries of the last `window_s` seconds. Verdicts depend on what came before: a
stateful defence by design (batch composition still does not matter: a batch is judged as the same
queries sent one by one). An attacker can spread queries over time or replicas, or move farther than
`radius`; the README's threat model says how far that gets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SIGNATURE_SIDE = 16
SIGNATURE_SIZE = SIGNATURE_SIDE * SIGNATURE_SIDE


def signature(pixels: np.ndarray) -> np.ndarray:
    """Coarse signatures [B, 256] of served pixels [B,3,H,W] in [0,1] (H, W >= 16): grey, block means 16×16."""
    grey = pixels.mean(axis=1, dtype=np.float64)
    _, height, width = grey.shape
    rows = np.linspace(0, height, SIGNATURE_SIDE + 1).astype(int)
    cols = np.linspace(0, width, SIGNATURE_SIDE + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=1), cols[:-1], axis=2)
    counts = np.outer(np.diff(rows), np.diff(cols))
    return (sums / counts).reshape(len(pixels), SIGNATURE_SIZE).astype(np.float32)


def digest(pixels: np.ndarray) -> np.ndarray:
    """An int64 digest per image of served pixels [B,3,H,W]: equal pixels, equal digest."""
    return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(item).tobytes(), digest_size=8).digest(),
                                    "little", signed=True) for item in pixels], dtype=np.int64)  # fmt: skip


def _coarse(signatures: np.ndarray) -> np.ndarray:
    """4×4 block means of 16×16 signatures [B, 256] -> [B, 16]. Their L∞ distance never exceeds the
    signatures' (a mean of differences is at most the largest), so it filters candidates safely."""
    blocks = signatures.reshape(-1, 4, 4, 4, 4).mean(axis=(2, 4))
    return blocks.reshape(len(signatures), 16)


@dataclass(frozen=True)
class ProbeRule:
    """An image is flagged when at least `neighbours` distinct images of the last `window_s` seconds lie within
    `radius` of it and most of them got another class; the newest `capacity` queries are remembered (which
    bounds the memory and the work per query). `radius` 0.07 covers an L∞ attack budget of 16/255."""

    radius: float = 0.07
    neighbours: int = 3
    window_s: float = 600.0
    capacity: int = 4096


class QueryMemory:
    """The recent queries of one model set, and which new answers disagree with their neighbours'."""

    def __init__(self, rule: ProbeRule) -> None:
        self.rule = rule
        self._signatures = np.zeros((rule.capacity, SIGNATURE_SIZE), dtype=np.float32)
        self._coarse = np.zeros((rule.capacity, 16), dtype=np.float32)
        self._digests = np.zeros(rule.capacity, dtype=np.int64)
        self._classes = np.zeros(rule.capacity, dtype=np.int64)
        self._times = np.full(rule.capacity, -np.inf)
        self._next = 0

    def observe(self, signatures: np.ndarray, digests: np.ndarray, classes: np.ndarray, now: float) -> np.ndarray:
        """Remember a batch of answered queries; return for each whether its class disagrees with its
        near-identical recent neighbours' (bool [B]). Each query is judged against the memory as it was
        before the batch plus the batch's earlier queries: the same answers as sent one by one, in order."""
        count = len(digests)
        signatures = np.asarray(signatures, dtype=np.float32).reshape(count, SIGNATURE_SIZE)
        digests, classes = np.asarray(digests).reshape(count), np.asarray(classes).reshape(count)
        radius = self.rule.radius
        coarse = _coarse(signatures)
        recent = np.flatnonzero(self._times >= now - self.rule.window_s)
        close = np.abs(coarse[:, None, :] - self._coarse[recent][None]).max(axis=2) <= radius  # [B, recent]
        flagged = np.zeros(count, dtype=bool)
        for index in range(count):
            sig, dig = signatures[index], digests[index]
            candidates = recent[close[index]]
            candidates = candidates[self._digests[candidates] != dig]
            near = candidates[np.abs(self._signatures[candidates] - sig).max(axis=1) <= radius]
            neighbours = dict(zip(self._digests[near].tolist(), self._classes[near].tolist(), strict=True))
            for earlier in range(index):
                if digests[earlier] != dig and np.abs(signatures[earlier] - sig).max() <= radius:
                    neighbours[int(digests[earlier])] = int(classes[earlier])
            if len(neighbours) >= self.rule.neighbours:
                votes = np.bincount(list(neighbours.values()))
                flagged[index] = int(np.argmax(votes)) != int(classes[index])
        for index in range(count):
            slot = self._next
            self._signatures[slot], self._coarse[slot] = signatures[index], coarse[index]
            self._digests[slot], self._classes[slot], self._times[slot] = digests[index], classes[index], now
            self._next = (slot + 1) % self.rule.capacity
        return flagged
