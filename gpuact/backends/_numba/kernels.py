"""Kernel factories: each returns a plain Python kernel function closing over device functions
from ``scalar``, and ``signature(...)`` builds the explicit Numba signature it is compiled with.

Every kernel uses 64-bit indices (``n``, loop counters and offsets are int64). Arrays are passed
as Numba arrays:

* ``elementwise_contig``  x, y 1-D contiguous: the fast path, one load and one store per element,
                          grid-stride loop.
* ``elementwise_nd``      x, y N-D of the same shape, any strides (layout "A", negative and zero
                          strides included), after the host merged what axes it could
                          (``numba_backend._merge_axes``): each thread unravels its first flat
                          index once and then steps by the grid stride as a mixed-radix odometer
                          (``g``: the grid stride's digits, from the host), one add, compare and
                          conditional subtract per axis per element and no 64-bit division in the
                          loop (a signed 64-bit ``//`` or ``%`` is a ~70-instruction subroutine).
* ``copy_nd``, ``mask_nd`` the same N-D walk for copies (with dtype conversion) and masks.
* ``binary_nd``           the gated units (``a * op(b)`` over two views of x) and prelu (x, alpha).
* ``softmax_tile``        a block per tile of columns of a contiguous (outer, L, inner) array
                          (layout in ``plan.py``): per-thread online (max, sum of exp) over its
                          share of L, then a pairwise tree merge in shared memory, then the write.
* ``softmax_partials``    the split for long L: block (tile, segment) writes the segment's
  ``softmax_finish``      (max, sum) per column to a workspace; block (tile, segment) of the
                          second kernel merges the column's partials and writes its segment.
* ``sparsemax_tile``      a block per tile: the slice max, then tau by Michelot's fixed point
                          (safeguarded by bisection), each step one block reduction.
* ``sparsemax_split_*``   the split for long L, as softmax's: the segments' maxima, the search's
                          steps one launch each (the partial sums per segment in a workspace),
                          the rest of the search a block per tile, the segments written; for
                          the backward, the support's sums of dy per segment, then dx.

Training (``gpuact.backward`` and ``bias=``):

* ``elementwise_bias_contig``, ``grad_contig``  the flat kernels with a bias along x's trailing
                          axes (a column counter advanced by the grid stride modulo the bias size:
                          no division per element) and the backward dx = dy * f'(x [+ b]);
  ``elementwise_bias_nd``, ``grad_nd``  the same over the N-D walk, any bias broadcast as a view.
* ``softmax_grad_tile``   the softmax / log_softmax backward in the forward's layout, the forward
  ``softmax_grad_partials`` recomputed: (max, sum of exp, sum of dy exp or of dy) per column, then
  ``softmax_grad_finish``  dx; split over blocks for long L as the forward. Every softmax kernel,
                          forward and backward, takes a mask and a compact bias (``bias_column``).
* ``sparsemax_grad_tile`` the forward's tau search (``_sparsemax_search``, shared), then the sum
                          of dy over the support and dx, in one kernel.
* ``glu_grad_nd``, ``prelu_grad_nd``  one pass each over the N-D walk.

Reductions use shared memory and ``syncthreads`` only (no warp shuffles), so the CUDA simulator
runs the very same code. float16 data is loaded, converted to float32, computed, and converted
back on store.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, types
from numba.np.numpy_support import from_dtype

from gpuact._contract.ops import GATES
from gpuact.backends._numba import plan as P
from gpuact.backends._numba.scalar import M, device_functions, grad_functions
from gpuact.backends._numba.storage import kernel_dtype, load, store

BLOCK = P.BLOCK  # threads per block of the reduction kernels, at most (shared-memory slots)
# sparsemax's tau search: Michelot's steps alone first (2-12 steps on every family tried in a host
# emulation of this search: normal, uniform, heavy-tailed, arithmetic, geometric, bunched and
# power-law values, 1K-200K of them), then alternating with bisection, which halves the bracket every
# other step and so bounds the worst case (Michelot alone can take a step per value) by about
# 2 x (mantissa bits + exponent range) more steps. MAX_STEPS is a backstop never reached.
SPARSEMAX_MICHELOT_STEPS = 16
SPARSEMAX_MAX_STEPS = 512


def compute_type(out_dtype):
    """numpy scalar type the math runs in: float64 for float64 results, else float32."""
    return np.float64 if np.dtype(out_dtype) == np.float64 else np.float32


def for_simulator(fn):
    """``fn`` wrapped to run under ``numpy.errstate(all="ignore")`` in the simulator, whose NumPy
    scalars warn (and under ``-W error`` raise) where CUDA silently gives inf or NaN. The wrapper
    shares ``fn``'s globals, so the simulator's swap of the ``cuda`` module reaches ``fn`` too."""
    import types as pytypes

    def make(inner):
        def kernel(*args):
            with np.errstate(all="ignore"):
                inner(*args)

        return kernel

    w = make(fn)
    return pytypes.FunctionType(w.__code__, fn.__globals__, fn.__name__, w.__defaults__, w.__closure__)


# ---------------------------------------------------------------------------------------------
# signatures


def array_type(dtype, ndim, layout="A"):
    return types.Array(from_dtype(kernel_dtype(dtype)), ndim, layout)


def signature(*args):
    """``void(args...)``: dtype-like → its Numba scalar type; (dtype, ndim, layout) → an array."""
    converted = []
    for a in args:
        if isinstance(a, tuple):
            converted.append(array_type(*a))
        elif isinstance(a, types.Type):
            converted.append(a)
        else:
            converted.append(from_dtype(np.dtype(a)))
    return types.void(*converted)


def steps_type(ndim):
    """The odometer's per-axis step (the grid stride in the merged shape's mixed radix)."""
    return types.UniTuple(types.int64, ndim)


# ---------------------------------------------------------------------------------------------
# elementwise


def elementwise_contig(op, ft):
    f = device_functions(ft)[op]

    def kernel(x, y, n, p0, p1, p2, p3):
        i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
        step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
        while i < n:
            store(y, i, f(ft(load(x, i)), p0, p1, p2, p3))
            i += step

    kernel.__name__ = f"gpuact_{op}_contig"
    return kernel


def elementwise_contig_signature(in_dtype, out_dtype):
    ft = compute_type(out_dtype)
    return signature((in_dtype, 1, "C"), (out_dtype, 1, "C"), np.int64, ft, ft, ft, ft)


def _nd_kernel(name, ndim, args, body, namespace, shape_of="y"):
    """exec a grid-stride kernel over the ``n`` elements of N-D arrays shaped like ``shape_of``.

    ``args`` name ``n`` (elements) and ``g`` (the odometer steps: the grid stride written in the
    mixed radix of the shape, most significant digit unbounded). A thread unravels its first
    index once (the only divisions); then each step adds ``g`` digit by digit with a carry.
    Digits stay below their radix (d + g + carry < 2 * radix, so one subtraction suffices)
    while ``i < n``; the top digit needs no bound, ``i < n`` ends the loop.
    """
    last = ndim - 1
    lines = [
        f"def {name}({', '.join(args)}):",
        "    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x",
        "    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x",
    ]
    lines += [f"    s{k} = np.int64({shape_of}.shape[{k}])" for k in range(1, ndim)]
    lines += [f"    g{k} = g[{k}]" for k in range(ndim)]
    lines.append("    r = i")
    for k in range(last, 0, -1):
        lines += [f"    d{k} = r % s{k}", f"    r = r // s{k}"]
    lines.append("    d0 = r")
    lines.append("    while i < n:")
    idx = ", ".join(f"d{k}" for k in range(ndim))
    lines += [f"        {line}".replace("IDX", idx) for line in body]
    lines.append("        i += step")
    for k in range(last, 0, -1):
        lines += [
            f"        d{k} += g{k}",
            f"        if d{k} >= s{k}:",
            f"            d{k} -= s{k}",
            f"            d{k - 1} += 1",
        ]
    lines.append("        d0 += g0")
    ns = {"np": np, "cuda": cuda, "load": load, "store": store, **namespace}
    exec("\n".join(lines), ns)  # noqa: S102 - generated from the fixed templates above
    return ns[name]


def elementwise_nd(op, ft, ndim):
    f = device_functions(ft)[op]
    return _nd_kernel(
        f"gpuact_{op}_nd{ndim}",
        ndim,
        ["x", "y", "n", "g", "p0", "p1", "p2", "p3"],
        ["store(y, (IDX), f(ft(load(x, (IDX))), p0, p1, p2, p3))"],
        {"f": f, "ft": ft},
    )


def elementwise_nd_signature(in_dtype, out_dtype, ndim):
    ft = compute_type(out_dtype)
    return signature((in_dtype, ndim, "A"), (out_dtype, ndim, "A"), np.int64, steps_type(ndim), ft, ft, ft, ft)


# ---------------------------------------------------------------------------------------------
# the fused bias and the elementwise backward


def elementwise_bias_contig(op, ft):
    """y = op(x + b) for C-contiguous x, y and a bias ``b`` along x's trailing axes (x's flat
    element i takes ``b[i % nb]``): each thread keeps its column ``i % nb`` and advances it by the
    grid stride's ``cstep = stride % nb`` (host-computed) with one compare and subtract, so the
    loop never divides."""
    f = device_functions(ft)[op]

    def kernel(x, b, y, n, nb, cstep, p0, p1, p2, p3):
        i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
        step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
        col = i % nb
        while i < n:
            store(y, i, f(ft(load(x, i)) + ft(load(b, col)), p0, p1, p2, p3))
            i += step
            col += cstep
            if col >= nb:
                col -= nb

    kernel.__name__ = f"gpuact_{op}_bias_contig"
    return kernel


def elementwise_bias_contig_signature(in_dtype, bias_dtype, out_dtype):
    ft = compute_type(out_dtype)
    return signature(
        (in_dtype, 1, "C"), (bias_dtype, 1, "C"), (out_dtype, 1, "C"), np.int64, np.int64, np.int64, ft, ft, ft, ft
    )


def elementwise_bias_nd(op, ft, ndim):
    """y = op(x + b) over N-D views, the bias a broadcast view of x's shape (zero strides)."""
    f = device_functions(ft)[op]
    return _nd_kernel(
        f"gpuact_{op}_bias_nd{ndim}",
        ndim,
        ["x", "b", "y", "n", "g", "p0", "p1", "p2", "p3"],
        ["store(y, (IDX), f(ft(load(x, (IDX))) + ft(load(b, (IDX))), p0, p1, p2, p3))"],
        {"f": f, "ft": ft},
    )


