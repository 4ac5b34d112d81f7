"""The CUDA C sources of the CuPy backend: where ``kernels/`` is, and the code built from it.

Pure Python (imports neither cupy nor numba), so the tests can compile every kernel with NVRTC
or nvcc on a machine without a GPU, from exactly the strings the backend hands to CuPy.

``kernels/`` is found next to the package (a wheel force-includes it as ``gpuact/kernels``) or at
the repository root (a checkout or an editable install). Sources are returned with their
``#include "..."`` lines of ``kernels/`` files inlined, so the text is self-contained: CuPy's
compile cache is keyed on the source text, which then changes whenever a header does.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np

from gpuact._ops import ELEMENTWISE_OPS

MATH_HEADER = "gpuact_math.cuh"
HALF_HEADER = "gpuact_half.cuh"
ELEMENTWISE_HEADER = "gpuact_elementwise.cuh"
SOFTMAX_SOURCE = "gpuact_softmax.cu"

# launch shapes shared by the backend and the tests (they must match the .cu/.cuh files)
EW_THREADS = 256  # GA_EW_THREADS
EW_UNROLL = 4  # GA_EW_UNROLL
SM_THREADS = 256  # GA_SM_THREADS: the column kernel's block
WARP_THREADS = 128  # GA_WARP_THREADS: the warp kernel's block, 4 warps
WARP_MAX_ROW = 1024  # the longest row the warp kernel holds in registers (32 lanes x 32)
WARP_WIDTHS = (1, 2, 4, 8, 16, 32)
WARP_ELEMS = (1, 2, 4, 8, 16, 32)
# dynamic shared memory the column kernel may use to keep its tile (opt-in above 48 KiB)
SMEM_CACHE_LIMIT = 96 * 1024

DTYPE_TAG = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# storage type in the kernels (float16 is raw 16-bit storage) and compute type
STORAGE_CTYPE = {"f16": "unsigned short", "f32": "float", "f64": "double"}
COMPUTE_CTYPE = {"f16": "float", "f32": "float", "f64": "double"}
COMPUTE_DTYPE = {"f16": np.dtype(np.float32), "f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}


@functools.lru_cache(maxsize=None)
def kernels_dir() -> Path:
    """``gpuact/kernels`` (wheel) or ``<repo>/kernels`` (checkout, editable install)."""
    pkg = Path(__file__).resolve().parent
    for candidate in (pkg / "kernels", pkg.parent / "kernels"):
        if (candidate / MATH_HEADER).is_file():
            return candidate
    raise FileNotFoundError(
        f"gpuact's CUDA sources ({MATH_HEADER}, ...) are in neither {pkg / 'kernels'} nor "
        f"{pkg.parent / 'kernels'}; the installation is incomplete"
    )


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)


@functools.lru_cache(maxsize=None)
def read(name: str) -> str:
    """A ``kernels/`` file with its ``#include "kernels file"`` lines replaced by the files (once each)."""
    seen: set[str] = set()

    def expand(fname: str) -> str:
        if fname in seen:
            return f"// (already included: {fname})\n"
        seen.add(fname)
        text = (kernels_dir() / fname).read_text()
        return _INCLUDE.sub(lambda mo: expand(mo.group(1)), text)

    return expand(name)


def vec_kernel_name(op: str, tag: str) -> str:
    return f"gpuact_vec_{op}_{tag}"


def _op_functor(op: str, ctype: str, struct: str) -> str:
    return (
        f"struct {struct} {{\n"
        f"    {ctype} p0, p1, p2, p3;\n"
        f"    __device__ __forceinline__ {ctype} operator()({ctype} v) const "
        f"{{ return ga::{op}<{ctype}>(v, p0, p1, p2, p3); }}\n"
        f"}};\n"
    )


def vec_kernel_code(op: str, tag: str) -> str:
    """One op's vectorised contiguous kernel, without the headers."""
    if op not in ELEMENTWISE_OPS:
        raise ValueError(f"unknown elementwise op {op!r}")
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    name = vec_kernel_name(op, tag)
    struct = f"{name}_op"
    return (
        _op_functor(op, c, struct)
        + f'extern "C" __global__ void __launch_bounds__(GA_EW_THREADS)\n'
        f"{name}(const {s}* __restrict__ x, {s}* __restrict__ y, long long n, "
        f"{c} p0, {c} p1, {c} p2, {c} p3) {{\n"
        f"    const {struct} op = {{p0, p1, p2, p3}};\n"
        f"    ga::vec_apply<{s}>(x, y, n, op);\n"
        f"}}\n"
    )


