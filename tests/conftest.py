"""Shared test machinery: the backends every public test runs on, and how arrays move to them.

Each test that takes the ``be`` fixture runs once per backend: ``numpy`` always; ``cupy`` and
``numba`` where a GPU is usable, and skipped with the reason elsewhere. The Numba backend also
runs here without a GPU, in a separate process under Numba's CUDA simulator
(``tests/test_numba_simulator.py`` starts it with ``GPUACT_TEST_BACKENDS=numba``).

``GPUACT_REQUIRE_GPU=1`` (set by ``bench/gpu_check.sh``) turns every "no GPU" skip into a failure,
so a GPU run cannot pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ALL_BACKENDS = ("numpy", "cupy", "numba")
SELECTED = tuple(b for b in os.environ.get("GPUACT_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b)
REQUIRE_GPU = os.environ.get("GPUACT_REQUIRE_GPU") == "1"
CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# GPUACT_CUPY_STANDIN=1: `cupy` is the launch-contract harness of tests/cupy_standin (CuPy's API on
# host memory, every kernel launch checked and run on the CPU), installed before anything imports
# cupy; tests/test_cupy_standin.py runs the suite that way.
STANDIN = os.environ.get("GPUACT_CUPY_STANDIN") == "1"
STANDIN_UNUSABLE = None
if STANDIN:
    from tests import cupy_standin

    STANDIN_UNUSABLE = cupy_standin.unusable_reason()
    if STANDIN_UNUSABLE is None:
        cupy_standin.install()

# The `be` fixture holds no state, so sharing it across hypothesis examples is safe. The CUDA
# simulator runs a thread per CUDA thread: fewer examples keep that process within minutes.
settings.register_profile("gpuact", suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
settings.register_profile("gpuact-sim", parent=settings.get_profile("gpuact"), max_examples=8)
settings.load_profile("gpuact-sim" if CUDASIM else "gpuact")
if CUDASIM:
    # The simulator's block manager busy-polls its threads (one per CUDA thread) for barriers while
    # holding the GIL; at the default 5 ms switch interval each barrier of a reduction waits out
    # several intervals. 0.2 ms made the simulator's softmax and sparsemax calls 2-4x faster.
    sys.setswitchinterval(2e-4)


def _make_simulator_shared_arrays_atomic() -> None:
    """Replace ``FakeCUDAShared.array`` of numba-cuda's simulator with one that cannot race.

    The original (numba_cuda/numba/cuda/simulator/kernelapi.py, ``FakeCUDAShared.array``) keys a
    block's shared arrays by the caller's (file, line), then does ``get``, ``np.empty`` and an
    insert as separate steps. Every CUDA thread is a Python thread, so a thread switch between the
    ``get`` and the insert lets two threads of one block each make and keep their own "shared"
    array: their writes never meet, and a reduction reads uninitialized memory (in CI,
    test_forward_and_backward_with_a_bias[numba-float32-(1, 8)] failed about 1 run in 8; the 0.2 ms
    switch interval above makes the switch likelier). ``dict.setdefault`` inserts or returns the
    first array in one step under the GIL (the key is a tuple of a str and an int: no Python code
    runs to hash or compare it).
    The key, the dtype conversion and the dynamic (``shape == 0``) and ``alignment`` paths are
    the original's; the tests/test_simulator_shared.py test shows both allocators under a forced
    switch.
    """
    from numba.cuda.simulator import kernelapi

    racy = kernelapi.FakeCUDAShared.array
    if getattr(racy, "racy_original", None) is not None:
        return
    if not isinstance(getattr(kernelapi.FakeCUDAShared(0), "_allocations", None), dict):
        return  # another numba-cuda layout: test_simulator_shared.py fails on the missing patch

    def array(self, shape, dtype, alignment=None):
        if alignment is not None:
            return racy(self, shape, dtype, alignment)
        if shape == 0:
            return racy(self, shape, dtype)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        # traceback.extract_stack(...)[-2][0:2] of the original: the calling frame's file and line
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        res = self._allocations.get(key)
        if res is None:
            res = self._allocations.setdefault(key, np.empty(shape, dtype))
        return res

    array.racy_original = racy
    kernelapi.FakeCUDAShared.array = array


if CUDASIM:
    _make_simulator_shared_arrays_atomic()

# The public test files a child run (the simulator, the stand-in) reruns: there it keeps only the
# tests on the `be` fixture, the ones that run on its backend; the rest run the NumPy path alone.
BE_ONLY = frozenset(name for name in os.environ.get("GPUACT_TEST_BE_ONLY", "").split(",") if name)
# Under pytest-xdist, .ci/run's `-n 2 --dist loadfile --no-loadscope-reorder` hands whole files to
# the workers (module fixtures and the shims' per-process libraries are built once per file) in the
# order the items have here: first the two child runs, each on a worker of its own at once, then
# the files that took minutes in a measured serial run, then the rest, which evens out the end.
# In the collection's order the simulator child started past the middle and the run waited for it.
# (--dist loadgroup would group across files, but with pytest 9.2 it silently groups nothing:
# pytest-dev/pytest-xdist#1386.)
XDIST_FIRST = (
    "test_numba_simulator.py",
    "test_cupy_standin.py",
    "test_numba_ptx.py",
    "test_cuda_compile.py",
    "test_cupy_backward_shim.py",
    "test_packaging.py",
    "test_gpu_check.py",
)


def pytest_collection_modifyitems(config, items):
    if BE_ONLY:
        numpy_only = [i for i in items if i.path.name in BE_ONLY and "be" not in getattr(i, "fixturenames", ())]
        if numpy_only:
            config.hook.pytest_deselected(items=numpy_only)
            dropped = set(numpy_only)
            items[:] = [i for i in items if i not in dropped]
    if hasattr(config, "workerinput"):  # an xdist worker; every worker must order its items the same
        rank = {name: k for k, name in enumerate(XDIST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _cupy_unusable() -> str | None:
    if STANDIN:
        return None if STANDIN_UNUSABLE is None else f"the CuPy stand-in cannot run here: {STANDIN_UNUSABLE}"
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        if cupy.is_available():
            return None
    except Exception as exc:  # a broken driver install reports itself here
        return f"cupy cannot use a GPU: {exc}"
    return "no usable CUDA GPU (cupy.is_available() is False)"


def _numba_unusable() -> str | None:
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    try:
        # Without a CUDA runtime library even this import fails (a loader error, not ImportError).
        from numba import cuda

        if CUDASIM:
            return None
        if cuda.is_available():
            return None
    except Exception as exc:
        return f"numba cannot use a GPU: {exc}"
    return (
        "no usable CUDA GPU for numba; the Numba kernels run under the CUDA simulator in "
        "tests/test_numba_simulator.py instead"
    )


_UNUSABLE = {"numpy": lambda: None, "cupy": _cupy_unusable, "numba": _numba_unusable}
_reasons: dict[str, str | None] = {}


def backend_unusable(name: str) -> str | None:
    if name not in _reasons:
        _reasons[name] = _UNUSABLE[name]()
    return _reasons[name]


def skip_unless_usable(name: str):
    reason = backend_unusable(name)
    if reason is None:
        return
    if REQUIRE_GPU and not CUDASIM:
        pytest.fail(f"GPUACT_REQUIRE_GPU=1 but backend {name} is unusable: {reason}")
    pytest.skip(reason)


class Backend:
    """Moves host arrays to a backend and back, so one test body serves all three."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name

    def asarray(self, a):
        a = np.asarray(a)
        if self.name == "cupy":
            import cupy

            return cupy.asarray(a)
        if self.name == "numba":
            from numba import cuda

            return cuda.to_device(np.array(a, order="C", copy=True))  # ascontiguousarray makes 0-d 1-d
        return a

    def empty(self, shape, dtype):
        if self.name == "cupy":
            import cupy

            return cupy.empty(shape, dtype)
        if self.name == "numba":
            from numba import cuda

            return cuda.device_array(shape, dtype)
        return np.empty(shape, dtype)

    def to_numpy(self, a):
        if self.name == "cupy":
            return a.get()
        if self.name == "numba":
            return a.copy_to_host()
        return np.asarray(a)

    def array_type(self):
        if self.name == "cupy":
            import cupy

            return cupy.ndarray
        if self.name == "numba":
            from numba.cuda.cudadrv import devicearray  # the simulator's module under NUMBA_ENABLE_CUDASIM

            return getattr(devicearray, "DeviceNDArray", None) or devicearray.FakeCUDAArray
        return np.ndarray


