"""``gpuact.backends.cupy_backend`` run without a GPU: CuPy's array functions stood in for by
NumPy's, each RawKernel by the same kernel on the CPU shim (fused_shim, vec_shim) and
``cupy.ElementwiseKernel`` by ek_shim's, so what runs is the backend's own code (layout handling,
plans, workspace, argument lists: every integer a NumPy scalar of its C parameter's width)
launching the kernels. The "GPU" has 1 SM (8 blocks fill it) and 227 KiB of opt-in shared memory.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import numpy as np

from gpuact import _kernel_sources as ks
from tests.cuda_shim import ek_shim, fused_shim, vec_shim

_WIDTH = {"int": np.int32, "long long": np.int64}
_NULLABLE = ("mask", "bias")  # pointers a launch may pass as a null (np.uint64(0))


class ShimKernel:
    """A fused kernel, called as CuPy's RawKernel is: (grid, block, args, shared_mem=...)."""

    launches: list = []

    def __init__(self, lib, name):
        self.lib, self.name = lib, name
        self.max_dynamic_shared_size_bytes = 48 * 1024

    def __call__(self, grid, block, args, shared_mem=0):
        spec = ks.fused_kernels()[self.name]
        assert len(args) == len(spec.params)
        arrays, ints = {}, []
        for (ctype, pname), arg in zip(spec.params, args):
            if ctype.endswith("*"):
                null = pname in _NULLABLE and type(arg) is np.uint64 and arg == 0
                assert isinstance(arg, np.ndarray) or null, f"{self.name} {pname}: {type(arg)}"
                arrays[pname] = arg if isinstance(arg, np.ndarray) else None
            else:
                assert type(arg) is _WIDTH[ctype], f"{self.name} {pname}: {type(arg)} for a C {ctype}"
                ints.append(arg)
        assert shared_mem <= max(self.max_dynamic_shared_size_bytes, 48 * 1024 - ks.fused_static_smem(self.name))
        launch = ks.Launch(
            self.name,
            tuple(grid),
            block[0],
            shared_mem,
            ks.fused_static_smem(self.name),
            tuple(n for t, n in spec.params if t.endswith("*")),
            tuple(ints),
        )
        ShimKernel.launches.append(launch)
        fused_shim.run_plan(self.lib, ks.Plan((launch,), 0), arrays)


def patch(monkeypatch, build_dir: Path):
    """The CuPy backend module with its GPU parts replaced (see the module docstring)."""
    from gpuact.backends import cupy_backend as cb

    build_dir = Path(build_dir)
    ek_shim.ElementwiseKernel.build_dir = build_dir
    fake = types.SimpleNamespace(
        empty=np.empty,
        ascontiguousarray=np.ascontiguousarray,
        broadcast_to=np.broadcast_to,
        ElementwiseKernel=ek_shim.ElementwiseKernel,
    )
    monkeypatch.setattr(cb, "cupy", fake)
    monkeypatch.setattr(cb, "_on", lambda x, stream: contextlib.nullcontext())
    monkeypatch.setattr(cb, "_sm_count", lambda: 1)  # 8 blocks fill this "GPU"
    monkeypatch.setattr(cb, "_smem_optin", lambda: 227 * 1024)
    monkeypatch.setattr(cb, "_ptr", lambda a: a.ctypes.data)
    # the kernel caches start empty and are dropped after the test: no shim kernel outlives it
    monkeypatch.setattr(cb, "_ew_kernels", {})
    monkeypatch.setattr(cb, "_vec_kernels", {})
    monkeypatch.setattr(
        cb, "_fused_kernel", lambda name: ShimKernel(fused_shim.library(build_dir, fused_shim.group_of(name)), name)
    )
    monkeypatch.setattr(
        cb,
        "_vec_kernel",
        lambda op, tag, inplace=False: vec_shim.kernel(build_dir, ks.vec_kernel_name(op, tag, inplace), tag),
    )
    monkeypatch.setattr(
        cb,
        "_vec_training_kernel",
        lambda kind, op, tag, btag, inplace=False: vec_shim.kernel(
            build_dir, ks.vec_training_name(kind, op, tag, btag, inplace), tag
        ),
    )
    ShimKernel.launches = []
    vec_shim.VecKernel.launches = []
    ek_shim.ElementwiseKernel.calls = []
    return cb
