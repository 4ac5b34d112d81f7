"""The CuPy path: CUDA C kernels from ``kernels/`` run on ``cupy.ndarray`` inputs (issue 3).

* Elementwise ops: C-contiguous (or F-contiguous) float inputs with a like-laid-out output, both
  16-byte aligned, run a vectorised ``RawKernel`` (16-byte loads and stores, grid-stride loop,
  64-bit indices); anything else (strided and negative-stride views, int/bool inputs, a
  non-contiguous ``out``) runs an ``ElementwiseKernel`` built from the same math header, which
  handles any strides and casts the input. Parameters are kernel arguments, so a new value never
  recompiles. Kernels are memoised here per (op, dtype, device); CuPy also caches the compiled
  binaries on disk (keyed on the self-contained source text).
* softmax / log_softmax (+ mask) and sparsemax: the fused kernels of ``kernels/gpuact_softmax.cu``
  and ``kernels/gpuact_sparsemax.cu`` on the (outer, L, inner) view of the input, launched as
  ``gpuact._kernel_sources`` plans them (one launch; two with a small workspace where rows are
  split over blocks to fill the GPU). Each kernel is compiled on its first use, on its own.
* glu, prelu: compositions of CuPy operations, all on the device.

Everything launches on the device that holds the input (``with x.device``) and on the current
CuPy stream, or ``stream`` (a ``cupy.cuda.Stream``) when given. Nothing synchronises with the
host: no ``.get()``, ``.item()`` or ``bool(array)`` anywhere on a call's path.
"""

from __future__ import annotations

import contextlib
import math

import cupy  # only imported once a CuPy array arrives or backend="cupy" is forced
import numpy as np

from gpuact import _kernel_sources as ks
from gpuact._ops import ELEMENTWISE_PARAMS
from gpuact.backends import _composite

_NVRTC_OPTIONS = ()  # CuPy adds its own (--std=c++17, include paths)


def unavailable_reason():
    try:
        if not cupy.is_available():
            return "CuPy sees no usable CUDA device"
    except Exception as exc:  # pragma: no cover - a broken driver reports itself here
        return f"CuPy cannot use a GPU: {exc}"
    return None


def owns(x) -> bool:
    return isinstance(x, cupy.ndarray)


def asarray(x):
    """Zero-copy for anything with ``__cuda_array_interface__``; host arrays are copied over."""
    return cupy.asarray(x)


def as_mask(mask, shape):
    mask = cupy.asarray(mask)
    if mask.dtype != np.bool_:
        mask = mask > 0.5
    return cupy.broadcast_to(mask, shape)


def as_param_array(alpha, shape, dtype):
    compute = _compute_dtype(dtype)
    return cupy.broadcast_to(cupy.asarray(alpha, dtype=compute), shape)


def _compute_dtype(dtype) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


@contextlib.contextmanager
def _on(x, stream):
    """The input's device, and ``stream`` when given (else the current stream stays)."""
    with x.device:
        if stream is None:
            yield
        else:
            with stream:
                yield


# ---------------------------------------------------------------------------------------------
# Kernel caches: per (what, dtype tag, device id).

_vec_kernels: dict = {}
_ew_kernels: dict = {}
_fused_kernels: dict = {}
_sm_counts: dict = {}
_smem_optins: dict = {}


def _device_id() -> int:
    return cupy.cuda.runtime.getDevice()


def _sm_count() -> int:
    dev = _device_id()
    count = _sm_counts.get(dev)
    if count is None:
        count = cupy.cuda.Device(dev).attributes["MultiProcessorCount"]
        _sm_counts[dev] = count
    return count


def _vec_kernel(op: str, tag: str):
    key = (op, tag, _device_id())
    kernel = _vec_kernels.get(key)
    if kernel is None:
        kernel = cupy.RawKernel(ks.vec_source(op, tag), ks.vec_kernel_name(op, tag), options=_NVRTC_OPTIONS)
        _vec_kernels[key] = kernel
    return kernel