# "numpy" runs the NumPy path as installed: its compiled kernels (gpuact/backends/_native.py) where
# they were built. "numpy-ufunc" runs the same tests with those turned off, on the NumPy ufunc
# formulas that machines without a C++ compiler get.
FIXTURE_BACKENDS = ("numpy", "numpy-ufunc", "cupy", "numba")


def _turn_off_native(monkeypatch):
    from gpuact.backends import _native

    monkeypatch.setattr(_native, "_state", {"lib": None, "reason": "turned off by the test"})


@pytest.fixture
def numpy_ufunc_path(monkeypatch):
    """The NumPy path on its ufunc formulas, the compiled CPU kernels turned off."""
    _turn_off_native(monkeypatch)


@pytest.fixture(params=[b for b in FIXTURE_BACKENDS if b in SELECTED or (b == "numpy-ufunc" and "numpy" in SELECTED)])
def be(request, monkeypatch) -> Backend:
    if request.param == "numpy-ufunc":
        _turn_off_native(monkeypatch)
        return Backend("numpy")
    skip_unless_usable(request.param)
    return Backend(request.param)


@pytest.fixture(autouse=True)
def _numba_launch_checks(monkeypatch):
    """Under the CUDA simulator, every Numba launch is typed as on a GPU and recorded
    (tests/numba_launch_checks.py)."""
    if CUDASIM:
        from tests import numba_launch_checks

        numba_launch_checks.install(monkeypatch)
    yield


