"""The fused kernels' launch plans (gpuact._kernel_sources.softmax_plan / sparsemax_plan), pure
Python: every shape and axis of at least 2**20 elements gets at least 2 blocks an SM, within the
grid and shared-memory limits, with integer arguments of exactly the kernels' C widths."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gpuact import _kernel_sources as ks

H100 = {"sm_count": 132, "max_blocks": 132 * 32, "smem_optin": 227 * 1024}
SIZES = [1, 2, 3, 5, 31, 32, 33, 100, 263, 264, 1000, 1024, 1025, 4000, 5000, 2**14, 70000, 2**20, 2**22, 10_000_000]


def _shapes(min_elements=2**20, max_elements=2**34):
    for outer, length, inner in itertools.product(SIZES, repeat=3):
        if min_elements <= outer * length * inner <= max_elements:
            yield outer, length, inner


def _blocks(launch):
    return int(np.prod(launch.grid))


def _check_limits(plan, gpu):
    for launch in plan.launches:
        assert 1 <= launch.grid[0] <= ks.GRID_X_MAX, launch
        assert all(1 <= g <= ks.GRID_YZ_MAX for g in launch.grid[1:]), launch
        assert launch.block in (32, 64, 128, ks.TILE_THREADS) and launch.block % 32 == 0
        assert launch.smem + launch.static_smem <= gpu["smem_optin"], launch
        assert launch.smem <= ks.SMEM_CACHE_LIMIT
        if "_cols_" not in launch.name:  # (the column kernels take one block per tile of columns)
            assert _blocks(launch) <= gpu["max_blocks"], launch
        spec = ks.fused_kernels()[launch.name]
        ints = [t for t, _ in spec.params if not t.endswith("*")]
        assert [type(v) for v in launch.ints] == [{"int": np.int32, "long long": np.int64}[t] for t in ints]
        assert all(np.iinfo(type(v)).min <= int(v) <= np.iinfo(type(v)).max for v in launch.ints)
        assert launch.pointers == tuple(n for t, n in spec.params if t.endswith("*"))


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_softmax_fills_the_gpu(tag):
    """>= 2 blocks an SM for every (outer, L, inner) of >= 2**20 elements: last and non-last
    axes, short and long rows, few and many rows."""
    count = 0
    for oli in _shapes():
        for log in (False, True):
            plan = ks.softmax_plan(*oli, tag, log=log, **H100)
            _check_limits(plan, H100)
            blocks = min(_blocks(launch) for launch in plan.launches)
            assert blocks >= 2 * H100["sm_count"], (oli, plan)
            if len(plan.launches) == 2:
                args = plan.launches[0].args()
                assert args == {k: v for k, v in plan.launches[1].args().items() if k != "log_mode"}
                outer, length, inner = oli
                assert args["segs"] * args["seg_len"] >= length > (args["segs"] - 1) * args["seg_len"]
                assert blocks == outer * args["tiles"] * args["segs"]
                assert plan.workspace == outer * args["segs"] * inner * 2 * ks.COMPUTE_DTYPE[tag].itemsize
            count += 1
    assert count > 500


def test_the_brief_shapes():
    expect = {(1, 10_000_000, 1): 1056, (16, 256000, 1): 1008, (1, 2**22, 2): 1024, (4096, 1024, 1): 1024}
    for oli, blocks in expect.items():
        plan = ks.softmax_plan(*oli, "f32", log=False, **H100)
        assert [_blocks(launch) for launch in plan.launches] == [blocks] * len(plan.launches), (oli, plan)


def test_small_inputs_take_one_launch():
    for oli in [(1, 5000, 1), (1, 60000, 1), (3, 1000, 7), (1, 1024, 1)]:
        assert len(ks.softmax_plan(*oli, "f32", log=False, **H100).launches) == 1


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_sparsemax_plans_stay_within_the_limits(tag):
    for oli in _shapes(min_elements=1, max_elements=2**34):
        _check_limits(ks.sparsemax_plan(*oli, tag, **H100), H100)


SPLIT = "gpuact_sparsemax_split_"


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_sparsemax_fills_the_gpu(tag):
    """Issue 21: as softmax, >= 2 blocks an SM for every (outer, L, inner) of >= 2**20 elements. A
    long row or a small inner size, too few tiles to fill the GPU, splits L over blocks: the max
    kernel, the search passes, the resolve (a block per tile) and the finish, on one grid of
    (slice, tile, segment) blocks and one workspace."""
    count = split = 0
    for oli in _shapes():
        plan = ks.sparsemax_plan(*oli, tag, **H100)
        _check_limits(plan, H100)
        outer, length, inner = oli
        if not plan.launches[0].name.startswith(SPLIT):
            assert len(plan.launches) == 1
            assert _blocks(plan.launches[0]) >= 2 * H100["sm_count"], (oli, plan)
            count += 1
            continue
        passes = ks.SPARSEMAX_SPLIT_PASSES
        names = [launch.name.removesuffix(f"_{tag}") for launch in plan.launches]
        assert names == [SPLIT + "max"] + [SPLIT + "pass"] * passes + [SPLIT + "resolve", SPLIT + "finish"]
        args = plan.launches[0].args()
        assert args["outer"] == outer and args["L"] == length and args["inner"] == inner
        assert args["segs"] * args["seg_len"] >= length > (args["segs"] - 1) * args["seg_len"]
        blocks = outer * args["tiles"] * args["segs"]
        assert blocks >= 2 * H100["sm_count"], (oli, plan)
        for p, launch in enumerate(plan.launches[1:-2]):
            assert launch.args() == dict(args, pass_index=p) and _blocks(launch) == blocks
        resolve, finish = plan.launches[-2:]
        assert resolve.args() == finish.args() == dict(args, passes=passes)
        assert _blocks(resolve) == outer * args["tiles"] and _blocks(finish) == blocks
        assert plan.workspace == ks.sparsemax_workspace(outer, args["segs"], inner, tag)
        count += 1
        split += 1
    assert count > 500 and split > 100


def test_sparsemax_split_shapes():
    """The issue's shapes: one long row, a few long rows, a long axis of two columns."""
    expect = {(1, 10_000_000, 1): 1056, (16, 256000, 1): 1008, (1, 2**22, 2): 1024, (1, 100_000, 4): 313}
    for oli, blocks in expect.items():
        plan = ks.sparsemax_plan(*oli, "f32", **H100)
        assert plan.launches[0].name == SPLIT + "max_f32" and _blocks(plan.launches[0]) == blocks, (oli, plan)
    for oli in [(4096, 1024, 1), (1, 5000, 1), (8, 3000, 1), (1, 60000, 1)]:  # enough slices, or small
        assert len(ks.sparsemax_plan(*oli, "f32", **H100).launches) == 1, oli


