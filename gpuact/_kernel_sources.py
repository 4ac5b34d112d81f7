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

from gpuact._contract.ops import DERIVATIVE_OPS, ELEMENTWISE_OPS, GATES

MATH_HEADER = "gpuact_math.cuh"
HALF_HEADER = "gpuact_half.cuh"
ELEMENTWISE_HEADER = "gpuact_elementwise.cuh"
REDUCE_HEADER = "gpuact_reduce.cuh"
GRAD_HEADER = "gpuact_grad.cuh"
SOFTMAX_SOURCE = "gpuact_softmax.cu"
SPARSEMAX_SOURCE = "gpuact_sparsemax.cu"
SOFTMAX_GRAD_SOURCE = "gpuact_softmax_grad.cu"
SPARSEMAX_GRAD_SOURCE = "gpuact_sparsemax_grad.cu"

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
try:  # bfloat16 ("bf16"): NumPy's dtype for it comes with ml_dtypes
    import ml_dtypes

    DTYPE_TAG[np.dtype(ml_dtypes.bfloat16)] = "bf16"
except ImportError:  # pragma: no cover - the bf16 kernels still compile; no array can need them
    pass
TAG_DTYPE = {tag: dtype for dtype, tag in DTYPE_TAG.items()}
# storage type in the kernels (float16 and bfloat16 are raw 16-bit storage, gpuact_half.cuh) and
# compute type
STORAGE_CTYPE = {"f16": "unsigned short", "bf16": "ga::bf16", "f32": "float", "f64": "double"}
COMPUTE_CTYPE = {"f16": "float", "bf16": "float", "f32": "float", "f64": "double"}
COMPUTE_DTYPE: dict[str, np.dtype[Any]] = {
    "f16": np.dtype(np.float32),
    "bf16": np.dtype(np.float32),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
}
DTYPE_ITEMSIZE = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8}


@functools.cache
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


@functools.cache
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


# A contiguous kernel whose output is x or dy itself (in place) is the "_inplace" variant: plain
# loads instead of read-only ones (__ldg, ld.global.nc), which PTX allows only for data that no
# thread writes while the kernel runs (kernels/gpuact_elementwise.cuh, load16).
INPLACE_SUFFIX = "_inplace"


def vec_kernel_name(op: str, tag: str, inplace: bool = False) -> str:
    return f"gpuact_vec_{op}_{tag}" + (INPLACE_SUFFIX if inplace else "")


def _op_functor(op: str, ctype: str, struct: str, fn: str | None = None) -> str:
    """A functor of the op's canonical parameters: ``ga::<fn>(v, p0, p1, p2, p3)`` (the op, or its
    derivative ``grad_<op>``)."""
    fn = fn or op
    return (
        f"struct {struct} {{\n"
        f"    {ctype} p0, p1, p2, p3;\n"
        f"    __device__ __forceinline__ {ctype} operator()({ctype} v) const "
        f"{{ return ga::{fn}<{ctype}>(v, p0, p1, p2, p3); }}\n"
        f"}};\n"
    )


def _check_op(op: str) -> None:
    if op not in ELEMENTWISE_OPS:
        raise ValueError(f"unknown elementwise op {op!r}")


def vec_kernel_params(tag: str) -> tuple:
    """((C type, name), ...) of a forward contiguous kernel: pointers, then n, then p0..p3."""
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    return (f"const {s}*", "x"), (f"{s}*", "y"), ("long long", "n"), *((c, f"p{k}") for k in range(4))


def _vec_wrapper(name: str, params: tuple, functor: str, body: str, launch_bounds: bool = True) -> str:
    bounds = " __launch_bounds__(GA_EW_THREADS)" if launch_bounds else ""
    return (
        functor + f'extern "C" __global__ void{bounds}\n'
        f"{name}({', '.join(f'{t} {n}' for t, n in params)}) {{\n"
        f"    const {name}_op op = {{p0, p1, p2, p3}};\n"
        f"{body}"
        f"}}\n"
    )


def _nc(inplace: bool) -> str:
    return "false" if inplace else "true"


def vec_kernel_code(op: str, tag: str, inplace: bool = False) -> str:
    """One op's vectorised contiguous kernel, without the headers (``inplace``: the variant for
    ``y is x``, see ``INPLACE_SUFFIX``)."""
    _check_op(op)
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    name = vec_kernel_name(op, tag, inplace)
    # The in-place variant without __launch_bounds__: with it ptxas (sm_90) holds float64 sigmoid
    # to 64 registers and spills 32 bytes; without it every op takes <= 76 and none spills. The
    # derivative ops' forwards (first derivatives) neither: with it float64 d_gelu spills 156 bytes.
    return _vec_wrapper(
        name,
        vec_kernel_params(tag),
        _op_functor(op, c, f"{name}_op"),
        f"    ga::vec_apply<{s}, {_nc(inplace)}>(x, y, n, op);\n",
        launch_bounds=not inplace and op not in DERIVATIVE_OPS,
    )


