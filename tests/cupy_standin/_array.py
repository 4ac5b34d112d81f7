"""``cupy.ndarray`` on host memory, with a record of where each piece of memory was allocated.

Every array carries ``_alloc``, the :class:`Allocation` its memory belongs to: the device and
stream current when it was allocated, and whether gpuact code allocated it (and in which gpuact
call). Views share their base's record; only new memory is a new allocation. NumPy does the
arithmetic on plain views of the same memory; every operation that CuPy would run as kernels is
checked like a launch (:func:`check_launch`).
"""

from __future__ import annotations

import ctypes
import math
import weakref

import numpy as np

from . import _state
from ._state import LaunchContractError, get_current_stream, get_device_id, stream_key

ALIGN = 256  # CuPy's memory pool hands out 256-byte aligned blocks
GARBAGE = 0xCD  # what cupy.empty returns: finite, distinctive in every float format


class Allocation:
    __slots__ = ("ptr", "nbytes", "device", "stream", "call", "site", "kind", "seq", "keepalive", "__weakref__")

    def __init__(self, ptr, nbytes, kind, keepalive=None, *, device=None, stream=None):
        self.ptr, self.nbytes, self.kind, self.keepalive = ptr, nbytes, kind, keepalive
        self.device = get_device_id() if device is None else device
        self.stream = stream_key(get_current_stream(self.device).ptr) if stream is None else stream
        # foreign memory (a __cuda_array_interface__ pointer) is wrapped, not allocated
        self.call, self.site = (None, None) if kind == "foreign" else _state.caller()
        self.seq = next(_state.seq)

    @property
    def in_gpuact(self) -> bool:
        return self.call is not None

    def __repr__(self):
        where = f"in gpuact at {self.site}" if self.site else "outside gpuact"
        return (
            f"<{self.kind} allocation #{self.seq}: {self.nbytes} bytes on device {self.device}, "
            f"stream {self.stream:#x}, {where}>"
        )


# live allocations: (start, end, weakref to the array that owns the memory, record)
_live: list = []


def _register(owner: np.ndarray, ptr: int, nbytes: int, kind: str, keepalive=None, **where) -> Allocation:
    alloc = Allocation(ptr, nbytes, kind, keepalive, **where)
    _live.append((ptr, ptr + nbytes, weakref.ref(owner), alloc))
    _state.log_allocation(alloc)
    return alloc


def _lookup(ptr: int) -> Allocation | None:
    """The live allocation holding address ``ptr``."""
    found = None
    dead = False
    for start, end, owner, alloc in _live:
        if owner() is None:
            dead = True
        elif start <= ptr < end or (start == ptr == end):
            found = alloc
    if dead:
        _live[:] = [e for e in _live if e[2]() is not None]
    return found


def data_ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def extent(a: np.ndarray) -> tuple[int, int]:
    """[lo, hi) byte range a view touches (empty for size 0)."""
    ptr = data_ptr(a)
    if a.size == 0:
        return ptr, ptr
    lo = ptr + sum(min(0, (n - 1) * s) for n, s in zip(a.shape, a.strides))
    hi = ptr + sum(max(0, (n - 1) * s) for n, s in zip(a.shape, a.strides)) + a.itemsize
    return lo, hi


def _new_memory(arr: np.ndarray, kind: str) -> Allocation:
    """Tag memory NumPy allocated inside an operation as a new allocation, now, here."""
    owner = arr
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    lo, hi = extent(owner)
    return _register(owner, lo, hi - lo, kind)


class MemoryPointer:
    def __init__(self, ptr, alloc):
        self.ptr = ptr
        self.mem = alloc
        self.device_id = alloc.device

    @property
    def device(self):
        return _state.Device(self.device_id)

    def __int__(self):
        return self.ptr


def _sync_point(what: str) -> None:
    """Host-device synchronisation: never on gpuact's path (its docstring promises that)."""
    token, site = _state.caller()
    if token is not None:
        raise LaunchContractError(f"{what} inside gpuact ({site}) synchronises the host with the device")


