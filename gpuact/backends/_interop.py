"""What the two GPU backends share about foreign objects: CUDA streams from any library, PyTorch
tensors, and ``__cuda_array_interface__`` objects taken without a host synchronization.

Nothing here imports a GPU library: PyTorch is looked up in ``sys.modules`` (a tensor cannot exist
unless torch was imported).
"""

from __future__ import annotations

import sys


def torch_tensor_module(x):
    """The ``torch`` module when ``x`` is a ``torch.Tensor``, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    return None


def is_cuda_array(x) -> bool:
    """Whether ``x`` exports ``__cuda_array_interface__``, without asking a PyTorch tensor (its
    property raises ``RuntimeError``, not ``AttributeError``, for a CUDA tensor that requires grad)."""
    torch = torch_tensor_module(x)
    if torch is not None:
        return bool(x.is_cuda)
    return hasattr(x, "__cuda_array_interface__")


def bfloat16_bits(x):
    """A PyTorch bfloat16 tensor as an int16 view of its bits, which exports
    ``__cuda_array_interface__`` (PyTorch's refuses bfloat16); None for anything else."""
    torch = torch_tensor_module(x)
    if torch is None or x.dtype != torch.bfloat16:
        return None
    return x.detach().view(torch.int16)


def refuse_grad_tensor(x):
    """A tensor that requires grad cannot be read without dropping it from autograd: say so."""
    if torch_tensor_module(x) is not None and x.requires_grad:
        raise TypeError(
            "gpuact got a torch tensor that requires grad; the plain gpuact functions would cut it out of "
            "autograd. Pass x.detach() for values only, or use gpuact.torch for a differentiable call."
        )


def stream_handle(stream) -> int:
    """The ``cudaStream_t`` address of a stream object of any library.

    Takes the CUDA stream protocol (``__cuda_stream__()`` → ``(0, handle)``: CuPy, Numba, PyTorch and
    cuda.core streams have it) and, for older PyTorch, ``torch.cuda.Stream.cuda_stream``.
    """
    protocol = getattr(stream, "__cuda_stream__", None)
    if protocol is not None:
        try:
            version, handle = protocol()
        except (TypeError, ValueError) as exc:
            raise TypeError("stream.__cuda_stream__() must return (version, handle)") from exc
        if version != 0:
            raise TypeError(f"stream.__cuda_stream__() has version {version}; gpuact reads version 0")
        return int(handle)
    handle = getattr(stream, "cuda_stream", None)
    if isinstance(handle, int):
        return handle
    raise TypeError(
        "stream must be a CUDA stream: a CuPy, Numba or PyTorch stream, or any object with "
        f"__cuda_stream__; got {type(stream).__name__}"
    )


def torch_stream_device(stream):
    """The device index of a ``torch.cuda.Stream``, else None (other libraries' streams do not say)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda_stream_type = getattr(getattr(torch, "cuda", None), "Stream", None)
    if cuda_stream_type is not None and isinstance(stream, cuda_stream_type):
        return stream.device.index
    return None


class StreamProtocol:
    """A bare ``__cuda_stream__`` for a handle, so libraries that take the protocol can wrap it; the
    object it came from is kept alive with it."""

    __slots__ = ("handle", "owner")

    def __init__(self, handle: int, owner=None):
        self.handle = handle
        self.owner = owner

    def __cuda_stream__(self):
        return (0, self.handle)


class CudaArrayView:
    """``x``'s ``__cuda_array_interface__`` without its ``stream`` entry, holding ``x`` alive.

    A consumer given an interface with a stream synchronizes the host on it (CuPy's and Numba's
    default); gpuact orders its launch after that stream instead (see ``split_stream``).
    """

    __slots__ = ("__cuda_array_interface__", "owner")

    def __init__(self, interface: dict, owner):
        self.__cuda_array_interface__ = interface
        self.owner = owner


def split_stream(x):
    """``(view, producer)``: ``x`` as a CUDA array view with no stream in its interface, and the
    handle of the stream its interface names (None when it names none, as PyTorch's does not)."""
    interface = x.__cuda_array_interface__
    producer = interface.get("stream")
    if producer is None:
        return x, None
    interface = dict(interface)
    del interface["stream"]
    return CudaArrayView(interface, x), int(producer)


def ranges_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def extent(ptr: int, shape, strides, itemsize: int) -> tuple[int, int]:
    """The byte range [lo, hi) an array's elements occupy (empty arrays occupy nothing)."""
    lo = hi = ptr
    for size, stride in zip(shape, strides):
        if size == 0:
            return ptr, ptr
        reach = (size - 1) * stride
        if reach < 0:
            lo += reach
        else:
            hi += reach
    return lo, hi + itemsize
