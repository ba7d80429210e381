"""The IQA and preprocessing tests again, in a numpy that dispatches to fewer SIMD kernels.

CI runs on whichever x86 machine it gets (AVX-512 or AVX2 only). numpy picks its SIMD kernels at import
from NPY_DISABLE_CPU_FEATURES, so a subprocess with a narrowed set runs the same tests the way the other
kind of CPU would: with AVX-512 switched off on an AVX-512 machine, down to the SSE3 baseline elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parents[1]
SUITES = ["test_iqa_api.py", "test_iqa_features.py", "test_iqa_model.py", "test_iqa_parity.py", "test_imaging.py"]


def narrowed_features() -> list[str]:
    """The dispatch targets to switch off: this CPU's AVX-512 ones, else every one it has."""
    available = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    avx512 = [name for name in available if name.startswith("AVX512")]
    return avx512 or available


def _run(args: list[str], disabled: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(disabled)}
    return subprocess.run([sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_iqa_and_preprocessing_tests_pass_with_narrowed_numpy_dispatch() -> None:
    disabled = narrowed_features()
    if not disabled:
        pytest.skip("this CPU has no SIMD dispatch targets beyond numpy's baseline: nothing to narrow")
    probe = _run(["-c", "from numpy.core._multiarray_umath import __cpu_features__ as f; "
                        "import sys; print(' '.join(k for k in sys.argv[1:] if f[k]))", *disabled], disabled)
    assert probe.returncode == 0 and probe.stdout.strip() == "", probe.stderr  # really switched off
    result = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(TESTS / s) for s in SUITES)], disabled)
    assert result.returncode == 0, f"with {disabled} disabled:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout.splitlines()[-1]