def vec_headers() -> str:
    # the derivatives too: the forward of a derivative op d_<op> is grad_<op>
    return read(MATH_HEADER) + read(GRAD_HEADER) + read(HALF_HEADER) + read(ELEMENTWISE_HEADER)


def vec_source(op: str, tag: str, inplace: bool = False) -> str:
    """Self-contained source of ``vec_kernel_name(op, tag, inplace)``."""
    return vec_headers() + vec_kernel_code(op, tag, inplace)


# The training kernels of the contiguous path (kernels/gpuact_elementwise.cuh, vec_fused), one per
# (kind, op, dtype, bias dtype):
#   "bias"       y = op(x + b)              (x, b, y, n, units, step, tail_col, p0..p3)
#   "grad"       dx = dy * op'(x)           (dy, x, dx, n, p0..p3)
#   "grad_bias"  dx = dy * op'(x + b)       (dy, x, b, dx, n, units, step, tail_col, p0..p3)
# The bias is stored as the data (its dtype tag is the data's) or as the compute type (float32
# for float16 data: "f32"), so that neither a float16 nor a float32 bias is ever converted.
VEC_TRAINING_KINDS = ("bias", "grad", "grad_bias")


def bias_tags(tag: str) -> tuple[str, ...]:
    """The bias dtypes the contiguous kernels of ``tag`` data read: the data's and the compute type's."""
    return tuple(dict.fromkeys((tag, DTYPE_TAG[COMPUTE_DTYPE[tag]])))


def vec_training_name(kind: str, op: str, tag: str, btag: str | None = None, inplace: bool = False) -> str:
    if kind not in VEC_TRAINING_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if (btag is None) != (kind == "grad"):
        raise ValueError(f"{kind} kernels take {'no' if kind == 'grad' else 'a'} bias dtype")
    if btag is not None and btag not in bias_tags(tag):
        raise ValueError(f"{tag} data takes a bias of {bias_tags(tag)}; got {btag}")
    return f"gpuact_vec_{kind}_{op}_{tag}" + (f"_b{btag}" if btag else "") + (INPLACE_SUFFIX if inplace else "")


def vec_training_params(kind: str, tag: str, btag: str | None = None) -> tuple:
    """((C type, name), ...) of a training kernel of the contiguous path: pointers, then the
    integers, then p0..p3 (see ``VEC_TRAINING_KINDS``)."""
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    grad = kind.startswith("grad")
    params = [(f"const {s}*", "dy")] if grad else []
    params.append((f"const {s}*", "x"))
    if btag is not None:
        params.append((f"const {STORAGE_CTYPE[btag]}*", "b"))
    params += [(f"{s}*", "dx" if grad else "y"), ("long long", "n")]
    if btag is not None:
        params += [("long long", "units"), ("long long", "step"), ("long long", "tail_col")]
    return tuple(params) + tuple((c, f"p{k}") for k in range(4))


def vec_training_code(kind: str, op: str, tag: str, btag: str | None = None, inplace: bool = False) -> str:
    """One training kernel of the contiguous path, without the headers (``inplace``: the variant
    whose output is x or dy, see ``INPLACE_SUFFIX``)."""
    _check_op(op)
    name = vec_training_name(kind, op, tag, btag, inplace)
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    grad = kind.startswith("grad")
    functor = _op_functor(op, c, f"{name}_op", f"grad_{op}" if grad else op)
    body = ""
    bias = "ga::NoBias()"
    if btag is not None:
        body = f"    const ga::TrailingBias<{STORAGE_CTYPE[btag]}> bias = {{b, units, step, tail_col, 0, 0}};\n"
        bias = "bias"
    nc = _nc(inplace)
    call = (
        f"ga::vec_fused<{s}, true, {nc}>(dy, x, dx, n, {bias}, op)"
        if grad
        else f"ga::vec_fused<{s}, false, {nc}>(({s}*)0, x, y, n, {bias}, op)"
    )
    # No __launch_bounds__: with it ptxas (sm_80 and sm_90) holds some float64 backward kernels
    # to about 80 registers and spills (8-112 bytes); without it they take <= 96 and never spill.
    return _vec_wrapper(
        name, vec_training_params(kind, tag, btag), functor, body + f"    {call};\n", launch_bounds=False
    )


def vec_training_headers() -> str:
    return vec_headers()


def vec_training_source(kind: str, op: str, tag: str, btag: str | None = None, inplace: bool = False) -> str:
    """Self-contained source of ``vec_training_name(kind, op, tag, btag, inplace)``."""
    return vec_training_headers() + vec_training_code(kind, op, tag, btag, inplace)


def vec_training_variants(tag: str):
    """(kind, op, btag) of every contiguous training kernel of ``tag`` data."""
    for op in ELEMENTWISE_OPS:
        for kind in VEC_TRAINING_KINDS:
            for btag in (None,) if kind == "grad" else bias_tags(tag):
                yield kind, op, btag


class VecLaunch(NamedTuple):
    blocks: int
    ints: tuple  # n (and units, step, tail_col with a bias): np.int64 each


