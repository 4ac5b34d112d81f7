"""The Numba backend's launch contract, checked on every launch under the CUDA simulator.

The simulator runs kernels as Python without typing them, so a kernel called with arguments its
explicit signature does not accept (a strided array where the signature says C layout, a float64
scalar for a float32 parameter, a broadcast array typed as contiguous...) would pass every
simulator test and fail on a GPU with "No matching definition". ``install()`` wraps every kernel
the backend compiles (``numba_backend._compiled``: what the GPU launches, a bfloat16 array already
its bits) so that each launch:

* types its arguments as the real CUDA target does (``DeviceNDArray._numba_type_``: C or F layout
  only for contiguous arrays that are not broadcast, else A; NumPy scalars by ``numba.typeof``)
  and checks them against the signature the kernel is compiled with on a GPU
  (``make_signature()``): same dtype and rank, an A-layout parameter takes any layout, a C or F
  parameter only its own; scalars of exactly the parameter's type;
* is recorded with the stream it was launched on (``LAUNCHES``), for the tests that check that a
  call with ``stream=s`` launches only on ``s``.

A violation raises ``LaunchSignatureError`` at the launch. What this cannot see: the real
target's compilation itself (``tests/test_numba_ptx.py`` compiles every kernel for sm_80/sm_90),
and real concurrency between streams (the simulator runs everything in order).
"""

from __future__ import annotations

from dataclasses import dataclass


class LaunchSignatureError(TypeError):
    pass


@dataclass
class Launch:
    kernel: str
    stream: object
    griddim: object
    blockdim: object


LAUNCHES: list[Launch] = []


def device_array_type(a):
    """The Numba type the real CUDA target gives a device array (DeviceNDArray._numba_type_)."""
    from numba import types
    from numba.np.numpy_support import from_dtype

    ary = a._ary
    broadcast = 0 in ary.strides and ary.size != 0
    if ary.flags.c_contiguous and not broadcast:
        layout = "C"
    elif ary.flags.f_contiguous and not broadcast:
        layout = "F"
    else:
        layout = "A"
    return types.Array(from_dtype(ary.dtype), ary.ndim, layout)


def _argument_type(value):
    import numba

    if getattr(type(value), "__cuda_ndarray__", False):
        return device_array_type(value)
    return numba.typeof(value)


def check_arguments(name: str, signature, args) -> None:
    from numba import types

    params = signature.args
    if len(params) != len(args):
        raise LaunchSignatureError(f"{name}: {len(args)} arguments for a signature of {len(params)}: {signature}")
    for k, (param, value) in enumerate(zip(params, args)):
        got = _argument_type(value)
        if isinstance(param, types.Array):
            ok = (
                isinstance(got, types.Array)
                and got.dtype == param.dtype
                and got.ndim == param.ndim
                and (param.layout == "A" or got.layout == param.layout)
            )
        else:
            ok = got == param
        if not ok:
            raise LaunchSignatureError(
                f"{name}: argument {k} is typed {got} on a GPU; the kernel's signature has {param} ({signature})"
            )


class _CheckedLaunch:
    def __init__(self, kernel: CheckedKernel, config):
        self.kernel, self.config = kernel, tuple(config)

    def __call__(self, *args):
        check_arguments(self.kernel.name, self.kernel.signature, args)
        stream = self.config[2] if len(self.config) > 2 else 0
        LAUNCHES.append(Launch(self.kernel.name, stream, self.config[0], self.config[1]))
        # the simulator's kernel[config] sets the grid on the kernel object itself: do it at the call
        return self.kernel.inner[self.config](*args)


class CheckedKernel:
    def __init__(self, inner, signature, name: str):
        self.inner, self.signature, self.name = inner, signature, name

    def __getitem__(self, config):
        return _CheckedLaunch(self, config)


def install(monkeypatch) -> None:
    """Wrap every kernel ``numba_backend`` builds from now on (and drop the ones it has built)."""
    from gpuact.backends import numba_backend

    original = numba_backend._compiled
    checked: dict = {}

    def kernel(key, make, make_signature):
        wrapped = checked.get(key)
        if wrapped is None:
            inner = original(key, make, make_signature)
            name = getattr(getattr(inner, "fn", None), "__name__", str(key))
            wrapped = checked[key] = CheckedKernel(inner, make_signature(), name)
        return wrapped

    monkeypatch.setattr(numba_backend, "_compiled", kernel)
    numba_backend._kernels.clear()
    for cache in ("_launches_default", "_launches_by_stream"):
        if hasattr(numba_backend, cache):
            getattr(numba_backend, cache).clear()
