"""Launch planning for the reduction kernels, in pure Python (no numba import; unit-tested alone).

Softmax and sparsemax see their data as a C-contiguous ``(outer, L, inner)`` array reduced along
``L``: ``cols = outer * inner`` independent columns, column ``c`` at ``(c // inner) * L * inner +
c % inner`` with elements ``inner`` apart. A block of ``block`` threads takes a *tile* of ``tx``
consecutive columns with ``ty`` threads along ``L`` in each (``tx * ty == block``, powers of two):

* rows (``inner == 1``): ``ty`` up to the whole block, so a long row is one block's; short rows
  share a block (``tx`` rows of ``ty`` threads) instead of leaving most threads idle. The threads
  of a row are the fastest-varying ones (``blockDim = (ty, tx)``), so a warp reads along the row.
* columns (``inner > 1``): up to 32 columns side by side (``blockDim = (tx, ty)``), so a warp
  reads consecutive columns of one row, and the rest of the block spreads along ``L``.

When the tiles alone cannot give every SM ``MIN_BLOCKS_PER_SM`` blocks (a long 1-D softmax is one
tile; softmax along axis 0 of an ``(N, 2)`` array is one tile), softmax splits ``L`` into
segments: block ``(tile, segment)`` of a first kernel writes the segment's partial (max, sum of
exp) per column to a small workspace, and the same blocks of a second kernel merge a column's
partials and write their segment. sparsemax splits the same shapes the same way, its search one
launch a step (``SPARSEMAX_SPLIT_PASSES``).

The softmax kernels read a bias in its own compact layout (``softmax_bias_layout``): a column's
offset from a few digits of its index, plus one stride along ``L``.
"""

from __future__ import annotations

from typing import NamedTuple

BLOCK = 256  # threads per block (and slots of the shared-memory reductions) on a GPU
MAX_TILE_COLUMNS = 32  # columns side by side in a tile: one warp's worth of a row
MAX_GRID_X = 2**31 - 1
MAX_BLOCK_DIM = 1024  # per dimension and in all, on every GPU Numba supports

# The target: an input of FULL_GPU_MIN elements or more gives every SM at least this many blocks.
MIN_BLOCKS_PER_SM = 2
FULL_GPU_MIN = 1 << 20
# What a split aims for when the data allow it: four 256-thread blocks per SM keep enough loads in
# flight for a memory-bound pass without making the partials (segments per column) many.
SPLIT_BLOCKS_PER_SM = 4
# Elements per thread a segment has at least: below FULL_GPU_MIN the split is only for speed and a
# second launch must be worth it (8 rows of 3000 stay one kernel; one row of 100K splits); above,
# filling the GPU comes first and only a floor against trivial segments remains.
MIN_SEGMENT_PER_THREAD = 32
LARGE_MIN_SEGMENT_PER_THREAD = 4
# Single-pass grids loop over tiles beyond this many blocks per SM (the block prologue, a
# division per column, is paid once per block rather than per tile).
TILE_BLOCKS_PER_SM = 32

# sparsemax keeps a tile's slice in (static) shared memory when it fits in this many bytes,
# else re-reads it from global memory (L2) on each of its passes.
SPARSEMAX_CACHE_BYTES = 32 * 1024


