"""No-reference image quality: a fast, batched BRISQUE (features + LIVE-trained SVR score).

``brisque(pixels)`` is the entry point the serving preprocessor and the build pipeline share:
``[N, 3, H, W]`` float32 RGB in [0, 1] (numpy or torch) -> float32 ``[N, 37]``.
"""

from iqaguard.iqa.features import FEATURE_NAMES, aggd_fit, brisque_features, ggd_fit, mscn
from iqaguard.iqa.quality import N_OUTPUTS, brisque, brisque_score, to_grey
from iqaguard.iqa.svr import load_model

__all__ = [
    "FEATURE_NAMES",
    "N_OUTPUTS",
    "aggd_fit",
    "brisque",
    "brisque_features",
    "brisque_score",
    "ggd_fit",
    "load_model",
    "mscn",
    "to_grey",
]