def elementwise_bias_nd_signature(in_dtype, bias_dtype, out_dtype, ndim):
    ft = compute_type(out_dtype)
    return signature(
        (in_dtype, ndim, "A"),
        (bias_dtype, ndim, "A"),
        (out_dtype, ndim, "A"),
        np.int64,
        steps_type(ndim),
        ft,
        ft,
        ft,
        ft,
    )


def grad_contig(op, ft, biased=False):
    """dx = dy * op'(x) (``op'(x + b)`` when ``biased``, b along x's trailing axes as in
    ``elementwise_bias_contig``) over contiguous dy, x, dx: one read of each and one write. dx
    may be dy or x itself (each element is read before the same thread writes it)."""
    g = grad_functions(ft)[op]
    if biased:

        def kernel(dy, x, b, dx, n, nb, cstep, p0, p1, p2, p3):
            i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
            step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
            col = i % nb
            while i < n:
                store(dx, i, ft(load(dy, i)) * g(ft(load(x, i)) + ft(load(b, col)), p0, p1, p2, p3))
                i += step
                col += cstep
                if col >= nb:
                    col -= nb
    else:

        def kernel(dy, x, dx, n, p0, p1, p2, p3):  # type: ignore[misc]  # the other variant's signature
            i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
            step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
            while i < n:
                store(dx, i, ft(load(dy, i)) * g(ft(load(x, i)), p0, p1, p2, p3))
                i += step

    kernel.__name__ = f"gpuact_{op}_grad{'_bias' if biased else ''}_contig"
    return kernel


