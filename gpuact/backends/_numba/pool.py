"""Device memory of the Numba path, reused per (device, stream) instead of freed.

Numba's own allocator (``cuda.device_array``) hands each freed array to a queue that it flushes
with ``cuMemFree`` every ``CUDA_DEALLOCS_COUNT`` (10) frees, and ``cuMemFree`` synchronizes the
device: a loop of gpuact calls would block the host about every tenth call. numba-cuda 0.30 has
no stream-ordered allocator to use instead (its memory-manager plugins allocate by size alone,
without a stream, and replacing the process's manager would change the user's own arrays), so
gpuact keeps its own cache: every array a call makes (results, workspaces, layout copies, masks)
is a block leased from the free blocks of the call's launch stream on its device, and returns to
them when the last view of it is gone. Work on one stream runs in order, so a block that a later
call on the same stream gets is only written after every earlier use on that stream: the rule of
CuPy's memory pool. As there, a result the caller hands to work on another stream must be kept
(or that stream synchronized) until that work is done. The blocks themselves are Numba
allocations, held while cached; a stream's free blocks are dropped (freed by Numba) when the
stream object is gone, and the idle blocks of a stream are held to ``IDLE_FRACTION`` of the
device's memory.
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from collections import deque

import numpy as np
from numba import cuda

from gpuact.backends._numba.scalar import SIMULATOR
from gpuact.backends._numba.storage import kernel_dtype

# Sizes are rounded up to one of four classes per octave (at most 25% over), at least MIN_BLOCK.
MIN_BLOCK = 512
CLASSES_PER_OCTAVE = 4
# A stream keeps at most this fraction of its device's memory in idle blocks (the simulator, which
# has no device, SIMULATOR_IDLE_BYTES); a block returned beyond it is freed.
IDLE_FRACTION = 1 / 8
SIMULATOR_IDLE_BYTES = 1 << 28


def size_class(nbytes: int) -> int:
    """The block size that serves ``nbytes``: MIN_BLOCK, or ``nbytes`` rounded up to a quarter of
    its octave."""
    if nbytes <= MIN_BLOCK:
        return MIN_BLOCK
    step = 1 << max(0, (nbytes - 1).bit_length() - 1 - int(math.log2(CLASSES_PER_OCTAVE)))
    return -(-nbytes // step) * step


def _current_device() -> int:
    return 0 if SIMULATOR else cuda.get_current_device().id


class _Stream:
    """The free blocks of one (device, stream), by size class."""

    __slots__ = ("free", "idle_max", "__weakref__")

    def __init__(self, idle_max: int):
        self.free: dict[int, deque] = {}
        self.idle_max = idle_max

    def idle_bytes(self) -> int:
        return sum(size * len(blocks) for size, blocks in list(self.free.items()))


class Pool:
    """Blocks per (device, stream). ``empty`` leases one as a C-contiguous device array.

    No lock: a lease and a return are each one ``deque`` operation, atomic under the GIL, so a
    return that runs from a finalizer in the middle of a lease (garbage collection can start
    anywhere) cannot corrupt a list. The idle-bytes cap is a sum taken at each return.
    """

    def __init__(self):
        self._streams: dict[tuple, _Stream] = {}
        self._tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._next_token = itertools.count(1)
        self._leased: dict[int, object] = {}  # the pointers handed out, kept alive while leased
        self._idle_max: dict[int, int] = {}
        self.allocations = 0  # blocks allocated from Numba (what the tests count)

    # -- streams
    def _token(self, stream):
        """A key for ``stream`` that no later stream reuses (an id() or a handle could be)."""
        if not stream:
            return "default"
        token = self._tokens.get(stream)
        if token is None:
            token = self._tokens[stream] = next(self._next_token)
            # the stream gone, its blocks go: a new stream is not ordered after the old one's work
            weakref.finalize(stream, self._drop_token, token)
        return token

    def _drop_token(self, token) -> None:
        for key in [k for k in list(self._streams) if k[1] == token]:
            self._streams.pop(key, None)

    def _stream(self, device: int, token) -> _Stream:
        key = (device, token)
        entry = self._streams.get(key)
        if entry is None:
            entry = self._streams.setdefault(key, _Stream(self._device_idle_max(device)))
        return entry

    def _device_idle_max(self, device: int) -> int:
        cap = self._idle_max.get(device)
        if cap is None:
            if SIMULATOR:
                cap = SIMULATOR_IDLE_BYTES
            else:
                cap = int(cuda.current_context().get_memory_info().total * IDLE_FRACTION)
            self._idle_max[device] = cap
        return cap

    # -- leases
    def empty(self, shape, dtype, stream):
        """An uninitialized C-contiguous array of ``shape`` and ``dtype`` on the current device,
        for work on ``stream`` (0: the default stream)."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return cuda.device_array(shape, dtype, stream=stream)  # no memory behind it
        device = _current_device()
        entry = self._stream(device, self._token(stream))
        size = size_class(nbytes)
        blocks = entry.free.get(size)
        if blocks is None:
            blocks = entry.free.setdefault(size, deque())
        try:
            block = blocks.pop()
        except IndexError:
            # made without the stream: a block must not keep its stream alive (see _token)
            block = cuda.device_array(size, np.uint8)
            self.allocations += 1
        give_back = functools.partial(_give_back, weakref.ref(entry), blocks, block)
        if SIMULATOR:
            return _simulator_lease(block, shape, dtype, nbytes, stream, give_back)
        return self._device_lease(block, shape, dtype, stream, give_back)

    def _device_lease(self, block, shape, dtype, stream, give_back):
        from numba.cuda.cudadrv.devicearray import DeviceNDArray
        from numba.cuda.cudadrv.driver import AutoFreePointer

        backing = block.gpu_data
        key = int(block.device_ctypes_pointer.value)

        def release():
            self._leased.pop(key, None)
            give_back()

        # Numba's own pattern (NumbaCUDAMemoryManager.memalloc): an AutoFreePointer held here,
        # views of it counted, its finalizer run when the last one goes.
        memory = AutoFreePointer(backing.context, backing.device_pointer, block.size, finalizer=release)
        self._leased[key] = memory
        strides = _c_strides(shape, dtype.itemsize)
        return DeviceNDArray(shape, strides, dtype, stream=stream, gpu_data=memory.own())


