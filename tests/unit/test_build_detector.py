"""The detector module (TorchScript contract, KD signals, verdict logic), its fitting and calibration."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from iqaguard.contract import IQA_DIM, VERDICTS
from iqaguard.models.detector import (
    FEATURE_DIM,
    KD_DIM,
    KD_FEATURE_NAMES,
    Detector,
    DetectorEnsemble,
    group_mask,
    kd_signals,
)
from iqaguard.training.detector_fit import calibrate_threshold, detector_scores, fit_detector, resplit_check
from iqaguard.training.metrics import auroc
from iqaguard.training.samples import CLEAN, Samples


def scripted(detector: Detector | DetectorEnsemble) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(detector.eval()), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def test_signature_and_outputs_survive_torchscript() -> None:
    torch.manual_seed(0)
    detector = Detector()
    detector.threshold = 0.5
    module = scripted(detector)
    for classes in (10, 1000):
        iqa, teacher, student = torch.randn(7, IQA_DIM), torch.randn(7, classes), torch.randn(7, classes)
        suspicion, verdicts = module(iqa, teacher, student)
        assert suspicion.shape == (7, 1) and suspicion.dtype == torch.float32
        assert bool(((suspicion >= 0) & (suspicion <= 1)).all())
        assert isinstance(verdicts, list) and len(verdicts) == 7 and set(verdicts) <= set(VERDICTS)
        eager_suspicion, eager_verdicts = detector(iqa, teacher, student)
        assert torch.allclose(suspicion, eager_suspicion, atol=1e-6) and verdicts == eager_verdicts
    empty_suspicion, empty_verdicts = module(torch.zeros(0, IQA_DIM), torch.zeros(0, 10), torch.zeros(0, 10))
    assert empty_suspicion.shape == (0, 1) and empty_verdicts == []
    assert module.threshold == 0.5


def test_verdicts_follow_threshold_and_reason_head() -> None:
    detector = Detector()
    with torch.no_grad():
        for layer in (detector.suspicion_head, detector.reason_head):
            layer.weight.zero_()
            layer.bias.zero_()
        # Suspicion and reason are read off the first IQA feature (through a body made to pass it on).
        for linear in (detector.body[0], detector.body[2]):
            linear.weight.zero_()
            linear.bias.zero_()
            linear.weight[0, 0] = 1.0
        detector.suspicion_head.weight[0, 0] = 1.0
        detector.reason_head.weight[0, 0] = 1.0
        detector.reason_head.bias.fill_(-2.0)  # adversarial only when the feature is above 2
    detector.threshold = float(torch.sigmoid(torch.tensor(1.0)))
    iqa = torch.zeros(3, IQA_DIM)
    iqa[:, 0] = torch.tensor([0.5, 1.5, 3.0])
    logits = torch.zeros(3, 10)
    suspicion, verdicts = scripted(detector)(iqa, logits, logits)
    assert torch.allclose(suspicion[:, 0], torch.sigmoid(iqa[:, 0]))
    assert verdicts == ["accept", "low_quality", "adversarial"]


def test_kd_signals() -> None:
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    same = kd_signals(teacher, teacher.clone())
    other = kd_signals(teacher, torch.tensor([[0.0, 0.0, 4.0], [0.0, 3.0, 0.0]]))
    named = dict(zip(KD_FEATURE_NAMES, range(KD_DIM), strict=True))
    assert same.shape == (2, KD_DIM)
    assert torch.allclose(same[:, named["kl_teacher_student"]], torch.zeros(2), atol=1e-6)
    assert torch.equal(same[:, named["top1_agree"]], torch.ones(2))
    assert other[0, named["top1_agree"]] == 0 and other[1, named["top1_agree"]] == 1
    assert other[0, named["kl_teacher_student"]] > 1.0 and other[0, named["l1_probs"]] > 1.0
    assert torch.allclose(same[:, named["teacher_margin"]], torch.tensor([4.0, 3.0]))
    probs = torch.softmax(teacher, 1)
    entropy = -(probs * probs.log()).sum(1)
    assert torch.allclose(same[:, named["teacher_entropy"]], entropy, atol=1e-6)


def test_ensemble_averages_member_logits_and_takes_the_first_members_reason() -> None:
    torch.manual_seed(0)
    single, kd_only = Detector(), Detector(feature_mask=group_mask(False, True))
    ensemble = DetectorEnsemble([single, kd_only])
    iqa, teacher, student = torch.randn(9, IQA_DIM), torch.randn(9, 1000), torch.randn(9, 1000)
    with torch.no_grad():
        logits = [member.heads(member.features(iqa, teacher, student)) for member in (single, kd_only)]
    expected = torch.sigmoid((logits[0][0] + logits[1][0]) / 2)
    # The threshold between the 3rd and 4th lowest suspicion: exactly 3 accepted.
    ensemble.threshold = float(expected[:, 0].sort().values[2:4].mean())
    module = scripted(ensemble)
    suspicion, verdicts = module(iqa, teacher, student)
    assert torch.allclose(suspicion, expected, atol=1e-6)
    assert torch.allclose(module.scores(iqa, teacher, student)[1], torch.sigmoid(logits[0][1]), atol=1e-6)
    assert verdicts.count("accept") == 3 and module.threshold == ensemble.threshold
    assert [v == "accept" for v in verdicts] == (expected[:, 0] < ensemble.threshold).tolist()
    empty_suspicion, empty_verdicts = module(torch.zeros(0, IQA_DIM), torch.zeros(0, 10), torch.zeros(0, 10))
    assert empty_suspicion.shape == (0, 1) and empty_verdicts == []
    # The KD-only member ignores IQA, so IQA moves the ensemble's logit by half of what it moves the single MLP's.
    other_iqa = torch.randn(9, IQA_DIM)
    with torch.no_grad():
        moved = single.heads(single.features(other_iqa, teacher, student))[0] - logits[0][0]
        shift = torch.logit(module(other_iqa, teacher, student)[0].double()) - torch.logit(suspicion.double())
    assert moved.abs().max() > 0.01 and torch.allclose(shift.float(), moved / 2, atol=1e-4)
    with pytest.raises(ValueError, match="at least one member"):
        DetectorEnsemble([])


@pytest.mark.parametrize(("kd_auroc", "joins"), [(0.9, True), (0.65, True), (0.6, False), (float("nan"), False)])
def test_ensemble_admits_a_second_member_only_when_it_separates_the_validation_images(kd_auroc, joins) -> None:
    from iqaguard.training.detector_fit import MIN_MEMBER_AUROC, EnsembleGuard, MlpGuard
    from iqaguard.training.methods import Method

    assert MIN_MEMBER_AUROC == 0.65
    single = MlpGuard(Method.SINGLE_MLP, detector=Detector(), stats={"validation_auroc": 0.5})  # first: always in
    kd_only = MlpGuard(Method.KD_ONLY, detector=Detector(feature_mask=group_mask(False, True)),
                       stats={"validation_auroc": kd_auroc})
    guard = EnsembleGuard([single, kd_only])
    stats = guard.fit(None, [], seed=0)  # its members are fitted already; it reads no samples
    assert stats["members"] == (["single_mlp", "kd_only"] if joins else ["single_mlp"])
    members = list(guard.detector.members)
    assert len(members) == (2 if joins else 1) and members[0] is not single.detector  # copies, not the ablations
    assert torch.equal(members[0].body[0].weight, single.detector.body[0].weight)


def test_profiles_name_the_detector_members_and_the_fit_refuses_others() -> None:
    from iqaguard.training.detector_fit import fit_and_calibrate
    from iqaguard.training.methods import Method
    from iqaguard.training.profiles import PROFILES

    assert PROFILES["fashion"].detector_members == (Method.SINGLE_MLP,)
    for name in ("natural", "custom", "imagenet"):
        assert PROFILES[name].detector_members == (Method.SINGLE_MLP, Method.KD_ONLY)
    for members in ((), (Method.SINGLE_MLP, Method.FEATURE_SQUEEZING), (Method.DETECTOR,)):
        with pytest.raises(ValueError, match="detector members must be MLP methods"):
            fit_and_calibrate(None, None, [], 0, 0.05, 0.95, detector_members=members)


def test_features_are_finite_for_hostile_inputs() -> None:
    detector = Detector()
    iqa = torch.full((2, IQA_DIM), float("nan"))
    iqa[1] = float("inf")
    teacher = torch.tensor([[1e30, -1e30], [0.0, 0.0]])
    suspicion, verdicts = scripted(detector)(iqa, teacher, teacher)
    assert bool(torch.isfinite(suspicion).all()) and len(verdicts) == 2


def test_feature_mask_ablations_ignore_the_other_group() -> None:
    from iqaguard.training.detector_fit import FEATURE_GROUPS

    iqa_only = Detector(feature_mask=torch.from_numpy(FEATURE_GROUPS["iqa_only"]))
    iqa, teacher = torch.randn(4, IQA_DIM), torch.randn(4, 10)
    a, _ = iqa_only(iqa, teacher, torch.randn(4, 10))
    b, _ = iqa_only(iqa, torch.randn(4, 10), torch.randn(4, 10))
    assert torch.allclose(a, b)
    kd_only = Detector(feature_mask=torch.from_numpy(FEATURE_GROUPS["kd_only"]))
    student = torch.randn(4, 10)
    assert torch.allclose(kd_only(torch.randn(4, IQA_DIM), teacher, student)[0],
                          kd_only(torch.randn(4, IQA_DIM), teacher, student)[0])
    assert FEATURE_GROUPS["iqa_only"].sum() == IQA_DIM and FEATURE_GROUPS["kd_only"].sum() == FEATURE_DIM - IQA_DIM


def synthetic_samples(n: int, rng: np.random.Generator) -> Samples:
    """Clean rows; 'distorted' rows (high IQA feature 0) and 'attacked' rows (teacher-student disagreement)."""
    rows = []
    for setting in (CLEAN, 0, 1):
        iqa = rng.normal(0, 1, (n, IQA_DIM)).astype(np.float32)
        teacher = rng.normal(0, 1, (n, 10)).astype(np.float32)
        teacher[np.arange(n), 0] += 6.0
        student = teacher + rng.normal(0, 0.3, (n, 10)).astype(np.float32)
        if setting == 0:  # an attack: the student disagrees
            student[np.arange(n), 0] -= 8.0
        if setting == 1:  # a distortion: bad quality
            iqa[:, 0] += 4.0
        rows.append(Samples(image=np.arange(n), setting=np.full(n, setting), iqa=iqa, teacher_logits=teacher,
                            student_logits=student, flipped=np.full(n, setting != CLEAN), eligible=np.ones(n, bool)))
    return Samples.concat(rows)


def test_fit_separates_and_explains_synthetic_signals() -> None:
    rng = np.random.default_rng(0)
    fit, test = synthetic_samples(300, rng), synthetic_samples(300, rng)
    detector, stats = fit_detector(fit, attack_settings=[0], group="single_mlp", seed=0, epochs=30)
    assert stats["negatives"] == 300 and stats["positives"] == 600
    suspicion, reason = detector_scores(detector, test)
    clean = test.setting == CLEAN
    assert auroc(suspicion[clean], suspicion[~clean]) > 0.99
    assert (reason[test.setting == 0] >= 0.5).mean() > 0.95  # attack rows called adversarial
    assert (reason[test.setting == 1] < 0.5).mean() > 0.95  # distortion rows called low quality
    # Standardisation statistics live inside the module.
    assert torch.all(detector.std > 0) and detector.mean.shape == (FEATURE_DIM,)


def test_quality_dropout_teaches_attacks_without_an_iqa_trace_and_spares_single_group_fits() -> None:
    rng = np.random.default_rng(1)
    fit, test = synthetic_samples(300, rng), synthetic_samples(300, rng)
    # Test attacks whose IQA rows look clean (minimal attacks): only the KD signal is left to see them.
    attacked = test.setting == 0
    test.iqa[attacked] = rng.normal(0, 1, (int(attacked.sum()), IQA_DIM)).astype(np.float32)
    detector, _ = fit_detector(fit, attack_settings=[0], group="single_mlp", seed=0, epochs=30, quality_dropout=0.5)
    suspicion, _ = detector_scores(detector, test)
    assert auroc(suspicion[test.clean], suspicion[attacked]) > 0.99
    plain, _ = fit_detector(fit, attack_settings=[0], group="single_mlp", seed=0, epochs=30, quality_dropout=0.0)
    assert not torch.equal(detector.suspicion_head.weight, plain.suspicion_head.weight)
    # An ablation with one feature group has nothing to drop: the option leaves its fit bit for bit alone.
    for group in ("iqa_only", "kd_only"):
        with_option, _ = fit_detector(fit, [0], group, seed=0, epochs=5, quality_dropout=0.5)
        without, _ = fit_detector(fit, [0], group, seed=0, epochs=5, quality_dropout=0.0)
        for name, tensor in with_option.state_dict().items():
            assert torch.equal(tensor, without.state_dict()[name]), (group, name)


def test_calibrated_threshold_keeps_its_promise_with_confidence() -> None:
    """Uniform clean scores: the true false-rejection rate of a threshold t is exactly 1 - t."""
    rng = np.random.default_rng(1)
    true_rates = []
    for _ in range(1000):
        calibration = calibrate_threshold(rng.random(400), 0.05, confidence=0.95)
        true_rates.append(1.0 - calibration.threshold)
    true_rates = np.array(true_rates)
    assert calibration.rate_bound <= 0.05 and calibration.expected_rate < calibration.rate_bound
    # The promise: the rate exceeds 5% in at most 5% of calibration draws (binomial slack for 1000 draws).
    assert (true_rates > 0.05).mean() <= 0.05 + 0.02
    assert true_rates.mean() == pytest.approx(calibration.expected_rate, abs=0.002)
    # The plain conformal cut (expected rate 5%) would miss about half the time; this one is well below.
    assert true_rates.mean() < 0.04
    with pytest.raises(ValueError, match="cannot promise"):
        calibrate_threshold(rng.random(10), 0.05)


def test_the_fashion_confidence_keeps_every_re_drawn_split_under_the_target() -> None:
    """The report's five re-drawn splits measure the rate on 4,000 other clean images (noise of their own):
    at the fashion set's confidence few builds see a split over 5%; at 0.95 many would."""
    from iqaguard.training.profiles import PROFILES

    def failing_builds(confidence: float, builds: int = 150) -> float:
        rng = np.random.default_rng(1)
        failed = 0
        for _ in range(builds):
            pool = rng.random(6000)  # clean scores: the rates depend on ranks only
            runs = resplit_check(pool[:2000], pool[2000:], 0.05, confidence)
            failed += max(run["false_rejection_rate"] for run in runs) > 0.05
        return failed / builds

    assert failing_builds(PROFILES["fashion"].frr_confidence) <= 0.06
    assert failing_builds(0.95) >= 0.15