@functools.lru_cache(maxsize=4096)
def vec_launch(n: int, tag: str, sm_count: int, units: int = 0) -> VecLaunch:
    """The grid of a contiguous elementwise kernel over ``n`` elements (``EW_UNROLL`` vectors a
    thread, at most ``FILL_BLOCKS_PER_SM`` blocks an SM: the grid-stride loop covers the rest) and
    its integer arguments; with a trailing bias of ``units`` elements, also the column step of the
    grid stride and the scalar tail's first column, so the kernel never divides per element."""
    per = 16 // DTYPE_ITEMSIZE[tag]
    nvec = n // per
    blocks = max(1, min(_ceil_div(nvec, EW_THREADS * EW_UNROLL), sm_count * FILL_BLOCKS_PER_SM))
    threads = blocks * EW_THREADS
    if units == 0:
        return VecLaunch(blocks, (np.int64(n),))
    if threads * per >= 2**32:
        raise ValueError("the bias kernels' first columns are taken modulo in 32 bits")
    step = threads * per % units
    tail_col = nvec * per % units
    return VecLaunch(blocks, (np.int64(n), np.int64(units), np.int64(step), np.int64(tail_col)))


def ew_kernel_spec(op: str, compute) -> dict:
    """The ``cupy.ElementwiseKernel`` arguments of one op, for any strides and input dtype.

    ``X`` is the input's dtype (float, int or bool: cast to the compute type), ``Y`` the
    result's dtype. ``compute`` is the compute dtype (float32 for float16/float32 results,
    float64 for float64), written into the parameters' declarations: CuPy types a placeholder
    only from array arguments, never from scalar ones (``_decide_params_type`` gets ``None``
    for a scalar), so a placeholder used only by the scalar parameters would be undecidable.
    """
    _check_op(op)
    compute = np.dtype(compute)
    ctype = {"float32": "float", "float64": "double"}[compute.name]
    return {
        "in_params": f"X x, {_scalar_params(compute)}",
        "out_params": "Y y",
        "operation": f"y = (Y)(ga::{op}<{ctype}>(({ctype})x, p0, p1, p2, p3))",
        "name": f"gpuact_ew_{op}",
        "preamble": read(MATH_HEADER) + read(GRAD_HEADER),
    }


def _scalar_params(compute: np.dtype) -> str:
    return ", ".join(f"{compute.name} p{k}" for k in range(4))


def ew_training_spec(kind: str, op: str, compute) -> dict:
    """The ``cupy.ElementwiseKernel`` of a training kernel (``VEC_TRAINING_KINDS``) for any strides,
    dtypes and broadcasts: the strided fallback of the contiguous kernels, from the same headers.

    ``D dy``, ``X x`` and ``B b`` (the bias, broadcast by CuPy against x: any shape that
    broadcasts) are cast to the compute type; the bias is added in it, as the contiguous kernels
    do. ``Y`` is the result's dtype.
    """
    _check_op(op)
    if kind not in VEC_TRAINING_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    compute = np.dtype(compute)
    c = {"float32": "float", "float64": "double"}[compute.name]
    grad = kind.startswith("grad")
    biased = kind.endswith("bias")
    v = f"({c})x + ({c})b" if biased else f"({c})x"
    fn = f"grad_{op}" if grad else op
    value = f"ga::{fn}<{c}>({v}, p0, p1, p2, p3)"
    ins = (["D dy"] if grad else []) + ["X x"] + (["B b"] if biased else [])
    out = "dx" if grad else "y"
    return {
        "in_params": ", ".join(ins) + ", " + _scalar_params(compute),
        "out_params": f"Y {out}",
        "operation": f"{out} = (Y)(({c})dy * {value})" if grad else f"y = (Y)({value})",
        "name": f"gpuact_ew_{kind}_{op}",
        "preamble": read(MATH_HEADER) + read(GRAD_HEADER),
    }


def glu_grad_spec(compute, gate: str = "glu") -> dict:
    """A gated unit's backward (``gate``, ``gpuact._contract.ops.GATES``) in one pass over the halves:
    for ``y = op(g) * v``, ``dg = dy * v * op'(g)`` and ``dv = dy * op(g)`` (``g``, ``v``, ``dg``,
    ``dv``: views of x's and dx's halves, any strides; ``p0..p3`` the op's canonical parameters)."""
    compute = np.dtype(compute)
    c = {"float32": "float", "float64": "double"}[compute.name]
    op = GATES[gate].op
    return {
        "in_params": f"V v, G g, D dy, {_scalar_params(compute)}",
        "out_params": "Y dv, Y dg",
        "operation": (
            f"const {c} t = ({c})g, d = ({c})dy; "
            f"dv = (Y)(ga::{op}<{c}>(t, p0, p1, p2, p3) * d); "
            f"dg = (Y)(ga::grad_{op}<{c}>(t, p0, p1, p2, p3) * ({c})v * d)"
        ),
        "name": f"gpuact_ew_{gate}_grad",
        "preamble": read(MATH_HEADER) + read(GRAD_HEADER),
    }


