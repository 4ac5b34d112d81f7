"""The vectorised elementwise kernels (kernels/gpuact_elementwise.cuh: the forward and the training
kernels, every op) on the CPU shim: the very source the CuPy backend compiles, built with g++, and
a launcher called as CuPy's RawKernel is. The kernels share nothing between threads, so each
launch runs its threads one after another (``ga_shim::launch_independent``).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from gpuact import _kernel_sources as ks
from gpuact._contract.ops import ELEMENTWISE_OPS
from tests.cuda_shim import gpuact_cuda_build as build

MAX_POINTERS, MAX_INTS, MAX_FLOATS = 4, 4, 4


def kernels(tag: str) -> dict[str, tuple]:
    """Every contiguous kernel of ``tag`` data: name -> (code, params)."""
    out = {}
    for inplace in (False, True):
        for op in ELEMENTWISE_OPS:
            name = ks.vec_kernel_name(op, tag, inplace)
            out[name] = (ks.vec_kernel_code(op, tag, inplace), ks.vec_kernel_params(tag))
        for kind, op, btag in ks.vec_training_variants(tag):
            name = ks.vec_training_name(kind, op, tag, btag, inplace)
            out[name] = (ks.vec_training_code(kind, op, tag, btag, inplace), ks.vec_training_params(kind, tag, btag))
    return out


def _source(tag: str) -> str:
    table = kernels(tag)
    lines = [
        '#include "cuda_shim.h"',
        ks.vec_training_headers(),
        *(code for code, _ in table.values()),
        "#include <cstring>",
        'extern "C" int shim_vec(const char* name, void* const* ptrs, const long long* ints, const double* fl,',
        "                        unsigned grid, unsigned block) {",
    ]
    for name, (_, params) in table.items():
        args, counts = [], {"p": 0, "i": 0, "f": 0}
        for ctype, _pname in params:
            if ctype.endswith("*"):
                args.append(f"({ctype})ptrs[{counts['p']}]")
                counts["p"] += 1
            elif ctype == "long long":
                args.append(f"ints[{counts['i']}]")
                counts["i"] += 1
            else:
                args.append(f"({ctype})fl[{counts['f']}]")
                counts["f"] += 1
        assert counts["p"] <= MAX_POINTERS and counts["i"] <= MAX_INTS and counts["f"] <= MAX_FLOATS
        lines.append(
            f'  if (!std::strcmp(name, "{name}")) {{ ga_shim::launch_independent(grid, 1, block, [&] {{ '
            f"{name}({', '.join(args)}); }}); return 0; }}"
        )
    lines += ["  return 1;", "}"]
    return "\n".join(lines) + "\n"


@functools.cache
def library(build_dir: Path, tag: str) -> ctypes.CDLL:
    """The shim library of every contiguous kernel of ``tag`` data; built once per build folder.
    -O1: some 130 kernels a library, each launched on a few thousand elements."""
    so = build.build_shared(_source(tag), Path(build_dir), std="c++20", extra=("-O1",))
    lib = ctypes.CDLL(str(so))
    lib.shim_vec.restype = ctypes.c_int
    lib.shim_vec.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_longlong),
        ctypes.POINTER(ctypes.c_double),
        ctypes.c_uint,
        ctypes.c_uint,
    ]
    return lib


class VecKernel:
    """Called as CuPy's RawKernel is: ``(grid, block, args)``; every argument checked against the
    kernel's C parameters (an array for a pointer, 16-byte aligned where the kernel loads vectors;
    np.int64 for a long long; a NumPy scalar of exactly the compute type for p0..p3)."""

    launches: list = []

    def __init__(self, lib, name: str, params: tuple):
        self.lib, self.name, self.params = lib, name, params

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1 and block[0] == ks.EW_THREADS, (grid, block)
        assert len(args) == len(self.params), (self.name, len(args))
        ptrs, ints, floats = [], [], []
        for (ctype, pname), arg in zip(self.params, args):
            if ctype.endswith("*"):
                assert isinstance(arg, np.ndarray), (self.name, pname, type(arg))
                if pname != "b":  # the bias is read element by element
                    assert arg.ctypes.data % 16 == 0 and arg.flags.c_contiguous | arg.flags.f_contiguous
                ptrs.append(arg.ctypes.data)
            elif ctype == "long long":
                assert type(arg) is np.int64, (self.name, pname, type(arg))
                ints.append(int(arg))
            else:
                assert type(arg) is {"float": np.float32, "double": np.float64}[ctype], (self.name, pname, type(arg))
                floats.append(float(arg))
        VecKernel.launches.append((self.name, tuple(grid)))
        rc = self.lib.shim_vec(
            self.name.encode(),
            (ctypes.c_void_p * MAX_POINTERS)(*ptrs),
            (ctypes.c_longlong * MAX_INTS)(*ints),
            (ctypes.c_double * MAX_FLOATS)(*floats),
            int(grid[0]),
            int(block[0]),
        )
        assert rc == 0, f"no kernel {self.name} in the shim library"


def kernel(build_dir: Path, name: str, tag: str) -> VecKernel:
    """The shim version of the contiguous kernel ``name`` of ``tag`` data."""
    _code, params = kernels(tag)[name]
    return VecKernel(library(build_dir, tag), name, params)
