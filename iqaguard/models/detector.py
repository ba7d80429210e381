"""The detector: IQA + teacher/student disagreement -> suspicion and a verdict, all in TorchScript.

A `Detector` computes the knowledge-distillation signals from the logits, standardises the features,
runs a small MLP with two heads (suspicion: "the teacher's answer is unreliable"; reason:
adversarial vs low quality) and turns them into verdicts with the calibrated threshold it carries.
The exported detector is a `DetectorEnsemble` of two of them, one on every feature and one on the KD
signals alone, whose suspicion logits are averaged: a single MLP fitted on the seen perturbations
leans on IQA, which minimal attacks on photos do not disturb (see DetectorEnsemble).
The build fits them through the very same `features` method that serving runs.
"""


import torch
from torch import nn

from iqaguard.contract import IQA_DIM

KD_FEATURE_NAMES = (
    "kl_teacher_student",
    "kl_student_teacher",
    "l1_probs",
    "top1_agree",
    "teacher_max_prob",
    "student_max_prob",
    "student_prob_of_teacher_top1",
    "teacher_entropy",
    "student_entropy",
    "teacher_margin",
    "teacher_max_logit",
    "student_max_logit",
)
KD_DIM = len(KD_FEATURE_NAMES)
FEATURE_DIM = IQA_DIM + KD_DIM
Z_CLAMP = 10.0  # standardised features are clipped: out-of-range inputs cannot blow up the MLP


def group_mask(iqa: bool, kd: bool) -> torch.Tensor:
    """Mask [FEATURE_DIM] (1 = used) keeping the IQA features, the KD signals, or both."""
    index = torch.arange(FEATURE_DIM)
    return (((index < IQA_DIM) & iqa) | ((index >= IQA_DIM) & kd)).float()


def verdicts_of(suspicion: torch.Tensor, adversarial: torch.Tensor, threshold: float) -> list[str]:
    """Per row: "accept" below `threshold`, else "adversarial" or "low_quality" by P(adversarial) ≥ 0.5."""
    flagged: list[float] = suspicion.detach()[:, 0].tolist()
    reasons: list[float] = adversarial.detach()[:, 0].tolist()
    verdicts: list[str] = []
    for index in range(len(flagged)):
        if flagged[index] < threshold:
            verdicts.append("accept")
        elif reasons[index] >= 0.5:
            verdicts.append("adversarial")
        else:
            verdicts.append("low_quality")
    return verdicts