def _ew_kernel(op: str, compute: np.dtype):
    # CuPy's ElementwiseKernel compiles and caches one binary per (argument types, device) itself.
    key = (op, compute)
    kernel = _ew_kernels.get(key)
    if kernel is None:
        kernel = cupy.ElementwiseKernel(**ks.ew_kernel_spec(op, compute))
        _ew_kernels[key] = kernel
    return kernel


def _fused_kernel(name: str):
    """One fused kernel (softmax, sparsemax), its own module compiled on first use on this device."""
    key = (_device_id(), name)
    kernel = _fused_kernels.get(key)
    if kernel is None:
        module = cupy.RawModule(code=ks.kernel_source(name), options=_NVRTC_OPTIONS)
        kernel = _fused_kernels[key] = module.get_function(name)
    return kernel


# ---------------------------------------------------------------------------------------------
# Elementwise


def _params4(op, params, compute):
    values = tuple(float(p) for p in params) + (0.0,) * (4 - len(params))
    if len(params) != len(ELEMENTWISE_PARAMS[op]):
        raise TypeError(f"{op} takes {len(ELEMENTWISE_PARAMS[op])} parameters; got {len(params)}")
    return tuple(compute.type(v) for v in values)


def _same_layout_contiguous(x, y) -> bool:
    if x.flags.c_contiguous and y.flags.c_contiguous:
        return True
    return x.flags.f_contiguous and y.flags.f_contiguous