class ndarray(np.ndarray):
    """``cupy.ndarray``: a NumPy array of host memory that knows its device and allocation."""

    __array_priority__ = 100.0

    def __new__(cls, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is None:
            return empty(shape, dtype, order)
        return _wrap_pointer(
            memptr.ptr,
            tuple(np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),),
            np.dtype(dtype),
            strides,
            keepalive=memptr,
        )

    def __array_finalize__(self, obj):
        if obj is None:  # the explicit constructor: the caller sets _alloc
            return
        alloc = getattr(obj, "_alloc", None)
        ptr = data_ptr(self)
        if alloc is None or not alloc.ptr <= ptr <= alloc.ptr + alloc.nbytes:
            alloc = _lookup(ptr)
        self._alloc = alloc if alloc is not None else _new_memory(self, "numpy")

    # ---- what CuPy arrays have ----------------------------------------------------------------

    @property
    def device(self):
        return _state.Device(self._alloc.device)

    @property
    def data(self):
        return MemoryPointer(data_ptr(self), self._alloc)

    @property
    def __cuda_array_interface__(self):
        # as cupy/_core/core.pyx: v3, the current stream (never 0: the legacy default is 1)
        ptr = get_current_stream().ptr
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "descr": self.dtype.descr,
            "version": 3,
            "stream": stream_key(ptr),
            "strides": None if self.flags.c_contiguous else self.strides,
            "data": (data_ptr(self) if self.size else 0, False),
        }

    def get(self, stream=None, order="C", out=None, blocking=True):
        _sync_point(".get()")
        host = np.array(self.view(np.ndarray), order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        check_launch("copy", "ndarray.set", [self], stream=stream)  # a host-to-device copy on that stream
        self.view(np.ndarray)[...] = np.asarray(arr)

    def item(self, *args):
        _sync_point(".item()")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        _sync_point(".tolist()")
        return self.view(np.ndarray).tolist()

    def __bool__(self):
        _sync_point("bool(array)")
        return bool(self.view(np.ndarray))

    def __float__(self):
        _sync_point("float(array)")
        return float(self.view(np.ndarray))

    def __int__(self):
        _sync_point("int(array)")
        return int(self.view(np.ndarray))

    def copy(self, order="C"):
        # a copy lands on the current device, also from another device's array (as CuPy)
        check_launch("copy", "ndarray.copy", [self], check_devices=False)
        out = empty(self.shape, self.dtype, _order(order, self))
        out.view(np.ndarray)[...] = self.view(np.ndarray)
        return out

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dtype = np.dtype(dtype)
        if not copy and dtype == self.dtype and _layout_ok(self, order):
            return self
        check_launch("op", "astype", [self])
        out = empty(self.shape, dtype, _order(order, self))
        with np.errstate(all="ignore"):
            out.view(np.ndarray)[...] = self.view(np.ndarray)
        return out

    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 else shape
        return apply("reshape", np.reshape, (self, shape), {"order": order})

    def ravel(self, order="C"):
        return apply("ravel", np.ravel, (self,), {"order": order})

    def flatten(self, order="C"):
        check_launch("op", "flatten", [self])
        out = empty((self.size,), self.dtype)
        out.view(np.ndarray)[...] = self.view(np.ndarray).flatten(order)
        return out

    def __getitem__(self, index):
        arrays = []
        plain_index = _unwrap(index, arrays, host_ok=True)
        result = np.ndarray.__getitem__(self, plain_index)
        if not isinstance(result, np.ndarray):  # a full integer index: CuPy gives a 0-d array
            plain_index = plain_index if isinstance(plain_index, tuple) else (plain_index,)
            result = np.ndarray.__getitem__(self, plain_index + (None,))[..., 0]
        if result._alloc is not self._alloc:  # advanced indexing: a gather kernel
            check_launch("op", "take", [self, *arrays])
        return result

    def __setitem__(self, index, value):
        arrays = [self]
        plain_index = _unwrap(index, arrays, host_ok=True)
        plain_value = _unwrap(value, arrays, host_ok=True)
        check_launch("op", "setitem", arrays)
        with np.errstate(all="ignore"):
            np.ndarray.__setitem__(self.view(np.ndarray), plain_index, plain_value)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return apply(
            f"{ufunc.__name__}" + ("" if method == "__call__" else f".{method}"), getattr(ufunc, method), inputs, kwargs
        )

    def __array_function__(self, func, types, args, kwargs):
        from . import _routines

        impl = _routines.lookup(func.__name__)
        if impl is None:
            return NotImplemented
        return impl(*args, **kwargs)

    def __repr__(self):
        return repr(self.view(np.ndarray))

    def __reduce__(self):
        raise TypeError("the CuPy stand-in's arrays do not pickle")


ndarray.__module__ = "cupy"


def _layout_ok(a, order):
    order = (order or "K").upper()
    return order in "KA" or (order == "C" and a.flags.c_contiguous) or (order == "F" and a.flags.f_contiguous)


def _order(order, like) -> str:
    order = (order or "K").upper()
    if order in "KA":
        return "F" if like.flags.f_contiguous and not like.flags.c_contiguous else "C"
    return order


# ---------------------------------------------------------------------------------------------
# Allocation and wrapping


def empty(shape, dtype=float, order="C") -> ndarray:
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN, np.uint8)
    off = (-data_ptr(buf)) % ALIGN
    buf[off : off + nbytes] = GARBAGE
    arr = np.ndarray.__new__(ndarray, shape, dtype, buffer=buf, offset=off, order=order)
    arr._alloc = _register(buf, data_ptr(buf) + off, nbytes, "empty")
    return arr