def prelu_grad_spec(compute) -> dict:
    """PReLU's backward in one pass: leaky_relu's derivative with ``alpha`` (a broadcast view) as the
    slope: ``dx = dy`` where x > 0, ``dy * alpha`` elsewhere (from the left at 0), NaN kept."""
    compute = np.dtype(compute)
    c = {"float32": "float", "float64": "double"}[compute.name]
    z = f"({c})0"
    return {
        "in_params": "D dy, X x, A alpha",
        "out_params": "Y dx",
        "operation": f"dx = (Y)(({c})dy * ga::grad_leaky_relu<{c}>(({c})x, ({c})alpha, {z}, {z}, {z}))",
        "name": "gpuact_ew_prelu_grad",
        "preamble": read(MATH_HEADER) + read(GRAD_HEADER),
    }


# ---------------------------------------------------------------------------------------------
# The fused kernels (softmax, sparsemax): templates in kernels/*.cu, one extern "C" wrapper each,
# generated here from one table, so the sources, the plans' argument types and the tests' CPU
# shim all come from the same parameter lists.

_X = ("const S*", "x")
_Y = ("S*", "y")
_DY = ("const S*", "dy")
_DX = ("S*", "dx")
_MASK = ("const unsigned char*", "mask")
_I8 = "long long"
_I4 = "int"
# C parameter type -> the NumPy scalar a launch passes (exactly the parameter's width)
_INT_TYPES = {_I8: np.int64, _I4: np.int32}
# The softmax kernels' fused bias (kernels/gpuact_softmax.cu, BiasView): a pointer after the other
# pointers, and its mode and element strides (see BiasPlan) after the other integers. Every kernel
# takes its pointers first, then its integers (the backend and the shim rely on it).
_BIAS = ("const void*", "bias")
_BIAS_INTS = (
    (_I4, "bias_mode"),
    (_I8, "b_s0"),
    (_I8, "b_s1"),
    (_I8, "b_s2"),
    (_I8, "b_n1"),
    (_I8, "b_n2"),
    (_I8, "b_k"),
    (_I8, "b_i"),
)
BIAS_INTS = tuple(n for _, n in _BIAS_INTS)

_WARP = ((_I8, "rows"), (_I4, "L"))
_COLS = ((_I8, "outer"), (_I8, "L"), (_I8, "inner"), (_I4, "ct"))
_SPLIT = ((_I8, "L"), (_I8, "inner"), (_I4, "ct"), (_I4, "tiles"), (_I4, "segs"), (_I8, "seg_len"))
# sparsemax's split kernels take the slice count too (the workspace's layout depends on it)
_SSPLIT = ((_I8, "outer"),) + _SPLIT
_LOG = ((_I4, "log_mode"),)
_CACHE = ((_I4, "cache"),)
_WS, _CWS = ("C*", "ws"), ("const C*", "ws")

