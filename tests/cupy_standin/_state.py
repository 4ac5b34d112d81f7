"""Devices, streams and events as CuPy 14 has them, plus what the harness records.

Two H200s: the current device is a per-thread stack (``with Device(i)``), and each device has its
own current stream (a stack per device, ``with stream``), as in ``cupy/cuda/stream.pyx``.
"""

from __future__ import annotations

import itertools
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field


class LaunchContractError(AssertionError):
    """A kernel launch (or a CuPy operation) that would be wrong on a real GPU."""


DEVICE_COUNT = 2
SM_COUNT = 132  # H200 (and H100 SXM)
SMEM_PER_BLOCK = 48 * 1024  # without the opt-in, static + dynamic
SMEM_OPTIN = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100 / H200
REGS_PER_BLOCK = 65536
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK = (1024, 1024, 64)
MAX_THREADS = 1024
DEVICE_NAME = b"NVIDIA H200 (gpuact CuPy stand-in: host memory, kernels on the CPU)"

LEGACY_STREAM = 1  # cudaStreamLegacy: what Stream.null (ptr 0) means, and what CAI v3 exports for it
PER_THREAD_STREAM = 2

_tls = threading.local()
_ptrs = itertools.count(0x7F00_0000_1000, 0x100)  # fake stream and event handles, never 0, 1 or 2
seq = itertools.count()  # one clock for allocations, launches and events


def stream_key(ptr: int) -> int:
    """Streams compare by handle; 0 (CuPy's null stream) is the legacy default stream, as 1."""
    return LEGACY_STREAM if ptr in (0, LEGACY_STREAM) else ptr


# ---------------------------------------------------------------------------------------------
# Per-thread current device and streams


class _Local:
    def __init__(self):
        self.device = 0
        self.device_stack: list[int] = []
        default = Stream.null
        self.current_stream = [default] * DEVICE_COUNT
        self.stream_stack = [[default] for _ in range(DEVICE_COUNT)]
        self.stream_device_stack: list[int] = []
        self.call = None  # (outermost gpuact frame, token) of the gpuact call running now
        self.recorders: list[Recorder] = []


def local() -> _Local:
    loc = getattr(_tls, "state", None)
    if loc is None:
        loc = _tls.state = _Local()
    return loc


def get_device_id() -> int:
    return local().device


def _check_device(device_id: int) -> int:
    device_id = int(device_id)
    if not 0 <= device_id < DEVICE_COUNT:
        raise RuntimeError(f"cudaErrorInvalidDevice: device {device_id} (the stand-in has {DEVICE_COUNT})")
    return device_id