def from_host(host, dtype=None, order="K") -> ndarray:
    """A new device array holding a copy of host data (CuPy copies on the current stream)."""
    host = np.asarray(host, dtype=dtype)
    out = empty(host.shape, host.dtype, _order(order, host))
    out.view(np.ndarray)[...] = host
    check_launch("copy", "host_to_device", [out], check_devices=False)
    return out


def _wrap_pointer(ptr, shape, dtype, strides, keepalive=None) -> ndarray:
    """A zero-copy array over ``ptr`` (host memory here, as under Numba's CUDA simulator)."""
    strides = _c_strides(shape, dtype.itemsize) if strides is None else strides
    if math.prod(shape) == 0 or ptr == 0:
        buf = np.empty(shape, dtype)
        arr = np.ndarray.__new__(ndarray, shape, dtype, buffer=buf)
        arr._alloc = _register(buf, data_ptr(buf), 0, "foreign", keepalive)
        return arr
    lo = ptr + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = ptr + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + dtype.itemsize
    alloc = _lookup(ptr)
    buf = np.frombuffer((ctypes.c_char * (hi - lo)).from_address(lo), np.uint8)
    arr = np.ndarray.__new__(ndarray, shape, dtype, buffer=buf, offset=ptr - lo, strides=strides)
    if alloc is None:  # foreign memory: on the current device (CuPy asks the driver)
        alloc = _register(buf, lo, hi - lo, "foreign", keepalive)
    elif keepalive is not None:
        alloc.keepalive = keepalive if alloc.keepalive is None else (alloc.keepalive, keepalive)
    arr._alloc = alloc
    return arr


def _c_strides(shape, itemsize):
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


def from_cuda_array_interface(obj) -> ndarray:
    """CuPy's ``_convert_object_with_cuda_array_interface``: zero-copy; a v3 ``stream`` is synced."""
    desc = obj.__cuda_array_interface__
    dtype = np.dtype(desc["typestr"])
    if desc.get("mask") is not None:
        raise ValueError("CuPy currently does not support masked arrays.")
    strides = desc.get("strides")
    arr = _wrap_pointer(
        desc["data"][0], tuple(desc["shape"]), dtype, None if strides is None else tuple(strides), keepalive=obj
    )
    stream = desc.get("stream")
    if stream is not None:
        if stream == 0:
            raise LaunchContractError("__cuda_array_interface__ v3 exports stream 0, which the protocol disallows")
        _state.log_event("stream_synchronize", stream=stream_key(stream), reason="__cuda_array_interface__ import")
    return arr


# ---------------------------------------------------------------------------------------------
# Operations: NumPy on plain views, checked like kernel launches


def _unwrap(obj, arrays: list, host_ok=False):
    """``obj`` with stand-in arrays replaced by plain views (collected in ``arrays``)."""
    if isinstance(obj, ndarray):
        arrays.append(obj)
        return obj.view(np.ndarray)
    if isinstance(obj, np.ndarray):
        if host_ok:
            return obj
        raise TypeError(f"Unsupported type {type(obj)}: a NumPy array where CuPy needs a cupy.ndarray")
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unwrap(o, arrays, host_ok) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, arrays, host_ok) for k, v in obj.items()}
    return obj


