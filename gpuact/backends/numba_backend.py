"""The Numba path (issue 4): Numba CUDA kernels on Numba device arrays.

Imported only when a Numba device array arrives or ``backend="numba"`` is forced (see
``gpuact.backends.load_backend``). Kernels come from ``gpuact.backends._numba.kernels``; each is compiled on
first use for one (kernel, input dtype, output dtype, rank) with an explicit signature, so a call
never re-dispatches on types, and its launch configuration ``kernel[grid, block, stream]`` is
cached. Parameters are kernel arguments: a new value never recompiles.

Arrays: Numba device arrays are used as they are; any other object with
``__cuda_array_interface__`` (CuPy, PyTorch, ...) zero-copy through ``numba.cuda.as_cuda_array``;
host arrays are copied to the device. Work runs on ``stream`` (default: the
default stream); nothing synchronises the host.

Training: ``bias=`` on the elementwise ops and softmax is added inside the kernels (never as a
temporary ``x + bias``), and every op has its backward (``elementwise_grad``, ``softmax_grad``,
``sparsemax_grad``, ``glu_grad``, ``prelu_grad``), each a fused kernel that reads dy and x once
per pass and recomputes what it needs of the forward.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run as Python; device
arrays are the simulator's ``FakeCUDAArray`` and a ``__cuda_array_interface__`` pointer is host
memory, which ``asarray`` wraps the same way.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np
from numba import cuda

from gpuact._contract import checks
from gpuact._contract.ops import GATES
from gpuact.backends import _interop
from gpuact.backends._numba import kernels as K
from gpuact.backends._numba import plan as P
from gpuact.backends._numba import pool as _pool
from gpuact.backends._numba import storage
from gpuact.backends._numba.scalar import SIMULATOR, host_params

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _DeviceArray

    _NUMBA_STREAM_TYPES = (cuda.stream,)
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceArray
    from numba.cuda.cudadrv.driver import Stream as _Stream

    _NUMBA_STREAM_TYPES = (_Stream,)

# Launch shape. Elementwise: 256 threads, at most BLOCKS_PER_SM blocks per SM, grid-stride loop.
# Softmax and sparsemax: blocks of P.BLOCK threads, planned by gpuact.backends._numba.plan.
THREADS = 256 if not SIMULATOR else 32
BLOCKS_PER_SM = 8
# The simulator runs a Python thread per GPU thread: keep grids small there (blocks of THREADS,
# also for the reductions). Two "SMs" make the plans split long softmax rows at simulator sizes.
_SIM_MAX_BLOCKS = 4
_SIM_SM_COUNT = 2
_LAUNCH_CACHE_MAX = 4096


def unavailable_reason():
    if SIMULATOR:
        return None
    try:
        if not cuda.is_available():
            return "Numba sees no usable CUDA device"
    except Exception as exc:  # pragma: no cover - broken driver installs
        return f"Numba cannot use CUDA: {exc}"
    return None


def owns(x) -> bool:
    return isinstance(x, _DeviceArray)


def _has_cai(x) -> bool:
    return _interop.is_cuda_array(x)


class _HostInterface:
    """Under the simulator a CUDA array interface points at host memory: wrap it for NumPy."""

    def __init__(self, owner, cai):
        self._owner = owner
        self.__array_interface__ = {
            "shape": tuple(cai["shape"]),
            "typestr": cai["typestr"],
            "data": cai["data"],
            "strides": cai.get("strides"),
            "version": 3,
        }


def _interface_source(x):
    """What exports ``x``'s ``__cuda_array_interface__``: a PyTorch bfloat16 tensor's int16 bits
    (PyTorch's own interface refuses bfloat16), else ``x``."""
    bits = _interop.bfloat16_bits(x)
    return x if bits is None else bits


def _wrap(x):
    """A zero-copy device array for a CUDA array (its interface's stream dropped: see ``accept``),
    made in the context of the device that holds its memory (``as_cuda_array`` takes the current
    one, which for another device's memory would give the array the wrong device). A PyTorch
    bfloat16 tensor comes through its bits, viewed as ``ml_dtypes.bfloat16``."""
    if owns(x):
        return x
    source = _interface_source(x)
    view, _ = _interop.split_stream(source)
    if SIMULATOR:
        wrapped = _DeviceArray(np.asarray(_HostInterface(view, view.__cuda_array_interface__)))
    else:
        with _device_scope(_pointer_device(view.__cuda_array_interface__["data"][0])):
            wrapped = cuda.as_cuda_array(view, sync=False)
    return wrapped if source is x else wrapped.view(_bfloat16())


def _bfloat16():
    import ml_dtypes  # a PyTorch bfloat16 tensor on this path: the foreign wrapper checked for it

    return np.dtype(ml_dtypes.bfloat16)


def _pointer_device(ptr: int) -> int | None:
    """The device whose memory ``ptr`` is (None: unknown, or a null pointer)."""
    if SIMULATOR or not ptr:
        return None
    try:
        from numba.cuda.cudadrv import driver as drv

        attribute = drv.binding.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
        return int(drv.driver.cuPointerGetAttribute(attribute, drv.binding.CUdeviceptr(ptr)))
    except Exception:  # pragma: no cover - other numba-cuda bindings: the current device stands
        return None


def _device_scope(device: int | None):
    """``device`` current (Numba works in the current context), or nothing to do."""
    if SIMULATOR or device is None or device == cuda.get_current_device().id:
        return contextlib.nullcontext()
    return cuda.gpus[device]


def accept(x, stream):
    """``(x as a Numba device array, the launch stream, the foreign original or None)``.

    The launch stream is ``stream`` when given (any library's stream), else for a PyTorch tensor
    PyTorch's current stream on its device, else the stream of ``x`` itself: a Numba device array's
    own ``stream`` (Numba's rule for operations on an array), or the stream a foreign array's
    ``__cuda_array_interface__`` names; else the default stream. Foreign arrays are wrapped
    zero-copy without synchronizing the host (``as_cuda_array(sync=False)``): when the launch runs
    on another stream than the producer's, it waits for it through an event instead; the call's
    other operands (dy, bias, mask, alpha, out) likewise (``_ordered``). Host data
    (``backend="numba"``) is copied to the device on the launch stream.
    """
    foreign = producer = handle = None
    if owns(x):
        xa = x
        producer = x.stream or None
    elif SIMULATOR and getattr(x, "__cuda_ndarray__", False) and hasattr(x, "_ary"):
        xa = _DeviceArray(x._ary)
    elif _has_cai(x):
        _interop.refuse_grad_tensor(x)
        foreign = x
        xa = _wrap(x)
        handle = _interop.split_stream(_interface_source(x))[1]
    else:
        xa = None
    ordered: set = set()
    # A stream wrapped from a handle, and an event, belong to the context current when they are
    # made (cuda.external_stream, cuda.event): make them on x's device, before scope() does.
    with _device_scope(None if xa is None else _device_id(xa)):
        if handle is not None:
            producer = _external_stream(handle)
        if stream is not None:
            launch = _as_stream(stream)
        elif _interop.torch_tensor_module(x) is not None:
            torch = _interop.torch_tensor_module(x)
            launch = _external_stream(torch.cuda.current_stream(x.device).cuda_stream)
        else:
            launch = producer or 0
        if producer is not None:
            _wait(producer, launch, ordered)
        if xa is None:
            host = np.asarray(x)
            if host.dtype == object:
                raise TypeError("gpuact activations take real numbers; got an array of dtype object")
            xa = _pool.to_device(_c_order(host), launch)
    _call.state = (xa, launch, ordered)
    return xa, launch, foreign


# The call this thread is in: (x as accepted, its launch stream, the producers already waited
# for). dy is taken in before the call's scope is entered, and Numba has no current stream.
_call = threading.local()


def _event():
    """This thread's event on the current device, reused by every wait: a wait takes the event's
    last record at the time it is queued, and a per-call event would add its destruction to
    Numba's deallocation queue, whose flush may free memory and so synchronize the device."""
    events = getattr(_call, "events", None)
    if events is None:
        events = _call.events = {}
    device = 0 if SIMULATOR else cuda.get_current_device().id
    event = events.get(device)
    if event is None:
        # (the simulator's event takes no arguments)
        event = events[device] = cuda.event() if SIMULATOR else cuda.event(timing=False)
    return event


def _wait(producer, launch, ordered: set | None = None) -> None:
    """``launch`` ordered after the work queued on ``producer`` (Numba streams, 0 the default
    stream): an event, no host synchronization. Called with the launch's device current."""
    if producer is launch or not producer:
        return
    key = (id(producer), id(launch))
    if ordered is not None:
        if key in ordered:
            return
        ordered.add(key)
    event = _event()
    event.record(producer)
    event.wait(launch)


def _ordered(a, x=None):
    """An array operand beside x (dy, bias, mask, alpha, out) as a Numba device array, with the
    call's launch stream ordered after the stream that produced it: the one its
    ``__cuda_array_interface__`` names (a foreign array), or a Numba array's own stream (as for x,
    ``accept``). ``x``: the call's accepted input, for an operand taken in before the call's scope
    (dy); without it the call's device is current."""
    handle = None
    if owns(a):
        array = a
    else:
        handle = _interop.split_stream(_interface_source(a))[1]
        array = _wrap(a)
    state = getattr(_call, "state", None)
    if state is None or (x is not None and state[0] is not x):
        return array
    with _device_scope(None if x is None else _device_id(x)):
        producer = (a.stream or None) if owns(a) else None if handle is None else _external_stream(handle)
        if producer is not None:
            _wait(producer, state[1], state[2])
    return array


# Numba wrappers of foreign streams, by handle: the same stream gets the same object (so launch
# configurations cached per stream are reused), and a wrapper does not own its stream.
_external_streams: OrderedDict = OrderedDict()
_EXTERNAL_STREAMS_MAX = 64


def _external_stream(handle: int):
    stream = _external_streams.get(handle)
    if stream is None:
        # the simulator cannot wrap a real handle; any stream object stands for it there
        stream = cuda.stream() if SIMULATOR else cuda.external_stream(handle)
        _external_streams[handle] = stream
        if len(_external_streams) > _EXTERNAL_STREAMS_MAX:
            _external_streams.popitem(last=False)
    else:
        _external_streams.move_to_end(handle)
    return stream


def _as_stream(stream):
    """``stream=`` as a Numba stream: Numba's own as they are, any other library's by its handle."""
    if isinstance(stream, _NUMBA_STREAM_TYPES):
        return stream
    return _external_stream(_interop.stream_handle(stream))


def _device_id(a) -> int:
    if SIMULATOR:
        return 0
    context = getattr(getattr(a, "gpu_data", None), "context", None)
    return context.device.id if context is not None else cuda.get_current_device().id


def scope(x, stream):
    """The device holding ``x`` current for the call (Numba launches in the current context)."""
    if SIMULATOR:
        return contextlib.nullcontext()
    return _device_scope(_device_id(x))


def accept_out(out, x, foreign: bool):
    if not owns(out):
        if not (foreign and _has_cai(out)):
            raise TypeError(
                f"out must be an array of the same kind as the input "
                f"({type(x).__module__}.{type(x).__name__}); got {type(out).__name__}"
            )
        _interop.refuse_grad_tensor(out)
    # the producer's pending reads and writes of out come before this call writes it
    out = _ordered(out, x)
    if _device_id(out) != _device_id(x):
        raise ValueError(f"out is on device {_device_id(out)}; the input is on device {_device_id(x)}")
    return out


def accept_operand(a, x, foreign: bool, name: str):
    """An array argument beside x (dy, bias): a Numba device array (or, for a foreign x, any CUDA
    array) on x's device, ordered after the stream that produced it; host data is refused (it is
    not of x's kind)."""
    if not owns(a):
        if not (foreign and _has_cai(a)):
            raise TypeError(
                f"{name} must be a {type(x).__module__}.{type(x).__name__} like x; "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
        _interop.refuse_grad_tensor(a)
    a = _ordered(a, x)
    if _device_id(a) != _device_id(x):
        raise ValueError(f"{name} is on device {_device_id(a)}; x is on device {_device_id(x)}")
    return a


def _pointer(a) -> int:
    return a._ary.__array_interface__["data"][0] if SIMULATOR else a.__cuda_array_interface__["data"][0]


def overlap(a, b) -> int:
    """0: no shared memory, 1: the same view, 2: partly shared (``gpuact._contract.checks.OVERLAP_*``)."""
    pa, pb = _pointer(a), _pointer(b)
    ea = _interop.extent(pa, a.shape, a.strides, a.dtype.itemsize)
    eb = _interop.extent(pb, b.shape, b.strides, b.dtype.itemsize)
    if not _interop.ranges_overlap(ea, eb):
        return 0
    same = pa == pb and tuple(a.shape) == tuple(b.shape) and tuple(a.strides) == tuple(b.strides) and a.dtype == b.dtype
    return 1 if same else 2


def copy(a, stream):
    return _copy(a, _empty(a.shape, a.dtype, stream), stream)


def as_mask(mask, shape, stream):
    """The mask broadcast to ``shape`` as a C-contiguous uint8 device array (1 = keep), made on
    ``stream``."""
    shape = tuple(shape)
    if owns(mask) or _has_cai(mask):
        m = _on_this_device(_ordered(mask), "mask")
        view = _broadcast_view(m, shape)
        result = _empty(shape, np.uint8, stream)
        if result.size:
            _to_mask(view, result, stream)
        return result
    host = np.asarray(mask)
    if host.dtype != np.bool_:
        host = host > 0.5
    return _pool.to_device(np.ascontiguousarray(np.broadcast_to(host, shape)).view(np.uint8), stream)


def as_param_array(alpha, shape, dtype, stream):
    """``alpha`` broadcast against ``shape`` (a zero-stride device view), in the compute dtype."""
    shape = tuple(shape)
    if owns(alpha) or _has_cai(alpha):
        return _broadcast_view(_on_this_device(_ordered(alpha), "alpha"), shape)
    host = np.asarray(alpha, dtype=K.compute_type(dtype))
    np.broadcast_shapes(host.shape, shape)  # ValueError now when they do not broadcast
    return _broadcast_view(_pool.to_device(_c_order(host), stream), shape)


def _c_order(host):
    """A C-contiguous host array of ``host``'s shape (``np.ascontiguousarray`` makes a 0-d array
    1-d, which would give a 0-d input a 1-d result and a scalar bias a shape that broadcasts
    to no 0-d x)."""
    return host if host.flags.c_contiguous else np.ascontiguousarray(host)


def _on_this_device(a, name: str):
    device = 0 if SIMULATOR else cuda.get_current_device().id
    if _device_id(a) != device:
        raise ValueError(f"{name} is on device {_device_id(a)}; the input is on device {device}")
    return a


# ---------------------------------------------------------------------------------------------
# views, kernels and launches


def _view(a, shape, strides):
    """A view of ``a``'s memory with the given shape and byte strides (same element 0)."""
    shape, strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
    if SIMULATOR:
        return _DeviceArray(np.lib.stride_tricks.as_strided(a._ary, shape, strides))
    return _DeviceArray(shape, strides, a.dtype, stream=a.stream, gpu_data=a.gpu_data)


def _broadcast_view(a, shape):
    if tuple(a.shape) == tuple(shape):
        return a
    np.broadcast_shapes(tuple(a.shape), tuple(shape))  # the ValueError NumPy gives
    if len(a.shape) > len(shape):
        raise ValueError(f"cannot broadcast an array of shape {tuple(a.shape)} to {tuple(shape)}")
    lead = len(shape) - len(a.shape)
    strides = [0] * lead
    for dim, size, stride in zip(shape[lead:], a.shape, a.strides):
        strides.append(stride if size == dim else 0)
    return _view(a, shape, strides)


def _flat(a):
    """A 1-D view of a C-contiguous array (0-d: one element)."""
    if len(a.shape) == 1:
        return a
    return _view(a, (a.size,), (a.dtype.itemsize,))


def _merge_axes(shape, strides):
    """(shape, [strides of each array]): the fewest axes that visit every element of same-shaped
    arrays. Size-1 axes go; the rest are ordered by the last array's strides (the output's,
    largest first: an F-ordered pair merges too), and neighbours merge wherever every array
    steps through them as through one axis (outer stride = inner stride x inner size), so a
    contiguous pair becomes one axis and a half of a contiguous glu input two."""
    axes = sorted((d for d in range(len(shape)) if shape[d] != 1), key=lambda d: -abs(strides[-1][d]))
    mshape, mstrides = [], [[] for _ in strides]
    for d in axes:
        if mshape and all(ms[-1] == st[d] * shape[d] for ms, st in zip(mstrides, strides)):
            mshape[-1] *= shape[d]
            for ms, st in zip(mstrides, strides):
                ms[-1] = st[d]
        else:
            mshape.append(shape[d])
            for ms, st in zip(mstrides, strides):
                ms.append(st[d])
    return mshape, mstrides


def _merged_views(arrays):
    """(views, shape, flat): same-shaped arrays as views over the merged axes (``_merge_axes``);
    ``flat`` when that is one axis of unit stride in every array."""
    itemsizes = [np.dtype(a.dtype).itemsize for a in arrays]
    shape, strides = _merge_axes(tuple(arrays[0].shape), [tuple(a.strides) for a in arrays])
    if not shape:  # one element (0-d or all axes of size 1)
        shape, strides = [1], [[i] for i in itemsizes]
    views = [
        a if tuple(a.shape) == tuple(shape) and tuple(a.strides) == tuple(st) else _view(a, shape, st)
        for a, st in zip(arrays, strides)
    ]
    flat = len(shape) == 1 and all(st[0] == i for st, i in zip(strides, itemsizes))
    return views, shape, flat


def _odometer_steps(shape, stride):
    """The grid stride as per-axis digits in the mixed radix of ``shape`` (the first digit
    unbounded): the N-D kernels add these each step instead of dividing (kernels._nd_kernel)."""
    digits = []
    for size in reversed(shape[1:]):
        digits.append(stride % size)
        stride //= size
    digits.append(stride)
    return tuple(np.int64(d) for d in reversed(digits))


def _run_nd(key, make, make_signature, arrays, params, stream):
    """``kernel(*arrays, n, steps, *params)`` over same-shaped arrays (the output last), for the
    N-D kernel ``make(rank)`` at the rank left after merging axes."""
    views, shape, _ = _merged_views(arrays)
    nd = len(shape)
    kern = _kernel(key + (nd,), lambda: make(nd), lambda: make_signature(nd))
    n = math.prod(shape)
    blocks = _grid(n)
    _launch(kern, n, stream, blocks=blocks)(*views, np.int64(n), _odometer_steps(shape, blocks * THREADS), *params)


_kernels: dict = {}


def _kernel(key, make, make_signature):
    kern = _kernels.get(key)
    if kern is None:
        kern = _compiled(key, make, make_signature)
        if any(isinstance(k, np.dtype) and checks.is_bfloat16(k) for k in key):
            kern = _BitsKernel(kern)
        _kernels[key] = kern
    return kern


def _compiled(key, make, make_signature):
    """The kernel ``make()`` compiled with ``make_signature()`` (under the simulator, run as Python)."""
    fn = make()
    return cuda.jit(K.for_simulator(fn)) if SIMULATOR else cuda.jit(make_signature())(fn)


class _BitsKernel:
    """A kernel compiled for bfloat16 data, whose signature takes each bfloat16 array as its
    ``uint16`` bits (``_numba/storage.py``): ``kernel[config](*args)`` passes those views."""

    __slots__ = ("_kernel",)

    def __init__(self, kernel):
        self._kernel = kernel

    def __getitem__(self, config):
        launch = self._kernel[config]

        def run(*args):
            return launch(*(a.view(storage.BITS) if checks.is_bfloat16(getattr(a, "dtype", None)) else a for a in args))

        return run


_sm_count = None


def _sms():
    """The device's SM count (a stand-in under the simulator), which the launch plans take."""
    global _sm_count
    if SIMULATOR:
        return _SIM_SM_COUNT
    if _sm_count is None:
        _sm_count = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return _sm_count


def _max_blocks():
    if SIMULATOR:
        return _SIM_MAX_BLOCKS
    return _sms() * BLOCKS_PER_SM


def _grid(work, threads=THREADS):
    """Blocks for ``work`` threads' worth of a grid-stride kernel: at most a few per SM."""
    return max(1, min(-(-work // threads), _max_blocks()))


def _performance_warnings():
    classes = []
    for module in ("numba.cuda.core.errors", "numba.core.errors"):
        try:
            classes.append(__import__(module, fromlist=["NumbaPerformanceWarning"]).NumbaPerformanceWarning)
        except (ImportError, AttributeError):  # pragma: no cover - other numba / numba-cuda layouts
            pass
    return tuple(dict.fromkeys(classes))


_PERFORMANCE_WARNINGS = _performance_warnings()


def _configure(kern, blocks, threads, stream):
    """``kern[blocks, threads, stream]`` without numba-cuda's NumbaPerformanceWarning for grids
    under 128 blocks: gpuact sizes its grids on purpose (a small input needs few blocks; the
    plans give large inputs enough), so the warning would only be noise to the user. Silenced
    here, for this call alone; the user's own launches still warn."""
    with warnings.catch_warnings():
        for category in _PERFORMANCE_WARNINGS:
            warnings.simplefilter("ignore", category)
        return kern[blocks, threads, stream]


# Launch configurations per stream: the default stream's in a plain dict, other streams' in a
# weak dictionary, so a stream the caller drops (one per batch, say) is not kept alive here.
_launches_default: dict = {}
_launches_by_stream: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _launch(kern, work, stream, threads=THREADS, blocks=None):
    """``kern[grid, threads, stream]``, cached: grid = enough blocks for ``work`` threads, at most
    a few per SM (the kernels loop), unless ``blocks`` is given. ``threads`` may be a tuple."""
    if blocks is None:
        blocks = _grid(work, threads)
    blocks = max(1, blocks)
    if SIMULATOR:
        # The simulator's kern[...] sets the grid on the kernel object and returns that object, so
        # a cached one would run with the grid configured last; the N-D kernels' odometer steps
        # and the split softmax's block order need the grid asked for.
        return _configure(kern, blocks, threads, stream)
    if stream == 0:
        configs = _launches_default
    else:
        configs = _launches_by_stream.get(stream)
        if configs is None:
            configs = _launches_by_stream[stream] = {}
    key = (kern, blocks, threads)
    cfg = configs.get(key)
    if cfg is None:
        if len(configs) > _LAUNCH_CACHE_MAX:
            configs.clear()
        cfg = configs[key] = _configure(kern, blocks, threads, stream)
    return cfg


def _stream(stream):
    return 0 if stream is None else stream


def _empty(shape, dtype, stream):
    """A C-contiguous array on the current device for work on ``stream``, from the per-stream
    pool (``_numba/pool.py``): no allocation, and so no deferred free, once the pool is warm."""
    return _pool.empty(shape, dtype, stream)


def _contiguous(a):
    return a.is_c_contiguous()


def _copy(src, dst, stream):
    """dst[...] = src on the device (any strides, same shape, dtype conversion)."""
    if dst.size == 0:
        return dst
    sd, dd = np.dtype(src.dtype), np.dtype(dst.dtype)
    _run_nd(
        ("copy", sd, dd),
        lambda nd: K.copy_nd(nd, sd, dd),
        lambda nd: K.copy_nd_signature(sd, dd, nd),
        [src, dst],
        (),
        stream,
    )
    return dst


def _to_mask(src, dst, stream):
    """dst (uint8, same shape) = 1 where src is set (bool) or > 0.5 (numbers)."""
    sd = np.dtype(src.dtype)
    _run_nd(("mask", sd), lambda nd: K.mask_nd(nd, sd), lambda nd: K.mask_nd_signature(sd, nd), [src, dst], (), stream)
    return dst


# ---------------------------------------------------------------------------------------------
# the ops


def elementwise(op, x, params, out, dtype, stream=None, bias=None):
    """``y = op(x)``, or ``op(x + bias)`` with the bias added in the kernel (``_elementwise_bias``)."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    y = _empty(x.shape, dtype, stream) if out is None else out
    n = x.size
    if n == 0:
        return y
    ft = K.compute_type(dtype)
    p = [ft(v) for v in host_params(op, params)]
    xd = np.dtype(x.dtype)
    if bias is not None:
        _elementwise_bias(op, x, bias, y, p, dtype, stream)
        return y
    (xv, yv), _, flat = _merged_views([x, y])
    if flat:
        kern = _kernel(
            (op, xd, dtype, 0), lambda: K.elementwise_contig(op, ft), lambda: K.elementwise_contig_signature(xd, dtype)
        )
        _launch(kern, n, stream)(xv, yv, np.int64(n), *p)
        return y
    _run_nd(
        (op, xd, dtype),
        lambda nd: K.elementwise_nd(op, ft, nd),
        lambda nd: K.elementwise_nd_signature(xd, dtype, nd),
        [x, y],
        p,
        stream,
    )
    return y


def _trailing_bias(bias, shape):
    """``bias`` as a flat array when it is contiguous and lies along x's trailing axes (x's flat
    element i takes its element ``i % bias.size``: a Dense layer's ``(units,)``, or ``(1, units)``),
    else None."""
    if bias.size == 0 or not _contiguous(bias):
        return None
    core = tuple(bias.shape)
    while core and core[0] == 1:
        core = core[1:]
    if len(core) > len(shape) or tuple(shape[len(shape) - len(core) :]) != core:
        return None
    return _flat(bias)


def _column_launch(n, nb):
    """(blocks, the grid stride modulo nb) for the contiguous bias kernels' column counter."""
    blocks = _grid(n)
    return blocks, np.int64((blocks * THREADS) % nb)


def _elementwise_bias(op, x, bias, y, p, dtype, stream):
    """y = op(x + bias): a trailing bias over contiguous x and y in the flat kernel with its column
    counter; any other broadcast (or layout) through the N-D walk, the bias a broadcast view."""
    xd, bd = np.dtype(x.dtype), np.dtype(bias.dtype)
    ft = K.compute_type(dtype)
    n = x.size
    flat_bias = _trailing_bias(bias, tuple(x.shape))
    if flat_bias is not None and _contiguous(x) and _contiguous(y):
        kern = _kernel(
            ("bias", op, xd, bd, dtype, 0),
            lambda: K.elementwise_bias_contig(op, ft),
            lambda: K.elementwise_bias_contig_signature(xd, bd, dtype),
        )
        blocks, cstep = _column_launch(n, flat_bias.size)
        _launch(kern, n, stream, blocks=blocks)(
            _flat(x), flat_bias, _flat(y), np.int64(n), np.int64(flat_bias.size), cstep, *p
        )
        return
    _run_nd(
        ("bias", op, xd, bd, dtype),
        lambda nd: K.elementwise_bias_nd(op, ft, nd),
        lambda nd: K.elementwise_bias_nd_signature(xd, bd, dtype, nd),
        [x, _broadcast_view(bias, tuple(x.shape)), y],
        p,
        stream,
    )


def elementwise_grad(op, dy, x, params, out, dtype, stream=None, bias=None):
    """``dx = dy * op'(x)`` (``op'(x + bias)`` with a bias) in one pass over dy and x; dx may be dy
    or x itself. Contiguous operands take the flat kernel (with a trailing bias, its column
    counter), the rest the N-D walk."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    dx = _empty(x.shape, dtype, stream) if out is None else out
    n = x.size
    if n == 0:
        return dx
    ft = K.compute_type(dtype)
    p = [ft(v) for v in host_params(op, params)]
    dyd, xd = np.dtype(dy.dtype), np.dtype(x.dtype)
    if bias is None:
        (dyv, xv, dxv), _, flat = _merged_views([dy, x, dx])
        if flat:
            kern = _kernel(
                ("grad", op, dyd, xd, dtype, 0),
                lambda: K.grad_contig(op, ft),
                lambda: K.grad_contig_signature(dyd, xd, dtype),
            )
            _launch(kern, n, stream)(dyv, xv, dxv, np.int64(n), *p)
            return dx
        _run_nd(
            ("grad", op, dyd, xd, dtype),
            lambda nd: K.grad_nd(op, ft, nd),
            lambda nd: K.grad_nd_signature(dyd, xd, dtype, nd),
            [dy, x, dx],
            p,
            stream,
        )
        return dx
    bd = np.dtype(bias.dtype)
    flat_bias = _trailing_bias(bias, tuple(x.shape))
    if flat_bias is not None and _contiguous(dy) and _contiguous(x) and _contiguous(dx):
        kern = _kernel(
            ("grad_bias", op, dyd, xd, bd, dtype, 0),
            lambda: K.grad_contig(op, ft, True),
            lambda: K.grad_contig_signature(dyd, xd, dtype, bd),
        )
        blocks, cstep = _column_launch(n, flat_bias.size)
        _launch(kern, n, stream, blocks=blocks)(
            _flat(dy), _flat(x), flat_bias, _flat(dx), np.int64(n), np.int64(flat_bias.size), cstep, *p
        )
        return dx
    _run_nd(
        ("grad_bias", op, dyd, xd, bd, dtype),
        lambda nd: K.grad_nd(op, ft, nd, True),
        lambda nd: K.grad_nd_signature(dyd, xd, dtype, nd, bd),
        [dy, x, _broadcast_view(bias, tuple(x.shape)), dx],
        p,
        stream,
    )
    return dx


def _rows_layout(shape, axes):
    """(outer, L, inner) when ``axes`` is a run of adjacent axes of a C-contiguous array."""
    if list(axes) != list(range(axes[0], axes[-1] + 1)):
        return None
    outer = math.prod(shape[: axes[0]])
    length = math.prod(shape[a] for a in axes)
    inner = math.prod(shape[axes[-1] + 1 :])
    return outer, length, inner


def _moved(a, perm):
    """The view of ``a`` with axes in the order ``perm``."""
    return _view(a, [a.shape[p] for p in perm], [a.strides[p] for p in perm])


def _to_layout(a, perm, dtype, stream):
    """``a`` with axes ``perm`` as a C-contiguous array of ``dtype`` (a copy when needed)."""
    if perm == list(range(len(a.shape))) and _contiguous(a) and np.dtype(a.dtype) == np.dtype(dtype):
        return a
    src = _moved(a, perm)
    dst = _empty(src.shape, dtype, stream)
    return _copy(src, dst, stream)


def _softmax_inputs(x, axes, others, stream):
    """(perm, (outer, L, inner), [x, *others] in that layout). The arrays are used as they are
    when ``axes`` are adjacent and all are contiguous; else each is copied with the reduced axes
    moved last (``perm``), into rows."""
    shape = tuple(x.shape)
    ndim = len(shape)
    layout = _rows_layout(shape, axes)
    arrays = [x, *others]
    if layout is not None and all(_contiguous(a) for a in arrays):
        return list(range(ndim)), layout, arrays
    perm = [a for a in range(ndim) if a not in axes] + list(axes)
    moved = [_to_layout(a, perm, a.dtype, stream) for a in arrays]
    return perm, _rows_layout([shape[p] for p in perm], list(range(ndim - len(axes), ndim))), moved


def _softmax_bias(bias, shape, axes, stream):
    """(the bias as a flat device array, its addressing ``bz``: ``plan.softmax_bias_layout``). The
    bias is read in its own compact form (a non-contiguous one copied, at the bias's size); only
    a broadcast the kernels cannot address is expanded, into x's reduced-axes-last layout."""
    if bias is None:
        return _dummy_mask(stream), (np.int64(1),) * 2 + (np.int64(0),) * 4
    if not _contiguous(bias):
        bias = copy(bias, stream)
    ndim = len(shape)
    bshape = (1,) * (ndim - len(bias.shape)) + tuple(bias.shape)
    strides = [t if b == n else 0 for t, b, n in zip(P.contiguous_strides(bshape), bshape, shape)]
    bz = P.softmax_bias_layout(shape, strides, axes)
    if bz is None:
        perm = [a for a in range(ndim) if a not in axes] + list(axes)
        bias = _to_layout(_broadcast_view(bias, shape), perm, bias.dtype, stream)
        full = P.contiguous_strides([shape[p] for p in perm])
        strides = [0] * ndim
        for position, axis in enumerate(perm):
            strides[axis] = full[position]
        bz = P.softmax_bias_layout(shape, strides, axes)
    return _flat(bias), tuple(np.int64(v) for v in bz)


def _direct(perm, result, inputs):
    """Whether a softmax-like result can be written straight into ``result``: it has the inputs'
    layout and is each of them itself or apart from it (a column's elements are read before they
    are written, by the same thread; a result overlapping an input elsewhere is not safe)."""
    return (
        perm == list(range(len(perm)))
        and _contiguous(result)
        and all(_same_start(a, result) or not _may_alias(a, result) for a in inputs)
    )


def softmax(x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """Softmax or log_softmax along ``axes`` of ``x`` (+ ``bias``, added in the kernel)."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    shape = tuple(x.shape)
    y = _empty(shape, dtype, stream) if out is None else out
    if x.size == 0:
        return y
    axes = tuple(axes)
    perm, (outer, length, inner), (xin,) = _softmax_inputs(x, axes, (), stream)
    masked, biased = mask is not None, bias is not None
    m = _flat(_to_layout(mask, perm, np.uint8, stream)) if masked else _dummy_mask(stream)
    b, bz = _softmax_bias(bias, shape, axes, stream)
    direct = _direct(perm, y, [xin])
    result = y if direct else _empty([shape[p] for p in perm], dtype, stream)

    xd, bd = np.dtype(x.dtype), np.dtype(b.dtype)
    ft = K.compute_type(dtype)
    xf, rf = _flat(xin), _flat(result)
    cols = outer * inner
    plan = P.softmax_plan(outer, length, inner, _sms(), block=_reduction_block(), max_grid=_reduction_max_grid())
    sizes = (np.int64(cols), np.int64(length), np.int64(inner))
    if not plan.split:
        kern = _kernel(
            ("softmax_tile", xd, dtype, bd, log, masked, biased),
            lambda: K.softmax_tile(ft, log, masked, biased),
            lambda: K.softmax_tile_signature(xd, dtype, bd),
        )
        _launch(kern, 0, stream, threads=plan.block, blocks=plan.grid)(xf, rf, m, b, bz, *sizes)
    else:
        # Partial (max, sum) per (column, segment): a few KiB, allocated on the call's stream.
        work = _empty((2, cols * plan.segments), ft, stream)
        wm, ws = work[0], work[1]
        seg = (np.int64(plan.segments), np.int64(plan.seg_len))
        first = _kernel(
            ("softmax_partials", xd, ft, bd, masked, biased),
            lambda: K.softmax_partials(ft, masked, biased),
            lambda: K.softmax_partials_signature(xd, ft, bd),
        )
        _launch(first, 0, stream, threads=plan.block, blocks=plan.grid)(xf, m, b, bz, wm, ws, *sizes, *seg)
        second = _kernel(
            ("softmax_finish", xd, dtype, bd, log, masked, biased),
            lambda: K.softmax_finish(ft, log, masked, biased),
            lambda: K.softmax_finish_signature(xd, dtype, bd),
        )
        _launch(second, 0, stream, threads=plan.block, blocks=plan.grid)(xf, rf, m, b, bz, wm, ws, *sizes, *seg)
    if not direct:
        _copy(result, _moved(y, perm), stream)
    return y


def softmax_grad(dy, x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """The softmax / log_softmax backward along ``axes``, the forward recomputed in the kernels
    (of ``x + bias``, masked positions as -inf): softmax dx = y (dy - sum(dy y)), log_softmax
    dx = dy - y sum(dy); masked positions get 0, slices whose max is not finite NaN. The launch
    plan is the forward's: a tile kernel, or for long slices a partials kernel (max, sum of exp
    and the dy sum per segment) and a finish kernel."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    shape = tuple(x.shape)
    dx = _empty(shape, dtype, stream) if out is None else out
    if x.size == 0:
        return dx
    axes = tuple(axes)
    perm, (outer, length, inner), (xin, dyin) = _softmax_inputs(x, axes, (dy,), stream)
    masked, biased = mask is not None, bias is not None
    m = _flat(_to_layout(mask, perm, np.uint8, stream)) if masked else _dummy_mask(stream)
    b, bz = _softmax_bias(bias, shape, axes, stream)
    direct = _direct(perm, dx, [xin, dyin])
    result = dx if direct else _empty([shape[p] for p in perm], dtype, stream)

    dyd, xd, bd = np.dtype(dy.dtype), np.dtype(x.dtype), np.dtype(b.dtype)
    ft = K.compute_type(dtype)
    dyf, xf, rf = _flat(dyin), _flat(xin), _flat(result)
    cols = outer * inner
    plan = P.softmax_plan(outer, length, inner, _sms(), block=_reduction_block(), max_grid=_reduction_max_grid())
    sizes = (np.int64(cols), np.int64(length), np.int64(inner))
    flags = (log, masked, biased)
    if not plan.split:
        kern = _kernel(
            ("softmax_grad_tile", dyd, xd, dtype, bd, *flags),
            lambda: K.softmax_grad_tile(ft, *flags),
            lambda: K.softmax_grad_tile_signature(dyd, xd, dtype, bd),
        )
        _launch(kern, 0, stream, threads=plan.block, blocks=plan.grid)(dyf, xf, rf, m, b, bz, *sizes)
    else:
        # Partial (max, sum of exp, dy sum) per (column, segment), on the call's stream.
        work = _empty((3, cols * plan.segments), ft, stream)
        wm, ws, wt = work[0], work[1], work[2]
        seg = (np.int64(plan.segments), np.int64(plan.seg_len))
        first = _kernel(
            ("softmax_grad_partials", dyd, xd, ft, bd, *flags),
            lambda: K.softmax_grad_partials(ft, *flags),
            lambda: K.softmax_grad_partials_signature(dyd, xd, ft, bd),
        )
        _launch(first, 0, stream, threads=plan.block, blocks=plan.grid)(dyf, xf, m, b, bz, wm, ws, wt, *sizes, *seg)
        second = _kernel(
            ("softmax_grad_finish", dyd, xd, dtype, bd, *flags),
            lambda: K.softmax_grad_finish(ft, *flags),
            lambda: K.softmax_grad_finish_signature(dyd, xd, dtype, bd),
        )
        _launch(second, 0, stream, threads=plan.block, blocks=plan.grid)(
            dyf, xf, rf, m, b, bz, wm, ws, wt, *sizes, *seg
        )
    if not direct:
        _copy(result, _moved(dx, perm), stream)
    return dx


def _reduction_block():
    """Threads per block of the softmax and sparsemax kernels (fewer under the simulator)."""
    return P.BLOCK if not SIMULATOR else THREADS


def _reduction_max_grid():
    return _SIM_MAX_BLOCKS if SIMULATOR else None


_dummy_masks: dict = {}


def _dummy_mask(stream):
    """A 1-element mask for the unmasked kernels' mask argument: one per device (an array of
    another device's memory cannot be passed), made once and never written."""
    device = 0 if SIMULATOR else cuda.get_current_device().id
    m = _dummy_masks.get(device)
    if m is None:
        m = _dummy_masks[device] = cuda.to_device(np.ones(1, np.uint8), stream=stream)
    return m


def _half_shape(shape, axis):
    return tuple(shape[:axis]) + (shape[axis] // 2,) + tuple(shape[axis + 1 :])


def _gate_views(a, axis, gate):
    """(the gate half, the other half) of ``a`` along ``axis`` as strided views: x[..., :half, ...]
    and x[..., half:, ...] in the order of the gate (``GATES``). For a contiguous ``a`` the merged
    walk is 2-D, (outer, half * inner), or flat when outer == 1."""
    shape = _half_shape(a.shape, axis)
    halves = (_view(a, shape, a.strides), _offset_view(a, axis, shape[axis], shape))
    first = GATES[gate].gate_half
    return halves[first], halves[1 - first]


def glu(x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit (``gate``): ``v * op(g)`` for the gate half ``g`` of x and the other ``v``."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    y = _empty(_half_shape(x.shape, axis), dtype, stream) if out is None else out
    if y.size:
        g, v = _gate_views(x, axis, gate)
        _gated_into(gate, g, v, y, dtype, stream)
    return y


def gated(x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form: ``op(x) * b`` for the gate's op."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    y = _empty(x.shape, dtype, stream) if out is None else out
    if y.size:
        _gated_into(gate, x, b, y, dtype, stream)
    return y


def _gated_into(gate, g, v, y, dtype, stream):
    ft = K.compute_type(dtype)
    xd = np.dtype(g.dtype)
    _run_nd(
        (gate, xd, dtype),
        lambda nd: K.binary_nd(gate, ft, nd),
        lambda nd: K.binary_nd_signature(xd, xd, dtype, nd),
        [v, g, y],
        (),
        stream,
    )


def _offset_view(x, axis, start, shape):
    """The view of ``x`` starting at index ``start`` along ``axis``, with ``shape``."""
    index = tuple(slice(None) for _ in range(axis)) + (slice(start, start + shape[axis]),)
    return x[index]


def sparsemax(x, axis, out, dtype, stream=None):
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    shape = tuple(x.shape)
    y = _empty(shape, dtype, stream) if out is None else out
    if x.size == 0:
        return y
    ndim = len(shape)
    if ndim == 0:
        xin, perm = x, []
    elif _contiguous(x):
        xin, perm = x, list(range(ndim))
    else:
        perm = list(range(ndim))
        xin = _to_layout(x, perm, x.dtype, stream)
    outer, length, inner = _rows_layout(shape, (axis,)) if ndim else (1, 1, 1)
    # Every element is read by one thread in each pass and written last by that thread, so y may
    # be x itself; a y overlapping x elsewhere goes through a buffer.
    direct = _contiguous(y) and (_same_start(xin, y) or not _may_alias(xin, y))
    result = y if direct else _empty(shape, dtype, stream)
    ft = K.compute_type(dtype)
    xd = np.dtype(x.dtype)
    plan, cached = P.sparsemax_plan(
        outer,
        length,
        inner,
        _sms(),
        np.dtype(ft).itemsize,
        block=_reduction_block(),
        max_grid=_reduction_max_grid(),
        split=True,
    )
    if plan.split:
        _sparsemax_split(_flat(xin), _flat(result), plan, outer * inner, length, inner, xd, dtype, stream)
        if not direct:
            _copy(result, y, stream)
        return y
    kern = _kernel(
        ("sparsemax", xd, dtype, cached),
        lambda: K.sparsemax_tile(ft, cached),
        lambda: K.sparsemax_tile_signature(xd, dtype),
    )
    _launch(kern, 0, stream, threads=plan.block, blocks=plan.grid)(
        _flat(xin), _flat(result), np.int64(outer * inner), np.int64(length), np.int64(inner)
    )
    if not direct:
        _copy(result, y, stream)
    return y


def _sparsemax_split(xf, rf, plan, cols, length, inner, xd, dtype, stream, dyf=None):
    """sparsemax over a (tile, segment) grid (``kernels.sparsemax_split_*``): the segments' maxima,
    ``P.SPARSEMAX_SPLIT_PASSES`` steps of the search, the rest of it a block per tile, the write;
    with ``dyf`` the backward (rf: dx), the support's sums of dy per segment before the write."""
    ft = K.compute_type(dtype)
    segs = plan.segments
    nf, ni = K.sparsemax_split_sizes(cols, segs)
    wf, wi = _empty((nf,), ft, stream), _empty((ni,), np.int64, stream)
    sizes = (np.int64(cols), np.int64(length), np.int64(inner), np.int64(segs), np.int64(plan.seg_len))
    first = _kernel(
        ("sparsemax_split_max", xd, ft),
        lambda: K.sparsemax_split_max(ft),
        lambda: K.sparsemax_split_max_signature(xd, ft),
    )
    _launch(first, 0, stream, threads=plan.block, blocks=plan.grid)(xf, wf, *sizes)
    step = _kernel(
        ("sparsemax_split_pass", xd, ft),
        lambda: K.sparsemax_split_pass(ft),
        lambda: K.sparsemax_split_pass_signature(xd, ft),
    )
    passes = P.SPARSEMAX_SPLIT_PASSES
    for p in range(passes):
        _launch(step, 0, stream, threads=plan.block, blocks=plan.grid)(xf, wf, wi, *sizes, np.int64(p))
    resolve = _kernel(
        ("sparsemax_split_resolve", xd, ft),
        lambda: K.sparsemax_split_resolve(ft),
        lambda: K.sparsemax_split_resolve_signature(xd, ft),
    )
    _launch(resolve, 0, stream, threads=plan.block, blocks=plan.tiles)(xf, wf, wi, *sizes, np.int64(passes))
    if dyf is not None:
        dyd = np.dtype(dyf.dtype)
        sums = _kernel(
            ("sparsemax_split_grad_sums", dyd, xd, ft),
            lambda: K.sparsemax_split_grad_sums(ft),
            lambda: K.sparsemax_split_grad_sums_signature(dyd, xd, ft),
        )
        _launch(sums, 0, stream, threads=plan.block, blocks=plan.grid)(dyf, xf, wf, wi, *sizes, np.int64(passes))
        grad = _kernel(
            ("sparsemax_split_grad_finish", dyd, xd, dtype),
            lambda: K.sparsemax_split_grad_finish(ft),
            lambda: K.sparsemax_split_grad_finish_signature(dyd, xd, dtype),
        )
        _launch(grad, 0, stream, threads=plan.block, blocks=plan.grid)(dyf, xf, rf, wf, wi, *sizes, np.int64(passes))
        return
    finish = _kernel(
        ("sparsemax_split_finish", xd, dtype),
        lambda: K.sparsemax_split_finish(ft),
        lambda: K.sparsemax_split_finish_signature(xd, dtype),
    )
    _launch(finish, 0, stream, threads=plan.block, blocks=plan.grid)(xf, rf, wf, wi, *sizes, np.int64(passes))


def sparsemax_grad(dy, x, axis, out, dtype, stream=None):
    """dx = s (dy - mean of dy over the support), the support s = [sparsemax(x) > 0] found by the
    forward's own search in the same kernel (``kernels.sparsemax_grad_tile``); NaN slices as the
    forward. dx may be dy or x itself."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    shape = tuple(x.shape)
    dx = _empty(shape, dtype, stream) if out is None else out
    if x.size == 0:
        return dx
    identity = list(range(len(shape)))
    xin, dyin = (a if _contiguous(a) else _to_layout(a, identity, a.dtype, stream) for a in (x, dy))
    outer, length, inner = _rows_layout(shape, (axis,))
    direct = _direct(identity, dx, [xin, dyin])
    result = dx if direct else _empty(shape, dtype, stream)
    ft = K.compute_type(dtype)
    dyd, xd = np.dtype(dy.dtype), np.dtype(x.dtype)
    plan, cached = P.sparsemax_plan(
        outer,
        length,
        inner,
        _sms(),
        np.dtype(ft).itemsize,
        block=_reduction_block(),
        max_grid=_reduction_max_grid(),
        split=True,
    )
    if plan.split:
        _sparsemax_split(_flat(xin), _flat(result), plan, outer * inner, length, inner, xd, dtype, stream, _flat(dyin))
        if not direct:
            _copy(result, dx, stream)
        return dx
    kern = _kernel(
        ("sparsemax_grad", dyd, xd, dtype, cached),
        lambda: K.sparsemax_grad_tile(ft, cached),
        lambda: K.sparsemax_grad_tile_signature(dyd, xd, dtype),
    )
    _launch(kern, 0, stream, threads=plan.block, blocks=plan.grid)(
        _flat(dyin), _flat(xin), _flat(result), np.int64(outer * inner), np.int64(length), np.int64(inner)
    )
    if not direct:
        _copy(result, dx, stream)
    return dx


def _data_pointer(a):
    if SIMULATOR:
        return a._ary.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


def _same_start(a, b):
    """Whether two arrays start at the same address (for two contiguous arrays of one shape and
    itemsize: whether they are the same memory, element for element)."""
    return _data_pointer(a) == _data_pointer(b) and np.dtype(a.dtype).itemsize == np.dtype(b.dtype).itemsize


def _may_alias(a, b):
    """Whether two device arrays may share memory (by their allocations: conservative)."""
    if SIMULATOR:
        return np.may_share_memory(a._ary, b._ary)
    pa, pb = _data_pointer(a), _data_pointer(b)
    ea, eb = pa + max(a.alloc_size, 1), pb + max(b.alloc_size, 1)
    return pa < eb and pb < ea


def prelu(x, alpha, out, dtype, stream=None):
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    y = _empty(x.shape, dtype, stream) if out is None else out
    n = y.size
    if n == 0:
        return y
    ft = K.compute_type(dtype)
    xd, ad = np.dtype(x.dtype), np.dtype(alpha.dtype)
    # alpha is a broadcast view (zero strides where it repeats): its axes merge like x's
    _run_nd(
        ("prelu", xd, ad, dtype),
        lambda nd: K.binary_nd("prelu", ft, nd),
        lambda nd: K.binary_nd_signature(xd, ad, dtype, nd),
        [x, alpha, y],
        (),
        stream,
    )
    return y


def prelu_grad(dy, x, alpha, out, dtype, stream=None):
    """dx = dy where x > 0, dy * alpha elsewhere (NaN in x kept); alpha a broadcast view."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    dx = _empty(x.shape, dtype, stream) if out is None else out
    if dx.size == 0:
        return dx
    ft = K.compute_type(dtype)
    dyd, xd, ad = np.dtype(dy.dtype), np.dtype(x.dtype), np.dtype(alpha.dtype)
    _run_nd(
        ("prelu_grad", dyd, xd, ad, dtype),
        lambda nd: K.prelu_grad_nd(ft, nd),
        lambda nd: K.prelu_grad_nd_signature(dyd, xd, ad, dtype, nd),
        [dy, x, alpha, dx],
        (),
        stream,
    )
    return dx


def glu_grad(dy, x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit's backward in one pass over the output's shape: for ``y = v op(g)``,
    ``dv = dy op(g)`` and ``dg = dy v op'(g)`` written into the halves of dx (x's shape)."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    dx = _empty(x.shape, dtype, stream) if out is None else out
    if dx.size:
        g, v = _gate_views(x, axis, gate)
        dg, dv = _gate_views(dx, axis, gate)
        _gated_grad_into(gate, dy, g, v, dg, dv, dtype, stream)
    return dx


def gated_grad(dy, x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form's backward: ``(da, db) = (dy b op'(a), dy op(a))`` in one pass."""
    stream = _stream(stream)
    dtype = np.dtype(dtype)
    da, db = (_empty(x.shape, dtype, stream), _empty(x.shape, dtype, stream)) if out is None else out
    if da.size:
        _gated_grad_into(gate, dy, x, b, da, db, dtype, stream)
    return da, db


def _gated_grad_into(gate, dy, g, v, dg, dv, dtype, stream):
    ft = K.compute_type(dtype)
    xd, dyd = np.dtype(g.dtype), np.dtype(dy.dtype)
    _run_nd(
        (f"{gate}_grad", xd, dyd, dtype),
        lambda nd: K.glu_grad_nd(ft, nd, gate),
        lambda nd: K.glu_grad_nd_signature(xd, dyd, dtype, nd),
        [v, g, dy, dv, dg],
        (),
        stream,
    )
