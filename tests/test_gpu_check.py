"""The GPU check (``bench/gpu_check.sh``) and its sanitizer script (``bench/gpu_sanitize.py``),
without a GPU.

* The dry run walks every step within the deadline and exits 0; a real run on a machine without a
  GPU stops at step 1 with a message and exit status 3.
* ``-p tests.gpu_selection -m gpu`` (step 3) selects the tests on the cupy and numba paths and no
  CPU-only test.
* The benchmark's ``--json`` is rewritten as the run goes (step 4): a kill keeps the rows done.
* ``gpu_sanitize.py`` runs in a child process on the CuPy stand-in and under Numba's CUDA
  simulator, and launches every kernel family of the plan tables in float32 and float16: the
  fused families of ``FUSED_FAMILIES`` (with the bias variant of the warp kernels, the column
  kernels with and without their shared-memory cache) and the vector and ElementwiseKernel kinds on
  CuPy; every kernel family of the Numba catalogue (softmax with and without log, mask and bias,
  sparsemax cached and not) on Numba. What compute-sanitizer then finds is for a GPU to say.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
SANITIZE = ROOT / "bench" / "gpu_sanitize.py"
STEPS = ("1 device", "1 smoke", "2 racecheck", "2 memcheck", "2 synccheck", "3 tests", "4 benchmark")
_PLAN = re.compile(
    r"^(?P<step>\d \w+): would run for at most (?P<limit>\d+) s \(from (?P<start>\d+) s to (?P<end>\d+) s"
)


# what would change a child's run (GPUACT_STANDIN_CACHE, a compile cache, is kept)
_CLEARED = (
    "GPUACT_REQUIRE_GPU",
    "GPUACT_CUPY_STANDIN",
    "GPUACT_TEST_BACKENDS",
    "GPUACT_TEST_BE_ONLY",
    "NUMBA_ENABLE_CUDASIM",
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_") and k not in _CLEARED}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def _driver_sees_a_gpu() -> bool:
    """The check's own probe where nvidia-smi is missing: the CUDA driver's device count."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    n = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0


