"""Arrays of other libraries: what goes in comes back as its own kind.

* A PyTorch tensor (CPU or CUDA) comes back as a tensor on the same device; a JAX array as a JAX
  array; any other object exporting ``__dlpack__`` goes in through DLPack (zero-copy) and comes
  back through its array-API namespace's ``from_dlpack`` where it has one (else as the backend's
  array). CUDA objects without DLPack keep the ``__cuda_array_interface__`` path.
* Host memory is taken zero-copy through DLPack (``numpy.from_dlpack``): strides, views and
  read-only flags come with it, so a non-contiguous tensor computes like the NumPy view it is and a
  read-only one (a JAX array) is refused as ``out``.
* bfloat16: a host tensor or JAX array goes to the NumPy path as an ``ml_dtypes.bfloat16`` array
  (PyTorch's zero-copy, as a view of its bits), which computes it block by block in float32 and
  rounds once, like float16; a bfloat16 ``out`` on the host is written directly. A CUDA tensor
  goes to the CuPy or Numba backend as it is, which views its bits as bfloat16 (zero-copy; their
  kernels load and store bfloat16), ``out`` included. Without ``ml_dtypes`` a bfloat16 tensor is
  computed from a float32 copy and returned as bfloat16 (an ``out`` written from that result).
* A backward's result is bfloat16 only where dy and x both are (the wider dtype wins, as for
  float16: ``dy`` float32 with a bfloat16 ``x`` gives float32).
* PyTorch's lazy negation and conjugation bits (``t.is_neg()``, ``t.is_conj()``: a view such as
  ``complex_tensor.conj().imag`` shares storage holding the un-negated values) are resolved
  (``resolve_neg``/``resolve_conj``, a copy) for ``x``, ``dy`` and ``bias`` before any pointer is
  read; an ``out`` with either bit is refused (``TypeError``), since writing through it would
  store the negation of the result.
* A tensor that requires grad is refused with a message pointing to ``gpuact.torch`` (the plain
  functions would cut it out of autograd).
* Under ``torch.compile`` a call on tensors is left out of the traced graph
  (``torch.compiler.disable``): Dynamo cannot trace the DLPack hand-over, and the call runs eagerly
  at a graph break. ``gpuact.torch`` gives the same functions as operators that compile whole.

CUDA arrays of other libraries go down as they are: the GPU backend's ``accept`` wraps them
zero-copy and orders the launch after the stream that produced them; the result comes back here.

Nothing here imports PyTorch or JAX: their modules are looked up in ``sys.modules``.
"""

from __future__ import annotations

import sys

import numpy as np

from gpuact._contract import checks
from gpuact._contract.calls import Request
from gpuact.backends import _interop, detect_backend

# the modules whose arrays a backend owns: nothing to unwrap
_OWN_KINDS = frozenset({"numpy", "cupy", "numba", "numba_cuda"})


def is_foreign(a) -> bool:
    """Whether ``a`` is an array of another library (PyTorch, JAX, any DLPack or CUDA array
    interface exporter) rather than one a backend owns, a sequence or a scalar."""
    if a is None or isinstance(a, (np.ndarray, float, int, list, tuple)):
        return False
    if type(a).__module__.split(".")[0] in _OWN_KINDS:
        return False
    return _torch(a) is not None or hasattr(type(a), "__dlpack__") or hasattr(type(a), "__cuda_array_interface__")


def wrap(inner):
    """The call ``inner`` with other libraries' arrays unwrapped: host arrays as zero-copy
    ndarrays, bfloat16 as float32; the result goes back as ``x``'s kind (or into ``out``)."""

    def call(request: Request):
        arrays = (request.x, request.dy, request.b, request.bias, *_outs(request.out))
        if not any(is_foreign(a) for a in arrays):
            return inner(request)
        torch = sys.modules.get("torch")
        if torch is not None and any(isinstance(a, torch.Tensor) for a in arrays):
            # also outside torch.compiler.is_compiling(): a frame Dynamo gave up on runs eagerly,
            # but the frames it calls are still offered to Dynamo
            return _eager(torch)(inner, request)
        return _unwrapped(inner, request)

    return call


