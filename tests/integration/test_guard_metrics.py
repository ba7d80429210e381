"""The served guard's metrics and audit trail: what clients were told is what Prometheus and the log say."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from skimage import data as photos
from support.images import encode
from tritonclient.utils import InferenceServerException

from iqaguard.contract import ENSEMBLE, MONITOR, VERDICT_ACCEPT, VERDICTS
from iqaguard.imaging import INVALID_REASONS
from iqaguard.operations.prometheus_text import SETTLE_S, family_total, scrape

pytestmark = pytest.mark.integration
SET = "fixture"  # the fixture repository's default set
# Photos the fixture detector splits between accept and adversarial (the test checks both occur).
POOL = ("astronaut", "camera", "coffee", "moon", "rocket", "horse")


def _infer(client: httpclient.InferenceServerClient, items: list[bytes], request_id: str):
    tensor = httpclient.InferInput("IMAGE", [len(items), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_).reshape(-1, 1))
    return client.infer(ENSEMBLE, [tensor], request_id=request_id)


def _photo(name: str) -> bytes:
    image = getattr(photos, name)()
    image = image.astype(np.uint8) * 255 if image.dtype == bool else image
    return encode(np.stack([image] * 3, -1) if image.ndim == 2 else image, "PNG")


def test_verdicts_invalid_inputs_and_audit_lines_match_the_answers(triton_server, session_server) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=120)
    before = scrape(triton_server.metrics_url)
    answered: dict[str, str] = {}
    for round_ in range(2):
        for name in POOL:
            request_id = f"audit-{round_}-{name}"
            answered[request_id] = _infer(client, [_photo(name)], request_id).as_numpy("VERDICT")[0, 0].decode()
    pair = _infer(client, [_photo("coffee"), _photo("astronaut")], "audit-pair").as_numpy("VERDICT")[:, 0]
    forged = 'audit-forged"\niqaguard audit: set=other request_id="x'
    _infer(client, [_photo("coffee")], forged)
    bad = {
        "empty": [b""],
        "unsupported_format": [b"%!PS-Adobe-3.0 EPSF-3.0\n"],
        "corrupt": [_photo("camera")[:400]],
        "over_budget": [_photo("camera")] * 17,
    }
    for reason, items in bad.items():
        with pytest.raises(InferenceServerException, match="invalid image"):
            _infer(client, items, f"bad-{reason}")
    time.sleep(SETTLE_S)
    after = scrape(triton_server.metrics_url)

    def delta(name: str, **labels: str) -> float:
        return family_total(after, name, set=SET, **labels) - family_total(before, name, set=SET, **labels)

    told = [*answered.values(), *(v.decode() for v in pair), answered["audit-0-coffee"]]
    assert VERDICT_ACCEPT in told and set(told) - {VERDICT_ACCEPT}, f"the pool should hold both kinds: {told}"
    for verdict in VERDICTS:
        assert delta("iqaguard_verdicts_total", verdict=verdict) == told.count(verdict), verdict
    assert delta("iqaguard_suspicion_count") == delta("iqaguard_quality_count") == len(told)
    for reason in INVALID_REASONS:
        assert delta("iqaguard_invalid_inputs_total", reason=reason) == (1 if reason in bad else 0), reason
    assert family_total(after, "iqaguard_set_live_version", set=SET) == 1

    log = session_server.log_path.read_text(errors="replace")
    audit = [line for line in log.splitlines() if "iqaguard audit:" in line]
    for request_id, verdict in answered.items():
        lines = [line for line in audit if f'request_id=\\"{request_id}\\"' in line]
        assert len(lines) == (0 if verdict == VERDICT_ACCEPT else 1), (request_id, verdict, lines)
        if lines:
            assert f"set={SET} " in lines[0] and f"verdict={verdict} " in lines[0] and "suspicion=" in lines[0]
    flagged_items = [f"item={i} " for i, v in enumerate(pair) if v.decode() != VERDICT_ACCEPT]
    pair_lines = [line for line in audit if 'request_id=\\"audit-pair\\"' in line]
    assert sorted(next(p for p in line.split("request_id")[1].split() if p.startswith("item=")) + " "
                  for line in pair_lines) == flagged_items  # fmt: skip
    assert not [line for line in audit if "set=other" in line.split("request_id")[0]], "a request id forged a line"
    assert not [line for line in audit if "bad-" in line], "refused inputs are counted, not audited"


def test_the_monitors_added_latency_is_small(triton_server) -> None:
    """The monitor step's own time per request beside the ensemble's (printed; asserted only loosely)."""
    client = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=120)
    image = _photo("astronaut")
    before = scrape(triton_server.metrics_url)
    for index in range(40):
        _infer(client, [image], f"latency-{index}")
    time.sleep(SETTLE_S)
    after = scrape(triton_server.metrics_url)

    def per_request_us(model: str, *families: str) -> float:
        count = family_total(after, "nv_inference_request_success", model=model) - family_total(
            before, "nv_inference_request_success", model=model)  # fmt: skip
        spent = sum(family_total(after, f, model=model) - family_total(before, f, model=model) for f in families)
        return spent / max(count, 1)

    monitor = per_request_us(MONITOR, "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
                             "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us")
    ensemble = per_request_us(ENSEMBLE, "nv_inference_request_duration_us")
    print(f"\nguard_monitor {monitor / 1000:.2f} ms of the ensemble's {ensemble / 1000:.2f} ms per request "
          f"({monitor / ensemble:.1%})")  # fmt: skip
    assert 0 < monitor < ensemble


@pytest.mark.parametrize("asked", [("PROBS",), ("QUALITY",), ("SUSPICION",), ("VERDICT",), ("PROBS", "VERDICT")])
def test_every_request_is_guarded_whatever_outputs_it_asks_for(triton_server, asked: tuple[str, ...]) -> None:
    """Triton runs only the steps a request's asked-for outputs need: every output comes from the monitor,
    so a PROBS-only request is still seen by the detector, the metrics and the probe memory."""
    client = httpclient.InferenceServerClient(triton_server.http_url, network_timeout=120)
    tensor = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[_photo("astronaut")]], dtype=np.object_))
    before = scrape(triton_server.metrics_url)
    outputs = [httpclient.InferRequestedOutput(name, class_count=3 if name == "PROBS" else 0) for name in asked]
    result = client.infer(ENSEMBLE, [tensor], outputs=outputs)
    assert all(result.as_numpy(name) is not None for name in asked)
    time.sleep(SETTLE_S)
    after = scrape(triton_server.metrics_url)
    assert sum(family_total(after, "iqaguard_verdicts_total", set=SET, verdict=v) -
               family_total(before, "iqaguard_verdicts_total", set=SET, verdict=v) for v in VERDICTS) == 1  # fmt: skip
