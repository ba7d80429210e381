"""The packaged LIVE SVR: reproducible from the brisque package, and it predicts as LIBSVM does."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from iqaguard.iqa import load_model
from iqaguard.iqa.convert_model import convert, installed_model_dir
from iqaguard.iqa.svr import MODEL_FILE

with warnings.catch_warnings():  # the reference's own imports raise deprecation warnings
    warnings.simplefilter("ignore")
    from brisque import BRISQUE


@pytest.fixture(scope="module")
def reference() -> BRISQUE:
    return BRISQUE(url=False)


def test_packaged_model_is_the_conversion_of_the_installed_package(tmp_path: Path) -> None:
    regenerated = convert(installed_model_dir(), tmp_path / "model.npz")
    with np.load(MODEL_FILE) as packaged, np.load(regenerated) as fresh:
        assert sorted(packaged.files) == sorted(fresh.files)
        for key in packaged.files:
            np.testing.assert_array_equal(packaged[key], fresh[key], err_msg=key)


def test_model_shapes_and_licence_travel_with_it() -> None:
    model = load_model()
    assert model.support_vectors.shape == (770, 36) and model.dual_coef.shape == (770,)
    assert (model.feature_max > model.feature_min).all()
    assert (MODEL_FILE.parent / "LICENSE-brisque.txt").read_text().startswith(" " * 33 + "Apache License")
    assert "brisque 0.2.0" in (MODEL_FILE.parent / "NOTICE").read_text()


def test_scores_equal_libsvm_predictions(reference: BRISQUE) -> None:
    model = load_model()
    rng = np.random.default_rng(0)
    span = model.feature_max - model.feature_min
    # Inside the training range, around it, and far outside (where the RBF kernels vanish).
    features = model.feature_min + span * rng.uniform(-0.3, 1.3, (40, 36))
    features = np.vstack([features, model.feature_min + 50 * span])
    ours = model.score(features)
    theirs = np.array([reference.calculate_image_quality_score(f) for f in features])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert ours[-1] == pytest.approx(-model.rho)
