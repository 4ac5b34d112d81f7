"""The fused kernels (softmax, sparsemax, and their backward) on the CPU threads shim (cuda_shim.h):
the very source the CuPy backend compiles, built with g++, and a runner that executes a plan's
launches the way ``gpuact.backends.cupy_backend`` does (same kernels, grids, blocks, shared
memory, arguments).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from gpuact import _kernel_sources as ks
from tests.cuda_shim import gpuact_cuda_build as build

_POINTERS = ("x", "y", "dy", "dx", "mask", "ws", "bias")
MAX_INTS = 16


def _dispatch_source(names) -> str:
    """The kernels, and ``shim_launch(name, pointers, grid, block, smem, ints)`` to run one
    (``pointers`` indexed as ``_POINTERS``)."""
    lines = [
        '#include "cuda_shim.h"',
        ks.fused_unit_source(names),
        "#include <cstring>",
        'extern "C" int shim_launch(const char* name, void* const* ptrs, unsigned gx, unsigned gy,',
        "                           unsigned block, unsigned long smem, const long long* ints) {",
    ]
    for name in names:
        spec = ks.fused_kernels()[name]
        args, k = [], 0
        for ctype, pname in spec.params:
            if ctype.endswith("*"):
                args.append(f"({ctype})ptrs[{_POINTERS.index(pname)}]")
            else:
                args.append(f"({ctype})ints[{k}]")
                k += 1
        assert k <= MAX_INTS
        call = f"{name}({', '.join(args)})"
        lines.append(
            f'  if (!std::strcmp(name, "{name}")) {{ ga_shim::launch(gx, gy, block, smem, [&] {{ {call}; }}); '
            "return 0; }"
        )
    lines += ["  return 1;", "}"]
    return "\n".join(lines) + "\n"


@functools.cache
def library(build_dir: Path, group: str) -> ctypes.CDLL:
    """The shim library of every kernel of ``group`` (``ks.FUSED_GROUPS``: "softmax", "sparsemax",
    "softmax_grad", "sparsemax_grad"), all dtypes; built once per build folder (the tests pass
    the session's)."""
    names = [n for tag in ks.STORAGE_CTYPE for n in ks.group_kernel_names(group, tag)]
    so = build.build_shared(_dispatch_source(names), Path(build_dir), std="c++20")
    lib = ctypes.CDLL(str(so))
    lib.shim_launch.restype = ctypes.c_int
    lib.shim_launch.argtypes = (
        [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        + [ctypes.c_uint] * 3
        + [ctypes.c_ulong, ctypes.POINTER(ctypes.c_longlong)]
    )
    return lib


def group_of(name: str) -> str:
    return ks.fused_kernels()[name].group


def run_plan(lib, plan, arrays: dict) -> None:
    """Every launch of ``plan`` in order, with ``arrays`` (NumPy) bound to the kernels' pointers.
    The workspace is allocated here, filled with NaN bytes: whatever is read before it is
    written shows."""
    arrays = dict(arrays)
    if plan.workspace:
        arrays["ws"] = np.full(plan.workspace, 0xFF, np.uint8)
    for launch in plan.launches:
        assert len(launch.grid) <= 2, launch
        grid = tuple(launch.grid) + (1,)
        ptrs = (ctypes.c_void_p * len(_POINTERS))()
        for p in launch.pointers:
            a = arrays.get(p)
            ptrs[_POINTERS.index(p)] = None if a is None else a.ctypes.data
        ints = (ctypes.c_longlong * MAX_INTS)(*[int(v) for v in launch.ints])
        rc = lib.shim_launch(launch.name.encode(), ptrs, grid[0], grid[1], launch.block, launch.smem, ints)
        assert rc == 0, f"no kernel {launch.name} in the shim library"