def elementwise(op, x, params, out, dtype, stream=None):
    dtype = np.dtype(dtype)
    compute = _compute_dtype(dtype)
    p = _params4(op, params, compute)
    with _on(x, stream):
        if out is None:
            order = "F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
            y = cupy.empty(x.shape, dtype, order=order)
        else:
            y = out
        n = x.size
        if n == 0:
            return y
        tag = ks.DTYPE_TAG[dtype]
        if (x.dtype == dtype and _same_layout_contiguous(x, y)
                and x.data.ptr % 16 == 0 and y.data.ptr % 16 == 0):
            per = 16 // dtype.itemsize
            nvec = n // per
            threads = ks.EW_THREADS
            blocks = max(1, min(-(-nvec // (threads * ks.EW_UNROLL)), _sm_count() * 8))
            _vec_kernel(op, tag)((blocks,), (threads,), (x, y, np.int64(n), *p))
        else:
            # any strides, in-place or not; int/bool inputs are cast in the kernel
            _ew_kernel(op, compute)(x, *p, y)
        return y


# ---------------------------------------------------------------------------------------------
# Softmax


def softmax(x, axes, out, dtype, *, log, mask=None, stream=None):
    dtype = np.dtype(dtype)
    with _on(x, stream):
        y = cupy.empty(x.shape, dtype) if out is None else out
        if x.size == 0:
            return y
        if x.dtype != dtype or not x.flags.c_contiguous:
            x = cupy.ascontiguousarray(x, dtype=dtype)
        m = None
        if mask is not None:
            m = cupy.ascontiguousarray(mask, dtype=np.uint8) if mask.dtype != np.bool_ else cupy.ascontiguousarray(mask)
        oli = ks.outer_axis_inner(x.shape, axes)
        if oli is None:
            # Tuple axes that are not adjacent: a transposing copy moves them last (the only
            # case that copies; adjacent axes, however many, merge into one in place).
            rest = [a for a in range(x.ndim) if a not in axes]
            perm = rest + list(axes)
            xt = cupy.ascontiguousarray(x.transpose(perm))
            mt = None if m is None else cupy.ascontiguousarray(m.transpose(perm))
            length = math.prod(x.shape[a] for a in axes)
            res = cupy.empty(xt.shape, dtype)
            _launch_softmax(xt, res, mt, (xt.size // length, length, 1), dtype, log)
            y.transpose(perm)[...] = res
            return y
        if y.flags.c_contiguous:
            _launch_softmax(x, y, m, oli, dtype, log)
        else:
            res = cupy.empty(x.shape, dtype)
            _launch_softmax(x, res, m, oli, dtype, log)
            y[...] = res
        return y


def _smem_optin() -> int:
    """The most shared memory (static + dynamic) one block may opt in to on this device."""
    dev = _device_id()
    optin = _smem_optins.get(dev)
    if optin is None:
        rt = cupy.cuda.runtime
        optin = rt.deviceGetAttribute(rt.cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)
        _smem_optins[dev] = optin
    return optin


def _max_blocks() -> int:
    # the grid-stride kernels' cap; the plans fill the GPU with fewer where that is enough
    return _sm_count() * 32


def _launch_softmax(x, y, mask, oli, dtype, log):
    plan = ks.softmax_plan(*oli, ks.DTYPE_TAG[dtype], log=log, sm_count=_sm_count(), max_blocks=_max_blocks(),
                           smem_optin=_smem_optin())
    _run_plan(plan, {"x": x, "y": y, "mask": mask if mask is not None else _NULL})


_NULL = np.uint64(0)  # a null pointer argument (no mask)


def _run_plan(plan, arrays):
    """A fused plan's launches on the current device and stream; ``arrays`` binds the kernels'
    pointer parameters by name. The workspace is allocated here, on the same device and stream."""
    if plan.workspace:
        arrays["ws"] = cupy.empty(plan.workspace, np.uint8)
    for launch in plan.launches:
        kernel = _fused_kernel(launch.name)
        if launch.smem + launch.static_smem > 48 * 1024:
            # without the opt-in a block gets 48 KiB, static and dynamic together
            if kernel.max_dynamic_shared_size_bytes < launch.smem:
                kernel.max_dynamic_shared_size_bytes = launch.smem
        args = tuple(arrays[p] for p in launch.pointers) + launch.ints
        kernel(launch.grid, (launch.block,), args, shared_mem=launch.smem)


# ---------------------------------------------------------------------------------------------
# glu, prelu: CuPy compositions, all on the device; sparsemax: a fused kernel


def glu(x, axis, out, dtype, stream=None):
    dtype = np.dtype(dtype)
    compute = _compute_dtype(dtype)
    with _on(x, stream):
        half = x.shape[axis] // 2
        index_a = [slice(None)] * x.ndim
        index_b = [slice(None)] * x.ndim
        index_a[axis] = slice(0, half)
        index_b[axis] = slice(half, 2 * half)
        a = x[tuple(index_a)].astype(compute, copy=False)
        sig = elementwise("sigmoid", x[tuple(index_b)], (), None, compute)
        y = cupy.empty(a.shape, dtype) if out is None else out
        cupy.multiply(a, sig, out=sig)
        y[...] = sig
        return y


def sparsemax(x, axis, out, dtype, stream=None):
    dtype = np.dtype(dtype)
    with _on(x, stream):
        y = cupy.empty(x.shape, dtype) if out is None else out
        if x.size == 0:
            return y
        if x.dtype != dtype or not x.flags.c_contiguous:
            x = cupy.ascontiguousarray(x, dtype=dtype)
        oli = ks.outer_axis_inner(x.shape, (axis,))
        res = y if y.flags.c_contiguous else cupy.empty(x.shape, dtype)
        plan = ks.sparsemax_plan(*oli, ks.DTYPE_TAG[dtype], sm_count=_sm_count(), max_blocks=_max_blocks(),
                                 smem_optin=_smem_optin())
        _run_plan(plan, {"x": x, "y": res})
        if res is not y:
            y[...] = res
        return y


def prelu(x, alpha, out, dtype, stream=None):
    with _on(x, stream):
        y = cupy.empty(x.shape, dtype) if out is None else out
        return _composite.prelu_into(cupy, x, alpha, y, _compute_dtype(dtype))