def test_sparsemax_workspace_layout():
    """kernels/gpuact_sparsemax.cu: C wmax[P], SupportSums<C> sums[2][P], TauSearch<C> state[2][cols]
    (both records two C and eight bytes: static_assert there)."""
    assert ks.sparsemax_workspace(3, 5, 7, "f32") == 105 * 4 + 2 * 105 * 16 + 2 * 21 * 16
    assert ks.sparsemax_workspace(3, 5, 7, "f16") == ks.sparsemax_workspace(3, 5, 7, "f32")
    assert ks.sparsemax_workspace(3, 5, 7, "f64") == 105 * 8 + 2 * 105 * 24 + 2 * 21 * 24


def test_plans_are_memoised_and_immutable():
    ks.softmax_plan.cache_clear()
    a = ks.softmax_plan(16, 256000, 1, "f32", log=False, **H100)
    b = ks.softmax_plan(16, 256000, 1, "f32", log=False, **H100)
    assert a is b and ks.softmax_plan.cache_info().hits == 1
    assert isinstance(a.launches, tuple) and isinstance(a.launches[0].ints, tuple)
    c = ks.sparsemax_plan(16, 2560, 1, "f32", **H100)
    assert c is ks.sparsemax_plan(16, 2560, 1, "f32", **H100)


def test_small_shared_memory_turns_the_cache_off():
    plan = ks.softmax_plan(1000, 5000, 1, "f32", log=False, sm_count=132, max_blocks=4224, smem_optin=16 * 1024)
    assert plan.launches[0].args()["cache"] == 0 and plan.launches[0].smem == 0
    plan = ks.sparsemax_plan(1000, 5000, 1, "f64", sm_count=132, max_blocks=4224, smem_optin=48 * 1024)
    assert plan.launches[0].args()["cache"] == 1 and plan.launches[0].smem == 5000 * 8


def test_arguments_out_of_range_are_refused():
    with pytest.raises(ValueError):
        ks.sparsemax_plan(1, 2**31, 1, "f32", **H100)


