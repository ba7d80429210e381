"""Triton Python-backend glue for guard_monitor: metrics and audit lines (iqaguard.in_triton.guard_metrics),
and the probe memory (iqaguard.in_triton.query_memory).

The detector's VERDICT comes in as VERDICT_IN and goes out as VERDICT, unchanged unless the image gets
another class than the first near-identical image answered before it (then `adversarial`). This step is
on every request's path: a monitor that stops answering is seen by the server's readiness probe.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from iqaguard.contract import VERDICT_ACCEPT, VERDICT_ADVERSARIAL
from iqaguard.in_triton.busy import busy
from iqaguard.in_triton.guard_metrics import VerdictMetrics, audit_line, live_build
from iqaguard.in_triton.query_memory import ProbeRule, QueryMemory
from iqaguard.repository.sets import set_label

LIVE_CHECK_S = 1.0  # how often the live version is looked up again (a rollout does not reload this model)


class TritonPythonModel:
    """Record each answered image's verdict, SUSPICION and QUALITY; log the flagged ones."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.audit = params.get("audit_log", "true").lower() == "true"
        self.repository = Path(args["model_repository"]).parent
        self.set_name = set_label(args["model_repository"], args["model_name"])
        self.metrics = VerdictMetrics(pb_utils, self.set_name)
        default = ProbeRule()
        rule = ProbeRule(
            radius=float(params.get("probe_radius", default.radius)),
            window_s=float(params.get("probe_window_s", default.window_s)),
            contested_window_s=float(params.get("probe_contested_window_s", default.contested_window_s)),
            capacity=int(params.get("probe_capacity", default.capacity)),
        )
        self.memory = QueryMemory(rule) if params.get("probe_memory", "true").lower() == "true" else None
        self._live_version: int | None = None
        self.logger = pb_utils.Logger
        self._live_checked = 0.0
        self._live_stamp: float | None = None
        self._refresh_live()

    def _refresh_live(self) -> None:
        now = time.monotonic()
        if now - self._live_checked < LIVE_CHECK_S:
            return
        self._live_checked = now
        state_files = list(self.repository.glob("robust_classifier*/live.json"))
        stamp = max((os.stat(path).st_mtime for path in state_files), default=0.0)
        if stamp == self._live_stamp:
            return
        self._live_stamp = stamp
        live = live_build(self.repository, self.set_name)
        if live is not None:
            self.metrics.set_live(*live)
            if self.memory is not None and live[0] != self._live_version:
                self.memory.clear()  # the old version's answers say nothing about the new one's
            self._live_version = live[0]

    def execute(self, requests: list) -> list:
        with busy():
            self._refresh_live()
            return [self._answer(request) for request in requests]

    def _answer(self, request) -> "pb_utils.InferenceResponse":
        verdict = pb_utils.get_input_tensor_by_name(request, "VERDICT_IN").as_numpy()
        suspicion = pb_utils.get_input_tensor_by_name(request, "SUSPICION").as_numpy().reshape(-1)
        quality = pb_utils.get_input_tensor_by_name(request, "QUALITY").as_numpy().reshape(-1)
        names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in verdict.reshape(-1)]
        probes = [False] * len(names)
        if self.memory is not None:
            signatures = pb_utils.get_input_tensor_by_name(request, "SIGNATURE").as_numpy()
            classes = pb_utils.get_input_tensor_by_name(request, "TEACHER_LOGITS").as_numpy().argmax(axis=1)
            detector_flags = np.array([name == VERDICT_ADVERSARIAL for name in names])
            flagged = self.memory.observe(signatures, classes, time.monotonic(), adversarial=detector_flags)
            # Only an accepted image changes verdict: a rejected one stays rejected for the detector's reason.
            probes = [bool(flag) and name == VERDICT_ACCEPT for name, flag in zip(names, flagged, strict=True)]
            names = [VERDICT_ADVERSARIAL if probe else name for name, probe in zip(names, probes, strict=True)]
        self.metrics.record(names, suspicion, quality, probes)
        if self.audit:
            for item, name in enumerate(names):
                if name != VERDICT_ACCEPT:
                    self.logger.log_info(audit_line(self.set_name, request.request_id(), item, name,
                                                    float(suspicion[item]), float(quality[item]),
                                                    "probe" if probes[item] else "detector"))  # fmt: skip
        answer = np.array([name.encode() for name in names], dtype=np.object_).reshape(verdict.shape)
        probs = pb_utils.get_input_tensor_by_name(request, "PROBS_IN").as_numpy()
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("PROBS", probs),
            pb_utils.Tensor("QUALITY_OUT", quality.reshape(-1, 1)),
            pb_utils.Tensor("SUSPICION_OUT", suspicion.reshape(-1, 1)),
            pb_utils.Tensor("VERDICT", answer),
        ])  # fmt: skip