def _outs(out) -> tuple:
    """``out`` as a tuple of arrays: the two-tensor form's backward takes a pair."""
    if out is None:
        return ()
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


_EAGER: list = []


def _eager(torch):
    """``_unwrapped`` excluded from Dynamo's tracing (about 1 us a call): it hands the tensor's
    memory to NumPy or CuPy through DLPack, which Dynamo cannot trace (it crashed on the
    device-type enum)."""
    if not _EAGER:
        _EAGER.append(
            torch.compiler.disable(
                _unwrapped,
                reason="plain gpuact functions run eagerly under torch.compile; gpuact.torch's are operators",
            )
        )
    return _EAGER[0]


def _unwrapped(inner, request: Request):
    outs = _outs(request.out)
    for out in outs:
        _refuse_lazy_out(out)
    original = request.x
    if request.family.pair and is_bfloat16(original) != is_bfloat16(request.b):
        raise TypeError(
            f"a and b must have one dtype; got {_dtype_name(original)} and {_dtype_name(request.b)}: cast one"
        )
    # bfloat16 results only where the result dtype rule gives bfloat16: dy too, in a backward
    bf16_result = is_bfloat16(original) and (request.dy is None or is_bfloat16(request.dy))
    name = request.backend if request.backend is not None else detect_backend(original)
    on_host = name == "numpy"
    # CUDA bfloat16 tensors go to the GPU backends as they are (they view their bits as bfloat16)
    device_bf16 = not on_host and _numpy_bfloat16() is not None
    x, back_to = for_compute(original, device_bf16)
    if on_host and type(x) is not np.ndarray:
        x, host_foreign = host_array(x)
        back_to = back_to if back_to is not None else host_foreign
    elif back_to is None and is_foreign(x) and _interop.is_cuda_array(x):
        back_to = x  # wrapped zero-copy by the GPU backend, and its result goes back as this kind
    dy, b, bias = (_operand(a, on_host, device_bf16) for a in (request.dy, request.b, request.bias))
    # PReLU's alpha, a parameter array: bfloat16 widened to float32 on every path (exact, and small)
    alpha = _operand(request.alpha, on_host)
    compute = request.replace(x=x, dy=dy, b=b, bias=bias, alpha=alpha)
    pair = request.family.pair and request.family.grad
    direct = device_bf16 or (on_host and all(_host_bfloat16_view(out) is not None for out in outs if is_bfloat16(out)))
    if any(is_bfloat16(out) and not (bf16_result and direct) for out in outs):
        # computed in float32, then copied into out
        shape = request.family.result_shape(tuple(x.shape), request.axis, request.op)
        for out in outs:
            if tuple(out.shape) != shape:
                raise ValueError(f"out has shape {tuple(out.shape)}; the result has shape {shape}")
        if not bf16_result:
            dtype = checks.result_dtype(x.dtype) if dy is None else checks.grad_dtype(_dtype_of(dy), x.dtype)
            raise TypeError(f"out is bfloat16; the result has dtype {dtype}")
        result = inner(compute.replace(out=None))
        if isinstance(result, tuple):
            return tuple(copy_into(out, each) for out, each in zip(outs, result))
        return copy_into(request.out, result)
    views = tuple(_out_view(out, on_host) for out in outs)
    if not outs and on_host and _is_jax(back_to):
        # JAX takes a host result zero-copy only 64-byte aligned: the result is computed into such a buffer
        dtype = checks.result_dtype(x.dtype) if dy is None else checks.grad_dtype(np.asarray(dy).dtype, x.dtype)
        shape = request.family.result_shape(tuple(x.shape), request.axis, request.op)
        views = tuple(host_result_buffer(back_to, shape, dtype) for _ in range(2 if pair else 1))
    out = None if not views else (views if pair else views[0])
    result = inner(compute.replace(out=out))
    if request.out is not None:
        return request.out
    if back_to is None:
        return result
    if isinstance(result, tuple):
        return tuple(back(back_to, each, bfloat16=bf16_result) for each in result)
    return back(back_to, result, bfloat16=bf16_result)