class Device:
    """``cupy.cuda.Device``: a context manager over a per-thread stack of current devices."""

    def __init__(self, device=None):
        self.id = get_device_id() if device is None else _check_device(device)

    def __int__(self):
        return self.id

    __index__ = __int__

    def __enter__(self):
        loc = local()
        loc.device_stack.append(loc.device)
        loc.device = self.id
        return self

    def __exit__(self, *exc):
        loc = local()
        loc.device = loc.device_stack.pop()

    def use(self):
        local().device = self.id

    def synchronize(self):
        log_event("device_synchronize", device=self.id)

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("Device", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    @property
    def compute_capability(self) -> str:
        return "90"

    @property
    def attributes(self) -> dict:
        return dict(DEVICE_ATTRIBUTES)


DEVICE_ATTRIBUTES = {
    "MultiProcessorCount": SM_COUNT,
    "MaxSharedMemoryPerBlock": SMEM_PER_BLOCK,
    "MaxSharedMemoryPerBlockOptin": SMEM_OPTIN,
    "MaxThreadsPerBlock": MAX_THREADS,
    "MaxBlockDimX": MAX_BLOCK[0],
    "MaxBlockDimY": MAX_BLOCK[1],
    "MaxBlockDimZ": MAX_BLOCK[2],
    "MaxGridDimX": MAX_GRID[0],
    "MaxGridDimY": MAX_GRID[1],
    "MaxGridDimZ": MAX_GRID[2],
    "WarpSize": 32,
    "MaxRegistersPerBlock": REGS_PER_BLOCK,
    "ComputeCapabilityMajor": 9,
    "ComputeCapabilityMinor": 0,
}


# ---------------------------------------------------------------------------------------------
# Streams and events (cupy/cuda/stream.pyx)


class _BaseStream:
    def __init__(self, ptr, device_id):
        self.ptr = ptr
        self.device_id = device_id
        self.non_blocking = False

    def __eq__(self, other):
        return isinstance(other, _BaseStream) and stream_key(other.ptr) == stream_key(self.ptr)

    def __hash__(self):
        return self.ptr

    def __repr__(self):
        return f"<{type(self).__name__} {self.ptr:#x} (device {self.device_id})>"

    def __cuda_stream__(self):
        return (0, self.ptr)

    def _enter_device(self) -> int:
        # CuPy's check_stream_device_match: a stream is used on the device it was made on
        current = get_device_id()
        if self.device_id not in (-1, current):
            raise RuntimeError(
                f"The device that the stream is created on ({self.device_id}) does not match "
                f"with the current device ({current})"
            )
        return current

    def __enter__(self):
        loc = local()
        device_id = self._enter_device()
        loc.stream_stack[device_id].append(self)
        loc.stream_device_stack.append(device_id)
        loc.current_stream[device_id] = self
        return self

    def __exit__(self, *exc):
        loc = local()
        device_id = loc.stream_device_stack.pop()
        loc.stream_stack[device_id].pop()
        loc.current_stream[device_id] = loc.stream_stack[device_id][-1]

    def use(self):
        local().current_stream[self._enter_device()] = self
        return self

    @property
    def done(self):
        return True

    def synchronize(self):
        log_event("stream_synchronize", stream=stream_key(self.ptr))

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        log_event("stream_wait_event", stream=stream_key(self.ptr), event=event.ptr, device=stream_device(self))

    def add_callback(self, callback, arg):
        callback(self, 0, arg)

    def launch_host_func(self, callback, arg):
        callback(arg)

    @property
    def is_non_blocking(self):
        return self.non_blocking


class Stream(_BaseStream):
    null: Stream
    ptds: Stream

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        if null:
            super().__init__(0, -1)
        elif ptds:
            super().__init__(PER_THREAD_STREAM, -1)
        else:
            super().__init__(next(_ptrs), get_device_id())
            self.non_blocking = bool(non_blocking)
            STREAM_DEVICES[self.ptr] = self.device_id
        self._foreign_stream_ref = None

    @classmethod
    def from_external(cls, obj):
        try:
            version, ptr = obj.__cuda_stream__()
        except AttributeError as exc:
            raise TypeError(
                f"Object of type {type(obj).__name__} does not implement the CUDA stream protocol "
                "(__cuda_stream__ method)"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise TypeError("__cuda_stream__() must return a 2-tuple of (version, stream_ptr)") from exc
        if not isinstance(version, int) or not isinstance(ptr, int):
            raise TypeError(
                f"__cuda_stream__() must return (int, int), got ({type(version).__name__}, {type(ptr).__name__})"
            )
        if version != 0:
            raise TypeError(f"__cuda_stream__() returned unsupported version {version}, only version 0 is supported")
        stream = cls.__new__(cls)
        _BaseStream.__init__(stream, ptr, -1)
        stream._foreign_stream_ref = obj
        return stream


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)


class ExternalStream(_BaseStream):
    def __init__(self, ptr, device_id=-1):
        warnings.warn(
            "ExternalStream is deprecated. Use Stream.from_external() instead to interoperate with "
            "external streams that implement the CUDA stream protocol.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(ptr, device_id)


# The device of every stream handle the stand-in made: a stream wrapped from its handle alone
# (``Stream.from_external``: device_id -1, as in CuPy 14) still belongs to the device it was made
# on, as a real handle does.
STREAM_DEVICES: dict[int, int] = {}


def stream_device(stream) -> int | None:
    """The device a stream's work runs on: its own, a known handle's, the current device for the
    default streams (0, 1, 2: each device has its own); None for a handle the stand-in never made."""
    if stream.device_id >= 0:
        return stream.device_id
    if stream.ptr in (0, LEGACY_STREAM, PER_THREAD_STREAM):
        return get_device_id()
    return STREAM_DEVICES.get(stream.ptr)


def get_current_stream(device_id: int = -1):
    loc = local()
    return loc.current_stream[loc.device if device_id == -1 else device_id]


class Event:
    """``cupy.cuda.Event``: made on the current device (``cudaEventCreate``), and recorded only on a
    stream of that device (``cudaEventRecord`` fails with cudaErrorInvalidResourceHandle otherwise);
    any device's stream may wait for it."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.ptr = next(_ptrs)
        self.device = get_device_id()

    def record(self, stream=None):
        stream = get_current_stream() if stream is None else stream
        device = stream_device(stream)
        if device is not None and device != self.device:
            raise LaunchContractError(
                f"an event made on device {self.device} is recorded on stream {stream.ptr:#x} of device {device}: "
                "cudaEventRecord fails (cudaErrorInvalidResourceHandle); make the event with that device current"
            )
        log_event("event_record", stream=stream_key(stream.ptr), event=self.ptr, device=self.device)

    def synchronize(self):
        log_event("event_synchronize", event=self.ptr)

    @property
    def done(self):
        return True


# ---------------------------------------------------------------------------------------------
# Who is calling: gpuact code or not, and which gpuact call


def _is_gpuact(frame) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "gpuact" or name.startswith("gpuact.")


def caller():
    """(token, site) of the gpuact call on the stack, or (None, None) outside gpuact code.

    The token tells calls apart: the outermost gpuact frame of this thread's stack is held while
    it runs (so no later call can reuse its identity), and a new one gets a new token.
    """
    frame = sys._getframe(1)
    inner = outer = None
    while frame is not None:
        if _is_gpuact(frame):
            inner = inner or frame
            outer = frame
        frame = frame.f_back
    loc = local()
    if outer is None:
        loc.call = None
        return None, None
    if loc.call is None or loc.call[0] is not outer:
        loc.call = (outer, next(seq))
    site = f"{inner.f_globals['__name__']}:{inner.f_lineno} ({inner.f_code.co_name})"
    return loc.call[1], site


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Launch:
    """One kernel launch, or one CuPy operation that runs kernels (kind "op")."""

    kind: str  # "raw", "elementwise", "op", "copy"
    name: str
    device: int
    stream: int
    grid: tuple = ()
    block: tuple = ()
    shared_mem: int = 0
    in_gpuact: bool = False
    seq: int = field(default_factory=lambda: next(seq))


@dataclass
class StreamEvent:
    kind: str
    info: dict
    seq: int = field(default_factory=lambda: next(seq))


class Recorder:
    def __init__(self):
        self.launches: list[Launch] = []
        self.allocations: list = []  # _array.Allocation
        self.events: list[StreamEvent] = []


@contextmanager
def recording():
    """Collects the launches, allocations and stream events of the block (this thread)."""
    rec = Recorder()
    loc = local()
    loc.recorders.append(rec)
    try:
        yield rec
    finally:
        loc.recorders.remove(rec)


def log_launch(launch: Launch) -> None:
    for rec in local().recorders:
        rec.launches.append(launch)


def log_allocation(alloc) -> None:
    for rec in local().recorders:
        rec.allocations.append(alloc)


def log_event(kind: str, **info) -> None:
    for rec in local().recorders:
        rec.events.append(StreamEvent(kind, info))
