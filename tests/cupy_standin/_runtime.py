"""``cupy.cuda.runtime``: two H200s, as the CUDA runtime would describe them."""

from __future__ import annotations

from . import _state
from ._state import local, log_event, stream_key

is_hip = False

# cudaDeviceAttr values used by CuPy code (cuda_runtime_api.h)
cudaDevAttrMaxThreadsPerBlock = 1
cudaDevAttrMaxBlockDimX, cudaDevAttrMaxBlockDimY, cudaDevAttrMaxBlockDimZ = 2, 3, 4
cudaDevAttrMaxGridDimX, cudaDevAttrMaxGridDimY, cudaDevAttrMaxGridDimZ = 5, 6, 7
cudaDevAttrMaxSharedMemoryPerBlock = 8
cudaDevAttrWarpSize = 10
cudaDevAttrMaxRegistersPerBlock = 12
cudaDevAttrMultiProcessorCount = 16
cudaDevAttrComputeCapabilityMajor = 75
cudaDevAttrComputeCapabilityMinor = 76
cudaDevAttrMaxSharedMemoryPerBlockOptin = 97

_ATTRIBUTES = {
    cudaDevAttrMaxThreadsPerBlock: _state.MAX_THREADS,
    cudaDevAttrMaxBlockDimX: _state.MAX_BLOCK[0],
    cudaDevAttrMaxBlockDimY: _state.MAX_BLOCK[1],
    cudaDevAttrMaxBlockDimZ: _state.MAX_BLOCK[2],
    cudaDevAttrMaxGridDimX: _state.MAX_GRID[0],
    cudaDevAttrMaxGridDimY: _state.MAX_GRID[1],
    cudaDevAttrMaxGridDimZ: _state.MAX_GRID[2],
    cudaDevAttrMaxSharedMemoryPerBlock: _state.SMEM_PER_BLOCK,
    cudaDevAttrWarpSize: 32,
    cudaDevAttrMaxRegistersPerBlock: _state.REGS_PER_BLOCK,
    cudaDevAttrMultiProcessorCount: _state.SM_COUNT,
    cudaDevAttrComputeCapabilityMajor: 9,
    cudaDevAttrComputeCapabilityMinor: 0,
    cudaDevAttrMaxSharedMemoryPerBlockOptin: _state.SMEM_OPTIN,
}

streamLegacy = _state.LEGACY_STREAM
streamPerThread = _state.PER_THREAD_STREAM
TOTAL_MEMORY = 141 * 2**30


class CUDARuntimeError(RuntimeError):
    pass


def getDevice() -> int:
    return local().device


def setDevice(device: int) -> None:
    local().device = _state._check_device(device)


def getDeviceCount() -> int:
    return _state.DEVICE_COUNT


def deviceGetAttribute(attrib: int, device: int) -> int:
    _state._check_device(device)
    if attrib not in _ATTRIBUTES:
        raise CUDARuntimeError(f"the stand-in does not know device attribute {attrib}")
    return _ATTRIBUTES[attrib]


def getDeviceProperties(device: int) -> dict:
    _state._check_device(device)
    return {
        "name": _state.DEVICE_NAME,
        "totalGlobalMem": TOTAL_MEMORY,
        "multiProcessorCount": _state.SM_COUNT,
        "sharedMemPerBlock": _state.SMEM_PER_BLOCK,
        "sharedMemPerBlockOptin": _state.SMEM_OPTIN,
        "regsPerBlock": _state.REGS_PER_BLOCK,
        "warpSize": 32,
        "maxThreadsPerBlock": _state.MAX_THREADS,
        "maxThreadsDim": _state.MAX_BLOCK,
        "maxGridSize": _state.MAX_GRID,
        "major": 9,
        "minor": 0,
    }


def memGetInfo() -> tuple[int, int]:
    """(free, total): free is the host's available memory, since that is what arrays use here."""
    free = TOTAL_MEMORY
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = min(free, int(line.split()[1]) * 1024)
    except OSError:
        pass
    return free, TOTAL_MEMORY


def deviceSynchronize() -> None:
    log_event("device_synchronize", device=local().device)


def streamSynchronize(stream: int) -> None:
    log_event("stream_synchronize", stream=stream_key(stream))


def driverGetVersion() -> int:
    return 12080


def runtimeGetVersion() -> int:
    return 12080