def _out_view(out, on_host: bool):
    """An ``out`` as the backend writes it: a host bfloat16 tensor as its ml_dtypes view, another
    library's host array as an ndarray view (zero-copy); a CUDA array as it is."""
    if is_bfloat16(out) and on_host:
        view = _host_bfloat16_view(out)
        _interop.refuse_grad_tensor(out)
        return view
    if on_host and is_foreign(out):
        return host_out(out)
    return out


def _dtype_name(a) -> str:
    dtype = getattr(a, "dtype", None)
    return str(dtype).rsplit(".", 1)[-1] if dtype is not None else type(a).__name__


def _dtype_of(a) -> np.dtype:
    if _torch(a) is not None:
        return np.dtype(str(a.dtype).rsplit(".", 1)[-1])  # bfloat16 is float32 by now
    return np.asarray(a).dtype


def _refuse_lazy_out(out) -> None:
    torch = _torch(out)
    if torch is not None and (out.is_neg() or out.is_conj()):
        raise TypeError(
            "out has PyTorch's negative or conjugate bit set (a lazily negated view, such as "
            "complex.conj().imag): gpuact would write the un-negated result into its storage; "
            "pass a plain tensor (out.resolve_neg() is a copy, not a view)"
        )


def _operand(a, on_host: bool, device_bf16: bool = False):
    """``dy``, ``b``, ``bias`` or ``alpha``: bfloat16 as float32 (or as it is, with ``device_bf16``), and
    another library's host array as an ndarray when the call runs on the host."""
    if not is_foreign(a):
        return a
    a, _ = for_compute(a, device_bf16)
    if on_host and not _interop.is_cuda_array(a):
        a, _ = host_array(a)
    return a


_KDL_CPU = 1


def _torch(x):
    return _interop.torch_tensor_module(x)


def is_bfloat16(x) -> bool:
    torch = _torch(x)
    return torch is not None and x.dtype == torch.bfloat16


def _numpy_bfloat16():
    """NumPy's bfloat16 dtype (``ml_dtypes``, which JAX depends on), or None where it is missing."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _host_bfloat16_view(x):
    """A host bfloat16 tensor as an ``ml_dtypes.bfloat16`` ndarray over its memory (zero-copy), or
    None where that cannot be (a CUDA tensor, no ml_dtypes)."""
    bfloat16 = _numpy_bfloat16()
    if bfloat16 is None or x.device.type != "cpu":
        return None
    torch = _torch(x)
    return np.from_dlpack(x.detach().view(torch.int16)).view(bfloat16)


def for_compute(x, device_bf16: bool = False):
    """``(x to compute on, the foreign original or None)``: a tensor with the negative or
    conjugate bit resolved (a copy: its storage holds the values un-negated), a host bfloat16
    tensor as its ml_dtypes view, a CUDA one as it is where ``device_bf16`` (the GPU backends view
    its bits), else as float32 (a copy, on its device); anything else is itself."""
    if x is None:
        return None, None
    if _torch(x) is not None and (x.is_neg() or x.is_conj()):
        _interop.refuse_grad_tensor(x)
        x = x.resolve_conj().resolve_neg()
    if is_bfloat16(x):
        _interop.refuse_grad_tensor(x)
        if device_bf16 and x.device.type != "cpu":
            return x, x
        view = _host_bfloat16_view(x)
        return (x.float(), x) if view is None else (view, x)
    return x, None


def host_array(x):
    """``(ndarray, foreign original or None)`` for host data of any kind: ndarray subclasses and
    sequences as NumPy holds them (no foreign), other libraries' arrays zero-copy through DLPack."""
    if isinstance(x, np.ndarray):
        return np.asarray(x), None
    _interop.refuse_grad_tensor(x)
    dlpack = getattr(x, "__dlpack__", None)
    if dlpack is not None and _on_cpu(x):
        try:
            return np.from_dlpack(x), x
        except (BufferError, TypeError, RuntimeError):
            pass  # a dtype NumPy lacks, say: NumPy's own conversion says what is wrong below
    return np.asarray(x), (x if _torch(x) is not None or _is_jax(x) else None)


