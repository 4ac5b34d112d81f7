"""The CuPy launch-contract harness: a stand-in ``cupy`` that runs gpuact's CuPy backend on the CPU.

``install()`` puts a fake ``cupy`` (``cupy``, ``cupy.cuda``, ``cupy.cuda.runtime``,
``cupy.cuda.stream``, ``cupy.cuda.device``; ``cupy.cuda.nvrtc`` is the real NVRTC) into
``sys.modules``. ``tests/conftest.py`` does so when ``GPUACT_CUPY_STANDIN=1``, and
``tests/test_cupy_standin.py`` runs the public suite, ``tests/test_cupy_backend.py`` and
``tests/test_launch_contract.py`` that way in a child pytest. Arrays are NumPy arrays of host
memory (256-byte aligned, as CuPy's pool) that know the device and stream current when their memory
was allocated, and whether gpuact code allocated it, in which call. Two H200s (132 SMs, 232448 bytes
of opt-in shared memory per block), each with its own current stream, as in CuPy 14.

What it proves, for every launch the backend makes:

* Arguments match the kernel: the C signature is parsed from the source handed to CuPy (after the
  preprocessor, as NVRTC sees it); the argument count, each pointer's element type and each
  scalar's exact C type, with CuPy's own conversion of Python scalars (``cupy/cuda/function.pyx``:
  a Python int is an ``int64``, so it is wrong for an ``int`` parameter and right for ``long long``).
  ElementwiseKernel arguments are typed as ``cupy/_core/_kernel.pyx`` types them; a NumPy scalar
  must have its parameter's declared type (CuPy would cast it silently).
* The launch fits an H100/H200: grid and block limits, ``__launch_bounds__``, registers x threads
  (ptxas's register count for sm_90, from NVRTC), static + dynamic shared memory within 48 KiB
  unless ``max_dynamic_shared_size_bytes`` was raised for that kernel on that device, and never
  above 232448 bytes.
* Devices and streams: every array argument lives on the current device; every array a gpuact call
  allocated during that same call was allocated on the launch's device and stream (CuPy's memory
  pool is per stream, and work on another stream is unordered with this one). The CuPy operations
  gpuact composes (ufuncs, copies, sorts, ``out[...] = r``) run kernels too and are checked alike.
* No output partly overlaps another argument (a RawKernel's non-const pointer, an
  ElementwiseKernel's ``out_params``): in place is only ever the identical view.
* No host synchronisation (``.get()``, ``.item()``, ``bool(array)``, ...) inside gpuact code.
* The results: RawKernels run their own CUDA source on the CPU (``tests/cuda_shim/cuda_shim.h``)
  with the recorded grid, block and dynamic shared memory: threads one after another for kernels
  without ``__syncthreads`` or shuffles, else as fibers switched at every barrier
  (``GPUACT_STANDIN_OS_THREADS=1``: a std::thread per CUDA thread, ~20x the CPU time).
  ElementwiseKernels run their operation, compiled with g++ for the types CuPy resolves, over
  contiguous broadcast copies of the arguments. Float math functions are evaluated in double and
  rounded once (glibc's float versions are an ulp off where CUDA's are exact). The tests compare
  the results with the NumPy path.

What it cannot prove: anything about real device memory (host memory stands in, so an out-of-bounds
access does not fault where the host mapping allows it, and a host pointer handed to a kernel would
run), timing and occupancy, real concurrency between streams (work runs at once, in call order; only
the recorded stream of each launch and allocation is checked), CuPy's own kernels (indexing,
sorting, reductions, copies run as NumPy), the device math library (host libm and g++ stand in for
libdevice and ptxas: last-ulp differences, no fused multiply-adds where ptxas would contract), warp
behaviour beyond what the shim models (independent thread scheduling, partial shuffle masks),
ordering of work across streams by events (recorded, not modelled), and ``np.asarray(cupy_array)``,
which succeeds here (the arrays are NumPy subclasses) but raises under real CuPy.
"""

from __future__ import annotations

import functools
import importlib.machinery
import sys
import types

from ._state import LaunchContractError, recording  # noqa: F401  (the public surface)

_installed = False


def _module(name: str, attrs: dict, package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, attrs.pop("__doc__", None))
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []
    mod.__dict__.update(attrs)
    return mod


