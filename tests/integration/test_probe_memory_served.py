"""The served probe memory: an image the detector accepts is answered `adversarial` when a near-identical
image answered before it got another class — and the same image sent on its own is accepted. The pairs
come from the white-box attack on the fixture members, so the detector accepts both images of a pair."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from support.images import encode

from iqaguard.contract import ENSEMBLE, VERDICT_ACCEPT, VERDICT_ADVERSARIAL
from iqaguard.iqa import brisque
from iqaguard.operations.prometheus_text import SETTLE_S, family_total, scrape
from iqaguard.operations.rollout import find_set
from iqaguard.redteam.whitebox import GuardMembers, guard_pgd

pytestmark = pytest.mark.integration
SET = "fixture"


def _evading_pairs(repository, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(clean, attacked) uint8 [32,32,3] pairs, both accepted in-process, with different teacher classes."""
    members = GuardMembers.load(repository, find_set(repository, SET), 1)
    rng = np.random.default_rng(20261203)
    # Smooth synthetic images no other test sends, so no other test's queries share their neighbourhoods.
    coarse = rng.uniform(40, 215, size=(48, 4, 4, 3))
    clean = np.rint(coarse.repeat(8, axis=1).repeat(8, axis=2)).astype(np.uint8)
    pixels = clean.transpose(0, 3, 1, 2).astype(np.float32) / 255
    with torch.no_grad():
        logits, _, verdicts = members.answer(torch.from_numpy(pixels), torch.from_numpy(brisque(pixels)))
    accepted = [i for i, verdict in enumerate(verdicts) if verdict == VERDICT_ACCEPT]
    labels = [int(logits[i].argmax()) for i in accepted]
    outcomes = guard_pgd(members, clean[accepted], labels, 16, 30, np.random.default_rng(0))
    pairs = [(clean[i], outcome.image) for i, outcome in zip(accepted, outcomes, strict=True) if outcome.evaded]
    if len(pairs) < count:
        pytest.fail(f"the white-box attack found {len(pairs)} evading pairs among {len(accepted)} accepted images")
    return pairs[:count]


def _answer(client: httpclient.InferenceServerClient, image: np.ndarray, request_id: str) -> tuple[int, str]:
    tensor = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[encode(image, "PNG")]], dtype=np.object_))
    result = client.infer(ENSEMBLE, [tensor], request_id=request_id)
    return int(result.as_numpy("PROBS")[0].argmax()), result.as_numpy("VERDICT")[0, 0].decode()


def test_a_class_change_among_near_identical_images_is_answered_adversarial(triton_server, session_server) -> None:
    (searched_clean, searched_attack), (alone_clean, alone_attack) = _evading_pairs(
        triton_server.options.repository, 2)  # fmt: skip
    client = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=120)
    before = scrape(triton_server.metrics_url)

    clean_class, clean_verdict = _answer(client, searched_clean, "probe-searched-clean")
    attack_class, attack_verdict = _answer(client, searched_attack, "probe-searched-attack")
    assert clean_verdict == VERDICT_ACCEPT and attack_class != clean_class
    assert attack_verdict == VERDICT_ADVERSARIAL, "the detector accepts it; the probe memory must not"

    alone_class, alone_verdict = _answer(client, alone_attack, "probe-alone-attack")
    assert alone_verdict == VERDICT_ACCEPT, "sent first in its neighbourhood, only the detector judges it"
    assert _answer(client, alone_attack, "probe-alone-again") == (alone_class, VERDICT_ACCEPT), "a retry is no probe"
    # And now the clean image is the newcomer: the first answer in a neighbourhood stands, whichever it was.
    assert _answer(client, alone_clean, "probe-alone-clean")[1] == VERDICT_ADVERSARIAL

    time.sleep(SETTLE_S)
    after = scrape(triton_server.metrics_url)
    flags = family_total(after, "iqaguard_probe_flags_total", set=SET) - family_total(
        before, "iqaguard_probe_flags_total", set=SET)  # fmt: skip
    assert flags == 2
    audit = [line for line in session_server.log_path.read_text(errors="replace").splitlines()
             if "iqaguard audit:" in line and "probe-" in line]  # fmt: skip
    flagged = {line.split('request_id=\\"')[1].split('\\"')[0] for line in audit if "by=probe" in line}
    assert flagged == {"probe-searched-attack", "probe-alone-clean"}
