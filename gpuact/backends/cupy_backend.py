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
* Training (``gpuact.backward`` and ``bias=``): the elementwise backward ``dx = dy * f'(x)`` and
  both directions with a fused bias run the same two kinds of kernel as the forward: a
  vectorised ``RawKernel`` reading dy and x with 16-byte loads (and a bias along x's trailing
  axes, its column kept incrementally) where everything is contiguous, aligned and of the
  result's dtype, else an ``ElementwiseKernel`` from the same headers (any strides, dtypes and
  bias broadcasts). softmax / log_softmax (forward with a bias, and backward) and the sparsemax
  backward are the fused kernels of ``kernels/gpuact_softmax*.cu`` and
  ``kernels/gpuact_sparsemax*.cu``, planned like the forward's; glu's and PReLU's backward are
  one ``ElementwiseKernel`` pass each.

Everything launches on the device that holds the input (``with x.device``) and on the current
CuPy stream, or ``stream`` (a ``cupy.cuda.Stream``) when given. Nothing synchronises with the
host: no ``.get()``, ``.item()`` or ``bool(array)`` anywhere on a call's path.
"""

from __future__ import annotations

import contextlib
import math
import threading

import cupy  # only imported once a CuPy array arrives or backend="cupy" is forced
import numpy as np

from gpuact import _kernel_sources as ks
from gpuact._contract.ops import ELEMENTWISE_PARAMS, GATES
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
    (an event), so the input is complete before it is read. The operands of the same call (dy,
    bias, mask, alpha, out) get the same treatment (``_ordered``). Host data (``backend="cupy"``)
    is copied to the current device on the launch stream.
    """
    foreign = producer = None
    if isinstance(x, cupy.ndarray):
        xa = x
    elif _interop.is_cuda_array(x):
        _interop.refuse_grad_tensor(x)
        foreign = x
        xa, producer = _wrapped(x)
    else:
        xa = None
    device = xa.device.id if xa is not None else cupy.cuda.runtime.getDevice()
    ordered: set = set()
    # Streams wrapped and events made with x's device current: an event belongs to the device
    # current when it is created, and recording it on another device's stream fails.
    with cupy.cuda.Device(device):
        if stream is not None:
            launch = _as_stream(stream, device)
        elif _interop.torch_tensor_module(x) is not None:
            torch = _interop.torch_tensor_module(x)
            launch = _external(torch.cuda.current_stream(x.device))
        elif producer is not None:
            launch = _external(_interop.StreamProtocol(producer))
        else:
            launch = None
        if producer is not None:
            _wait_for(producer, launch, ordered)
        if xa is None:
            with _current(launch):
                xa = cupy.asarray(x)
    _call.state = (xa, launch, ordered)
    return xa, launch, foreign


# The call this thread is in: (x as accepted, its launch stream, the producer streams already
# waited for). The operands are taken in after x, dy before the call's scope is entered, so the
# launch stream is looked up here rather than taken from the current stream.
_call = threading.local()


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


def _same_stream(a: int, b: int) -> bool:
    # 0 (CuPy's null stream) is the legacy default stream, which an interface exports as 1
    return (a or 1) == (b or 1)


def _wait_for(producer: int, launch, ordered: set | None = None):
    """Order work on ``launch`` (None: the current stream) after what is queued on ``producer``:
    an event, no host synchronization. Called with the launch's device current; ``ordered``
    holds the producers this call has waited for already."""
    target = launch if launch is not None else cupy.cuda.get_current_stream()
    if _same_stream(producer, target.ptr):
        return
    key = (cupy.cuda.runtime.getDevice(), producer, target.ptr)
    if ordered is not None:
        if key in ordered:
            return
        ordered.add(key)
    event = cupy.cuda.Event(block=False, disable_timing=True, interprocess=False)
    event.record(_external(_interop.StreamProtocol(producer)))
    target.wait_event(event)


