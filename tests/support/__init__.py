"""Shared test helpers: paths of the checkout, fixture models, test images, a server, Compose files.

    support.fixture_models  tiny untrained TorchScript members and a fixture repository
    support.images          encoded good and bad test images
    support.server          start the embedded server for a test (fails the test with the log tail)
    support.compose         Compose's YAML tags, interpolation and merge rules
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout the tests belong to
CHECKED_IN_REPOSITORY = ROOT / "model_repository"  # the checked-in configs (no built artifacts needed)
