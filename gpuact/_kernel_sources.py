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
from typing import Any, NamedTuple

import numpy as np

from gpuact._ops import ELEMENTWISE_OPS

MATH_HEADER = "gpuact_math.cuh"
HALF_HEADER = "gpuact_half.cuh"
ELEMENTWISE_HEADER = "gpuact_elementwise.cuh"
REDUCE_HEADER = "gpuact_reduce.cuh"
SOFTMAX_SOURCE = "gpuact_softmax.cu"
SPARSEMAX_SOURCE = "gpuact_sparsemax.cu"

# launch shapes shared by the backend and the tests (they must match the .cu/.cuh files)
EW_THREADS = 256  # GA_EW_THREADS
EW_UNROLL = 4  # GA_EW_UNROLL
TILE_THREADS = 256  # GA_TILE_THREADS: the column kernels' block
WARP_BLOCKS = (128, 64, 32)  # the warp kernels' blocks, largest first (4, 2 or 1 warps)
WARP_MAX_ROW = 1024  # the longest row the warp kernels hold in registers (32 lanes x 32)
WARP_WIDTHS = (1, 2, 4, 8, 16, 32)
WARP_ELEMS = (1, 2, 4, 8, 16, 32)
# dynamic shared memory a column kernel may use to keep its tile (opt-in above 48 KiB)
SMEM_CACHE_LIMIT = 96 * 1024
# shared memory one block may opt in to on an H100/H200 (the backend asks the device)
SMEM_OPTIN_DEFAULT = 227 * 1024
# Blocks that fill the GPU: 8 of TILE_THREADS threads an SM is its full thread count (2048);
# a plan whose blocks are fewer than half this splits its rows over more blocks.
FILL_BLOCKS_PER_SM = 8
# A split block's segment holds at least this many elements (4 a thread), ...
SPLIT_MIN_SEGMENT = 1024
# ... and no input smaller than this is split: a second launch costs more than one block's work.
SPLIT_MIN_ELEMENTS = 2**16
GRID_X_MAX = 2**31 - 1
GRID_YZ_MAX = 65535