def _ordered(a, x=None):
    """A foreign CUDA array operand (dy, bias, mask, alpha, out) as a cupy array, zero-copy, with
    the call's launch stream ordered after the stream its interface names (as for x, ``accept``).
    ``x``: the call's accepted input when the call's scope may not be entered yet (dy); without
    it, the current device and stream are the call's."""
    a, producer = _wrapped(a)
    if producer is not None:
        state = getattr(_call, "state", None)
        launch, ordered = None, None
        if state is not None and (x is None or state[0] is x):
            launch, ordered = state[1], state[2]
        device = x.device.id if x is not None else cupy.cuda.runtime.getDevice()
        with cupy.cuda.Device(device):
            _wait_for(producer, launch, ordered)
    return a


def _wrapped(a):
    """``(a foreign CUDA array as a cupy array, zero-copy; the stream its interface names)``: a
    PyTorch bfloat16 tensor through its bits, viewed as ``ml_dtypes.bfloat16``."""
    bits = _interop.bfloat16_bits(a)
    view, producer = _interop.split_stream(a if bits is None else bits)
    wrapped = cupy.asarray(view)
    if bits is not None:
        bfloat16 = ks.TAG_DTYPE.get("bf16")
        if bfloat16 is None:
            raise TypeError("a bfloat16 tensor on the CuPy backend needs ml_dtypes (pip install ml_dtypes)")
        wrapped = wrapped.view(bfloat16)
    return wrapped, producer


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
        # the producer's pending reads and writes of out come before this call writes it
        out = _ordered(out, x)
    if out.device.id != x.device.id:
        raise ValueError(f"out is on device {out.device.id}; the input is on device {x.device.id}")
    return out


