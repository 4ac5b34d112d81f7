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
from gpuact.backends import _composite, _interop

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


def accept(x, stream):
    """``(x as a cupy.ndarray, the launch stream, the foreign original or None)``.

    The launch stream is ``stream`` when given (any library's stream), else for a PyTorch tensor
    PyTorch's current stream on the tensor's device (torch exports no stream in its
    ``__cuda_array_interface__``, and its side streams do not synchronize with CuPy's), else for a
    foreign array whose interface names its stream that stream, else None: CuPy's current stream.
    A foreign array is wrapped zero-copy and without the host synchronization CuPy would do on an
    interface's stream; when the launch runs on another stream, that stream waits for the producer's
    (an event), so the input is complete before it is read. Host data (``backend="cupy"``) is
    copied to the current device on the launch stream.
    """
    foreign = producer = None
    if isinstance(x, cupy.ndarray):
        xa = x
    elif _interop.is_cuda_array(x):
        _interop.refuse_grad_tensor(x)
        foreign = x
        view, producer = _interop.split_stream(x)
        xa = cupy.asarray(view)
    else:
        xa = None
    device = xa.device.id if xa is not None else cupy.cuda.runtime.getDevice()
    if stream is not None:
        launch = _as_stream(stream, device)
    elif _interop.torch_tensor_module(x) is not None:
        torch = _interop.torch_tensor_module(x)
        launch = _external(torch.cuda.current_stream(x.device))
    elif producer is not None:
        launch = _external(_interop.StreamProtocol(producer))
    else:
        launch = None
    if producer is not None and (launch is None or launch.ptr != producer):
        with cupy.cuda.Device(device):
            _wait_for(producer, launch)
    if xa is None:
        with cupy.cuda.Device(device), _current(launch):
            xa = cupy.asarray(x)
    return xa, launch, foreign


def _external(obj):
    """A CuPy stream for any object with ``__cuda_stream__`` (kept alive by the CuPy stream)."""
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None:  # CuPy >= 14
        return from_external(obj)
    return cupy.cuda.ExternalStream(_interop.stream_handle(obj))  # pragma: no cover - CuPy 13


def _as_stream(stream, device: int):
    """``stream=`` as a CuPy stream, refused (before any work) when it belongs to another device."""
    if isinstance(stream, cupy.cuda.Stream) or isinstance(stream, getattr(cupy.cuda, "ExternalStream", ())):
        stream_device = stream.device_id  # type: ignore[union-attr]  # cupy is Any to mypy
    else:
        handle = _interop.stream_handle(stream)  # TypeError for what is not a stream
        stream_device = _interop.torch_stream_device(stream)
        protocol = stream if hasattr(stream, "__cuda_stream__") else _interop.StreamProtocol(handle, stream)
        stream = _external(protocol)
    if stream_device is not None and stream_device >= 0 and stream_device != device:
        raise ValueError(f"stream belongs to device {stream_device}; the input is on device {device}")
    return stream


def _wait_for(producer: int, launch):
    """Order work on ``launch`` (None: the current stream) after what is queued on ``producer``."""
    event = cupy.cuda.Event(block=False, disable_timing=True, interprocess=False)
    event.record(_external(_interop.StreamProtocol(producer)))
    (launch if launch is not None else cupy.cuda.get_current_stream()).wait_event(event)


def _current(stream):
    return stream if stream is not None else contextlib.nullcontext()


def scope(x, stream):
    """The device holding ``x`` and the launch stream, current for the rest of the call."""
    return _on(x, stream)


def accept_out(out, x, foreign: bool):
    if not isinstance(out, cupy.ndarray):
        if not (foreign and _interop.is_cuda_array(out)):
            raise TypeError(
                f"out must be an array of the same kind as the input "
                f"({type(x).__module__}.{type(x).__name__}); got {type(out).__name__}"
            )
        _interop.refuse_grad_tensor(out)
        out = cupy.asarray(_interop.split_stream(out)[0])
    if out.device.id != x.device.id:
        raise ValueError(f"out is on device {out.device.id}; the input is on device {x.device.id}")
    return out


def accept_operand(a, x, foreign: bool, name: str):
    """An array argument beside x (dy, bias): a CuPy array (or, for a foreign x, any CUDA array)
    on x's device; host data is refused (it is not of x's kind)."""
    if not isinstance(a, cupy.ndarray):
        if not (foreign and _interop.is_cuda_array(a)):
            raise TypeError(f"{name} must be a {type(x).__module__}.{type(x).__name__} like x; "
                            f"got {type(a).__module__}.{type(a).__name__}")
        _interop.refuse_grad_tensor(a)
        a = cupy.asarray(_interop.split_stream(a)[0])
    if a.device.id != x.device.id:
        raise ValueError(f"{name} is on device {a.device.id}; x is on device {x.device.id}")
    return a


def overlap(a, b) -> int:
    """0: no shared memory, 1: the same view, 2: partly shared (see ``gpuact._dispatch``)."""
    ea = _interop.extent(a.data.ptr, a.shape, a.strides, a.itemsize)
    eb = _interop.extent(b.data.ptr, b.shape, b.strides, b.itemsize)
    if not _interop.ranges_overlap(ea, eb):
        return 0
    same = a.data.ptr == b.data.ptr and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
    return 1 if same else 2


def copy(a, stream=None):
    return a.copy()


def as_mask(mask, shape, stream=None):
    """The mask (host or device) as a boolean device array broadcast to ``shape``; called inside
    the call's scope, so it is made on the input's device and the launch stream."""
    if isinstance(mask, cupy.ndarray) or _interop.is_cuda_array(mask):
        mask = _on_this_device(mask, "mask")
    else:
        mask = cupy.asarray(np.asarray(mask))
    if mask.dtype != np.bool_:
        mask = mask > 0.5
    return cupy.broadcast_to(mask, shape)


def as_param_array(alpha, shape, dtype, stream=None):
    compute = _compute_dtype(dtype)
    if isinstance(alpha, cupy.ndarray) or _interop.is_cuda_array(alpha):
        alpha = _on_this_device(alpha, "alpha").astype(compute, copy=False)
    else:
        alpha = cupy.asarray(np.asarray(alpha, dtype=compute))
    return cupy.broadcast_to(alpha, shape)


def _on_this_device(a, name: str):
    """A device array argument as a cupy array, refused when it lives on another device."""
    if not isinstance(a, cupy.ndarray):
        a = cupy.asarray(_interop.split_stream(a)[0])
    device = cupy.cuda.runtime.getDevice()
    if a.device.id != device:
        raise ValueError(f"{name} is on device {a.device.id}; the input is on device {device}")
    return a


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
