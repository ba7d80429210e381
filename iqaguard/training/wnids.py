"""ImageNet labels from file names: `<wnid>_<anything>.<ext>` and a `wnids.txt` of the 1000 wnids beside them.

The class index of a wnid is its position in the sorted wnid list (torchvision's and most pretrained
classifiers' order). Labels are optional everywhere: they only measure the teacher's top-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

WNIDS_FILE = "wnids.txt"


def wnid_labels(files: Sequence[Path]) -> np.ndarray | None:
    """int64 class indices of `files`, or None unless every file's folder has wnids.txt listing its wnid."""
    if not files:
        return None
    orders: dict[Path, dict[str, int]] = {}
    labels = []
    for path in files:
        folder = Path(path).parent
        if folder not in orders:
            listing = folder / WNIDS_FILE
            if not listing.is_file():
                return None
            wnids = listing.read_text().split()
            orders[folder] = {wnid: index for index, wnid in enumerate(sorted(wnids))}
        index = orders[folder].get(Path(path).name.split("_", 1)[0])
        if index is None:
            return None
        labels.append(index)
    return np.asarray(labels, dtype=np.int64)