def accept_operand(a, x, foreign: bool, name: str):
    """An array argument beside x (dy, bias): a CuPy array (or, for a foreign x, any CUDA array)
    on x's device; host data is refused (it is not of x's kind)."""
    if not isinstance(a, cupy.ndarray):
        if not (foreign and _interop.is_cuda_array(a)):
            raise TypeError(
                f"{name} must be a {type(x).__module__}.{type(x).__name__} like x; "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
        _interop.refuse_grad_tensor(a)
        a = _ordered(a, x)
    if a.device.id != x.device.id:
        raise ValueError(f"{name} is on device {a.device.id}; x is on device {x.device.id}")
    return a


def overlap(a, b) -> int:
    """0: no shared memory, 1: the same view, 2: partly shared (``gpuact._contract.checks.OVERLAP_*``)."""
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
    """A device array argument as a cupy array (a foreign one ordered after its producer stream),
    refused when it lives on another device. Called inside the call's scope."""
    if not isinstance(a, cupy.ndarray):
        a = _ordered(a)
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


def _vec_kernel(op: str, tag: str, inplace: bool = False):
    """The vector kernel of ``op``; ``inplace``: its variant without read-only loads, for y is x."""
    key = (op, tag, _device_id()) + (("inplace",) if inplace else ())
    kernel = _vec_kernels.get(key)
    if kernel is None:
        kernel = cupy.RawKernel(
            ks.vec_source(op, tag, inplace), ks.vec_kernel_name(op, tag, inplace), options=_NVRTC_OPTIONS
        )
        _vec_kernels[key] = kernel
    return kernel


def _ew_kernel(op: str, compute: np.dtype, kind: str | None = None):
    """The ElementwiseKernel of an op's forward (``kind`` None) or of a training kind
    (``ks.VEC_TRAINING_KINDS``); with kind "special", ``op`` "prelu_grad" or "<gate>_grad", a gated
    unit's backward (``ks.glu_grad_spec``)."""
    # CuPy's ElementwiseKernel compiles and caches one binary per (argument types, device) itself.
    key = (op, compute, kind)
    kernel = _ew_kernels.get(key)
    if kernel is None:
        if kind is None:
            spec = ks.ew_kernel_spec(op, compute)
        elif kind == "special":
            spec = ks.prelu_grad_spec(compute) if op == "prelu_grad" else ks.glu_grad_spec(compute, op[: -len("_grad")])
        else:
            spec = ks.ew_training_spec(kind, op, compute)
        kernel = _ew_kernels[key] = cupy.ElementwiseKernel(**spec)
    return kernel


def _vec_training_kernel(kind: str, op: str, tag: str, btag: str | None, inplace: bool = False):
    key = (kind, op, tag, btag, _device_id(), inplace)
    kernel = _vec_kernels.get(key)
    if kernel is None:
        name = ks.vec_training_name(kind, op, tag, btag, inplace)
        kernel = cupy.RawKernel(ks.vec_training_source(kind, op, tag, btag, inplace), name, options=_NVRTC_OPTIONS)
        _vec_kernels[key] = kernel
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


def _ptr(a) -> int:
    return a.data.ptr


def _writes_an_input(out, *inputs) -> bool:
    """Whether the vector kernels' output is one of their inputs: the core hands a backend an
    ``out`` that is an input's very view or shares no memory with it, so the start decides."""
    return any(_ptr(out) == _ptr(a) for a in inputs)


def _aligned(*arrays) -> bool:
    """Every array starts on 16 bytes (the contiguous kernels' vector loads and stores)."""
    return all(_ptr(a) % 16 == 0 for a in arrays)


def _new_like(x, dtype):
    """The result array for ``x``: F order for an F-only-contiguous x (so the contiguous kernels
    still apply), else C order."""
    order = "F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C"
    return cupy.empty(x.shape, dtype, order=order)


def _trailing_bias(b, x, tag: str):
    """``(b, its dtype tag, units)`` when the contiguous kernels can read ``b``: C-contiguous, of a
    dtype they take for ``tag`` data, and along x's trailing axes (leading 1s dropped, the rest
    x's last axes), so that element e of a C-contiguous x takes b's flat element e % b.size.
    Else None: the ElementwiseKernel broadcasts it."""
    btag = ks.DTYPE_TAG.get(np.dtype(b.dtype))
    if btag not in ks.bias_tags(tag) or not b.flags.c_contiguous:
        return None
    core = tuple(b.shape)
    while core and core[0] == 1:
        core = core[1:]
    if len(core) > x.ndim or tuple(x.shape[x.ndim - len(core) :]) != core:
        return None
    return b, btag, max(1, b.size)


_fast_params: dict = {}


def elementwise_fast(op, x, params):
    """``op(x)`` for the common call (``gpuact._entry``'s fast path: a ``cupy.ndarray`` and no
    ``out``, ``bias``, ``backend`` or ``stream``): when ``x`` is a C-contiguous, 16-byte aligned
    float array on the current device, the vector kernel on CuPy's current stream with nothing else
    to resolve; else None, and the caller takes the general path."""
    tag = ks.DTYPE_TAG.get(x.dtype)
    if tag is None or not x.flags.c_contiguous:
        return None
    memory = x.data
    device = cupy.cuda.runtime.getDevice()
    n = x.size
    if memory.device_id != device or memory.ptr % 16 or n == 0:
        return None
    key = (op, tag, params)
    p = _fast_params.get(key)
    if p is None:
        if len(_fast_params) > 1024:  # parameters a program sweeps: keep the memo small
            _fast_params.clear()
        p = _fast_params[key] = _params4(op, params, ks.COMPUTE_DTYPE[tag])
    kernel = _vec_kernels.get((op, tag, device)) or _vec_kernel(op, tag)
    launch = ks.vec_launch(n, tag, _sm_count())
    y = cupy.empty(x.shape, x.dtype)
    kernel((launch.blocks,), (ks.EW_THREADS,), (x, y, *launch.ints, *p))
    return y


def elementwise(op, x, params, out, dtype, stream=None, bias=None):
    """``y = op(x)``, or ``op(x + bias)`` with a bias added in the kernel (``bias``: a cupy array
    broadcastable to x, any real dtype)."""
    dtype = np.dtype(dtype)
    compute = _compute_dtype(dtype)
    p = _params4(op, params, compute)
    with _on(x, stream):
        y = _new_like(x, dtype) if out is None else out
        n = x.size
        if n == 0:
            return y
        tag = ks.DTYPE_TAG[dtype]
        if bias is None:
            if x.dtype == dtype and _same_layout_contiguous(x, y) and _aligned(x, y):
                launch = ks.vec_launch(n, tag, _sm_count())
                kernel = _vec_kernel(op, tag, _writes_an_input(y, x))
                kernel((launch.blocks,), (ks.EW_THREADS,), (x, y, *launch.ints, *p))
            else:
                # any strides, in-place or not; int/bool inputs are cast in the kernel
                _ew_kernel(op, compute)(x, *p, y)
            return y
        trailing = _trailing_bias(bias, x, tag)
        if (
            trailing is not None
            and x.dtype == dtype
            and x.flags.c_contiguous
            and y.flags.c_contiguous
            and _aligned(x, y)
        ):
            b, btag, units = trailing
            launch = ks.vec_launch(n, tag, _sm_count(), units)
            kernel = _vec_training_kernel("bias", op, tag, btag, _writes_an_input(y, x))
            kernel((launch.blocks,), (ks.EW_THREADS,), (x, b, y, *launch.ints, *p))
        else:
            _ew_kernel(op, compute, "bias")(x, bias, *p, y)
        return y


def elementwise_grad(op, dy, x, params, out, dtype, stream=None, bias=None):
    """``dx = dy * op'(x)`` (``op'(x + bias)`` with a bias) in one pass reading dy and x once: the
    vectorised kernel where dy, x and dx are contiguous alike, aligned and of the result's dtype
    (and a bias along x's trailing axes), else the ElementwiseKernel. ``out`` may be dy or x."""
    dtype = np.dtype(dtype)
    compute = _compute_dtype(dtype)
    p = _params4(op, params, compute)
    with _on(x, stream):
        dx = _new_like(x, dtype) if out is None else out
        n = x.size
        if n == 0:
            return dx
        tag = ks.DTYPE_TAG[dtype]
        same = x.dtype == dtype and dy.dtype == dtype and _aligned(dy, x, dx)
        if bias is None:
            if same and _same_layout_contiguous(x, dx) and _same_layout_contiguous(dy, dx):
                launch = ks.vec_launch(n, tag, _sm_count())
                kernel = _vec_training_kernel("grad", op, tag, None, _writes_an_input(dx, dy, x))
                kernel((launch.blocks,), (ks.EW_THREADS,), (dy, x, dx, *launch.ints, *p))
            else:
                _ew_kernel(op, compute, "grad")(dy, x, *p, dx)
            return dx
        trailing = _trailing_bias(bias, x, tag)
        if trailing is not None and same and x.flags.c_contiguous and dy.flags.c_contiguous and dx.flags.c_contiguous:
            b, btag, units = trailing
            launch = ks.vec_launch(n, tag, _sm_count(), units)
            kernel = _vec_training_kernel("grad_bias", op, tag, btag, _writes_an_input(dx, dy, x))
            kernel((launch.blocks,), (ks.EW_THREADS,), (dy, x, b, dx, *launch.ints, *p))
        else:
            _ew_kernel(op, compute, "grad_bias")(dy, x, bias, *p, dx)
        return dx


# ---------------------------------------------------------------------------------------------
# Softmax


def softmax(x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    dtype = np.dtype(dtype)
    with _on(x, stream):
        y = cupy.empty(x.shape, dtype) if out is None else out
        if x.size:
            _softmax_family(None, x, axes, y, dtype, log, mask, bias)
        return y


def softmax_grad(dy, x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """The softmax / log_softmax backward: the fused kernels recompute the forward of x (+ bias,
    mask) and read dy in the same pass; ``out`` may be dy or x."""
    dtype = np.dtype(dtype)
    with _on(x, stream):
        dx = cupy.empty(x.shape, dtype) if out is None else out
        if x.size:
            _softmax_family(dy, x, axes, dx, dtype, log, mask, bias)
        return dx


def _contiguous(a, dtype):
    return a if a.dtype == dtype and a.flags.c_contiguous else cupy.ascontiguousarray(a, dtype=dtype)


def _bias_operand(b, dtype):
    """``(bias, mode)`` for the softmax kernels (BiasView): stored as the data's dtype (mode 1) or as
    the compute type (mode 2: a float32 bias on float16 data); any other dtype is converted to the
    compute type (a copy of the bias itself, never of x's size)."""
    if b.dtype == dtype:
        return b, 1
    compute = _compute_dtype(dtype)
    if b.dtype != compute:
        b = b.astype(compute)
    return b, 1 if compute == dtype else 2


def _bias_view(bias, mode, shape, lo, hi):
    """``(array, BiasPlan)`` of a bias view already broadcast to ``shape`` (the kernels' x), reduced
    along the axes ``lo..hi``. Where its broadcast is beyond what the kernels walk (see
    ``ks.bias_plan``) it is materialised at x's shape first: a copy of x's size, the bias alone."""
    item = bias.itemsize
    plan = ks.bias_plan(tuple(shape), tuple(st // item for st in bias.strides), lo, hi, mode)
    if plan is None:
        bias = cupy.ascontiguousarray(bias)
        plan = ks.bias_plan(tuple(shape), tuple(st // item for st in bias.strides), lo, hi, mode)
    return bias, plan


def _softmax_family(dy, x, axes, y, dtype, log, mask, bias):
    """softmax (dy None) or its backward along ``axes`` into ``y`` (x's shape, any layout)."""
    x = _contiguous(x, dtype)
    if dy is not None:
        dy = _contiguous(dy, dtype)
    m = None
    if mask is not None:
        m = cupy.ascontiguousarray(mask, dtype=np.uint8) if mask.dtype != np.bool_ else cupy.ascontiguousarray(mask)
    b = mode = None
    if bias is not None:
        b, mode = _bias_operand(bias, dtype)
        b = cupy.broadcast_to(b, x.shape)
    oli = ks.outer_axis_inner(x.shape, axes)
    if oli is None:
        # Tuple axes that are not adjacent: a transposing copy moves them last (the only case
        # that copies; adjacent axes, however many, merge into one in place). The bias is a
        # transposed view.
        rest = [a for a in range(x.ndim) if a not in axes]
        perm = rest + list(axes)
        xt = cupy.ascontiguousarray(x.transpose(perm))
        dyt = None if dy is None else cupy.ascontiguousarray(dy.transpose(perm))
        mt = None if m is None else cupy.ascontiguousarray(m.transpose(perm))
        bt = None if b is None else b.transpose(perm)
        length = math.prod(x.shape[a] for a in axes)
        res = cupy.empty(xt.shape, dtype)
        _launch_softmax(dyt, xt, res, mt, bt, mode, (len(rest), x.ndim - 1), (xt.size // length, length, 1), dtype, log)
        y.transpose(perm)[...] = res
        return
    res = y if y.flags.c_contiguous else cupy.empty(x.shape, dtype)
    _launch_softmax(dy, x, res, m, b, mode, (axes[0], axes[-1]), oli, dtype, log)
    if res is not y:
        y[...] = res


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


def _launch_softmax(dy, x, y, mask, bias, mode, reduced, oli, dtype, log):
    """The forward (dy None) or backward plan on C-contiguous x (and dy), y the result (dx);
    ``reduced``: the first and last reduced axes of x, for the bias view."""
    plan_bias = None
    if bias is not None:
        bias, plan_bias = _bias_view(bias, mode, x.shape, *reduced)
    planner = ks.softmax_plan if dy is None else ks.softmax_grad_plan
    plan = planner(
        *oli,
        ks.DTYPE_TAG[dtype],
        log=log,
        sm_count=_sm_count(),
        max_blocks=_max_blocks(),
        smem_optin=_smem_optin(),
        bias=plan_bias,
    )
    arrays = {"x": x, "mask": _NULL if mask is None else mask, "bias": _NULL if bias is None else bias}
    arrays.update({"y": y} if dy is None else {"dy": dy, "dx": y})
    _run_plan(plan, arrays)


_NULL = np.uint64(0)  # a null pointer argument (no mask, no bias)


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


def glu(x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit (``gate``): ``op(g) * v`` for the gate half ``g`` of ``x`` and the other ``v``,
    the op's kernel on the gate's view, then one multiply."""
    unit = GATES[gate]
    with _on(x, stream):
        halves = _halves(x, axis)
        return _gated_into(unit, halves[unit.gate_half], halves[1 - unit.gate_half], out, dtype)


def gated(x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form: ``op(x) * b`` for the gate's op."""
    with _on(x, stream):
        return _gated_into(GATES[gate], x, b, out, dtype)


def _gated_into(unit, g, v, out, dtype):
    dtype = np.dtype(dtype)
    compute = _compute_dtype(dtype)
    activated = elementwise(unit.op, g, unit.params, None, compute)
    y = cupy.empty(g.shape, dtype) if out is None else out
    cupy.multiply(v.astype(compute, copy=False), activated, out=activated)
    y[...] = activated
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
        plan = ks.sparsemax_plan(
            *oli, ks.DTYPE_TAG[dtype], sm_count=_sm_count(), max_blocks=_max_blocks(), smem_optin=_smem_optin()
        )
        _run_plan(plan, {"x": x, "y": res})
        if res is not y:
            y[...] = res
        return y


def prelu(x, alpha, out, dtype, stream=None):
    with _on(x, stream):
        y = cupy.empty(x.shape, dtype) if out is None else out
        return _composite.prelu_into(cupy, x, alpha, y, _compute_dtype(dtype))


# ---------------------------------------------------------------------------------------------
# The backward of the axis ops: fused kernels (sparsemax) and one ElementwiseKernel pass each


def sparsemax_grad(dy, x, axis, out, dtype, stream=None):
    """``dx = s (dy - mean of dy over the support)``: the fused kernel recomputes tau as the forward
    does; ``out`` may be dy or x."""
    dtype = np.dtype(dtype)
    with _on(x, stream):
        dx = cupy.empty(x.shape, dtype) if out is None else out
        if x.size == 0:
            return dx
        x, dy = _contiguous(x, dtype), _contiguous(dy, dtype)
        oli = ks.outer_axis_inner(x.shape, (axis,))
        res = dx if dx.flags.c_contiguous else cupy.empty(x.shape, dtype)
        plan = ks.sparsemax_grad_plan(
            *oli, ks.DTYPE_TAG[dtype], sm_count=_sm_count(), max_blocks=_max_blocks(), smem_optin=_smem_optin()
        )
        _run_plan(plan, {"dy": dy, "x": x, "dx": res})
        if res is not dx:
            dx[...] = res
        return dx


def _halves(a, axis):
    half = a.shape[axis] // 2
    first = (slice(None),) * axis + (slice(0, half),)
    second = (slice(None),) * axis + (slice(half, 2 * half),)
    return a[first], a[second]


def glu_grad(dy, x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit's backward, both halves in one pass over views of x and dx (no copies): for
    ``y = op(g) * v``, ``dg = dy v op'(g)`` and ``dv = dy op(g)``."""
    unit = GATES[gate]
    with _on(x, stream):
        dx = cupy.empty(x.shape, dtype) if out is None else out
        if dx.size:
            halves, dhalves = _halves(x, axis), _halves(dx, axis)
            first, second = unit.gate_half, 1 - unit.gate_half
            _gated_grad_into(gate, dy, halves[first], halves[second], dhalves[first], dhalves[second], dtype)
        return dx


def gated_grad(dy, x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form's backward: ``(da, db) = (dy b op'(a), dy op(a))`` in one pass."""
    with _on(x, stream):
        da, db = (cupy.empty(x.shape, dtype), cupy.empty(x.shape, dtype)) if out is None else out
        if da.size:
            _gated_grad_into(gate, dy, x, b, da, db, dtype)
        return da, db


def _gated_grad_into(gate, dy, g, v, dg, dv, dtype):
    compute = _compute_dtype(np.dtype(dtype))
    unit = GATES[gate]
    _ew_kernel(f"{gate}_grad", compute, "special")(v, g, dy, *_params4(unit.op, unit.params, compute), dv, dg)


def prelu_grad(dy, x, alpha, out, dtype, stream=None):
    """``dx = dy`` where x > 0, ``dy * alpha`` elsewhere (the left derivative at 0), NaN kept: one
    pass, ``alpha`` a broadcast view."""
    dtype = np.dtype(dtype)
    with _on(x, stream):
        dx = cupy.empty(x.shape, dtype) if out is None else out
        if dx.size == 0:
            return dx
        _ew_kernel("prelu_grad", _compute_dtype(dtype), "special")(dy, x, alpha, dx)
        return dx