# family -> (group, kernels/ file, parameters). Pointers are named after the arrays the caller
# binds ("x", "y", "dy", "dx", "mask", "bias", "ws": the split kernels' workspace); S is the storage
# type, C the compute type. A group (the forward or backward of softmax or sparsemax) is compiled
# and tested together.
FUSED_FAMILIES = {
    "softmax_warp": ("softmax", SOFTMAX_SOURCE, (_X, _Y, _MASK, _BIAS) + _WARP + _LOG + _BIAS_INTS),
    "softmax_cols": ("softmax", SOFTMAX_SOURCE, (_X, _Y, _MASK, _BIAS) + _COLS + _LOG + _CACHE + _BIAS_INTS),
    "softmax_split_partials": ("softmax", SOFTMAX_SOURCE, (_X, _MASK, _WS, _BIAS) + _SPLIT + _BIAS_INTS),
    "softmax_split_finish": ("softmax", SOFTMAX_SOURCE, (_X, _Y, _MASK, _CWS, _BIAS) + _SPLIT + _LOG + _BIAS_INTS),
    "softmax_grad_warp": (
        "softmax_grad",
        SOFTMAX_GRAD_SOURCE,
        (_DY, _X, _DX, _MASK, _BIAS) + _WARP + _LOG + _BIAS_INTS,
    ),
    "softmax_grad_cols": (
        "softmax_grad",
        SOFTMAX_GRAD_SOURCE,
        (_DY, _X, _DX, _MASK, _BIAS) + _COLS + _LOG + _CACHE + _BIAS_INTS,
    ),
    "softmax_grad_split_partials": (
        "softmax_grad",
        SOFTMAX_GRAD_SOURCE,
        (_DY, _X, _MASK, _WS, _BIAS) + _SPLIT + _LOG + _BIAS_INTS,
    ),
    "softmax_grad_split_finish": (
        "softmax_grad",
        SOFTMAX_GRAD_SOURCE,
        (_DY, _X, _DX, _MASK, _CWS, _BIAS) + _SPLIT + _LOG + _BIAS_INTS,
    ),
    "sparsemax_warp": ("sparsemax", SPARSEMAX_SOURCE, (_X, _Y) + _WARP),
    "sparsemax_cols": ("sparsemax", SPARSEMAX_SOURCE, (_X, _Y) + _COLS + _CACHE),
    "sparsemax_split_max": ("sparsemax", SPARSEMAX_SOURCE, (_X, _WS) + _SSPLIT),
    "sparsemax_split_pass": ("sparsemax", SPARSEMAX_SOURCE, (_X, _WS) + _SSPLIT + ((_I4, "pass_index"),)),
    "sparsemax_split_resolve": ("sparsemax", SPARSEMAX_SOURCE, (_X, _WS) + _SSPLIT + ((_I4, "passes"),)),
    "sparsemax_split_finish": ("sparsemax", SPARSEMAX_SOURCE, (_X, _Y, _CWS) + _SSPLIT + ((_I4, "passes"),)),
    "sparsemax_grad_warp": ("sparsemax_grad", SPARSEMAX_GRAD_SOURCE, (_DY, _X, _DX) + _WARP),
    "sparsemax_grad_cols": ("sparsemax_grad", SPARSEMAX_GRAD_SOURCE, (_DY, _X, _DX) + _COLS + _CACHE),
    "sparsemax_grad_split_max": ("sparsemax_grad", SPARSEMAX_GRAD_SOURCE, (_X, _WS) + _SSPLIT),
    "sparsemax_grad_split_pass": (
        "sparsemax_grad",
        SPARSEMAX_GRAD_SOURCE,
        (_X, _WS) + _SSPLIT + ((_I4, "pass_index"),),
    ),
    "sparsemax_grad_split_resolve": (
        "sparsemax_grad",
        SPARSEMAX_GRAD_SOURCE,
        (_X, _WS) + _SSPLIT + ((_I4, "passes"),),
    ),
    "sparsemax_grad_split_sums": (
        "sparsemax_grad",
        SPARSEMAX_GRAD_SOURCE,
        (_DY, _X, _WS) + _SSPLIT + ((_I4, "passes"),),
    ),
    "sparsemax_grad_split_finish": (
        "sparsemax_grad",
        SPARSEMAX_GRAD_SOURCE,
        (_DY, _X, _DX, _CWS) + _SSPLIT + ((_I4, "passes"),),
    ),
}
FUSED_GROUPS = tuple(dict.fromkeys(g for g, _, _ in FUSED_FAMILIES.values()))


class KernelSpec(NamedTuple):
    name: str
    family: str
    group: str
    tag: str
    source: str  # the kernels/ file with the template
    template: str  # the C++ template call: ga::softmax_warp<float, 4, 32>
    params: tuple  # ((C type, name), ...), S and C substituted


def _warp_shapes(max_row: int = WARP_MAX_ROW):
    """(W, E) of the warp kernels for rows up to ``max_row``: W lanes a row, E values a lane."""
    return [(w, 1) for w in WARP_WIDTHS] + [(32, e) for e in WARP_ELEMS[1:] if 32 * e <= max_row]


# The warp families compiled in two variants: with the bias, and with it compiled away (the plain
# kernels keep the registers they had before the bias: kernels/gpuact_softmax.cu, BIAS).
BIASED_WARP_FAMILIES = ("softmax_warp", "softmax_grad_warp")


def _spec(family: str, tag: str, warp_shape=None, biased: bool = False) -> KernelSpec:
    group, source, params = FUSED_FAMILIES[family]
    s, c = STORAGE_CTYPE[tag], COMPUTE_CTYPE[tag]
    name = f"gpuact_{family}_{tag}"
    template_args = s
    if warp_shape is not None:
        width, elems = warp_shape
        name += f"_w{width}_e{elems}"
        template_args += f", {elems}, {width}"
    if family in BIASED_WARP_FAMILIES:
        name += "_bias" if biased else ""
        template_args += ", true" if biased else ", false"
    typed = tuple((t.replace("S*", f"{s}*").replace("C*", f"{c}*"), n) for t, n in params)
    return KernelSpec(name, family, group, tag, source, f"ga::{family}<{template_args}>", typed)


@functools.cache
def fused_kernels() -> dict[str, KernelSpec]:
    """Every fused kernel by name, all dtypes."""
    specs = {}
    for tag in STORAGE_CTYPE:
        for family in FUSED_FAMILIES:
            group = FUSED_FAMILIES[family][0]
            shapes = _warp_shapes(_warp_max_row(group, tag)) if family.endswith("_warp") else [None]
            for shape in shapes:
                for biased in (False, True) if family in BIASED_WARP_FAMILIES else (False,):
                    spec = _spec(family, tag, shape, biased)
                    specs[spec.name] = spec
    return specs


def group_kernel_names(group: str, tag: str) -> list[str]:
    """The fused kernels of one group (``FUSED_GROUPS``) and dtype."""
    if group not in FUSED_GROUPS:
        raise ValueError(f"unknown group {group!r}")
    return [n for n, s in fused_kernels().items() if s.tag == tag and s.group == group]


def softmax_kernel_names(tag: str) -> list[str]:
    return group_kernel_names("softmax", tag)