def _pow2_ceil(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def tile_shape(length: int, inner: int, block: int = BLOCK) -> tuple[int, int]:
    """(tx, ty): columns per tile and threads per column, ``tx * ty == block``."""
    if block & (block - 1) or block < 1:
        raise ValueError(f"block must be a power of two, got {block}")
    ty_cap = block // min(MAX_TILE_COLUMNS, _pow2_ceil(inner), block)
    ty = min(_pow2_ceil(length), ty_cap)
    return block // ty, ty


class TilePlan(NamedTuple):
    tx: int  # columns per tile
    ty: int  # threads along L per column
    tiles: int  # ceil(cols / tx)
    segments: int  # 1: one kernel, a block per tile; > 1: the two-kernel split
    seg_len: int  # elements of L per segment (L when not split)
    grid: int  # blocks (1-D grid)
    block: tuple  # blockDim: (ty, tx) for rows, (tx, ty) for columns

    @property
    def split(self) -> bool:
        return self.segments > 1

    @property
    def threads(self) -> int:
        return self.tx * self.ty


def _block_dims(tx, ty, inner):
    return (ty, tx) if inner == 1 else (tx, ty)


def softmax_plan(
    outer: int, length: int, inner: int, sm_count: int, block: int = BLOCK, max_grid: int | None = None
) -> TilePlan:
    """How to launch softmax over a contiguous (outer, L, inner) array on ``sm_count`` SMs.

    ``max_grid`` caps single-pass grids (the CUDA simulator's small grids); a split's grid is
    ``tiles * segments`` and is never capped.
    """
    outer, length, inner, sm_count = int(outer), int(length), int(inner), max(1, int(sm_count))
    tx, ty = tile_shape(length, inner, block)
    cols = outer * inner
    tiles = -(-cols // tx)
    n = cols * length
    least = MIN_BLOCKS_PER_SM * sm_count
    cap = max_grid if max_grid is not None else max(least, TILE_BLOCKS_PER_SM * sm_count)
    single = TilePlan(tx, ty, tiles, 1, length, max(1, min(tiles, cap, MAX_GRID_X)), _block_dims(tx, ty, inner))
    if tiles >= least or length <= 1:
        return single
    # Too few tiles: split L. Aim for SPLIT_BLOCKS_PER_SM per SM with segments worth a block ...
    want = -(-SPLIT_BLOCKS_PER_SM * sm_count // tiles)
    floor = (LARGE_MIN_SEGMENT_PER_THREAD if n >= FULL_GPU_MIN else MIN_SEGMENT_PER_THREAD) * ty
    seg_len = max(floor, -(-length // want))
    if n >= FULL_GPU_MIN and tiles * -(-length // seg_len) < least:
        # ... and a large input gets at least MIN_BLOCKS_PER_SM per SM even with shorter segments
        # (ceil(L / floor(L / k)) >= k segments).
        seg_len = max(1, length // -(-least // tiles))
    segments = -(-length // seg_len)
    if segments <= 1:
        return single
    return TilePlan(tx, ty, tiles, segments, seg_len, tiles * segments, _block_dims(tx, ty, inner))


# The passes of sparsemax's split search, each one launch (kernels.sparsemax_split_pass); the
# resolve kernel ends what they leave (see SPARSEMAX_MICHELOT_STEPS: 2-12 steps on real data).
SPARSEMAX_SPLIT_PASSES = 8


def sparsemax_plan(
    outer: int,
    length: int,
    inner: int,
    sm_count: int,
    itemsize: int,
    block: int = BLOCK,
    max_grid: int | None = None,
    split: bool = False,
) -> tuple[TilePlan, bool]:
    """(plan, cached): a block per tile, the slice held in shared memory when ``cached``; with
    ``split`` (the forward), L split into segments over blocks where softmax's plan splits it (too
    few tiles to give every SM ``MIN_BLOCKS_PER_SM`` blocks), never cached."""
    outer, length, inner, sm_count = int(outer), int(length), int(inner), max(1, int(sm_count))
    if split:
        plan = softmax_plan(outer, length, inner, sm_count, block, max_grid)
        if plan.split:
            return plan, False
    tx, ty = tile_shape(length, inner, block)
    tiles = -(-(outer * inner) // tx)
    cap = max_grid if max_grid is not None else TILE_BLOCKS_PER_SM * sm_count
    plan = TilePlan(tx, ty, tiles, 1, length, max(1, min(tiles, cap, MAX_GRID_X)), _block_dims(tx, ty, inner))
    return plan, length * tx * itemsize <= SPARSEMAX_CACHE_BYTES


def sparsemax_cache_elements(itemsize: int) -> int:
    return SPARSEMAX_CACHE_BYTES // int(itemsize)


def check_limits(plan: TilePlan) -> None:
    """ValueError unless the launch is within CUDA's grid and block limits."""
    bx, by = plan.block
    if not (1 <= plan.grid <= MAX_GRID_X):
        raise ValueError(f"grid {plan.grid} outside [1, {MAX_GRID_X}]")
    if bx < 1 or by < 1 or bx > MAX_BLOCK_DIM or by > MAX_BLOCK_DIM or bx * by > MAX_BLOCK_DIM:
        raise ValueError(f"block {plan.block} outside CUDA's limits")
    if plan.tx * plan.ty != bx * by:
        raise ValueError(f"tile {plan.tx}x{plan.ty} does not match block {plan.block}")


# ---------------------------------------------------------------------------------------------
# the softmax bias


def _runs(sizes, strides):
    """(size, stride) runs of axes, outermost first: size-1 axes dropped, and neighbours merged
    where the outer stride is the inner one times its size (a broadcast pair, stride 0 both,
    always merges)."""
    out = []
    for n, t in zip(sizes, strides):
        if n == 1:
            continue
        if out and out[-1][1] == t * n:
            out[-1] = (out[-1][0] * n, t)
        else:
            out.append((n, t))
    return out


BIAS_COLUMN_DIGITS = 3  # what kernels.bias_column unravels a column index into


def softmax_bias_layout(shape, bias_strides, axes):
    """How the softmax kernels address a bias: ``(n1, n2, t0, t1, t2, tl)``, or None when the
    bias's strides do not fit that form.

    ``shape`` is x's, ``bias_strides`` the bias's stride in elements along each of x's axes (0
    where it is broadcast), ``axes`` the reduced ones. The kernels see column c (the flat index
    over the other axes, in order) and element k along the reduced axes (their flat index); the
    bias element is at ``d0 t0 + d1 t1 + d2 t2 + k tl`` with (d0, d1, d2) the digits of c in the
    radix (-, n1, n2). That holds when the non-reduced axes merge into at most three runs of one
    bias stride each and the reduced axes into one: every bias of a Dense layer ((units,) along
    the softmax axis: one run of stride 0), and attention biases such as (B, 1, Q, K) or
    (1, H, Q, K) for scores (B, H, Q, K) along K."""
    axes = [int(a) for a in axes]
    rest = [a for a in range(len(shape)) if a not in axes]
    columns = _runs([shape[a] for a in rest], [bias_strides[a] for a in rest])
    along = _runs([shape[a] for a in axes], [bias_strides[a] for a in axes])
    if len(columns) > BIAS_COLUMN_DIGITS or len(along) > 1:
        return None
    tl = along[0][1] if along else 0
    columns += [(1, 0)] * (BIAS_COLUMN_DIGITS - len(columns))  # padded inwards: one run divides nothing
    (_, t0), (n1, t1), (n2, t2) = columns
    return (n1, n2, t0, t1, t2, tl)


def contiguous_strides(shape):
    """Element strides of a C-contiguous array of ``shape``, 0 along its size-1 axes."""
    strides, step = [], 1
    for n in reversed(tuple(shape)):
        strides.append(step if n != 1 else 0)
        step *= n
    return strides[::-1]