DTYPE_TAG = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# storage type in the kernels (float16 is raw 16-bit storage) and compute type
STORAGE_CTYPE = {"f16": "unsigned short", "f32": "float", "f64": "double"}
COMPUTE_CTYPE = {"f16": "float", "f32": "float", "f64": "double"}
COMPUTE_DTYPE: dict[str, np.dtype[Any]] = {
    "f16": np.dtype(np.float32), "f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}


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


# ---------------------------------------------------------------------------------------------
# The fused kernels (softmax, sparsemax): templates in kernels/*.cu, one extern "C" wrapper each,
# generated here from one table, so the sources, the plans' argument types and the tests' CPU
# shim all come from the same parameter lists.

_X = ("const S*", "x")
_Y = ("S*", "y")
_MASK = ("const unsigned char*", "mask")
_I8 = "long long"
_I4 = "int"
# C parameter type -> the NumPy scalar a launch passes (exactly the parameter's width)
_INT_TYPES = {_I8: np.int64, _I4: np.int32}

# family -> (kernels/ file, parameters); pointers are named after the arrays the caller binds
# ("x", "y", "mask", "ws": the split kernels' workspace), S is the storage type, C the compute type
FUSED_FAMILIES = {
    "softmax_warp": (SOFTMAX_SOURCE, (_X, _Y, _MASK, (_I8, "rows"), (_I4, "L"), (_I4, "log_mode"))),
    "softmax_cols": (SOFTMAX_SOURCE, (_X, _Y, _MASK, (_I8, "outer"), (_I8, "L"), (_I8, "inner"), (_I4, "ct"),
                                      (_I4, "log_mode"), (_I4, "cache"))),
    "softmax_split_partials": (SOFTMAX_SOURCE, (_X, _MASK, ("C*", "ws"), (_I8, "L"), (_I8, "inner"), (_I4, "ct"),
                                                (_I4, "tiles"), (_I4, "segs"), (_I8, "seg_len"))),
    "softmax_split_finish": (SOFTMAX_SOURCE, (_X, _Y, _MASK, ("const C*", "ws"), (_I8, "L"), (_I8, "inner"),
                                              (_I4, "ct"), (_I4, "tiles"), (_I4, "segs"), (_I8, "seg_len"),
                                              (_I4, "log_mode"))),
    "sparsemax_warp": (SPARSEMAX_SOURCE, (_X, _Y, (_I8, "rows"), (_I4, "L"))),
    "sparsemax_cols": (SPARSEMAX_SOURCE, (_X, _Y, (_I8, "outer"), (_I8, "L"), (_I8, "inner"), (_I4, "ct"),
                                          (_I4, "cache"))),
}


class KernelSpec(NamedTuple):
    name: str
    family: str
    tag: str
    source: str  # the kernels/ file with the template
    template: str  # the C++ template call: ga::softmax_warp<float, 4, 32>
    params: tuple  # ((C type, name), ...), S and C substituted


def _warp_shapes():
    """(W, E) of the warp kernels: W lanes a row, E values a lane."""
    return [(w, 1) for w in WARP_WIDTHS] + [(32, e) for e in WARP_ELEMS[1:]]


def _spec(family: str, tag: str, warp_shape=None) -> KernelSpec:
    source, params = FUSED_FAMILIES[family]
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    name = f"gpuact_{family}_{tag}"
    template_args = s
    if warp_shape is not None:
        width, elems = warp_shape
        name += f"_w{width}_e{elems}"
        template_args += f", {elems}, {width}"
    typed = tuple((t.replace("S*", f"{s}*").replace("C*", f"{c}*"), n) for t, n in params)
    return KernelSpec(name, family, tag, source, f"ga::{family}<{template_args}>", typed)


@functools.lru_cache(maxsize=None)
def fused_kernels() -> dict[str, KernelSpec]:
    """Every fused kernel by name, all dtypes."""
    specs = {}
    for tag in STORAGE_CTYPE:
        for family in FUSED_FAMILIES:
            shapes = _warp_shapes() if family.endswith("_warp") else [None]
            for shape in shapes:
                spec = _spec(family, tag, shape)
                specs[spec.name] = spec
    return specs


def softmax_kernel_names(tag: str) -> list[str]:
    return [n for n, s in fused_kernels().items() if s.tag == tag and s.family.startswith("softmax")]


def sparsemax_kernel_names(tag: str) -> list[str]:
    return [n for n, s in fused_kernels().items() if s.tag == tag and s.family.startswith("sparsemax")]


def kernel_wrapper(spec: KernelSpec) -> str:
    """The extern "C" entry point of one fused kernel.

    No __launch_bounds__: with it, ptxas (sm_90) caps some variants' registers low enough to
    spill; without it they get what they need (<= 255) and never spill.
    """
    params = ", ".join(f"{t} {n}" for t, n in spec.params)
    args = ", ".join(n for _, n in spec.params)
    return f'extern "C" __global__ void {spec.name}({params}) {{\n    {spec.template}({args});\n}}\n'


def fused_unit_source(names) -> str:
    """One translation unit holding the named fused kernels (the files' include guards keep each
    template file and header once)."""
    specs = [fused_kernels()[n] for n in names]
    files = list(dict.fromkeys(s.source for s in specs))
    return "".join(read(f) for f in files) + "".join(kernel_wrapper(s) for s in specs)


@functools.lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """Self-contained source of one fused kernel (headers, its template file, its wrapper)."""
    return fused_unit_source((name,))


def fused_static_smem(name: str) -> int:
    """A fused kernel's static shared memory, bytes (ptxas reports the same: tested)."""
    spec = fused_kernels()[name]
    return _static_smem(spec.family, spec.tag)


def _static_smem(family: str, tag: str) -> int:
    """The kernel's static shared memory: its tile_reduce array."""
    csize = COMPUTE_DTYPE[tag].itemsize
    if family.endswith("_warp"):
        return 0
    if family == "sparsemax_cols":
        return TILE_THREADS * (2 * csize + 2 * 4)  # SupportSums: two sums, two int counts
    return TILE_THREADS * 2 * csize  # MaxSum: max and sum


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


# ---------------------------------------------------------------------------------------------
# Launch plans: pure Python, memoised (they run on every call).


class Launch(NamedTuple):
    name: str
    grid: tuple  # (x,) or (x, y)
    block: int
    smem: int  # dynamic shared memory, bytes
    static_smem: int  # the kernel's static shared memory: the opt-in above 48 KiB counts both
    pointers: tuple  # the arrays to pass first, in order: "x", "y", "mask", "ws"
    ints: tuple  # the integer arguments after them, NumPy scalars of the C parameters' widths

    def args(self) -> dict:
        """The integer arguments by parameter name."""
        names = [n for t, n in fused_kernels()[self.name].params if not t.endswith("*")]
        return dict(zip(names, (int(v) for v in self.ints)))


class Plan(NamedTuple):
    launches: tuple  # of Launch, in order, on one stream
    workspace: int  # bytes of the "ws" array (0: none)


def _launch(name: str, grid, block: int, smem: int = 0, **ints) -> Launch:
    spec = fused_kernels()[name]
    pointers = tuple(n for t, n in spec.params if t.endswith("*"))
    int_params = [(t, n) for t, n in spec.params if not t.endswith("*")]
    if set(ints) != {n for _, n in int_params}:
        raise TypeError(f"{name} takes {[n for _, n in int_params]}; got {sorted(ints)}")
    typed = tuple(_INT_TYPES[t](ints[n]) for t, n in int_params)
    grid = tuple(int(g) for g in grid)
    return Launch(name, grid, block, smem, _static_smem(spec.family, spec.tag), pointers, typed)


def _fill(sm_count: int, max_blocks: int) -> int:
    return max(1, min(max_blocks, FILL_BLOCKS_PER_SM * sm_count))


def _warp_launch(family: str, tag: str, rows: int, length: int, fill: int, max_blocks: int, **ints) -> Launch:
    """The warp kernel for rows of at most WARP_MAX_ROW: the narrowest group of lanes that holds
    a row, and the largest block that still gives half of ``fill`` blocks."""
    if length <= 32:
        width, elems = 1 << max(0, (length - 1).bit_length()), 1
    else:
        width, elems = 32, 1 << ((length + 31) // 32 - 1).bit_length()
    rows_per_warp = 32 // width
    for block in WARP_BLOCKS:
        blocks = _ceil_div(rows, block // 32 * rows_per_warp)
        if 2 * blocks >= fill:
            break
    name = f"gpuact_{family}_{tag}_w{width}_e{elems}"
    return _launch(name, (max(1, min(blocks, max_blocks)),), block, rows=rows, L=length, **ints)


def _column_tile(inner: int, what: str) -> tuple[int, int]:
    """(ct, tiles): the columns a block takes, and the tiles that cover ``inner``."""
    ct = min(inner, 32)
    tiles = _ceil_div(inner, ct)
    if tiles > GRID_X_MAX:
        raise ValueError(f"{what}: {inner} trailing elements per slice is beyond the kernels' grid")
    return ct, tiles


def _cols_grid(outer: int, tiles: int, max_blocks: int) -> tuple[int, int]:
    # x: one block per tile of columns; y strides over `outer`
    return tiles, max(1, min(outer, GRID_YZ_MAX, max(1, max_blocks // tiles)))


def _cache_bytes(family: str, tag: str, ct: int, length: int, smem_optin: int) -> int:
    """The dynamic shared memory that keeps a tile's ct * length values, or 0 where they do not fit."""
    need = ct * length * COMPUTE_DTYPE[tag].itemsize
    fits = need <= min(SMEM_CACHE_LIMIT, smem_optin - _static_smem(family, tag))
    return need if fits else 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _split_segments(outer: int, length: int, inner: int, tiles: int, ct: int, fill: int, min_segment: int,
                    min_split: int) -> tuple[int, int]:
    """(segs, seg_len): L cut so that the (slice, tile, segment) blocks give about ``fill``;
    (1, length) where the (slice, tile) blocks give half of it already, or the input is small."""
    units = outer * tiles
    if 2 * units >= fill or outer * length * inner < min_split:
        return 1, length
    segs = min(fill // units, length * ct // min_segment)
    if segs < 2:
        return 1, length
    ny = TILE_THREADS // ct
    seg_len = _ceil_div(_ceil_div(length, segs), ny) * ny  # every thread of a column gets the same count
    return _ceil_div(length, seg_len), seg_len


@functools.lru_cache(maxsize=4096)
def softmax_plan(outer: int, length: int, inner: int, tag: str, *, log: bool, sm_count: int, max_blocks: int,
                 smem_optin: int = SMEM_OPTIN_DEFAULT, min_segment: int = SPLIT_MIN_SEGMENT,
                 min_split: int = SPLIT_MIN_ELEMENTS) -> Plan:
    """The launches of an (outer, L, inner) softmax, in order, and the workspace they need.

    ``sm_count`` and ``max_blocks`` (a cap: the kernels' grid-stride loops cover the rest) set
    the blocks that fill the GPU (``FILL_BLOCKS_PER_SM`` an SM); ``smem_optin`` is the shared
    memory one block may opt in to. ``min_segment`` and ``min_split`` (tests) set when a row is
    split over blocks (see ``SPLIT_MIN_SEGMENT``, ``SPLIT_MIN_ELEMENTS``).
    """
    fill = _fill(sm_count, max_blocks)
    log_mode = int(log)
    if inner == 1 and length <= WARP_MAX_ROW:
        return Plan((_warp_launch("softmax_warp", tag, outer, length, fill, max_blocks, log_mode=log_mode),), 0)
    ct, tiles = _column_tile(inner, "softmax")
    segs, seg_len = _split_segments(outer, length, inner, tiles, ct, fill, min_segment, min_split)
    if segs == 1:
        cache = _cache_bytes("softmax_cols", tag, ct, length, smem_optin)
        launch = _launch(f"gpuact_softmax_cols_{tag}", _cols_grid(outer, tiles, max_blocks), TILE_THREADS, cache,
                         outer=outer, L=length, inner=inner, ct=ct, log_mode=log_mode, cache=int(cache > 0))
        return Plan((launch,), 0)
    # one block per (slice, tile, segment): at most `fill` of them, so no grid-stride loop
    grid = (segs * tiles * outer,)
    shape = {"L": length, "inner": inner, "ct": ct, "tiles": tiles, "segs": segs, "seg_len": seg_len}
    partials = _launch(f"gpuact_softmax_split_partials_{tag}", grid, TILE_THREADS, **shape)
    finish = _launch(f"gpuact_softmax_split_finish_{tag}", grid, TILE_THREADS, log_mode=log_mode, **shape)
    workspace = outer * segs * inner * 2 * COMPUTE_DTYPE[tag].itemsize  # a (max, sum) pair each
    return Plan((partials, finish), workspace)


@functools.lru_cache(maxsize=4096)
def sparsemax_plan(outer: int, length: int, inner: int, tag: str, *, sm_count: int, max_blocks: int,
                   smem_optin: int = SMEM_OPTIN_DEFAULT) -> Plan:
    """The launch of an (outer, L, inner) sparsemax: one block (or group of lanes) per slice."""
    if length > 2**31 - 1:
        raise ValueError(f"sparsemax: slices of {length} elements are beyond the kernels' 32-bit counts")
    if inner == 1 and length <= WARP_MAX_ROW:
        return Plan((_warp_launch("sparsemax_warp", tag, outer, length, _fill(sm_count, max_blocks), max_blocks),), 0)
    ct, tiles = _column_tile(inner, "sparsemax")
    cache = _cache_bytes("sparsemax_cols", tag, ct, length, smem_optin)
    launch = _launch(f"gpuact_sparsemax_cols_{tag}", _cols_grid(outer, tiles, max_blocks), TILE_THREADS, cache,
                     outer=outer, L=length, inner=inner, ct=ct, cache=int(cache > 0))
    return Plan((launch,), 0)