def _on_cpu(x) -> bool:
    device = getattr(x, "__dlpack_device__", None)
    if device is None:
        return True
    try:
        return int(device()[0]) == _KDL_CPU
    except Exception:  # noqa: BLE001 - a producer whose device query fails: let NumPy try
        return True


def host_out(out):
    """A host ``out`` of another library as a writeable ndarray view (zero-copy), or TypeError."""
    if isinstance(out, np.ndarray):
        return out
    if _is_jax(out):
        raise TypeError("out cannot be a JAX array: JAX arrays are immutable; use the returned array")
    if getattr(out, "__dlpack__", None) is not None and _on_cpu(out):
        _interop.refuse_grad_tensor(out)
        return np.from_dlpack(out)
    raise TypeError(f"out must be a numpy.ndarray like the input; got {type(out).__name__}")


def _is_jax(x) -> bool:
    return sys.modules.get("jax") is not None and type(x).__module__.split(".")[0] in ("jax", "jaxlib")


def host_result_buffer(original, shape, dtype):
    """An empty result for a host ``original`` whose library takes a NumPy buffer zero-copy only
    at an alignment NumPy's allocator does not promise (JAX: 64 bytes, else ``from_dlpack``
    copies); None when NumPy's own allocation is taken as it is."""
    if not _is_jax(original):
        return None
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + 64, np.uint8)
    start = -raw.__array_interface__["data"][0] % 64
    return raw[start : start + count * dtype.itemsize].view(dtype).reshape(shape)


def back(original, result, bfloat16: bool = True):
    """``result`` (the backend's array) as ``original``'s kind, zero-copy where DLPack allows; a
    bfloat16 ``original``'s float32 result back as bfloat16 where ``bfloat16``."""
    torch = _torch(original)
    if checks.is_bfloat16(getattr(result, "dtype", None)):
        # a NumPy, CuPy or Numba bfloat16 result: DLPack cannot carry the ml_dtypes type, its bits
        # can (a Numba device array has no DLPack: its __cuda_array_interface__ instead)
        if torch is not None:
            bits = result.view(np.int16)
            if getattr(bits, "__dlpack__", None) is None:
                return torch.as_tensor(bits, device=original.device).view(torch.bfloat16)
            return torch.from_dlpack(bits).view(torch.bfloat16)
        if _is_jax(original) and sys.modules.get("jax.numpy") is not None:
            return sys.modules["jax.numpy"].asarray(result)
        return result
    if torch is not None:
        if getattr(result, "__dlpack__", None) is not None:
            tensor = torch.from_dlpack(result)
        else:  # a Numba device array: no DLPack, its __cuda_array_interface__ instead
            tensor = torch.as_tensor(result, device=original.device)
        if tensor.device != original.device:  # pragma: no cover - DLPack keeps the device
            tensor = tensor.to(original.device)
        return tensor.to(torch.bfloat16) if bfloat16 and original.dtype == torch.bfloat16 else tensor
    if _is_jax(original) and sys.modules.get("jax.numpy") is not None:
        return sys.modules["jax.numpy"].from_dlpack(result)
    namespace = getattr(original, "__array_namespace__", None)
    if namespace is not None:
        try:
            return namespace().from_dlpack(result)
        except Exception:  # noqa: BLE001 - a namespace that cannot take it: the backend's array
            return result
    return result


def copy_into(out, result):
    """Write ``result`` into a foreign ``out`` that could not be computed into directly (bfloat16)."""
    torch = _torch(out)
    with torch.no_grad():
        out.copy_(torch.from_dlpack(result))
    return out