def kd_signals(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Disagreement and confidence signals [N, KD_DIM] from teacher and student logits [N, C]."""
    t_log = torch.log_softmax(teacher_logits, dim=1)
    s_log = torch.log_softmax(student_logits, dim=1)
    t_prob = t_log.exp()
    s_prob = s_log.exp()
    top = teacher_logits.argmax(dim=1, keepdim=True)
    t_sorted = torch.topk(teacher_logits, 2, dim=1).values if teacher_logits.shape[1] > 1 else teacher_logits
    margin = t_sorted[:, :1] - t_sorted[:, -1:]
    columns = [
        (t_prob * (t_log - s_log)).sum(dim=1, keepdim=True),
        (s_prob * (s_log - t_log)).sum(dim=1, keepdim=True),
        (t_prob - s_prob).abs().sum(dim=1, keepdim=True),
        (top == student_logits.argmax(dim=1, keepdim=True)).to(teacher_logits.dtype),
        t_prob.max(dim=1, keepdim=True).values,
        s_prob.max(dim=1, keepdim=True).values,
        s_prob.gather(1, top),
        -(t_prob * t_log).sum(dim=1, keepdim=True),
        -(s_prob * s_log).sum(dim=1, keepdim=True),
        margin,
        teacher_logits.max(dim=1, keepdim=True).values,
        student_logits.max(dim=1, keepdim=True).values,
    ]
    return torch.cat(columns, dim=1)


def detector_features(iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Raw features [N, FEATURE_DIM]: the IQA vector then the KD signals (finite always)."""
    raw = torch.cat([iqa.float(), kd_signals(teacher_logits.float(), student_logits.float())], dim=1)
    return torch.nan_to_num(raw, nan=0.0, posinf=1e6, neginf=-1e6)


class Detector(nn.Module):
    """forward(iqa [N,37], teacher_logits [N,C], student_logits [N,C]) -> (suspicion [N,1], verdicts).

    A verdict is "accept" when suspicion < threshold, else "adversarial" or "low_quality" by the
    reason head. `feature_mask` zeroes feature groups (the IQA-only and KD-only ablations).
    """

    threshold: float
    z_clamp: float

    def __init__(self, hidden: int = 32, feature_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("std", torch.ones(FEATURE_DIM))
        mask = group_mask(True, True) if feature_mask is None else feature_mask.float()
        self.register_buffer("feature_mask", mask)
        self.body = nn.Sequential(nn.Linear(FEATURE_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.suspicion_head = nn.Linear(hidden, 1)
        self.reason_head = nn.Linear(hidden, 1)
        self.threshold = 0.5
        self.z_clamp = Z_CLAMP

    def features(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> torch.Tensor:
        """Raw features [N, FEATURE_DIM] (detector_features): what the build fits on and serving computes."""
        return detector_features(iqa, teacher_logits, student_logits)

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """Standardise with the fitted statistics, clip, and apply the feature mask."""
        z = ((raw - self.mean) / self.std).clamp(-self.z_clamp, self.z_clamp)
        return z * self.feature_mask

    def heads(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the suspicion and reason heads [N,1] each, from raw features."""
        hidden = self.body(self.standardise(raw))
        return self.suspicion_head(hidden), self.reason_head(hidden)

    @torch.jit.export
    def scores(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(suspicion, P(adversarial | suspicious)), both [N,1] in [0,1]."""
        suspicion, reason = self.heads(self.features(iqa, teacher_logits, student_logits))
        return torch.sigmoid(suspicion), torch.sigmoid(reason)

    def forward(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[str]]:
        suspicion, adversarial = self.scores(iqa, teacher_logits, student_logits)
        return suspicion, verdicts_of(suspicion, adversarial, self.threshold)


class DetectorEnsemble(nn.Module):
    """The exported detector: Detectors on different feature groups, their suspicion logits averaged.

    Same call as a Detector: forward(iqa, teacher_logits, student_logits) -> (suspicion [N,1], verdicts),
    with the threshold it carries. Suspicion is the sigmoid of the mean suspicion logit (the members'
    odds, geometrically averaged); the reason (adversarial vs low quality) is the first member's.
    Why: fitted on FGSM, PGD and the seen distortions, one MLP on every feature rests on IQA, which
    minimal attacks on photos (CW-L2, DeepFool) leave untouched; a member on the KD signals alone keeps
    the teacher/student evidence in the score. The build admits members (detector_fit.EnsembleGuard).
    """

    threshold: float

    def __init__(self, members: list[Detector]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a DetectorEnsemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.threshold = 0.5

    @torch.jit.export
    def scores(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(suspicion, P(adversarial | suspicious)), both [N,1] in [0,1]."""
        raw = detector_features(iqa, teacher_logits, student_logits)
        total = torch.zeros_like(raw[:, :1])  # on the input's device: the ensemble may be served on a GPU
        reason = torch.zeros_like(raw[:, :1])
        for index, member in enumerate(self.members):
            suspicion, member_reason = member.heads(raw)
            total = total + suspicion
            if index == 0:
                reason = member_reason
        return torch.sigmoid(total / len(self.members)), torch.sigmoid(reason)

    def forward(
        self, iqa: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor
    ) -> tuple[torch.Tensor, list[str]]:
        suspicion, adversarial = self.scores(iqa, teacher_logits, student_logits)
        return suspicion, verdicts_of(suspicion, adversarial, self.threshold)