def _give_back(entry_ref, blocks: deque, block) -> None:
    entry = entry_ref()
    if entry is None:  # the stream is gone: Numba frees the block
        return
    if entry.idle_bytes() + block.size > entry.idle_max:
        return
    blocks.append(block)


def _c_strides(shape, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class _Lease:
    """Under the simulator: the leased bytes as a NumPy buffer, which every view of the array
    keeps alive (as its ``base``); the block returns when the lease is gone."""

    __slots__ = ("__array_interface__", "block", "__weakref__")

    def __init__(self, block, nbytes: int):
        data = block._ary
        self.block = block
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (data.__array_interface__["data"][0], False),
            "version": 3,
        }


def _simulator_lease(block, shape, dtype, nbytes, stream, give_back):
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    lease = _Lease(block, nbytes)
    weakref.finalize(lease, give_back)
    return FakeCUDAArray(np.asarray(lease).view(dtype).reshape(shape), stream=stream)


POOL = Pool()


def empty(shape, dtype, stream):
    return POOL.empty(shape, dtype, stream)


def to_device(host, stream):
    """A device copy of the C-contiguous host array ``host``, on ``stream``."""
    device = POOL.empty(host.shape, host.dtype, stream)
    if device.size:
        # bfloat16 as its bits: the copy moves bytes, and Numba has no type for ml_dtypes' dtype
        bits = kernel_dtype(host.dtype)
        device.view(bits).copy_to_device(host.view(bits), stream=stream)
    return device