# ---- the backward plans (softmax_grad_plan, sparsemax_grad_plan), the bias, the contiguous kernels


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_softmax_grad_fills_the_gpu(tag):
    """The backward's plans: >= 2 blocks an SM for every (outer, L, inner) of >= 2**20 elements,
    within the limits, a (max, sum, dot) triple a partial, x and dy cached where both fit."""
    count = 0
    csize = ks.COMPUTE_DTYPE[tag].itemsize
    for oli in _shapes():
        for log in (False, True):
            plan = ks.softmax_grad_plan(*oli, tag, log=log, **H100)
            _check_limits(plan, H100)
            assert all(ks.fused_kernels()[launch.name].group == "softmax_grad" for launch in plan.launches)
            blocks = min(_blocks(launch) for launch in plan.launches)
            assert blocks >= 2 * H100["sm_count"], (oli, plan)
            outer, length, inner = oli
            args = plan.launches[0].args()
            assert args["log_mode"] == int(log)
            if len(plan.launches) == 2:
                assert args == plan.launches[1].args()
                assert args["segs"] * args["seg_len"] >= length > (args["segs"] - 1) * args["seg_len"]
                assert plan.workspace == outer * args["segs"] * inner * 3 * csize
            elif "_cols_" in plan.launches[0].name:
                assert plan.launches[0].smem in (0, 2 * args["ct"] * length * csize)
                assert args["cache"] == int(plan.launches[0].smem > 0)
            else:
                assert inner == 1 and length <= ks.WARP_MAX_ROW_GRAD[tag]
            count += 1
    assert count > 500


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_backward_plans_mirror_the_forward(tag):
    """Same grids and splits as the forward, but for the backward's warp limit (float64 rows of
    more than 512 go to the column kernel: twice the values a lane) and its two cached values."""
    for oli in _shapes(min_elements=1, max_elements=2**26):
        fwd = ks.softmax_plan(*oli, tag, log=False, **H100)
        bwd = ks.softmax_grad_plan(*oli, tag, log=False, **H100)
        _, length, inner = oli
        if inner == 1 and ks.WARP_MAX_ROW_GRAD[tag] < length <= ks.WARP_MAX_ROW:
            assert "_warp_" in fwd.launches[0].name and "_cols_" in bwd.launches[0].name
            continue
        assert [launch.grid for launch in fwd.launches] == [launch.grid for launch in bwd.launches], oli
        assert [launch.block for launch in fwd.launches] == [launch.block for launch in bwd.launches]
        sfwd, sbwd = ks.sparsemax_plan(*oli, tag, **H100), ks.sparsemax_grad_plan(*oli, tag, **H100)
        fgrids, bgrids = [launch.grid for launch in sfwd.launches], [launch.grid for launch in sbwd.launches]
        if sfwd.launches[0].name.startswith(SPLIT):  # the forward's search, then the dy sums and the write
            assert bgrids == fgrids[:-1] + fgrids[-1:] * 2, oli
            assert sbwd.launches[-2].name == f"gpuact_sparsemax_grad_split_sums_{tag}"
            assert sbwd.workspace == sfwd.workspace
            continue
        assert fgrids == bgrids, oli


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_sparsemax_grad_plans_stay_within_the_limits(tag):
    for oli in _shapes(min_elements=1, max_elements=2**34):
        plan = ks.sparsemax_grad_plan(*oli, tag, **H100)
        _check_limits(plan, H100)
        assert all(ks.fused_kernels()[launch.name].group == "sparsemax_grad" for launch in plan.launches)
        if "_cols_" in plan.launches[0].name:
            args = plan.launches[0].args()
            assert plan.launches[0].smem in (0, 2 * args["ct"] * oli[1] * ks.COMPUTE_DTYPE[tag].itemsize)
    with pytest.raises(ValueError):
        ks.sparsemax_grad_plan(1, 2**31, 1, "f32", **H100)


def test_backward_kernels_of_every_warp_plan_exist():
    """Every (W, E) a backward plan asks for is a kernel of the table (float64: E <= 16)."""
    for tag in ("f16", "f32", "f64"):
        for length in range(1, ks.WARP_MAX_ROW_GRAD[tag] + 1):
            for planner in (ks.softmax_grad_plan, ks.sparsemax_grad_plan):
                options = {"log": False} if planner is ks.softmax_grad_plan else {}
                plan = planner(3, length, 1, tag, **options, **H100)
                assert plan.launches[0].name in ks.fused_kernels()
    assert "gpuact_softmax_grad_warp_f64_w32_e32" not in ks.fused_kernels()
    assert "gpuact_softmax_grad_warp_f32_w32_e32" in ks.fused_kernels()