def _wrap(result, outs: dict):
    if isinstance(result, np.ndarray):
        original = outs.get(id(result))
        if original is not None:
            return original
        return result.view(ndarray)  # a view keeps its owner's record, new memory is tagged now
    if isinstance(result, np.generic):
        return np.asarray(result).view(ndarray)  # CuPy returns 0-d arrays, not scalars
    if isinstance(result, tuple):
        return tuple(_wrap(r, outs) for r in result)
    if isinstance(result, list):
        return [_wrap(r, outs) for r in result]
    return result


def apply(name, fn, args, kwargs):
    """Runs a NumPy function for a CuPy one; checks it like a launch when it runs kernels."""
    arrays: list = []
    plain_args = _unwrap(tuple(args), arrays)
    out = kwargs.get("out")
    plain_kwargs = _unwrap(dict(kwargs), arrays)
    outs = {}
    if out is not None:
        for o, p in zip(
            out if isinstance(out, tuple) else (out,),
            plain_kwargs["out"] if isinstance(out, tuple) else (plain_kwargs["out"],),
        ):
            if not isinstance(o, ndarray):
                raise TypeError(f"{name}: out must be a cupy.ndarray; got {type(o).__name__}")
            outs[id(p)] = o
        check_launch("op", name, arrays)  # writes: check first
    with np.errstate(all="ignore"):  # a GPU never warns about inf - inf or NaN casts
        result = _wrap(fn(*plain_args, **plain_kwargs), outs)
    if out is None:
        produced = result if isinstance(result, tuple) else (result,)
        known = {id(a._alloc) for a in arrays}
        if any(isinstance(r, ndarray) and id(r._alloc) not in known for r in produced):
            check_launch("op", name, arrays)  # new memory: CuPy ran a kernel
    return result


# ---------------------------------------------------------------------------------------------
# The checks every launch gets


def launch_stream(stream=None) -> int:
    return stream_key((get_current_stream() if stream is None else stream).ptr)


def check_launch(kind, name, arrays, *, stream=None, check_devices=True, grid=(), block=(), shared_mem=0):
    """Devices and streams of a launch's arrays; records the launch. ``LaunchContractError`` if wrong."""
    device = get_device_id()
    skey = launch_stream(stream)
    token, site = _state.caller()
    where = f" (from {site})" if site else ""
    stream_device = _state.stream_device(get_current_stream() if stream is None else stream)
    if stream_device is not None and stream_device != device:
        raise LaunchContractError(
            f"{kind} {name}{where}: launched on device {device} into stream {skey:#x} of device {stream_device} "
            "(cudaErrorInvalidResourceHandle)"
        )
    for i, a in enumerate(arrays):
        alloc = a._alloc
        if check_devices and alloc.device != device:
            raise LaunchContractError(
                f"{kind} {name}{where}: array argument {i} (shape {a.shape}) lives on device {alloc.device}, but the "
                f"launch runs on device {device}"
            )
        if token is not None and alloc.call == token and (alloc.device, alloc.stream) != (device, skey):
            raise LaunchContractError(
                f"{kind} {name}{where}: array argument {i} (shape {a.shape}) was allocated by this gpuact call "
                f"({alloc.site}) on device {alloc.device}, stream {alloc.stream:#x}, but the launch runs on "
                f"device {device}, stream {skey:#x}"
            )
    _state.log_launch(
        _state.Launch(kind, name, device, skey, tuple(grid), tuple(block), int(shared_mem), token is not None)
    )


def check_overlap(kind, name, outputs, others) -> None:
    """An output sharing memory with another argument must be that very view (in place)."""
    for i, o in outputs:
        for j, a in others:
            if a is o:
                continue
            same = (
                data_ptr(a) == data_ptr(o)
                and a.shape == o.shape
                and a.strides == o.strides
                and a.dtype.itemsize == o.dtype.itemsize
            )
            if same:
                continue
            po, pa = o.view(np.ndarray), a.view(np.ndarray)
            try:
                shared = np.shares_memory(po, pa, max_work=10**6)
            except np.exceptions.TooHardError:
                lo1, hi1 = extent(po)
                lo2, hi2 = extent(pa)
                shared = lo1 < hi2 and lo2 < hi1
            if shared:
                raise LaunchContractError(
                    f"{kind} {name}: output argument {i} (shape {o.shape}, strides {o.strides}) partly overlaps "
                    f"argument {j} (shape {a.shape}, strides {a.strides}); threads would read what others already "
                    "wrote: copy the input first"
                )