def _check(out, env, timeout=120):
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("deadline", [480, 300, 600])
def test_the_dry_run_walks_every_step_within_the_deadline(tmp_path, deadline):
    proc = _check(tmp_path, _env(GPU_CHECK_DRY_RUN="1", GPU_CHECK_DEADLINE=str(deadline)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "summary.txt").read_text() == proc.stdout
    plan = {m["step"]: m for m in map(_PLAN.match, proc.stdout.splitlines()) if m}
    shown = [s for s in STEPS if s in plan or re.search(rf"^{s}: not run", proc.stdout, re.M)]
    assert shown == list(STEPS), proc.stdout
    assert "4 build" in proc.stdout
    assert all(int(m["end"]) <= deadline for m in plan.values()), proc.stdout
    ends = [int(plan[s]["end"]) for s in STEPS if s in plan]
    assert ends == sorted(ends)
    assert int(plan["1 smoke"]["end"]) <= 20
    sanitizer = sum(int(plan[s]["limit"]) for s in ("2 racecheck", "2 memcheck", "2 synccheck"))
    assert sanitizer <= 100
    assert int(plan["3 tests"]["limit"]) <= 240
    lines = {s: next(line for line in proc.stdout.splitlines() if line.startswith(s)) for s in plan}
    for tool, selection in (
        ("racecheck", "shared --dtype float32"),
        ("memcheck", "all"),
        ("synccheck", "shared --dtype float16"),
    ):
        assert f"--tool {tool} --error-exitcode" in lines[f"2 {tool}"]
        assert f"bench/gpu_sanitize.py --kernels {selection} --json" in lines[f"2 {tool}"]
    assert "GPUACT_REQUIRE_GPU=1" in lines["3 tests"]
    assert "-p tests.gpu_selection -m gpu -rfE --tb=short" in lines["3 tests"]
    assert "--junitxml=" in lines["3 tests"]
    if deadline == 480:
        assert (sanitizer, int(plan["3 tests"]["limit"])) == (100, 240)
        budget = int(re.search(r"--time-budget (\d+)", lines["4 benchmark"]).group(1))
        assert 0 < budget < int(plan["4 benchmark"]["limit"])
    assert "cupy-cuda12x" not in proc.stdout


@pytest.mark.parametrize("nvidia_smi", ["failing", "absent"])
def test_without_a_gpu_the_check_stops_at_step_1(tmp_path, nvidia_smi):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi == "failing":
        # what nvidia-smi says on a machine whose driver has no GPU to talk to (also on a GPU machine,
        # where this one comes first on PATH)
        fake = bin_dir / "nvidia-smi"
        fake.write_text(
            '#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\nexit 9\n'
        )
        fake.chmod(0o755)
    elif any((Path(p) / "nvidia-smi").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("nvidia-smi is installed here")
    elif _driver_sees_a_gpu():
        pytest.skip("the CUDA driver here sees a GPU")
    out = tmp_path / "out"
    # a short deadline all the same: were a GPU found after all, the check would end within a minute
    env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", GPU_CHECK_DEADLINE="60")
    proc = _check(out, env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no GPU here: stopped at step 1" in proc.stderr
    assert "NO GPU on this machine" in (out / "summary.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["1-device.txt", "summary.txt"]
    device = (out / "1-device.txt").read_text()
    assert "python" in device and "numpy" in device
    if nvidia_smi == "failing":
        assert "couldn't communicate with the NVIDIA driver" in device


def test_the_gpu_marker_selects_the_gpu_paths_and_nothing_else(tmp_path):
    """``pytest -p tests.gpu_selection -m gpu`` (the check's step 3): the public tests on the cupy
    and numba paths and the backends' own files; no test on the NumPy path."""
    plugin = tmp_path / "dump_items.py"
    plugin.write_text(
        "import json, os\n"
        "def pytest_collection_finish(session):\n"
        "    rows = [[i.path.name, getattr(getattr(i, 'callspec', None), 'params', {}).get('be'),\n"
        "             [m.name for m in i.iter_markers()]] for i in session.items]\n"
        "    with open(os.environ['DUMP'], 'w') as f:\n"
        "        json.dump(rows, f)\n"
    )
    files = [
        "tests/test_activations.py",
        "tests/test_api.py",
        "tests/test_cupy_backend.py",
        "tests/test_numba_backend.py",
    ]
    dump = tmp_path / "items.json"
    env = _env(DUMP=str(dump), PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "tests.gpu_selection",
        "-m",
        "gpu",
        "-p",
        "dump_items",
        "-p",
        "no:cacheprovider",
    ]
    proc = subprocess.run([*cmd, *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    items = json.loads(dump.read_text())
    by_file: dict = {}
    for name, be, markers in items:
        assert "gpu" in markers
        assert be in (None, "cupy", "numba"), (name, be)
        by_file.setdefault(name, set()).add(be)
    assert by_file["test_activations.py"] == {"cupy", "numba"}
    assert "test_cupy_backend.py" in by_file and "test_numba_backend.py" in by_file
    assert "test_api.py" not in by_file  # no test there runs on a GPU path


def test_the_benchmark_json_is_written_as_the_run_goes(tmp_path):
    """Step 4's benchmark is stopped at the deadline: the rows it finished are in its JSON already."""
    path = tmp_path / "bench.json"
    args = ["--ops", "relu,sigmoid", "--cpu-sizes", "18:22:1", "--min-time", "0.3", "--max-time", "0.5"]
    args += ["--device", "cpu", "--backends", "numpy", "--no-backward", "--no-progress", "--json", str(path)]
    env = _env(PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "gpuact.bench", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    partial = None
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if path.exists():
                doc = json.loads(path.read_text())  # written whole each time (a rename): never torn
                if doc.get("partial") and doc["results"]:
                    partial = doc
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert partial is not None, "no partial JSON with a row in it while the benchmark ran"
    kept = json.loads(path.read_text())
    assert kept["partial"] is True and kept["results"]
    assert {"schema", "machine", "results", "copy", "config"} <= set(kept)
    assert all(r["correct"] and r["median_s"] for r in kept["results"])


# ---- bench/gpu_sanitize.py on the CuPy stand-in and under the Numba simulator ---------------------


def _kernel_sources():
    """The CUDA sources' tables, without importing cupy here (this process keeps the real one out)."""
    for name in ("gpuact.backends._kernel_sources", "gpuact._kernel_sources"):
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    raise ImportError("gpuact's _kernel_sources module")


def _sanitize_module():
    spec = importlib.util.spec_from_file_location("gpu_sanitize", SANITIZE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The child installs what tests/conftest.py installs in such a run (the stand-in as `cupy`; under the
# simulator, its atomic shared arrays), and under the simulator the Numba launch checks, then runs
# the script as `python bench/gpu_sanitize.py` would.
_CHILD = """
import os, runpy, sys
import pytest
import tests.conftest
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    from tests import numba_launch_checks
    numba_launch_checks.install(pytest.MonkeyPatch())
sys.argv = ["bench/gpu_sanitize.py", *sys.argv[1:]]
runpy.run_path("bench/gpu_sanitize.py", run_name="__main__")
"""


def _run_sanitize(tmp_path, backend, **env):
    path = tmp_path / f"{backend}.json"
    cmd = [sys.executable, "-c", _CHILD, "--backend", backend, "--json", str(path)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    print(
        f"\ngpu_sanitize.py --backend {backend} ({elapsed:.0f} s):\n"
        + "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("launched", "passed", "FAILED")))
    )
    assert proc.returncode == 0, output[-20000:]
    report = json.loads(path.read_text())
    assert report["backends"] == {backend: "ran"}
    assert not report["failures"] and not report["missing"], report
    launched: dict = {}
    for row in report["launched"]:
        launched.setdefault((row["family"], row["dtype"]), []).append(set(row["flags"]))
    return launched, proc.stdout


def _assert_variants(launched, family, dtype, *variants):
    got = launched.get((family, dtype))
    assert got, f"{family} {dtype} not launched"
    for want in variants:
        assert any(want <= flags for flags in got) if want else set() in got, (family, dtype, want, got)


def test_gpu_sanitize_names_numba_families_and_reports_the_missing_ones():
    pytest.importorskip("numba.cuda")
    module = _sanitize_module()
    assert module.numba_family("gpuact_log_sigmoid_grad_bias_nd3") == ("elementwise_grad_bias_nd", set())
    assert module.numba_family("gpuact_hard_silu_contig") == ("elementwise_contig", set())
    assert module.numba_family("gpuact_glu_grad_nd2") == ("glu_grad_nd", set())
    assert module.numba_family("gpuact_log_softmax_grad_finish_masked_bias") == (
        "softmax_grad_finish",
        {"log", "masked", "bias"},
    )
    assert module.numba_family("gpuact_sparsemax_grad_tile_cached") == ("sparsemax_grad_tile", {"cached"})
    missing = module.missing("numba", "shared")
    assert "numba softmax_partials float16 [bias+masked]" in missing
    assert "numba sparsemax_tile float32 [cached]" in missing
    assert not any("elementwise" in line for line in missing)  # racecheck's and synccheck's selection
    module.RECORD.dtype = "float16"
    module.RECORD.add("numba", "softmax_partials", {"masked", "bias"})
    assert "numba softmax_partials float16 [bias+masked]" not in module.missing("numba", "shared")


@pytest.mark.cpu_proxy
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GPUACT_CUPY_STANDIN") == "1", reason="already inside the stand-in run")
def test_gpu_sanitize_launches_every_cupy_family_on_the_standin(tmp_path):
    code = "from tests import cupy_standin; print(cupy_standin.unusable_reason() or '')"
    probe = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0 or probe.stdout.strip():
        pytest.skip(f"the CuPy stand-in cannot run here: {(probe.stdout + probe.stderr).strip()[-300:]}")
    launched, _ = _run_sanitize(tmp_path, "cupy", GPUACT_CUPY_STANDIN="1")
    ks = _kernel_sources()

    for dtype in ("float32", "float16"):
        for family in ks.FUSED_FAMILIES:
            _assert_variants(launched, family, dtype, set())
        for family in ks.BIASED_WARP_FAMILIES:
            _assert_variants(launched, family, dtype, {"bias"})
        for family in (f for f in ks.FUSED_FAMILIES if f.endswith("_cols")):
            _assert_variants(launched, family, dtype, {"cached"})
        for family in ("softmax_warp", "softmax_cols", "softmax_split_finish", "softmax_grad_split_partials"):
            _assert_variants(launched, family, dtype, {"masked", "bias", "log"})
        for family in ("vector", *(f"vector_{kind}" for kind in ks.VEC_TRAINING_KINDS)):
            _assert_variants(launched, family, dtype, set())
        for kind in ("", "_bias", "_grad", "_grad_bias", "_glu_grad", "_prelu_grad"):
            _assert_variants(launched, f"elementwise{kind}", dtype, set())


@pytest.mark.cpu_proxy
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already inside the simulator run")
def test_gpu_sanitize_launches_every_numba_family_under_the_simulator(tmp_path):
    pytest.importorskip("numba.cuda")
    launched, _ = _run_sanitize(tmp_path, "numba", NUMBA_ENABLE_CUDASIM="1")
    from gpuact.backends._numba import kernels as K

    families: dict = {}
    numba_family = _sanitize_module().numba_family
    for dtype in (np.float32, np.float16):
        for _, fn, _ in K.catalogue(dtype, ndims=(1, 2)):
            family, flags = numba_family(fn.__name__)
            families.setdefault((family, np.dtype(dtype).name), set()).update(flags)
    assert len({f for f, _ in families}) >= 20, families  # the catalogue's names are what the script parses
    for (family, dtype), flags in families.items():
        _assert_variants(launched, family, dtype, set(), flags)