def _strides(bshape, shape, itemsize=1):
    b = np.broadcast_to(np.zeros(bshape, np.uint8), shape)
    return tuple(s // itemsize for s in b.strides)


def test_bias_plans():
    """How the softmax kernels walk a bias: the attention broadcasts along L in up to three runs of
    the outer axes; a non-walkable one is None (the backend materialises it)."""
    B, H, Q, L = 4, 8, 16, 128
    shape = (B, H, Q, L)
    outer = B * H * Q

    def plan(bshape, lo=3, hi=3, shp=shape):
        return ks.bias_plan(shp, _strides(bshape, shp), lo, hi, 1)

    assert plan((L,)) == ks.BiasPlan(1, 0, 0, 0, 1, outer, 1, 0)
    assert plan((B, 1, 1, L)) == ks.BiasPlan(1, 0, L, 0, B, H * Q, 1, 0)
    assert plan((1, 1, Q, L)) == ks.BiasPlan(1, 0, 0, L, B * H, Q, 1, 0)
    assert plan((H, Q, L)) == ks.BiasPlan(1, 0, 0, L, B, H * Q, 1, 0)
    assert plan((B, 1, Q, L)) == ks.BiasPlan(1, Q * L, 0, L, H, Q, 1, 0)
    assert plan(shape) == ks.BiasPlan(1, 0, 0, L, 1, outer, 1, 0)
    assert plan((B, H, Q, 1)) == ks.BiasPlan(1, 0, 0, 1, 1, outer, 0, 0)  # constant along L
    # a non-last axis: the inner axes one run
    assert plan((Q, 1), 2, 2) == ks.BiasPlan(1, 0, 0, 0, 1, B * H, 1, 0)
    assert plan((1, H, 1, 1), 1, 1) == ks.BiasPlan(1, 0, 0, 0, 1, B, 1, 0)
    assert plan((Q, L), 1, 1) == ks.BiasPlan(1, 0, 0, 0, 1, B, 0, 1)  # inner (Q, L), strides (L, 1): one run
    assert plan((Q, 1), 1, 1) is None  # inner (Q, L) strides (1, 0): two runs
    assert plan((B, 1, Q, 1), 3, 3, (B, H, Q, 2)) is not None
    assert ks.bias_plan((B, H, Q, 2, L), _strides((B, 1, Q, 1, 1), (B, H, Q, 2, L)), 4, 4, 1) is None  # 4 runs
    big = (2**16, 2**8, 2**8, 4)
    assert ks.bias_plan(big, _strides((2**16, 1, 2**8, 4), big), 3, 3, 1) is None  # 2**32 slices, 3 runs
    assert ks.bias_plan(big, _strides((4,), big), 3, 3, 2) == ks.BiasPlan(2, 0, 0, 0, 1, 2**32, 1, 0)


def _walk_bias_plan(p, outer, length, inner):
    """The offsets BiasView.slice computes (the kernels' arithmetic, in Python)."""
    out = np.empty((outer, length, inner), np.int64)
    for o in range(outer):
        if o < p.n2:
            off = o * p.s2
        else:
            q = o // p.n2
            off = (o - q * p.n2) * p.s2
            off += q * p.s1 if q < p.n1 else (q % p.n1) * p.s1 + (q // p.n1) * p.s0
        out[o] = off + np.arange(length)[:, None] * p.kstride + np.arange(inner)[None, :] * p.istride
    return out


@pytest.mark.parametrize(
    "bshape, shape, lo",
    [
        ((5,), (2, 3, 4, 5), 3),
        ((2, 1, 1, 5), (2, 3, 4, 5), 3),
        ((2, 1, 4, 5), (2, 3, 4, 5), 3),
        ((1, 3, 1, 1), (2, 3, 4, 5), 1),
        ((4, 1), (2, 3, 4, 5), 2),
        ((3, 4, 5), (2, 3, 4, 5), 3),
    ],
)
def test_bias_plan_addresses_every_element(bshape, shape, lo):
    """The kernels' offsets from a BiasPlan land on the broadcast bias's own elements."""
    b = np.arange(math.prod(bshape)).reshape(bshape)
    view = np.broadcast_to(b, shape)
    p = ks.bias_plan(shape, tuple(s // b.itemsize for s in view.strides), lo, lo, 1)
    assert p is not None
    oli = ks.outer_axis_inner(shape, (lo,))
    offsets = _walk_bias_plan(p, *oli)
    np.testing.assert_array_equal(b.reshape(-1)[offsets].reshape(shape), view)


def test_bias_reaches_every_softmax_launch():
    bias = ks.BiasPlan(2, 7, 6, 5, 4, 3, 2, 1)
    for oli in [(4, 100, 1), (2, 3000, 1), (1, 100000, 1), (3, 500, 40), (1, 2**16, 3)]:
        for planner in (ks.softmax_plan, ks.softmax_grad_plan):
            plan = planner(*oli, "f16", log=True, **H100, min_split=0, bias=bias)
            for launch in plan.launches:
                args = launch.args()
                assert {k: args[k] for k in ks.BIAS_INTS} == bias.ints()
                assert "bias" in launch.pointers
                assert launch.name.endswith("_bias") == ("_warp_" in launch.name)  # the variant with the bias
            plain = planner(*oli, "f16", log=True, **H100, min_split=0)
            assert all(launch.args()["bias_mode"] == 0 for launch in plain.launches)
            assert not any(launch.name.endswith("_bias") for launch in plain.launches)


def _simulate_columns(n, tag, units, sm_count=1):
    """The column every element of a contiguous kernel reads, walked as TrailingBias does (start
    once a thread with a 32-bit modulo, a step per vector, a count inside a vector, the tail)."""
    per = 16 // ks.DTYPE_ITEMSIZE[tag]
    launch = ks.vec_launch(n, tag, sm_count, units)
    _, _, step, tail_col = (int(v) for v in launch.ints)
    stride = launch.blocks * ks.EW_THREADS
    nvec = n // per
    cols = np.full(n, -1, np.int64)
    for tid in range(stride):
        first = tid * per
        assert first < 2**32
        col_v = first if first < units else (first % 2**32) % units
        base = tid
        while base < nvec:
            for u in range(ks.EW_UNROLL):
                i = base + u * stride
                if i < nvec:
                    c = col_v
                    for e in range(per):
                        cols[i * per + e] = c
                        c = 0 if c + 1 == units else c + 1
                col_v += step
                if col_v >= units:
                    col_v -= units
            base += stride * ks.EW_UNROLL
        t = nvec * per + tid
        if t < n:
            c = tail_col + tid
            while c >= units:
                c -= units
            cols[t] = c
    return cols


@pytest.mark.parametrize("tag", ["f16", "f32", "f64"])
@pytest.mark.parametrize(
    "n, units",
    [(1, 1), (7, 7), (35, 5), (8192 * 8 + 3, 3), (70007, 7), (72000, 1000), (100003, 100003), (2**17 + 5, 1)],
)
def test_trailing_bias_columns_are_exact(tag, n, units):
    """TrailingBias's column arithmetic (kernels/gpuact_elementwise.cuh) gives element e the bias
    b[e % units], over grid strides (8 blocks: several vectors a thread) and the scalar tail."""
    np.testing.assert_array_equal(_simulate_columns(n, tag, units), np.arange(n) % units)


def test_vec_launches():
    for tag in ("f16", "f32", "f64"):
        per = 16 // ks.DTYPE_ITEMSIZE[tag]
        for n in (1, 100, 2**20, 2**31 + 7, 10**10):
            launch = ks.vec_launch(n, tag, 132)
            assert launch.ints == (np.int64(n),) and type(launch.ints[0]) is np.int64
            assert 1 <= launch.blocks <= 132 * ks.FILL_BLOCKS_PER_SM
            assert launch.blocks * ks.EW_THREADS * ks.EW_UNROLL * per >= min(n, 132 * 8 * 256 * 4 * per) - per
            biased = ks.vec_launch(n, tag, 132, 1000)
            assert all(type(v) is np.int64 for v in biased.ints) and biased.blocks == launch.blocks
            assert int(biased.ints[2]) == biased.blocks * ks.EW_THREADS * per % 1000
    assert ks.vec_launch(10**6, "f32", 132) is ks.vec_launch(10**6, "f32", 132)
    with pytest.raises(ValueError):
        ks.vec_launch(2**40, "f16", 10**6, 3)  # first columns beyond 32 bits
