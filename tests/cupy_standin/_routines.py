"""``cupy.<function>``: creation routines written out, everything else forwarded to NumPy.

A forwarded function runs NumPy on plain views of the arrays' memory (``_array.apply``): host
NumPy arrays are refused as CuPy refuses them, results are stand-in arrays (0-d, not scalars),
and a call that writes an ``out=`` or makes new memory is checked like a kernel launch.
"""

from __future__ import annotations

import sys

import numpy as np

from ._array import _order, apply, check_launch, empty, from_cuda_array_interface, from_host, ndarray


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):  # any device: CuPy returns the array itself
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype, order or "K")
    if hasattr(a, "__cuda_array_interface__"):
        arr = from_cuda_array_interface(a)
        return arr if dtype is None or np.dtype(dtype) == arr.dtype else arr.astype(dtype, order or "K")
    return from_host(a, dtype, order or "K")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    arr = asarray(obj, dtype, None if order == "K" else order)
    if copy and arr is obj:
        arr = arr.copy(_order(order, arr))
    if ndmin > arr.ndim:
        arr = arr.reshape((1,) * (ndmin - arr.ndim) + arr.shape)
    return arr


def _require(a, name):
    if not isinstance(a, ndarray):  # CuPy's cpdef takes a cupy.ndarray only
        raise TypeError(f"{name}: argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")


def ascontiguousarray(a, dtype=None):
    _require(a, "ascontiguousarray")
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if dtype == a.dtype and a.flags.c_contiguous:
        return a
    check_launch("op", "ascontiguousarray", [a])
    out = empty(a.shape, dtype, "C")
    with np.errstate(all="ignore"):
        out.view(np.ndarray)[...] = a.view(np.ndarray)
    return out


def asfortranarray(a, dtype=None):
    _require(a, "asfortranarray")
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if dtype == a.dtype and a.flags.f_contiguous:
        return a
    check_launch("op", "asfortranarray", [a])
    out = empty(a.shape, dtype, "F")
    with np.errstate(all="ignore"):
        out.view(np.ndarray)[...] = a.view(np.ndarray)
    return out


def copyto(dst, src, casting="same_kind", where=True):
    _require(dst, "copyto")
    arrays = [dst] + [a for a in (src, where) if isinstance(a, ndarray)]
    check_launch("op", "copyto", arrays)  # writes dst: checked first
    plain = [a.view(np.ndarray) if isinstance(a, ndarray) else a for a in (src, where)]
    with np.errstate(all="ignore"):
        np.copyto(dst.view(np.ndarray), plain[0], casting=casting, where=plain[1])


def _filled(name, host, order="C"):
    out = empty(host.shape, host.dtype, order)
    check_launch("op", name, [out])  # a fill kernel on the current device and stream
    out.view(np.ndarray)[...] = host
    return out


def zeros(shape, dtype=float, order="C"):
    return _filled("zeros", np.zeros(shape, dtype), order)


def ones(shape, dtype=float, order="C"):
    return _filled("ones", np.ones(shape, dtype), order)


def full(shape, fill_value, dtype=None, order="C"):
    return _filled("full", np.full(shape, fill_value, dtype), order)


def _like(a, dtype, order, shape):
    _require(a, "*_like")
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    shape = a.shape if shape is None else shape
    return dtype, _order(order, a) if shape == a.shape else "C", shape


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    dtype, order, shape = _like(a, dtype, order, shape)
    return empty(shape, dtype, order)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    dtype, order, shape = _like(a, dtype, order, shape)
    return _filled("zeros_like", np.zeros(shape, dtype), order)


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    dtype, order, shape = _like(a, dtype, order, shape)
    return _filled("ones_like", np.ones(shape, dtype), order)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    dtype, order, shape = _like(a, dtype, order, shape)
    return _filled("full_like", np.full(shape, fill_value, dtype), order)


def arange(start, stop=None, step=1, dtype=None):
    return _filled("arange", np.arange(start, stop, step, dtype) if stop is not None else np.arange(start, dtype=dtype))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    return _filled("linspace", np.linspace(start, stop, num, endpoint, dtype=dtype, axis=axis))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np


def is_available():
    return True


EXPLICIT = {
    f.__name__: f
    for f in (
        asarray,
        array,
        ascontiguousarray,
        asfortranarray,
        copyto,
        zeros,
        ones,
        full,
        empty_like,
        zeros_like,
        ones_like,
        full_like,
        arange,
        linspace,
        asnumpy,
        get_array_module,
        is_available,
    )
}
EXPLICIT["empty"] = lambda shape, dtype=float, order="C": empty(shape, dtype, order)


class ufunc:
    """A NumPy ufunc run on stand-in arrays (``cupy.add``, ``cupy.add.reduce``, ...)."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __call__(self, *args, **kwargs):
        return apply(self.__name__, self._u, args, kwargs)

    def reduce(self, *args, **kwargs):
        return apply(f"{self.__name__}.reduce", self._u.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return apply(f"{self.__name__}.accumulate", self._u.accumulate, args, kwargs)

    def outer(self, *args, **kwargs):
        return apply(f"{self.__name__}.outer", self._u.outer, args, kwargs)

    def __repr__(self):
        return f"<ufunc '{self.__name__}' (CuPy stand-in)>"


_forwarded: dict = {}


def lookup(name: str):
    """``cupy.<name>``: an explicit routine, a forwarded NumPy function or ufunc, or None."""
    if name in EXPLICIT:
        return EXPLICIT[name]
    if name in _forwarded:
        return _forwarded[name]
    target = getattr(np, name, None)
    if isinstance(target, np.ufunc):
        fn = ufunc(target)
    elif callable(target) and not isinstance(target, type) and not name.startswith("_"):

        def fn(*args, _target=target, _name=name, **kwargs):
            return apply(_name, _target, args, kwargs)

        fn.__name__ = name
    else:
        return None
    _forwarded[name] = fn
    return fn