@functools.cache
def _real_nvrtc():
    """The real NVRTC bindings (``cupy.cuda.nvrtc``), exercised once, before the stand-in takes over.

    Loading libnvrtc imports parts of the real cupy (and registers a lazy ``cupyx``): a trial
    compile here does every such import now, and ``install()`` then removes those modules.
    """
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        prog = nvrtc.createProgram('extern "C" __global__ void probe() {}', "probe.cu", [], [])
        try:
            nvrtc.compileProgram(prog, ["-arch=sm_90"])
        finally:
            nvrtc.destroyProgram(prog)
    except Exception:  # no cupy, no libnvrtc
        return None
    return nvrtc


def unusable_reason() -> str | None:
    """Why the harness cannot run here (no g++ or no NVRTC), or None."""
    from . import _build

    if _build.gxx() is None:
        return "no host C++ compiler (g++) to run the kernels on the CPU"
    if _real_nvrtc() is None:
        return "no NVRTC (cupy-cuda12x and libnvrtc) for the kernels' ptxas resource reports"
    return None


def install() -> types.ModuleType:
    """Put the stand-in into ``sys.modules`` as ``cupy`` (before anything imports the real one)."""
    global _installed
    if _installed:
        return sys.modules["cupy"]
    from . import _array, _build, _kernels, _routines, _runtime, _state

    nvrtc = _real_nvrtc()
    _build.bind_nvrtc(nvrtc)
    for name in [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx")]:
        del sys.modules[name]  # the parts of the real cupy that loading NVRTC imported step aside

    runtime = _module("cupy.cuda.runtime", {k: v for k, v in vars(_runtime).items() if not k.startswith("__")})
    stream_mod = _module(
        "cupy.cuda.stream",
        {
            "Stream": _state.Stream,
            "ExternalStream": _state.ExternalStream,
            "Event": _state.Event,
            "get_current_stream": _state.get_current_stream,
        },
    )
    device_mod = _module("cupy.cuda.device", {"Device": _state.Device, "get_device_id": _state.get_device_id})
    cuda = _module(
        "cupy.cuda",
        {
            "Device": _state.Device,
            "Stream": _state.Stream,
            "ExternalStream": _state.ExternalStream,
            "Event": _state.Event,
            "get_current_stream": _state.get_current_stream,
            "get_device_id": _state.get_device_id,
            "is_available": lambda: True,
            "runtime": runtime,
            "stream": stream_mod,
            "device": device_mod,
            "MemoryPointer": _array.MemoryPointer,
        },
        package=True,
    )
    if nvrtc is not None:
        cuda.nvrtc = nvrtc
    cupy = _module(
        "cupy",
        {
            "__doc__": __doc__,
            "__version__": "14.2.0+gpuact.standin",
            "ndarray": _array.ndarray,
            "cuda": cuda,
            "RawKernel": _kernels.RawKernel,
            "RawModule": _kernels.RawModule,
            "ElementwiseKernel": _kernels.ElementwiseKernel,
            "empty": _routines.EXPLICIT["empty"],
            "__getattr__": _getattr,
            "_standin": sys.modules[__name__],
            **{k: v for k, v in _routines.EXPLICIT.items() if k != "empty"},
        },
        package=True,
    )
    sys.modules.update(
        {
            "cupy": cupy,
            "cupy.cuda": cuda,
            "cupy.cuda.runtime": runtime,
            "cupy.cuda.stream": stream_mod,
            "cupy.cuda.device": device_mod,
        }
    )
    if nvrtc is not None:
        sys.modules["cupy.cuda.nvrtc"] = nvrtc
    _installed = True
    return cupy


def _getattr(name: str):
    """``cupy.<name>`` for NumPy's names: dtypes and constants as they are, functions forwarded."""
    import numpy as np

    from . import _routines

    fn = _routines.lookup(name)
    if fn is not None:
        return fn
    if not name.startswith("_") and hasattr(np, name):
        value = getattr(np, name)  # dtypes, constants, newaxis (None)
        if isinstance(value, type) or not (callable(value) or isinstance(value, types.ModuleType)):
            return value  # not NumPy's submodules: numpy.random would hand out host arrays
    raise AttributeError(f"the CuPy stand-in has no attribute {name!r}")


def installed() -> bool:
    return _installed


def stats() -> dict:
    """Compile counts and seconds so far (NVRTC reports, g++ builds)."""
    from . import _build

    return dict(_build.stats)