def sparsemax_kernel_names(tag: str) -> list[str]:
    return group_kernel_names("sparsemax", tag)


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


@functools.cache
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
    if family.startswith("sparsemax"):
        return TILE_THREADS * (2 * csize + 2 * 4)  # SupportSums: two sums, two int counts
    if family.startswith("softmax_grad"):
        return TILE_THREADS * 3 * csize  # MaxSumDot: max, sum and dot
    return TILE_THREADS * 2 * csize  # MaxSum: max and sum


def _cached_values(family: str) -> int:
    """Values a column kernel keeps per element in its shared-memory tile: x (+ bias), and dy."""
    return 2 if "_grad_" in family else 1


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
    pointers: tuple  # the arrays to pass, in the kernel's order: "x", "y", "dy", "dx", "mask", "ws", "bias"
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


def _warp_launch(
    family: str, tag: str, rows: int, length: int, fill: int, max_blocks: int, biased: bool = False, **ints
) -> Launch:
    """The warp kernel for rows of at most WARP_MAX_ROW: the narrowest group of lanes that holds
    a row, and the largest block that still gives half of ``fill`` blocks (the variant with the
    bias when ``biased``)."""
    if length <= 32:
        width, elems = 1 << max(0, (length - 1).bit_length()), 1
    else:
        width, elems = 32, 1 << ((length + 31) // 32 - 1).bit_length()
    rows_per_warp = 32 // width
    for block in WARP_BLOCKS:
        blocks = _ceil_div(rows, block // 32 * rows_per_warp)
        if 2 * blocks >= fill:
            break
    name = f"gpuact_{family}_{tag}_w{width}_e{elems}" + ("_bias" if biased else "")
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
    """The dynamic shared memory that keeps a tile's ct * length values (of x, and of dy for a
    backward), or 0 where they do not fit."""
    need = _cached_values(family) * ct * length * COMPUTE_DTYPE[tag].itemsize
    fits = need <= min(SMEM_CACHE_LIMIT, smem_optin - _static_smem(family, tag))
    return need if fits else 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _split_segments(
    outer: int, length: int, inner: int, tiles: int, ct: int, fill: int, min_segment: int, min_split: int
) -> tuple[int, int]:
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


# The longest row a backward warp kernel holds in registers: its lanes hold dy besides x, twice
# the forward's values, and 32 doubles of each a lane spill on sm_90 (ptxas; tested).
WARP_MAX_ROW_GRAD = {"f16": WARP_MAX_ROW, "bf16": WARP_MAX_ROW, "f32": WARP_MAX_ROW, "f64": WARP_MAX_ROW // 2}


def _warp_max_row(group: str, tag: str) -> int:
    return WARP_MAX_ROW_GRAD[tag] if group.endswith("_grad") else WARP_MAX_ROW


class BiasPlan(NamedTuple):
    """How the softmax kernels read a bias broadcast against x (kernels/gpuact_softmax.cu,
    BiasView): element (o, k, i) of the (outer, L, inner) view, o = (o0 * n1 + o1) * n2 + o2, at
    ``o0 * s0 + o1 * s1 + o2 * s2 + k * kstride + i * istride`` elements from the bias's first."""

    mode: int  # 1: stored as the data's dtype, 2: as the compute dtype (a float32 bias on float16 data)
    s0: int
    s1: int
    s2: int
    n1: int
    n2: int
    kstride: int
    istride: int

    def ints(self) -> dict:
        return dict(zip(BIAS_INTS, self))


_NO_BIAS_INTS = dict(zip(BIAS_INTS, (0, 0, 0, 0, 1, 1, 0, 0)))
MAX_OUTER_RUNS = 3


def _runs(dims) -> list[tuple[int, int]]:
    """(size, stride) dims merged into runs a single stride walks: size-1 dims dropped, and a dim
    merged into the next where its stride is the next one's times its size (a 0 stride with a 0)."""
    runs: list[tuple[int, int]] = []
    for size, stride in dims:
        if size == 1:
            continue
        if runs and runs[-1][1] == stride * size:
            runs[-1] = (runs[-1][0] * size, stride)
        else:
            runs.append((size, stride))
    return runs


@functools.lru_cache(maxsize=1024)
def bias_plan(shape: tuple, strides: tuple, lo: int, hi: int, mode: int) -> BiasPlan | None:
    """The BiasPlan of a bias whose broadcast against x (``shape``, C-contiguous, reduced along the
    consecutive axes ``lo..hi``) has the element ``strides`` (0 along broadcast axes), or None
    where the kernels cannot walk it: the reduced axes or the inner ones are not one run each, the
    outer ones are more than ``MAX_OUTER_RUNS`` (or several, with 2**32 slices or more)."""
    dims = list(zip(shape, strides))
    outer_runs, l_runs, inner_runs = _runs(dims[:lo]), _runs(dims[lo : hi + 1]), _runs(dims[hi + 1 :])
    if len(l_runs) > 1 or len(inner_runs) > 1 or len(outer_runs) > MAX_OUTER_RUNS:
        return None
    outer = math.prod(shape[:lo])
    if len(outer_runs) > 1 and outer >= 2**32:
        return None  # the kernels split the slice index with 32-bit divisions
    kstride = l_runs[0][1] if l_runs else 0
    istride = inner_runs[0][1] if inner_runs else 0
    (_, s0), (n1, s1), (n2, s2) = [(1, 0)] * (MAX_OUTER_RUNS - len(outer_runs)) + outer_runs
    if len(outer_runs) <= 1:
        n2 = max(outer, 1)  # one run (or none): the kernels never divide
    return BiasPlan(mode, s0, s1, s2, n1, n2, kstride, istride)


@functools.lru_cache(maxsize=4096)
def softmax_plan(
    outer: int,
    length: int,
    inner: int,
    tag: str,
    *,
    log: bool,
    sm_count: int,
    max_blocks: int,
    smem_optin: int = SMEM_OPTIN_DEFAULT,
    min_segment: int = SPLIT_MIN_SEGMENT,
    min_split: int = SPLIT_MIN_ELEMENTS,
    bias: BiasPlan | None = None,
) -> Plan:
    """The launches of an (outer, L, inner) softmax, in order, and the workspace they need.

    ``sm_count`` and ``max_blocks`` (a cap: the kernels' grid-stride loops cover the rest) set
    the blocks that fill the GPU (``FILL_BLOCKS_PER_SM`` an SM); ``smem_optin`` is the shared
    memory one block may opt in to. ``min_segment`` and ``min_split`` (tests) set when a row is
    split over blocks (see ``SPLIT_MIN_SEGMENT``, ``SPLIT_MIN_ELEMENTS``). ``bias``: how the
    kernels read a fused bias (``bias_plan``).
    """
    return _softmax_plan(
        "softmax", outer, length, inner, tag, log, sm_count, max_blocks, smem_optin, min_segment, min_split, bias
    )


@functools.lru_cache(maxsize=4096)
def softmax_grad_plan(
    outer: int,
    length: int,
    inner: int,
    tag: str,
    *,
    log: bool,
    sm_count: int,
    max_blocks: int,
    smem_optin: int = SMEM_OPTIN_DEFAULT,
    min_segment: int = SPLIT_MIN_SEGMENT,
    min_split: int = SPLIT_MIN_ELEMENTS,
    bias: BiasPlan | None = None,
) -> Plan:
    """The launches of an (outer, L, inner) softmax / log_softmax backward (kernels/gpuact_softmax_grad.cu):
    the forward's plan, with the backward's kernels, rows, caches and workspace (a triple each)."""
    return _softmax_plan(
        "softmax_grad", outer, length, inner, tag, log, sm_count, max_blocks, smem_optin, min_segment, min_split, bias
    )


def _softmax_plan(
    group, outer, length, inner, tag, log, sm_count, max_blocks, smem_optin, min_segment, min_split, bias
) -> Plan:
    fill = _fill(sm_count, max_blocks)
    log_mode = int(log)
    b = _NO_BIAS_INTS if bias is None else bias.ints()
    if inner == 1 and length <= _warp_max_row(group, tag):
        warp = _warp_launch(
            f"{group}_warp", tag, outer, length, fill, max_blocks, bias is not None, log_mode=log_mode, **b
        )
        return Plan((warp,), 0)
    ct, tiles = _column_tile(inner, group)
    segs, seg_len = _split_segments(outer, length, inner, tiles, ct, fill, min_segment, min_split)
    if segs == 1:
        cache = _cache_bytes(f"{group}_cols", tag, ct, length, smem_optin)
        launch = _launch(
            f"gpuact_{group}_cols_{tag}",
            _cols_grid(outer, tiles, max_blocks),
            TILE_THREADS,
            cache,
            outer=outer,
            L=length,
            inner=inner,
            ct=ct,
            log_mode=log_mode,
            cache=int(cache > 0),
            **b,
        )
        return Plan((launch,), 0)
    # one block per (slice, tile, segment): at most `fill` of them, so no grid-stride loop
    grid = (segs * tiles * outer,)
    shape = {"L": length, "inner": inner, "ct": ct, "tiles": tiles, "segs": segs, "seg_len": seg_len, **b}
    grad = group.endswith("_grad")
    partials = _launch(
        f"gpuact_{group}_split_partials_{tag}",
        grid,
        TILE_THREADS,
        **(dict(shape, log_mode=log_mode) if grad else shape),
    )
    finish = _launch(f"gpuact_{group}_split_finish_{tag}", grid, TILE_THREADS, log_mode=log_mode, **shape)
    # a (max, sum) pair each, or a (max, sum, dot) triple for the backward
    workspace = outer * segs * inner * (3 if grad else 2) * COMPUTE_DTYPE[tag].itemsize
    return Plan((partials, finish), workspace)


# The passes of sparsemax's split search (each one launch reading x once; a column whose search
# is done reads nothing): Michelot's step and a bisection each pass, as sparsemax_cols, ended in
# 2-9 passes on every family tried in a host emulation (normal, uniform, arithmetic and equal
# values, 2K-1M of them); the resolve kernel steps once more and goes on over the whole column
# where the search is still not done.
SPARSEMAX_SPLIT_PASSES = 8


def sparsemax_workspace(outer: int, segs: int, inner: int, tag: str) -> int:
    """Bytes of the split sparsemax's workspace (kernels/gpuact_sparsemax.cu, SparsemaxSplitWorkspace):
    a max per (slice, segment, column), two buffers of SupportSums (two sums, two int counts) per
    (slice, segment, column) and two of TauSearch (two bounds, an int, a bool) per column."""
    c = COMPUTE_DTYPE[tag].itemsize
    record = 2 * c + 8  # SupportSums<C> and TauSearch<C>, padded to C's alignment
    parts, cols = outer * segs * inner, outer * inner
    return parts * c + 2 * parts * record + 2 * cols * record


@functools.lru_cache(maxsize=4096)
def sparsemax_plan(
    outer: int,
    length: int,
    inner: int,
    tag: str,
    *,
    sm_count: int,
    max_blocks: int,
    smem_optin: int = SMEM_OPTIN_DEFAULT,
    min_segment: int = SPLIT_MIN_SEGMENT,
    min_split: int = SPLIT_MIN_ELEMENTS,
    passes: int = SPARSEMAX_SPLIT_PASSES,
) -> Plan:
    """The launches of an (outer, L, inner) sparsemax: one block (or group of lanes) per slice, or,
    where the slices and tiles are too few to fill the GPU, L split over blocks as softmax's
    (``min_segment``, ``min_split``: see ``softmax_plan``) with ``passes`` search passes."""
    return _sparsemax_plan(
        "sparsemax", outer, length, inner, tag, sm_count, max_blocks, smem_optin, min_segment, min_split, passes
    )


@functools.lru_cache(maxsize=4096)
def sparsemax_grad_plan(
    outer: int,
    length: int,
    inner: int,
    tag: str,
    *,
    sm_count: int,
    max_blocks: int,
    smem_optin: int = SMEM_OPTIN_DEFAULT,
    min_segment: int = SPLIT_MIN_SEGMENT,
    min_split: int = SPLIT_MIN_ELEMENTS,
    passes: int = SPARSEMAX_SPLIT_PASSES,
) -> Plan:
    """The launches of an (outer, L, inner) sparsemax backward (kernels/gpuact_sparsemax_grad.cu):
    the forward's plan with the backward's kernels, rows and caches; split, the forward's search,
    then the support's sums of dy and the write."""
    return _sparsemax_plan(
        "sparsemax_grad", outer, length, inner, tag, sm_count, max_blocks, smem_optin, min_segment, min_split, passes
    )


def _sparsemax_plan(
    group, outer, length, inner, tag, sm_count, max_blocks, smem_optin, min_segment, min_split, passes
) -> Plan:
    if length > 2**31 - 1:
        raise ValueError(f"{group}: slices of {length} elements are beyond the kernels' 32-bit counts")
    fill = _fill(sm_count, max_blocks)
    if inner == 1 and length <= _warp_max_row(group, tag):
        return Plan((_warp_launch(f"{group}_warp", tag, outer, length, fill, max_blocks),), 0)
    ct, tiles = _column_tile(inner, group)
    segs, seg_len = 1, length
    if passes > 0:
        segs, seg_len = _split_segments(outer, length, inner, tiles, ct, fill, min_segment, min_split)
    if segs == 1:
        cache = _cache_bytes(f"{group}_cols", tag, ct, length, smem_optin)
        launch = _launch(
            f"gpuact_{group}_cols_{tag}",
            _cols_grid(outer, tiles, max_blocks),
            TILE_THREADS,
            cache,
            outer=outer,
            L=length,
            inner=inner,
            ct=ct,
            cache=int(cache > 0),
        )
        return Plan((launch,), 0)
    # one block per (slice, tile, segment): at most `fill` of them, so no grid-stride loop
    grid = (segs * tiles * outer,)
    shape = {"outer": outer, "L": length, "inner": inner, "ct": ct, "tiles": tiles, "segs": segs, "seg_len": seg_len}
    launches = [_launch(f"gpuact_{group}_split_max_{tag}", grid, TILE_THREADS, **shape)]
    launches += [
        _launch(f"gpuact_{group}_split_pass_{tag}", grid, TILE_THREADS, pass_index=p, **shape) for p in range(passes)
    ]
    # a block per (slice, tile): the search ended over whole columns before any segment is written
    launches.append(
        _launch(f"gpuact_{group}_split_resolve_{tag}", (tiles * outer,), TILE_THREADS, passes=passes, **shape)
    )
    if group.endswith("_grad"):  # the support's sums of dy, per segment
        launches.append(_launch(f"gpuact_{group}_split_sums_{tag}", grid, TILE_THREADS, passes=passes, **shape))
    launches.append(_launch(f"gpuact_{group}_split_finish_{tag}", grid, TILE_THREADS, passes=passes, **shape))
    return Plan(tuple(launches), sparsemax_workspace(outer, segs, inner, tag))
