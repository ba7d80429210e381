"""Locate the Triton binary shipped in the nvidia-pytriton wheel and assemble its backend directory.

The wheel's python backend has no stub, and Triton refuses a symlinked `.so` for Python-based
backends, so the directory is built from copies: `python/` (libtriton_python.so, the utils module,
the 3.11 stub) and `pytorch/model.py` (a copy of iqaguard.in_triton.pytorch_model), iqaguard's
TorchScript runner standing in for LibTorch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import iqaguard.in_triton as in_triton
from iqaguard.cache import cache_dir


class TritonNotInstalledError(RuntimeError):
    """The nvidia-pytriton wheel (which carries the server binary) is not installed."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel put the server binary and the pieces of the python backend."""

    binary: Path
    python_backend: Path
    stubs: Path
    libs: Path

    @classmethod
    def locate(cls) -> TritonInstall:
        """Find the pytriton wheel's Triton install in this interpreter's environment."""
        # Locate without importing: the wheel is installed --no-deps, so its Python package can't import.
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalledError(
                "nvidia-pytriton is not installed; run `make setup` (it installs the Triton binary)"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        site_packages = root.parent.parent
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stubs=root / "python_backend_stubs",
            libs=site_packages / "nvidia_pytriton.libs",
        )
        for path in (install.binary, install.python_backend, install.stubs, install.libs):
            if not path.exists():
                raise TritonNotInstalledError(f"incomplete nvidia-pytriton install: {path} is missing")
        return install

    def stub_for_this_python(self) -> Path:
        """The python backend stub built for the running interpreter's version."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonNotInstalledError(f"nvidia-pytriton ships no python backend stub for Python {version}")
        return stub


def _backend_sources(install: TritonInstall) -> dict[str, Path]:
    return {
        "python/libtriton_python.so": install.python_backend / "libtriton_python.so",
        "python/triton_python_backend_utils.py": install.python_backend / "triton_python_backend_utils.py",
        "python/triton_python_backend_stub": install.stub_for_this_python(),
        "pytorch/model.py": Path(in_triton.__file__).with_name("pytorch_model.py"),  # imports pb_utils: not here
    }


def default_cache_dir() -> Path:
    """Where assembled backend directories are kept: the project's cache root (iqaguard.cache)."""
    return cache_dir("backends")


def assemble_backend_directory(install: TritonInstall, cache_dir: Path | None = None) -> Path:
    """Build (once per content hash, atomically) the backend directory Triton is started with."""
    sources = _backend_sources(install)
    digest = hashlib.sha256()
    for relative, source in sorted(sources.items()):
        digest.update(relative.encode())
        digest.update(source.read_bytes())
    target = (cache_dir or default_cache_dir()) / f"backends-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="backends-", dir=target.parent))
    for relative, source in sources.items():
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)  # copies, never links (Triton rejects escaping symlinks)
    try:
        staging.rename(target)
    except OSError:  # another process assembled the same content first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment the server and its stubs need: wheel libs + libpython on the loader path, venv first on PATH."""
    env = dict(os.environ if base is None else base)
    library_dirs = [str(install.libs), sysconfig.get_config_var("LIBDIR") or ""]
    if env.get("LD_LIBRARY_PATH"):
        library_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in library_dirs if d)
    # The stub takes sys.prefix from the first python3 on PATH: make it this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The server is several processes (one stub per model instance), each with its own OpenMP pool;
    # spinning idle threads steal the cores from the others (measured: 3-4x slower ensemble on 2 cores).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env