def pytest_report_header(config):
    lines = []
    for name in ("cupy", "numba"):
        if name not in SELECTED:
            continue
        reason = backend_unusable(name)
        lines.append(f"{name}: {'usable' if reason is None else reason}")
    gpu = [n for n in ("cupy", "numba") if n in SELECTED and backend_unusable(n) is None]
    if CUDASIM:
        head = "gpuact: Numba CUDA simulator run (no real GPU involved)"
    elif STANDIN:
        head = "gpuact: CuPy stand-in run (tests/cupy_standin: launches checked, kernels run on the CPU, no real GPU)"
    elif gpu:
        head = f"gpuact: GPU tests ENABLED for {', '.join(gpu)}{_device_name()}"
    else:
        head = "gpuact: no usable GPU, GPU tests skipped; running the CPU fallback"
    if "numpy" in SELECTED:
        from gpuact.backends import _native

        reason = _native.unavailable_reason()
        lines.append(f"numpy: compiled CPU kernels {'loaded' if reason is None else 'NOT used: ' + reason}")
    return [head, *("  " + line for line in lines)]


def pytest_terminal_summary(terminalreporter):
    if STANDIN and STANDIN_UNUSABLE is None:
        from tests import cupy_standin

        s = cupy_standin.stats()
        terminalreporter.write_line(
            f"gpuact CuPy stand-in: {s['nvrtc']} NVRTC resource reports ({s['nvrtc_s']:.1f} s), {s['gxx']} g++ "
            f"builds ({s['gxx_s']:.1f} s waited on, NVRTC running meanwhile)"
        )


def _device_name() -> str:
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        return f" on {props['name'].decode()}"
    except Exception:
        return ""
