"""The wheel: built from the checkout, installed into a fresh venv, imported from elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import hatch_build  # noqa: E402  (the checkout root, put on the path just above)

pytestmark = pytest.mark.needs_network


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_ships_the_kernels(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = dist.glob("gpuact-*.whl")
    if sys.version_info >= (3, 11) and hatch_build.compiler() is not None:
        assert "-cp311-abi3-" in wheel.name, wheel.name  # the extension module uses the stable ABI
    # hatch_build.py compiles the CPU kernels into the wheel wherever a C++ compiler is found
    native_expected = hatch_build.compiler() is not None and os.environ.get("GPUACT_BUILD_NATIVE", "1") != "0"
    with zipfile.ZipFile(wheel) as archive:
        assert ("gpuact/_gpuact_cpu.so" in archive.namelist()) == native_expected
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    code = (
        "import sys, pathlib, gpuact\n"
        "assert 'site-packages' in gpuact.__file__, gpuact.__file__\n"
        "from gpuact import _kernel_sources\n"
        "kernels = _kernel_sources.kernels_dir()\n"
        "assert kernels == pathlib.Path(gpuact.__file__).parent / 'kernels', kernels\n"
        "sources = sorted(p.name for p in kernels.iterdir())\n"
        "assert any(s.endswith(('.cuh', '.cu', '.h')) for s in sources), sources\n"
        "assert '__global__' in _kernel_sources.kernel_source('gpuact_softmax_cols_f32')\n"
        "print(gpuact.relu([1.0, -1.0]), sources)\n"
        "assert 'cupy' not in sys.modules and 'numba' not in sys.modules\n"
        "from gpuact.backends import _native\n"
        f"assert _native.available() or not {native_expected!r}, _native.unavailable_reason()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