def vec_headers() -> str:
    return read(MATH_HEADER) + read(HALF_HEADER) + read(ELEMENTWISE_HEADER)


def vec_source(op: str, tag: str) -> str:
    """Self-contained source of ``vec_kernel_name(op, tag)``."""
    return vec_headers() + vec_kernel_code(op, tag)


def ew_kernel_spec(op: str, compute) -> dict:
    """The ``cupy.ElementwiseKernel`` arguments of one op, for any strides and input dtype.

    ``X`` is the input's dtype (float, int or bool: cast to the compute type), ``Y`` the
    result's dtype. ``compute`` is the compute dtype (float32 for float16/float32 results,
    float64 for float64), written into the parameters' declarations: CuPy types a placeholder
    only from array arguments, never from scalar ones (``_decide_params_type`` gets ``None``
    for a scalar), so a placeholder used only by the scalar parameters would be undecidable.
    """
    if op not in ELEMENTWISE_OPS:
        raise ValueError(f"unknown elementwise op {op!r}")
    compute = np.dtype(compute)
    ctype = {"float32": "float", "float64": "double"}[compute.name]
    return {
        "in_params": f"X x, {compute.name} p0, {compute.name} p1, {compute.name} p2, {compute.name} p3",
        "out_params": "Y y",
        "operation": f"y = (Y)(ga::{op}<{ctype}>(({ctype})x, p0, p1, p2, p3))",
        "name": f"gpuact_ew_{op}",
        "preamble": read(MATH_HEADER),
    }


def softmax_source() -> str:
    return read(SOFTMAX_SOURCE)


def softmax_kernel_names(tag: str) -> list[str]:
    names = [f"gpuact_softmax_warp_{tag}_w{w}_e1" for w in WARP_WIDTHS]
    names += [f"gpuact_softmax_warp_{tag}_w32_e{e}" for e in WARP_ELEMS[1:]]
    return names + [f"gpuact_softmax_cols_{tag}"]


def outer_axis_inner(shape, axes) -> tuple[int, int, int] | None:
    """(outer, L, inner) when ``axes`` are consecutive (or only size-1 axes lie between), else None.

    A C-contiguous array is then read in place as (outer, L, inner), the reduced axes merged.
    """
    shape = tuple(int(s) for s in shape)
    axes = tuple(axes)
    lo, hi = axes[0], axes[-1]
    if any(shape[a] != 1 for a in range(lo, hi + 1) if a not in axes):
        return None
    outer = math.prod(shape[:lo])
    length = math.prod(shape[a] for a in axes)
    inner = math.prod(shape[hi + 1 :])
    return outer, length, inner


def softmax_plan(outer: int, length: int, inner: int, tag: str, *, log: bool, max_blocks: int,
                 smem_limit: int = SMEM_CACHE_LIMIT) -> dict:
    """Which kernel runs an (outer, L, inner) softmax, with its grid, block, shared memory and args.

    ``args`` lists the integer arguments after (x, y, mask), of the numpy types ``arg_types``. ``grid`` is a tuple (x[, y]); ``max_blocks`` caps the blocks (kernels loop over the rest).
    """
    csize = COMPUTE_DTYPE[tag].itemsize
    if inner == 1 and length <= WARP_MAX_ROW:
        if length <= 32:
            width = 1 << max(0, (length - 1).bit_length())
            elems = 1
        else:
            width = 32
            elems = 1 << ((length + 31) // 32 - 1).bit_length()
        name = f"gpuact_softmax_warp_{tag}_w{width}_e{elems}"
        rows = outer
        rows_per_block = (WARP_THREADS // 32) * (32 // width)
        grid = (max(1, min(-(-rows // rows_per_block), max_blocks)),)
        return {"name": name, "grid": grid, "block": WARP_THREADS, "smem": 0,
                "args": (rows, length, int(log)), "arg_types": ("i8", "i4", "i4")}
    ct = min(inner, 32)
    ty = SM_THREADS // ct
    cache_bytes = ct * length * csize
    cache = 1 if cache_bytes <= smem_limit else 0
    tiles = -(-inner // ct)  # grid x: one block per tile of ct columns; grid y strides over outer
    if tiles > 2**31 - 1:
        raise ValueError(f"softmax: {inner} trailing elements per slice is beyond the kernel's grid")
    grid = (tiles, max(1, min(outer, 65535, max(1, max_blocks // tiles))))
    return {"name": f"gpuact_softmax_cols_{tag}", "grid": grid, "block": SM_THREADS,
            "smem": cache_bytes if cache else 0, "ty": ty,
            "args": (outer, length, inner, ct, int(log), cache),
            "arg_types": ("i8", "i8", "i8", "i4", "i4", "i4")}