def grad_contig_signature(dy_dtype, in_dtype, out_dtype, bias_dtype=None):
    ft = compute_type(out_dtype)
    if bias_dtype is None:
        return signature((dy_dtype, 1, "C"), (in_dtype, 1, "C"), (out_dtype, 1, "C"), np.int64, ft, ft, ft, ft)
    return signature(
        (dy_dtype, 1, "C"),
        (in_dtype, 1, "C"),
        (bias_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        np.int64,
        np.int64,
        np.int64,
        ft,
        ft,
        ft,
        ft,
    )


def grad_nd(op, ft, ndim, biased=False):
    """dx = dy * op'(x [+ b]) over N-D views (the bias a broadcast view of x's shape)."""
    g = grad_functions(ft)[op]
    if biased:
        args, value = ["dy", "x", "b", "dx"], "ft(load(x, (IDX))) + ft(load(b, (IDX)))"
    else:
        args, value = ["dy", "x", "dx"], "ft(load(x, (IDX)))"
    name = f"gpuact_{op}_grad{'_bias' if biased else ''}_nd{ndim}"
    return _nd_kernel(
        name,
        ndim,
        args + ["n", "g", "p0", "p1", "p2", "p3"],
        [f"store(dx, (IDX), ft(load(dy, (IDX))) * gf({value}, p0, p1, p2, p3))"],
        {"gf": g, "ft": ft},
        shape_of="dx",
    )


def grad_nd_signature(dy_dtype, in_dtype, out_dtype, ndim, bias_dtype=None):
    ft = compute_type(out_dtype)
    arrays = [(dy_dtype, ndim, "A"), (in_dtype, ndim, "A")]
    if bias_dtype is not None:
        arrays.append((bias_dtype, ndim, "A"))
    return signature(*arrays, (out_dtype, ndim, "A"), np.int64, steps_type(ndim), ft, ft, ft, ft)


def copy_nd(ndim, in_dtype, out_dtype):
    """y = x elementwise with a dtype conversion (float16 and bfloat16 go through float32)."""
    in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
    halves = [d for d in (in_dtype, out_dtype) if d == np.float16 or kernel_dtype(d) != d]
    if in_dtype == out_dtype:
        body = ["y[IDX] = x[IDX]"]  # the same bits, bfloat16's included
    elif halves:
        body = ["store(y, (IDX), np.float32(load(x, (IDX))))"]
    else:
        body = ["store(y, (IDX), x[IDX])"]
    return _nd_kernel(f"gpuact_copy_nd{ndim}", ndim, ["x", "y", "n", "g"], body, {})


def copy_nd_signature(in_dtype, out_dtype, ndim):
    return signature((in_dtype, ndim, "A"), (out_dtype, ndim, "A"), np.int64, steps_type(ndim))


def mask_nd(ndim, in_dtype):
    """y (uint8) = 1 where the mask is set: bool → itself, numbers → ``> 0.5`` (as NumPy's path)."""
    if np.dtype(in_dtype) == np.bool_:
        body = ["y[IDX] = np.uint8(1) if x[IDX] else np.uint8(0)"]
    else:
        body = ["y[IDX] = np.uint8(1) if np.float64(load(x, (IDX))) > 0.5 else np.uint8(0)"]
    return _nd_kernel(f"gpuact_mask_nd{ndim}", ndim, ["x", "y", "n", "g"], body, {})


def mask_nd_signature(in_dtype, ndim):
    return signature((in_dtype, ndim, "A"), (np.uint8, ndim, "A"), np.int64, steps_type(ndim))


def binary_nd(kind, ft, ndim):
    """A gated unit (``kind`` a name of ``gpuact._contract.ops.GATES``): y = a * op(b), with a the
    value half and b the gate half (glu: a * sigmoid(b)); prelu: y = max(x, 0) + alpha * min(x, 0)
    (a = x, b = alpha)."""
    fns = device_functions(ft)
    ns = {"ft": ft, "fmax": fns["_fmax"], "fmin": fns["_fmin"], "zero": ft(0)}
    if kind in GATES:
        gate = GATES[kind]
        body = ["store(y, (IDX), ft(load(a, (IDX))) * act(ft(load(b, (IDX))), p0, p1, p2, p3))"]
        ns.update(_gate_namespace(gate, ft, fns))
    elif kind == "prelu":
        # where alpha is 0 (Keras's initial PReLU) the negative part is 0, also at x = -inf (the
        # limit, as leaky_relu), not 0 * -inf
        body = [
            "v = ft(load(a, (IDX)))",
            "al = ft(load(b, (IDX)))",
            "neg = al * fmin(v, zero) if al != zero else zero",
            "store(y, (IDX), fmax(v, zero) + neg)",
        ]
    else:  # pragma: no cover
        raise ValueError(kind)
    return _nd_kernel(f"gpuact_{kind}_nd{ndim}", ndim, ["a", "b", "y", "n", "g"], body, ns)


def _gate_namespace(gate, ft, fns, grads=None) -> dict:
    """The gate's op (``act``), its derivative (``act_grad``) and its parameters as constants."""
    params = tuple(ft(p) for p in gate.params) + (ft(0),) * (4 - len(gate.params))
    ns = {"act": fns[gate.op], **{f"p{k}": params[k] for k in range(4)}}
    if grads is not None:
        ns["act_grad"] = grads[gate.op]
    return ns


def binary_nd_signature(a_dtype, b_dtype, out_dtype, ndim):
    return signature((a_dtype, ndim, "A"), (b_dtype, ndim, "A"), (out_dtype, ndim, "A"), np.int64, steps_type(ndim))


def glu_grad_nd(ft, ndim, gate="glu"):
    """A gated unit's backward over the output's shape: a (the value half) and b (the gate half)
    of x, da and db those of dx; for y = a * op(b), da = dy op(b), db = dy a op'(b), both halves
    written in one pass."""
    fns, grads = device_functions(ft), grad_functions(ft)
    body = [
        "bv = ft(load(b, (IDX)))",
        "d = ft(load(dy, (IDX)))",
        "store(da, (IDX), act(bv, p0, p1, p2, p3) * d)",
        "store(db, (IDX), act_grad(bv, p0, p1, p2, p3) * ft(load(a, (IDX))) * d)",
    ]
    ns = {"ft": ft, **_gate_namespace(GATES[gate], ft, fns, grads)}
    return _nd_kernel(
        f"gpuact_{gate}_grad_nd{ndim}", ndim, ["a", "b", "dy", "da", "db", "n", "g"], body, ns, shape_of="db"
    )


def glu_grad_nd_signature(in_dtype, dy_dtype, out_dtype, ndim):
    return signature(
        (in_dtype, ndim, "A"),
        (in_dtype, ndim, "A"),
        (dy_dtype, ndim, "A"),
        (out_dtype, ndim, "A"),
        (out_dtype, ndim, "A"),
        np.int64,
        steps_type(ndim),
    )


def prelu_grad_nd(ft, ndim):
    """dx = dy where x > 0, dy * alpha elsewhere (the left derivative at 0); NaN in x stays."""
    # alpha is loaded unconditionally: a load under the branch doubled the registers (70 at sm_90)
    body = [
        "v = ft(load(x, (IDX)))",
        "al = ft(load(alpha, (IDX)))",
        "gv = one if v > zero else al",
        "store(dx, (IDX), ft(load(dy, (IDX))) * (v if v != v else gv))",
    ]
    ns = {"ft": ft, "one": ft(1), "zero": ft(0)}
    return _nd_kernel(
        f"gpuact_prelu_grad_nd{ndim}", ndim, ["dy", "x", "alpha", "dx", "n", "g"], body, ns, shape_of="dx"
    )


def prelu_grad_nd_signature(dy_dtype, in_dtype, alpha_dtype, out_dtype, ndim):
    return signature(
        (dy_dtype, ndim, "A"),
        (in_dtype, ndim, "A"),
        (alpha_dtype, ndim, "A"),
        (out_dtype, ndim, "A"),
        np.int64,
        steps_type(ndim),
    )


# ---------------------------------------------------------------------------------------------
# tiles of columns (softmax, sparsemax): see plan.py for the layout


@cuda.jit(device=True)
def tile_thread(inner):
    """(tx, ty, TX, TY): this thread's column in the tile, its place along L, and the tile's
    shape. Rows (inner == 1) are launched as blockDim (TY, TX), so that the threads of a row are
    the fastest-varying ones and a warp reads along the row; columns as (TX, TY)."""
    if inner == 1:
        return (
            np.int64(cuda.threadIdx.y),
            np.int64(cuda.threadIdx.x),
            np.int64(cuda.blockDim.y),
            np.int64(cuda.blockDim.x),
        )
    return (
        np.int64(cuda.threadIdx.x),
        np.int64(cuda.threadIdx.y),
        np.int64(cuda.blockDim.x),
        np.int64(cuda.blockDim.y),
    )


@cuda.jit(device=True)
def column_base(c, L, inner):
    """Offset of element 0 of column c (= o * inner + j) of a contiguous (outer, L, inner) array."""
    o = c // inner
    return o * L * inner + (c - o * inner)


@cuda.jit(device=True)
def bias_column(c, bz):
    """Offset in the compact bias of column c's element 0. ``bz = (n1, n2, t0, t1, t2, tl)``
    (``plan.softmax_bias_layout``): c's digits (d0, d1, d2) in the radix (-, n1, n2) of the merged
    non-reduced axes, each with its bias stride; a bias broadcast over all of them (a Dense
    layer's) is one digit of stride 0 and costs no division."""
    n1 = bz[0]
    n2 = bz[1]
    off = np.int64(0)
    if n2 != 1:
        q = c // n2
        off += (c - q * n2) * bz[4]
        c = q
    if n1 != 1:
        q = c // n1
        off += (c - q * n1) * bz[3]
        c = q
    return off + c * bz[2]


_parts_cache: dict = {}


def _reductions(ft):
    """Block-wide reductions over the ``TY`` threads of each column of a tile, pairwise (a tree in
    shared memory, slot ``ty * TX + tx``), their result handed to every thread of the column."""
    key = ("reductions", ft)
    if key in _parts_cache:
        return _parts_cache[key]
    fns = device_functions(ft)
    fmax, online_merge = fns["_fmax"], fns["_online_merge"]
    dev = cuda.jit(device=True)

    @dev
    def block_max(sh, tx, ty, TX, TY, v):
        i = ty * TX + tx
        sh[i] = v
        cuda.syncthreads()
        h = TY // 2
        while h > 0:
            if ty < h:
                sh[i] = fmax(sh[i], sh[i + h * TX])
            cuda.syncthreads()
            h //= 2
        v = sh[tx]
        cuda.syncthreads()  # all have read slot tx before the slots are reused
        return v

    @dev
    def block_sum_count(sh, shk, tx, ty, TX, TY, s, k):
        i = ty * TX + tx
        sh[i] = s
        shk[i] = k
        cuda.syncthreads()
        h = TY // 2
        while h > 0:
            if ty < h:
                j = i + h * TX
                sh[i] = sh[i] + sh[j]
                shk[i] = shk[i] + shk[j]
            cuda.syncthreads()
            h //= 2
        s = sh[tx]
        k = shk[tx]
        cuda.syncthreads()
        return s, k

    @dev
    def block_softmax_merge(shm, shs, tx, ty, TX, TY, m, s):
        i = ty * TX + tx
        shm[i] = m
        shs[i] = s
        cuda.syncthreads()
        h = TY // 2
        while h > 0:
            if ty < h:
                j = i + h * TX
                mm, ss = online_merge(shm[i], shs[i], shm[j], shs[j])
                shm[i] = mm
                shs[i] = ss
            cuda.syncthreads()
            h //= 2
        m = shm[tx]
        s = shs[tx]
        cuda.syncthreads()
        return m, s

    out = _parts_cache[key] = (block_max, block_sum_count, block_softmax_merge)
    return out


def _grad_merge(ft, log):
    """The softmax backward's block merge of (max, sum of exp, second sum), as
    ``block_softmax_merge``."""
    key = ("grad_merge", ft, log)
    if key in _parts_cache:
        return _parts_cache[key]
    merge = device_functions(ft)["_online_merge_sum" if log else "_online_merge_dot"]

    @cuda.jit(device=True)
    def block_merge(shm, shs, sht, tx, ty, TX, TY, m, s, t):
        i = ty * TX + tx
        shm[i] = m
        shs[i] = s
        sht[i] = t
        cuda.syncthreads()
        h = TY // 2
        while h > 0:
            if ty < h:
                j = i + h * TX
                mm, ss, tt = merge(shm[i], shs[i], sht[i], shm[j], shs[j], sht[j])
                shm[i] = mm
                shs[i] = ss
                sht[i] = tt
            cuda.syncthreads()
            h //= 2
        m = shm[tx]
        s = shs[tx]
        t = sht[tx]
        cuda.syncthreads()
        return m, s, t

    _parts_cache[key] = block_merge
    return block_merge


# ---------------------------------------------------------------------------------------------
# softmax / log_softmax, forward and backward
#
# Every softmax kernel takes a mask ``msk`` (uint8, the data's layout; 1 = keep) and a bias ``b``
# (the compact bias, read at ``bias_column(c, bz) + k * bz[5]`` for element k of column c); the
# factories' ``masked`` and ``biased`` decide at compile time whether they are read at all
# (unmasked, unbiased launches pass a one-element dummy for both).


def _value(ft, biased):
    """v = x[idx] (+ b[boff]) in the compute type: the softmax input, the bias added in the kernel."""
    key = ("value", ft, biased)
    if key in _parts_cache:
        return _parts_cache[key]

    @cuda.jit(device=True)
    def value(x, b, idx, boff):
        v = ft(load(x, idx))
        if biased:
            v = v + ft(load(b, boff))
        return v

    _parts_cache[key] = value
    return value


def _softmax_parts(ft, log, masked, biased):
    """(stats, write): a thread's share of a column segment [k0, k1) (elements k0 + ty, + TY, ...)."""
    key = ("softmax", ft, log, masked, biased)
    if key in _parts_cache:
        return _parts_cache[key]
    online_add = device_functions(ft)["_online_add"]
    value = _value(ft, biased)
    zero, one, ninf, nan = ft(0), ft(1), ft(-math.inf), ft(math.nan)
    dev = cuda.jit(device=True)

    @dev
    def stats(x, msk, b, base, bc, bl, inner, k0, k1, ty, TY):
        """(max, sum of exp(v - max)) of the thread's elements; masked ones count as -inf. The sum
        is compensated: a column of 2**25 equal values must not stall at 2**24."""
        m, s, c = ninf, zero, zero
        k = k0 + ty
        idx = base + k * inner
        boff = bc + k * bl
        stride = TY * inner
        bstride = TY * bl
        while k < k1:
            v = value(x, b, idx, boff)
            if masked and msk[idx] == 0:
                v = ninf
            m, s, c = online_add(m, s, c, v, one)
            k += TY
            idx += stride
            boff += bstride
        return m, s + c

    @dev
    def write(x, y, msk, b, base, bc, bl, inner, k0, k1, ty, TY, m, s):
        """The result for the thread's elements given the column's (max, sum). A column whose max
        is not finite (NaN, +inf, all -inf) is NaN throughout, as x - max is in NumPy's path;
        masked positions are 0, also in a fully masked column."""
        finite = m - m == zero
        inv = one / s
        log_s = M.log(s)
        k = k0 + ty
        idx = base + k * inner
        boff = bc + k * bl
        stride = TY * inner
        bstride = TY * bl
        while k < k1:
            v = value(x, b, idx, boff)
            if not finite:
                r = nan
            elif log:
                r = (v - m) - log_s
            else:
                r = M.exp(v - m) * inv
            if masked and msk[idx] == 0:
                r = zero
            store(y, idx, r)
            k += TY
            idx += stride
            boff += bstride

    out = _parts_cache[key] = (stats, write)
    return out


def _softmax_name(kind, log, masked, biased=False):
    return f"gpuact_{'log_' if log else ''}softmax_{kind}{'_masked' if masked else ''}{'_bias' if biased else ''}"


def softmax_tile(ft, log, masked, biased=False):
    """A block per tile of columns (grid-stride over tiles): the single-pass softmax."""
    stats, write = _softmax_parts(ft, log, masked, biased)
    merge = _reductions(ft)[2]
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(x, y, msk, b, bz, cols, L, inner):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tiles = (cols + TX - 1) // TX
        tile = np.int64(cuda.blockIdx.x)
        bl = bz[5]
        while tile < tiles:
            c = tile * TX + tx
            live = c < cols
            base = column_base(c, L, inner)
            bc = bias_column(c, bz) if biased else np.int64(0)
            m, s = ninf, zero
            if live:
                m, s = stats(x, msk, b, base, bc, bl, inner, np.int64(0), L, ty, TY)
            m, s = merge(shm, shs, tx, ty, TX, TY, m, s)
            if live:
                write(x, y, msk, b, base, bc, bl, inner, np.int64(0), L, ty, TY, m, s)
            tile += cuda.gridDim.x

    kernel.__name__ = _softmax_name("tile", log, masked, biased)
    return kernel


def bias_layout_type():
    """``bz``, the compact bias's addressing (``bias_column``)."""
    return types.UniTuple(types.int64, 6)


def softmax_tile_signature(in_dtype, out_dtype, bias_dtype=np.uint8):
    return signature(
        (in_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        np.int64,
        np.int64,
        np.int64,
    )


def softmax_partials(ft, masked, biased=False):
    """Split softmax, first kernel: block b = (tile, segment) writes each column's (max, sum) over
    the segment to ``wm``/``ws`` at ``c * segs + segment``."""
    stats, _ = _softmax_parts(ft, False, masked, biased)
    merge = _reductions(ft)[2]
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(x, msk, b, bz, wm, ws, cols, L, inner, segs, seg_len):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        blk = np.int64(cuda.blockIdx.x)
        tile = blk // segs
        seg = blk - tile * segs
        k0 = seg * seg_len
        k1 = min(L, k0 + seg_len)
        c = tile * TX + tx
        live = c < cols
        base = column_base(c, L, inner)
        bc = bias_column(c, bz) if biased else np.int64(0)
        m, s = ninf, zero
        if live:
            m, s = stats(x, msk, b, base, bc, bz[5], inner, k0, k1, ty, TY)
        m, s = merge(shm, shs, tx, ty, TX, TY, m, s)
        if live and ty == 0:
            wm[c * segs + seg] = m
            ws[c * segs + seg] = s

    kernel.__name__ = _softmax_name("partials", False, masked, biased)
    return kernel


def softmax_partials_signature(in_dtype, ft, bias_dtype=np.uint8):
    return signature(
        (in_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        (ft, 1, "C"),
        (ft, 1, "C"),
        np.int64,
        np.int64,
        np.int64,
        np.int64,
        np.int64,
    )


def softmax_finish(ft, log, masked, biased=False):
    """Split softmax, second kernel: block (tile, segment) merges the column's partials (each
    thread an online sum over every TY-th, then the tree) and writes the segment. Blocks run in
    the reverse of the first kernel's order: the segments it read last are the likeliest in L2."""
    _, write = _softmax_parts(ft, log, masked, biased)
    merge = _reductions(ft)[2]
    online_add = device_functions(ft)["_online_add"]
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(x, y, msk, b, bz, wm, ws, cols, L, inner, segs, seg_len):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        blk = np.int64(cuda.gridDim.x) - 1 - cuda.blockIdx.x
        tile = blk // segs
        seg = blk - tile * segs
        k0 = seg * seg_len
        k1 = min(L, k0 + seg_len)
        c = tile * TX + tx
        live = c < cols
        base = column_base(c, L, inner)
        bc = bias_column(c, bz) if biased else np.int64(0)
        m, s, comp = ninf, zero, zero
        if live:
            p = ty
            while p < segs:
                m, s, comp = online_add(m, s, comp, wm[c * segs + p], ws[c * segs + p])
                p += TY
        m, s = merge(shm, shs, tx, ty, TX, TY, m, s + comp)
        if live:
            write(x, y, msk, b, base, bc, bz[5], inner, k0, k1, ty, TY, m, s)

    kernel.__name__ = _softmax_name("finish", log, masked, biased)
    return kernel


def softmax_finish_signature(in_dtype, out_dtype, bias_dtype=np.uint8):
    ft = compute_type(out_dtype)
    return signature(
        (in_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        (ft, 1, "C"),
        (ft, 1, "C"),
        np.int64,
        np.int64,
        np.int64,
        np.int64,
        np.int64,
    )


def _softmax_grad_parts(ft, log, masked, biased):
    """(stats, write) of the backward, on the forward's input ``value``: the thread's share of
    (max, sum of exp, t) with t the sum of dy exp(v - max) (softmax) or of dy (log_softmax), and
    dx from the column's totals: softmax dx = y (dy - t / s), log_softmax dx = dy - y t, with
    y = exp(v - max) / s recomputed. Masked elements add nothing and get 0."""
    key = ("softmax_grad", ft, log, masked, biased)
    if key in _parts_cache:
        return _parts_cache[key]
    online_add = device_functions(ft)["_online_add_sum" if log else "_online_add_dot"]
    value = _value(ft, biased)
    zero, one, ninf, nan = ft(0), ft(1), ft(-math.inf), ft(math.nan)
    dev = cuda.jit(device=True)

    @dev
    def stats(dy, x, msk, b, base, bc, bl, inner, k0, k1, ty, TY):
        m, s, c, t, ct = ninf, zero, zero, zero, zero
        k = k0 + ty
        idx = base + k * inner
        boff = bc + k * bl
        stride = TY * inner
        bstride = TY * bl
        while k < k1:
            if not masked or msk[idx] != 0:
                m, s, c, t, ct = online_add(m, s, c, t, ct, value(x, b, idx, boff), one, ft(load(dy, idx)))
            k += TY
            idx += stride
            boff += bstride
        return m, s + c, t + ct

    @dev
    def write(dy, x, dx, msk, b, base, bc, bl, inner, k0, k1, ty, TY, m, s, t):
        """A column whose max is not finite (NaN, +inf, all -inf) is NaN, as in the forward;
        masked positions are 0, also in a fully masked column."""
        finite = m - m == zero
        inv = one / s
        scale = t / s  # softmax: sum(dy y); log_softmax: sum(dy) / s
        k = k0 + ty
        idx = base + k * inner
        boff = bc + k * bl
        stride = TY * inner
        bstride = TY * bl
        while k < k1:
            w = ft(load(dy, idx))
            e = M.exp(value(x, b, idx, boff) - m)
            if not finite:
                r = nan
            elif log:
                r = w - e * scale
            else:
                r = e * inv * (w - scale)
            if masked and msk[idx] == 0:
                r = zero
            store(dx, idx, r)
            k += TY
            idx += stride
            boff += bstride

    out = _parts_cache[key] = (stats, write)
    return out


def softmax_grad_tile(ft, log, masked, biased=False):
    """The single-pass softmax backward: a block per tile of columns, each column's (max, sum of
    exp, t) from one read of x and dy, then dx from a second (dx may be dy or x itself: an
    element is read before its thread writes it, and the tree's barriers separate the passes)."""
    stats, write = _softmax_grad_parts(ft, log, masked, biased)
    merge = _grad_merge(ft, log)
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(dy, x, dx, msk, b, bz, cols, L, inner):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        sht = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tiles = (cols + TX - 1) // TX
        tile = np.int64(cuda.blockIdx.x)
        bl = bz[5]
        while tile < tiles:
            c = tile * TX + tx
            live = c < cols
            base = column_base(c, L, inner)
            bc = bias_column(c, bz) if biased else np.int64(0)
            m, s, t = ninf, zero, zero
            if live:
                m, s, t = stats(dy, x, msk, b, base, bc, bl, inner, np.int64(0), L, ty, TY)
            m, s, t = merge(shm, shs, sht, tx, ty, TX, TY, m, s, t)
            if live:
                write(dy, x, dx, msk, b, base, bc, bl, inner, np.int64(0), L, ty, TY, m, s, t)
            tile += cuda.gridDim.x

    kernel.__name__ = _softmax_name("grad_tile", log, masked, biased)
    return kernel


def softmax_grad_tile_signature(dy_dtype, in_dtype, out_dtype, bias_dtype=np.uint8):
    return signature(
        (dy_dtype, 1, "C"),
        (in_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        np.int64,
        np.int64,
        np.int64,
    )


def softmax_grad_partials(ft, log, masked, biased=False):
    """Split backward, first kernel: block (tile, segment) writes each column's (max, sum of exp,
    t) over the segment to ``wm``/``ws``/``wt`` at ``c * segs + segment``."""
    stats, _ = _softmax_grad_parts(ft, log, masked, biased)
    merge = _grad_merge(ft, log)
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(dy, x, msk, b, bz, wm, ws, wt, cols, L, inner, segs, seg_len):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        sht = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        blk = np.int64(cuda.blockIdx.x)
        tile = blk // segs
        seg = blk - tile * segs
        k0 = seg * seg_len
        k1 = min(L, k0 + seg_len)
        c = tile * TX + tx
        live = c < cols
        base = column_base(c, L, inner)
        bc = bias_column(c, bz) if biased else np.int64(0)
        m, s, t = ninf, zero, zero
        if live:
            m, s, t = stats(dy, x, msk, b, base, bc, bz[5], inner, k0, k1, ty, TY)
        m, s, t = merge(shm, shs, sht, tx, ty, TX, TY, m, s, t)
        if live and ty == 0:
            wm[c * segs + seg] = m
            ws[c * segs + seg] = s
            wt[c * segs + seg] = t

    kernel.__name__ = _softmax_name("grad_partials", log, masked, biased)
    return kernel


def softmax_grad_partials_signature(dy_dtype, in_dtype, ft, bias_dtype=np.uint8):
    return signature(
        (dy_dtype, 1, "C"),
        (in_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        (ft, 1, "C"),
        (ft, 1, "C"),
        (ft, 1, "C"),
        np.int64,
        np.int64,
        np.int64,
        np.int64,
        np.int64,
    )


def softmax_grad_finish(ft, log, masked, biased=False):
    """Split backward, second kernel: block (tile, segment) merges the column's partials and
    writes dx over its segment (blocks in reverse order, as ``softmax_finish``)."""
    _, write = _softmax_grad_parts(ft, log, masked, biased)
    merge = _grad_merge(ft, log)
    online_add = device_functions(ft)["_online_add_sum" if log else "_online_add_dot"]
    nb = BLOCK
    zero, ninf = ft(0), ft(-math.inf)

    def kernel(dy, x, dx, msk, b, bz, wm, ws, wt, cols, L, inner, segs, seg_len):
        shm = cuda.shared.array(nb, ft)
        shs = cuda.shared.array(nb, ft)
        sht = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        blk = np.int64(cuda.gridDim.x) - 1 - cuda.blockIdx.x
        tile = blk // segs
        seg = blk - tile * segs
        k0 = seg * seg_len
        k1 = min(L, k0 + seg_len)
        c = tile * TX + tx
        live = c < cols
        base = column_base(c, L, inner)
        bc = bias_column(c, bz) if biased else np.int64(0)
        m, s, cs, t, ct = ninf, zero, zero, zero, zero
        if live:
            p = ty
            while p < segs:
                q = c * segs + p
                m, s, cs, t, ct = online_add(m, s, cs, t, ct, wm[q], ws[q], wt[q])
                p += TY
        m, s, t = merge(shm, shs, sht, tx, ty, TX, TY, m, s + cs, t + ct)
        if live:
            write(dy, x, dx, msk, b, base, bc, bz[5], inner, k0, k1, ty, TY, m, s, t)

    kernel.__name__ = _softmax_name("grad_finish", log, masked, biased)
    return kernel


def softmax_grad_finish_signature(dy_dtype, in_dtype, out_dtype, bias_dtype=np.uint8):
    ft = compute_type(out_dtype)
    return signature(
        (dy_dtype, 1, "C"),
        (in_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        (np.uint8, 1, "C"),
        (bias_dtype, 1, "C"),
        bias_layout_type(),
        (ft, 1, "C"),
        (ft, 1, "C"),
        (ft, 1, "C"),
        np.int64,
        np.int64,
        np.int64,
        np.int64,
        np.int64,
    )


# ---------------------------------------------------------------------------------------------
# sparsemax


def _sparsemax_search(ft, cached, michelot_steps):
    """The search, a device function for the forward and the backward kernels:
    ``search(x, zc, shs, shk, base, inner, L, live, tx, ty, TX, TY) -> (mx, finite, tau)``, run by
    every thread of the block (it holds barriers).

    For each column, z = x - max(x) (shift-invariance: without it [1e8, 0] in float32 gave
    [0, 0]); tau in [-1, 0) solves sum max(z - tau, 0) = 1. Each step reduces (S, K) = (sum,
    count) of {z > t} over the column, which gives both f(t) = S - K t (t <= tau iff f(t) >= 1)
    and Michelot's step (S - 1) / K, a lower bound at least t when t is one. From the lower bound
    -1 the steps evaluate Michelot's step from the best lower bound (tm); after
    ``michelot_steps`` of them they alternate with the midpoint of [tm, hi]. The search ends when
    a step's support is the one tm came from (no z in between, so tm is Michelot's fixed point:
    the exact formula over the exact support, O(L) per step). With ``cached`` the column lives in
    shared memory ``zc`` (each thread keeps its own elements there, so no barrier guards it),
    else every step re-reads it (from L2). ``finite``: the column's max is finite (else its
    result is NaN throughout: a NaN, a +inf, or all -inf)."""
    key = ("sparsemax_search", ft, cached, michelot_steps)
    if key in _parts_cache:
        return _parts_cache[key]
    fns = device_functions(ft)
    fmax, neumaier = fns["_fmax"], fns["_neumaier"]
    block_max, block_sum_count, _ = _reductions(ft)
    zero, half, one, ninf = ft(0), ft(0.5), ft(1), ft(-math.inf)
    max_steps = SPARSEMAX_MAX_STEPS

    @cuda.jit(device=True)
    def search(x, zc, shs, shk, base, inner, L, live, tx, ty, TX, TY):
        stride = TY * inner
        # 1. the column's max (NaN-propagating, as numpy.max)
        mx = ninf
        if live:
            k = ty
            idx = base + k * inner
            while k < L:
                v = ft(load(x, idx))
                if cached:
                    zc[k * TX + tx] = v
                mx = fmax(mx, v)
                k += TY
                idx += stride
        mx = block_max(shs, tx, ty, TX, TY, mx)
        finite = mx - mx == zero
        # 2. tau
        done = not (live and finite)
        tm = -one  # a lower bound: the max alone gives f(-1) >= 1
        hi = zero  # an upper bound: f(0) = 0
        lo_count = np.int64(-1)  # |{z > lower bound tm came from}|; -1: none yet
        bisect = False
        nstep = 0
        while cuda.syncthreads_and(1 if done else 0) == 0:  # until every column is done
            t = (tm + hi) * half if bisect else tm
            s, comp, cnt = zero, zero, np.int64(0)
            if not done:
                k = ty
                idx = base + k * inner
                while k < L:
                    z = (zc[k * TX + tx] if cached else ft(load(x, idx))) - mx
                    if z > t:
                        s, comp = neumaier(s, comp, z)
                        cnt += 1
                    k += TY
                    idx += stride
            s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s + comp, cnt)
            if not done:
                lower = s - ft(cnt) * t >= one
                if cnt == lo_count or (not lower and not bisect):
                    # no z between the last lower bound and t: tm is exact. (A Michelot step
                    # that tests as an upper bound is tau within rounding.)
                    done = True
                elif lower:
                    lo_count = cnt
                    tm = fmax(tm, (s - one) / ft(cnt))
                else:
                    hi = t
                nstep += 1
                bisect = nstep > michelot_steps and not bisect
                if nstep >= max_steps:
                    done = True
        return mx, finite, tm

    _parts_cache[key] = search
    return search


def _sparsemax_suffix(cached, michelot_steps):
    suffix = "_cached" if cached else ""
    if michelot_steps != SPARSEMAX_MICHELOT_STEPS:
        suffix += f"_m{michelot_steps}"
    return suffix


def sparsemax_tile(ft, cached, michelot_steps=SPARSEMAX_MICHELOT_STEPS):
    """A block per tile of columns: tau by ``_sparsemax_search``, then y = max(z - tau, 0)."""
    search = _sparsemax_search(ft, cached, michelot_steps)
    nb = BLOCK
    ncache = P.sparsemax_cache_elements(np.dtype(ft).itemsize) if cached else 1
    zero, nan = ft(0), ft(math.nan)
    fmax = device_functions(ft)["_fmax"]

    def kernel(x, y, cols, L, inner):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        zc = cuda.shared.array(ncache, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tiles = (cols + TX - 1) // TX
        stride = TY * inner
        tile = np.int64(cuda.blockIdx.x)
        while tile < tiles:
            c = tile * TX + tx
            live = c < cols
            base = column_base(c, L, inner)
            mx, finite, tm = search(x, zc, shs, shk, base, inner, L, live, tx, ty, TX, TY)
            if live:
                k = ty
                idx = base + k * inner
                while k < L:
                    z = (zc[k * TX + tx] if cached else ft(load(x, idx))) - mx
                    store(y, idx, fmax(z - tm, zero) if finite else nan)
                    k += TY
                    idx += stride
            tile += cuda.gridDim.x

    kernel.__name__ = "gpuact_sparsemax_tile" + _sparsemax_suffix(cached, michelot_steps)
    return kernel


def sparsemax_tile_signature(in_dtype, out_dtype):
    return signature((in_dtype, 1, "C"), (out_dtype, 1, "C"), np.int64, np.int64, np.int64)


def sparsemax_grad_tile(ft, cached, michelot_steps=SPARSEMAX_MICHELOT_STEPS):
    """The backward, a block per tile of columns: the support {z > tau} by the forward's own
    search (so it is the forward's support, element for element), then the compensated sum and
    count of dy over it in one block reduction, then dx = dy - mean on the support, 0 off it
    (NaN throughout where the forward is NaN). dx may be dy or x itself: the last pass reads an
    element (x from the cache or memory, dy) before its thread writes it."""
    search = _sparsemax_search(ft, cached, michelot_steps)
    _, block_sum_count, _ = _reductions(ft)
    neumaier = device_functions(ft)["_neumaier"]
    nb = BLOCK
    ncache = P.sparsemax_cache_elements(np.dtype(ft).itemsize) if cached else 1
    zero, nan = ft(0), ft(math.nan)

    def kernel(dy, x, dx, cols, L, inner):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        zc = cuda.shared.array(ncache, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tiles = (cols + TX - 1) // TX
        stride = TY * inner
        tile = np.int64(cuda.blockIdx.x)
        while tile < tiles:
            c = tile * TX + tx
            live = c < cols
            base = column_base(c, L, inner)
            mx, finite, tm = search(x, zc, shs, shk, base, inner, L, live, tx, ty, TX, TY)
            s, comp, cnt = zero, zero, np.int64(0)
            if live and finite:
                k = ty
                idx = base + k * inner
                while k < L:
                    if (zc[k * TX + tx] if cached else ft(load(x, idx))) - mx > tm:
                        s, comp = neumaier(s, comp, ft(load(dy, idx)))
                        cnt += 1
                    k += TY
                    idx += stride
            s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s + comp, cnt)
            if live:
                mean = s / ft(max(cnt, 1))  # the max is always in the support: cnt >= 1 when finite
                k = ty
                idx = base + k * inner
                while k < L:
                    inside = (zc[k * TX + tx] if cached else ft(load(x, idx))) - mx > tm
                    r = ft(load(dy, idx)) - mean if inside else zero
                    store(dx, idx, r if finite else nan)
                    k += TY
                    idx += stride
            tile += cuda.gridDim.x

    kernel.__name__ = "gpuact_sparsemax_grad_tile" + _sparsemax_suffix(cached, michelot_steps)
    return kernel


def sparsemax_grad_tile_signature(dy_dtype, in_dtype, out_dtype):
    return signature((dy_dtype, 1, "C"), (in_dtype, 1, "C"), (out_dtype, 1, "C"), np.int64, np.int64, np.int64)


# ---------------------------------------------------------------------------------------------
# sparsemax split over blocks (long rows, small inner sizes): the search's steps one launch each
#
# Block b of a (tile, segment) grid (b = tile * segs + segment, as softmax_partials). Workspaces:
# ``wf`` (the compute type) = [max: cols * segs | sums: 2 x cols * segs | (tm, hi): 2 x cols x 2]
# and ``wi`` (int64) = [counts: 2 x cols * segs | (lo_count, bisect, nstep, done): 2 x cols x 4],
# column c's segment j at c * segs + j. Pass p reads the state and sums of pass p - 1 (buffer
# (p - 1) % 2) and writes its own (p % 2): no launch both reads and writes one buffer. Every block
# of a column merges the partials in the same order, so they step the search alike.


def sparsemax_split_sizes(cols, segs):
    """(floats, ints) of the split's two workspaces."""
    return cols * segs * 3 + cols * 4, cols * segs * 2 + cols * 8


def _sparsemax_split_parts(ft, michelot_steps):
    key = ("sparsemax_split_parts", ft, michelot_steps)
    if key in _parts_cache:
        return _parts_cache[key]
    fns = device_functions(ft)
    fmax, neumaier = fns["_fmax"], fns["_neumaier"]
    half, one = ft(0.5), ft(1)
    max_steps = SPARSEMAX_MAX_STEPS
    block_max, block_sum_count, _ = _reductions(ft)
    dev = cuda.jit(device=True)

    @dev
    def probe(tm, hi, bisect):
        return (tm + hi) * half if bisect else tm

    @dev
    def step(tm, hi, lo_count, bisect, nstep, done, t, s, cnt):
        """One step of _sparsemax_search's loop, from the (sum, count) of {z > t} (t = probe(...))."""
        if not done:
            lower = s - ft(cnt) * t >= one
            if cnt == lo_count or (not lower and not bisect):
                done = True
            elif lower:
                lo_count = cnt
                tm = fmax(tm, (s - one) / ft(cnt))
            else:
                hi = t
            nstep += 1
            bisect = nstep > michelot_steps and not bisect
            if nstep >= max_steps:
                done = True
        return tm, hi, lo_count, bisect, nstep, done

    @dev
    def sums(x, base, inner, k0, k1, ty, TY, mx, t):
        """This thread's compensated (sum, count) of the z = x - mx above t over rows k0..k1."""
        s, comp, cnt = ft(0), ft(0), np.int64(0)
        k = k0 + ty
        idx = base + k * inner
        stride = TY * inner
        while k < k1:
            z = ft(load(x, idx)) - mx
            if z > t:
                s, comp = neumaier(s, comp, z)
                cnt += 1
            k += TY
            idx += stride
        return s + comp, cnt

    @dev
    def column_max(wf, c, segs, live, tx, ty, TX, TY, shs):
        mx = ft(-math.inf)
        if live:
            j = ty
            while j < segs:
                mx = fmax(mx, wf[c * segs + j])
                j += TY
        return block_max(shs, tx, ty, TX, TY, mx)

    @dev
    def column_state(wf, wi, c, cols, segs, p, live, finite, tx, ty, TX, TY, shs, shk):
        """The column's search before pass p's probe: pass p - 1's state stepped with its sums."""
        tm, hi = -one, ft(0)
        lo_count, bisect, nstep, done = np.int64(-1), False, np.int64(0), not (live and finite)
        s, cnt = ft(0), np.int64(0)
        if p > 0:
            b = (p - 1) % 2
            if live:
                f0 = cols * segs * 3 + (b * cols + c) * 2
                i0 = cols * segs * 2 + (b * cols + c) * 4
                tm, hi = wf[f0], wf[f0 + 1]
                lo_count, bisect, nstep, done = wi[i0], wi[i0 + 1] != 0, wi[i0 + 2], wi[i0 + 3] != 0
                if not done:
                    j = ty
                    while j < segs:
                        s += wf[cols * segs * (1 + b) + c * segs + j]
                        cnt += wi[cols * segs * b + c * segs + j]
                        j += TY
            s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s, cnt)
            t = probe(tm, hi, bisect)
            tm, hi, lo_count, bisect, nstep, done = step(tm, hi, lo_count, bisect, nstep, done, t, s, cnt)
        return tm, hi, lo_count, bisect, nstep, done

    @dev
    def store_state(wf, wi, c, cols, segs, b, tm, hi, lo_count, bisect, nstep, done):
        f0 = cols * segs * 3 + (b * cols + c) * 2
        i0 = cols * segs * 2 + (b * cols + c) * 4
        wf[f0] = tm
        wf[f0 + 1] = hi
        wi[i0] = lo_count
        wi[i0 + 1] = 1 if bisect else 0
        wi[i0 + 2] = nstep
        wi[i0 + 3] = 1 if done else 0

    out = _parts_cache[key] = (probe, step, sums, column_max, column_state, store_state)
    return out


def _split_block(segs):
    """(tile, segment) of this block."""
    blk = np.int64(cuda.blockIdx.x)
    tile = blk // segs
    return tile, blk - tile * segs


_split_block = cuda.jit(device=True)(_split_block)


def _split_suffix(michelot_steps):
    return "" if michelot_steps == SPARSEMAX_MICHELOT_STEPS else f"_m{michelot_steps}"


def sparsemax_split_max(ft):
    """Split sparsemax, first kernel: block (tile, segment) writes each column's max over the segment."""
    block_max = _reductions(ft)[0]
    fmax = device_functions(ft)["_fmax"]
    nb = BLOCK

    def kernel(x, wf, cols, L, inner, segs, seg_len):
        shs = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tile, seg = _split_block(segs)
        k0 = seg * seg_len
        k1 = min(L, k0 + seg_len)
        c = tile * TX + tx
        live = c < cols
        base = column_base(c, L, inner)
        mx = ft(-math.inf)
        if live:
            k = k0 + ty
            idx = base + k * inner
            while k < k1:
                mx = fmax(mx, ft(load(x, idx)))
                k += TY
                idx += TY * inner
        mx = block_max(shs, tx, ty, TX, TY, mx)
        if live and ty == 0:
            wf[c * segs + seg] = mx

    kernel.__name__ = "gpuact_sparsemax_split_max"
    return kernel


def sparsemax_split_max_signature(in_dtype, ft):
    return signature((in_dtype, 1, "C"), (ft, 1, "C"), np.int64, np.int64, np.int64, np.int64, np.int64)


def sparsemax_split_pass(ft, michelot_steps=SPARSEMAX_MICHELOT_STEPS):
    """Split sparsemax, a pass: the column's max and state (pass p - 1's, stepped with its merged
    sums); segment 0's block stores the state; then, unless the tile's columns are all done, each
    block's (sum, count) above the new probe over its segment."""
    probe, _, sums, column_max, column_state, store_state = _sparsemax_split_parts(ft, michelot_steps)
    block_sum_count = _reductions(ft)[1]
    nb = BLOCK

    def kernel(x, wf, wi, cols, L, inner, segs, seg_len, p):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        tx, ty, TX, TY = tile_thread(inner)
        tile, seg = _split_block(segs)
        c = tile * TX + tx
        live = c < cols
        mx = column_max(wf, c, segs, live, tx, ty, TX, TY, shs)
        finite = mx - mx == ft(0)
        tm, hi, lo_count, bisect, nstep, done = column_state(
            wf, wi, c, cols, segs, p, live, finite, tx, ty, TX, TY, shs, shk
        )
        b = p % 2
        if live and seg == 0 and ty == 0:
            store_state(wf, wi, c, cols, segs, b, tm, hi, lo_count, bisect, nstep, done)
        if cuda.syncthreads_or(0 if done else 1) == 0:
            return  # every column of the tile is done: nothing to read
        s, cnt = ft(0), np.int64(0)
        if not done:
            k0 = seg * seg_len
            s, cnt = sums(
                x, column_base(c, L, inner), inner, k0, min(L, k0 + seg_len), ty, TY, mx, probe(tm, hi, bisect)
            )
        s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s, cnt)
        if not done and ty == 0:
            wf[cols * segs * (1 + b) + c * segs + seg] = s
            wi[cols * segs * b + c * segs + seg] = cnt

    kernel.__name__ = "gpuact_sparsemax_split_pass" + _split_suffix(michelot_steps)
    return kernel


def sparsemax_split_pass_signature(in_dtype, ft):
    return signature((in_dtype, 1, "C"), (ft, 1, "C"), (np.int64, 1, "C"), *([np.int64] * 6))


def sparsemax_split_resolve(ft, michelot_steps=SPARSEMAX_MICHELOT_STEPS):
    """Split sparsemax, a block per tile: the last pass's sums merged and one more step; where the
    search is still not done, it goes on over the whole column here, before any block writes (in
    place, the segments' writes would change what it reads). tm goes to the state of buffer
    ``passes % 2``."""
    probe, step, sums, column_max, column_state, store_state = _sparsemax_split_parts(ft, michelot_steps)
    block_sum_count = _reductions(ft)[1]
    nb = BLOCK

    def kernel(x, wf, wi, cols, L, inner, segs, seg_len, passes):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        tx, ty, TX, TY = tile_thread(inner)
        c = np.int64(cuda.blockIdx.x) * TX + tx
        live = c < cols
        mx = column_max(wf, c, segs, live, tx, ty, TX, TY, shs)
        finite = mx - mx == ft(0)
        tm, hi, lo_count, bisect, nstep, done = column_state(
            wf, wi, c, cols, segs, passes, live, finite, tx, ty, TX, TY, shs, shk
        )
        base = column_base(c, L, inner)
        while cuda.syncthreads_and(1 if done else 0) == 0:  # until every column is done
            t = probe(tm, hi, bisect)
            s, cnt = ft(0), np.int64(0)
            if not done:
                s, cnt = sums(x, base, inner, np.int64(0), L, ty, TY, mx, t)
            s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s, cnt)
            tm, hi, lo_count, bisect, nstep, done = step(tm, hi, lo_count, bisect, nstep, done, t, s, cnt)
        if live and ty == 0:
            store_state(wf, wi, c, cols, segs, passes % 2, tm, hi, lo_count, bisect, nstep, True)

    kernel.__name__ = "gpuact_sparsemax_split_resolve" + _split_suffix(michelot_steps)
    return kernel


sparsemax_split_resolve_signature = sparsemax_split_pass_signature


def sparsemax_split_finish(ft):
    """Split sparsemax, last kernel: block (tile, segment) writes its segment with the column's tau."""
    column_max = _sparsemax_split_parts(ft, SPARSEMAX_MICHELOT_STEPS)[3]
    zero, nan = ft(0), ft(math.nan)
    fmax = device_functions(ft)["_fmax"]
    nb = BLOCK

    def kernel(x, y, wf, wi, cols, L, inner, segs, seg_len, passes):
        shs = cuda.shared.array(nb, ft)
        tx, ty, TX, TY = tile_thread(inner)
        tile, seg = _split_block(segs)
        c = tile * TX + tx
        live = c < cols
        mx = column_max(wf, c, segs, live, tx, ty, TX, TY, shs)
        if live:
            finite = mx - mx == zero
            tm = wf[cols * segs * 3 + ((passes % 2) * cols + c) * 2]
            k = seg * seg_len + ty
            k1 = min(L, seg * seg_len + seg_len)
            idx = column_base(c, L, inner) + k * inner
            while k < k1:
                store(y, idx, fmax(ft(load(x, idx)) - mx - tm, zero) if finite else nan)
                k += TY
                idx += TY * inner

    kernel.__name__ = "gpuact_sparsemax_split_finish"
    return kernel


def sparsemax_split_finish_signature(in_dtype, out_dtype):
    ft = compute_type(out_dtype)
    return signature((in_dtype, 1, "C"), (out_dtype, 1, "C"), (ft, 1, "C"), (np.int64, 1, "C"), *([np.int64] * 6))


def sparsemax_split_grad_sums(ft):
    """Split sparsemax backward, after the forward's search (max, passes, resolve): block (tile,
    segment) writes the (compensated sum of dy, count) over the support in its segment to the sums
    buffer ``passes % 2`` (the resolve read the other one)."""
    column_max = _sparsemax_split_parts(ft, SPARSEMAX_MICHELOT_STEPS)[3]
    block_sum_count = _reductions(ft)[1]
    neumaier = device_functions(ft)["_neumaier"]
    zero = ft(0)
    nb = BLOCK

    def kernel(dy, x, wf, wi, cols, L, inner, segs, seg_len, passes):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        tx, ty, TX, TY = tile_thread(inner)
        tile, seg = _split_block(segs)
        c = tile * TX + tx
        live = c < cols
        mx = column_max(wf, c, segs, live, tx, ty, TX, TY, shs)
        b = passes % 2
        s, comp, cnt = zero, zero, np.int64(0)
        if live and mx - mx == zero:
            tm = wf[cols * segs * 3 + (b * cols + c) * 2]
            k = seg * seg_len + ty
            k1 = min(L, seg * seg_len + seg_len)
            idx = column_base(c, L, inner) + k * inner
            while k < k1:
                if ft(load(x, idx)) - mx > tm:
                    s, comp = neumaier(s, comp, ft(load(dy, idx)))
                    cnt += 1
                k += TY
                idx += TY * inner
        s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s + comp, cnt)
        if live and ty == 0:
            wf[cols * segs * (1 + b) + c * segs + seg] = s
            wi[cols * segs * b + c * segs + seg] = cnt

    kernel.__name__ = "gpuact_sparsemax_split_grad_sums"
    return kernel


def sparsemax_split_grad_sums_signature(dy_dtype, in_dtype, ft):
    return signature((dy_dtype, 1, "C"), (in_dtype, 1, "C"), (ft, 1, "C"), (np.int64, 1, "C"), *([np.int64] * 6))


def sparsemax_split_grad_finish(ft):
    """Split sparsemax backward, last kernel: block (tile, segment) merges the column's sums of dy
    and writes its segment: dx = dy - mean on the support, 0 off it, NaN where the forward is."""
    column_max = _sparsemax_split_parts(ft, SPARSEMAX_MICHELOT_STEPS)[3]
    block_sum_count = _reductions(ft)[1]
    zero, nan = ft(0), ft(math.nan)
    nb = BLOCK

    def kernel(dy, x, dx, wf, wi, cols, L, inner, segs, seg_len, passes):
        shs = cuda.shared.array(nb, ft)
        shk = cuda.shared.array(nb, np.int64)
        tx, ty, TX, TY = tile_thread(inner)
        tile, seg = _split_block(segs)
        c = tile * TX + tx
        live = c < cols
        mx = column_max(wf, c, segs, live, tx, ty, TX, TY, shs)
        b = passes % 2
        s, cnt = zero, np.int64(0)
        if live:
            j = ty
            while j < segs:
                s += wf[cols * segs * (1 + b) + c * segs + j]
                cnt += wi[cols * segs * b + c * segs + j]
                j += TY
        s, cnt = block_sum_count(shs, shk, tx, ty, TX, TY, s, cnt)
        if live:
            finite = mx - mx == zero
            tm = wf[cols * segs * 3 + (b * cols + c) * 2]
            mean = s / ft(max(cnt, 1))  # the max is always in the support: cnt >= 1 when finite
            k = seg * seg_len + ty
            k1 = min(L, seg * seg_len + seg_len)
            idx = column_base(c, L, inner) + k * inner
            while k < k1:
                inside = ft(load(x, idx)) - mx > tm
                r = ft(load(dy, idx)) - mean if inside else zero
                store(dx, idx, r if finite else nan)
                k += TY
                idx += TY * inner

    kernel.__name__ = "gpuact_sparsemax_split_grad_finish"
    return kernel


def sparsemax_split_grad_finish_signature(dy_dtype, in_dtype, out_dtype):
    ft = compute_type(out_dtype)
    return signature(
        (dy_dtype, 1, "C"),
        (in_dtype, 1, "C"),
        (out_dtype, 1, "C"),
        (ft, 1, "C"),
        (np.int64, 1, "C"),
        *([np.int64] * 6),
    )


# ---------------------------------------------------------------------------------------------
# the catalogue (for the PTX test)


def nd_catalogue(dtype, ndims=(1, 2, 3, 4), ops=None, gates=None):
    """(name, python kernel, signature) of the N-D (odometer) kernels at the ranks ``ndims``:
    per op the forward, the forward with a bias, the backward and the backward with a bias
    (biases of ``dtype``); per gated unit (``gates``, default all) its forward and backward."""
    from gpuact._contract.ops import ELEMENTWISE_OPS

    dtype = np.dtype(dtype)
    ft = compute_type(dtype)
    out = []
    for nd in ndims:
        for op in ELEMENTWISE_OPS if ops is None else ops:
            out.append((f"{op}_nd{nd}", elementwise_nd(op, ft, nd), elementwise_nd_signature(dtype, dtype, nd)))
            out.append(
                (
                    f"{op}_bias_nd{nd}",
                    elementwise_bias_nd(op, ft, nd),
                    elementwise_bias_nd_signature(dtype, dtype, dtype, nd),
                )
            )
            for biased in (False, True):
                out.append(
                    (
                        f"{op}_grad{'_bias' if biased else ''}_nd{nd}",
                        grad_nd(op, ft, nd, biased),
                        grad_nd_signature(dtype, dtype, dtype, nd, dtype if biased else None),
                    )
                )
        for gate in GATES if gates is None else gates:
            out.append((f"{gate}_nd{nd}", binary_nd(gate, ft, nd), binary_nd_signature(dtype, dtype, dtype, nd)))
            out.append(
                (f"{gate}_grad_nd{nd}", glu_grad_nd(ft, nd, gate), glu_grad_nd_signature(dtype, dtype, dtype, nd))
            )
        out.append((f"prelu_nd{nd}", binary_nd("prelu", ft, nd), binary_nd_signature(dtype, dtype, dtype, nd)))
        out.append(
            (f"prelu_grad_nd{nd}", prelu_grad_nd(ft, nd), prelu_grad_nd_signature(dtype, dtype, dtype, dtype, nd))
        )
        out.append((f"copy_nd{nd}", copy_nd(nd, dtype, dtype), copy_nd_signature(dtype, dtype, nd)))
        out.append((f"mask_nd{nd}", mask_nd(nd, dtype), mask_nd_signature(dtype, nd)))
    return out


def catalogue(dtype, ndims=(1, 3)):
    """(name, python kernel, signature) of every kernel for data of ``dtype`` (float16/32/64)
    in and out (and biases of ``dtype``), N-D kernels at the ranks ``ndims``."""
    from gpuact._contract.ops import ELEMENTWISE_OPS

    dtype = np.dtype(dtype)
    ft = compute_type(dtype)
    out = []
    for op in ELEMENTWISE_OPS:
        out.append((f"{op}_contig", elementwise_contig(op, ft), elementwise_contig_signature(dtype, dtype)))
        out.append(
            (
                f"{op}_bias_contig",
                elementwise_bias_contig(op, ft),
                elementwise_bias_contig_signature(dtype, dtype, dtype),
            )
        )
        out.append((f"{op}_grad_contig", grad_contig(op, ft), grad_contig_signature(dtype, dtype, dtype)))
        out.append(
            (f"{op}_grad_bias_contig", grad_contig(op, ft, True), grad_contig_signature(dtype, dtype, dtype, dtype))
        )
    for log in (False, True):
        for masked in (False, True):
            for biased in (False, True):
                bd = dtype if biased else np.uint8
                name = f"{'log_' if log else ''}softmax{'_masked' if masked else ''}{'_bias' if biased else ''}"
                out.append(
                    (f"{name}_tile", softmax_tile(ft, log, masked, biased), softmax_tile_signature(dtype, dtype, bd))
                )
                out.append(
                    (
                        f"{name}_finish",
                        softmax_finish(ft, log, masked, biased),
                        softmax_finish_signature(dtype, dtype, bd),
                    )
                )
                out.append(
                    (
                        f"{name}_grad_tile",
                        softmax_grad_tile(ft, log, masked, biased),
                        softmax_grad_tile_signature(dtype, dtype, dtype, bd),
                    )
                )
                out.append(
                    (
                        f"{name}_grad_partials",
                        softmax_grad_partials(ft, log, masked, biased),
                        softmax_grad_partials_signature(dtype, dtype, ft, bd),
                    )
                )
                out.append(
                    (
                        f"{name}_grad_finish",
                        softmax_grad_finish(ft, log, masked, biased),
                        softmax_grad_finish_signature(dtype, dtype, dtype, bd),
                    )
                )
                if not log:
                    out.append(
                        (
                            f"{name}_partials",
                            softmax_partials(ft, masked, biased),
                            softmax_partials_signature(dtype, ft, bd),
                        )
                    )
    out += [
        ("sparsemax_split_max", sparsemax_split_max(ft), sparsemax_split_max_signature(dtype, ft)),
        ("sparsemax_split_pass", sparsemax_split_pass(ft), sparsemax_split_pass_signature(dtype, ft)),
        ("sparsemax_split_resolve", sparsemax_split_resolve(ft), sparsemax_split_resolve_signature(dtype, ft)),
        ("sparsemax_split_finish", sparsemax_split_finish(ft), sparsemax_split_finish_signature(dtype, dtype)),
        (
            "sparsemax_split_grad_sums",
            sparsemax_split_grad_sums(ft),
            sparsemax_split_grad_sums_signature(dtype, dtype, ft),
        ),
        (
            "sparsemax_split_grad_finish",
            sparsemax_split_grad_finish(ft),
            sparsemax_split_grad_finish_signature(dtype, dtype, dtype),
        ),
    ]
    for cached in (False, True):
        suffix = "_cached" if cached else ""
        out.append((f"sparsemax_tile{suffix}", sparsemax_tile(ft, cached), sparsemax_tile_signature(dtype, dtype)))
        out.append(
            (
                f"sparsemax_grad_tile{suffix}",
                sparsemax_grad_tile(ft, cached),
                sparsemax_grad_tile_signature(dtype, dtype, dtype),
            )
        )
    out += nd_catalogue(dtype, ndims)
    return out
