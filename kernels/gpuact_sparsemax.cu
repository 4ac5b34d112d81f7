// gpuact: fused sparsemax on the (outer, L, inner) view of a C-contiguous input
// (gpuact_reduce.cuh): y = max(z - tau, 0) along L, z = x - max(x), with tau such that the slice
// sums to 1. Kernel templates only: gpuact._kernel_sources generates the extern "C" wrappers.
//
// tau, without sorting: with the slice shifted to max 0, f(t) = sum max(z - t, 0) decreases from
// f(-1) >= 1 to f(0) = 0, so tau lies in [-1, 0). Each pass is one reduction of (sum, count) of
// the z above two probes: the lower bound lo, and the midpoint of the bracket [lo, hi]:
//  * Michelot's step from any t <= tau, t' = (sum_{z > t} z - 1) / #{z > t}, gives t <= t' <= tau,
//    and t' = tau exactly once {z > t'} is the set t' came from (the support, hence tau by the
//    exact formula); a few steps on real data;
//  * bisection moves hi down (f(mid) < 1) or lo up (then Michelot's step from mid as well), and
//    so bounds the passes on adversarial data (values piled up just below tau) by the bits of
//    precision, capped at GA_SPARSEMAX_MAX_PASSES.
//
//  * sparsemax_warp<S, E, W>  (inner == 1, L <= 1024): W lanes hold a row in registers, E values
//    each (as softmax_warp); the passes reduce with __shfl_xor_sync, until no row of the warp
//    needs another.
//  * sparsemax_cols<S>  (the rest): a block on a tile of ct columns; the slices stay in dynamic
//    shared memory when ct * L values fit (cache = 1), else every pass reads the input again.
//  * sparsemax_split_max<S>, sparsemax_split_pass<S> (launched `passes` times),
//    sparsemax_split_resolve<S> and sparsemax_split_finish<S>  (too few slices or tiles to fill the
//    GPU: a long row, or a non-last axis with a small inner size): L cut into segments, one block
//    per (slice, tile, segment), as softmax's split. The first kernel writes each segment's max;
//    each pass merges the column's max and the last pass's sums (every block of a column in the
//    same order, so they agree to the bit), steps the search, and writes its segment's (sum,
//    count) above the new probes; a column whose search is done reads nothing in the later
//    passes. The resolve kernel, a block per tile, steps once more and goes on over the whole
//    column where the search is still not done (rare: the passes cover what the search needs on
//    real data); the finish writes each segment with its column's tau.
//
// Semantics (gpuact.backends._composite.sparsemax_into): a slice holding NaN, or whose max is
// +inf, or that is all -inf, is NaN throughout; -inf among finite values gives 0. float16 is
// computed in float32, float64 in float64. In place (x is y) is safe: every element is read and
// written by the same thread, its last read before its write.
#ifndef GPUACT_SPARSEMAX_CU
#define GPUACT_SPARSEMAX_CU

#include "gpuact_reduce.cuh"

namespace ga {

// max that keeps a NaN from either side (a slice holding NaN has no projection)
template <typename C> __device__ __forceinline__ C nan_max(C a, C b) { return (a != a || a > b) ? a : b; }

struct MergeNanMax {
    template <typename C> __device__ __forceinline__ C operator()(C a, C b) const { return nan_max(a, b); }
};

// sum and count of the z above lo, and above mid
template <typename C> struct SupportSums {
    C s_lo, s_mid;
    int n_lo, n_mid;
};

struct AddSupportSums {
    template <typename C>
    __device__ __forceinline__ SupportSums<C> operator()(SupportSums<C> a, SupportSums<C> b) const {
        SupportSums<C> r;
        r.s_lo = a.s_lo + b.s_lo;
        r.s_mid = a.s_mid + b.s_mid;
        r.n_lo = a.n_lo + b.n_lo;
        r.n_mid = a.n_mid + b.n_mid;
        return r;
    }
};

#define GA_SPARSEMAX_MAX_PASSES(C) (sizeof(C) == 4 ? 64 : 128)

// The bracket on tau of one slice; every thread of the slice holds the same copy and updates it
// from the same reduced sums.
template <typename C> struct TauSearch {
    C lo, hi;        // f(lo) >= 1 > f(hi): lo <= tau < hi
    int lo_support;  // #{z > t} of the t that lo is Michelot's step from (0: none yet)
    bool done;       // lo is tau (or the slice has no projection)
    __device__ __forceinline__ void init(bool valid) {
        lo = C(-1);
        hi = C(0);
        lo_support = 0;
        done = !valid;
    }
    __device__ __forceinline__ C mid() const { return (lo + hi) * C(0.5); }
    // r: the sums of the pass that probed lo and mid
    __device__ __forceinline__ void step(const SupportSums<C>& r, C mid) {
        if (r.n_lo == lo_support) {  // {z > lo} is the set lo came from: f(lo) = 1
            done = true;
            return;
        }
        // n_lo, n_mid >= 1: the max z = 0 lies above both probes (< 0)
        C next = (r.s_lo - C(1)) / C(r.n_lo);
        int support = r.n_lo;
        if (r.s_mid - C(r.n_mid) * mid >= C(1)) {  // f(mid) >= 1: mid <= tau
            const C t = (r.s_mid - C(1)) / C(r.n_mid);
            if (t > next) {
                next = t;
                support = r.n_mid;
            }
        } else {
            hi = mid;
        }
        lo = next;
        lo_support = support;
    }
};

template <typename C> __device__ __forceinline__ C sparsemax_out(C z, C tau, bool valid) {
    return valid ? max_(z - tau, C(0)) : qnan(C());
}

// tau of each W-lane group's slice, z = x - max in registers (the padding -inf, above no probe).
// Warp-collective: every lane of the warp calls it, active or not.
template <typename C, int E, int W> __device__ __forceinline__ C warp_tau(const C (&z)[E], bool valid) {
    TauSearch<C> search;
    search.init(valid);
    for (int pass = 0; __any_sync(0xffffffffu, !search.done) && pass < GA_SPARSEMAX_MAX_PASSES(C); ++pass) {
        const C mid = search.mid();
        SupportSums<C> r;
        r.s_lo = r.s_mid = C(0);
        r.n_lo = r.n_mid = 0;
#pragma unroll
        for (int e = 0; e < E; ++e) {  // at most 32 terms a lane: plain sums
            r.s_lo += z[e] > search.lo ? z[e] : C(0);
            r.n_lo += z[e] > search.lo;
            r.s_mid += z[e] > mid ? z[e] : C(0);
            r.n_mid += z[e] > mid;
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) {
            r.s_lo += __shfl_xor_sync(0xffffffffu, r.s_lo, d, W);
            r.s_mid += __shfl_xor_sync(0xffffffffu, r.s_mid, d, W);
            r.n_lo += __shfl_xor_sync(0xffffffffu, r.n_lo, d, W);
            r.n_mid += __shfl_xor_sync(0xffffffffu, r.n_mid, d, W);
        }
        if (!search.done) search.step(r, mid);
    }
    return search.lo;
}

// tau of each column of a tile, z = x - m read from `cached` (this thread's own column values) or
// from x, the search going on from `search`. Block-collective: every thread of the block calls it;
// `red` is the tile's shared tree.
template <typename S, typename C>
__device__ __forceinline__ C column_search(const S* x, const C* cached, long long base, long long L, long long inner,
                                           const Tile& tile, bool active, C m, TauSearch<C> search,
                                           SupportSums<C>* red) {
    // __syncthreads_or: the block's columns pass together until the last one is done
    for (int pass = 0; __syncthreads_or(!search.done) && pass < GA_SPARSEMAX_MAX_PASSES(C); ++pass) {
        const C mid = search.mid();
        SupportSums<C> r;
        r.s_lo = r.s_mid = C(0);
        r.n_lo = r.n_mid = 0;
        C c_lo = C(0), c_mid = C(0);
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const C z = (cached ? cached[k * tile.ct + tile.tx] : to_c(x[base + k * inner])) - m;
                if (z > search.lo) {
                    kahan_add(r.s_lo, c_lo, z);
                    ++r.n_lo;
                }
                if (z > mid) {
                    kahan_add(r.s_mid, c_mid, z);
                    ++r.n_mid;
                }
            }
        }
        r.s_lo -= c_lo;
        r.s_mid -= c_mid;
        r = tile_reduce(r, red, tile, AddSupportSums());
        if (!search.done) search.step(r, mid);
    }
    return search.lo;
}

template <typename S, typename C>
__device__ __forceinline__ C column_tau(const S* x, const C* cached, long long base, long long L, long long inner,
                                        int ct, const Tile& tile, bool active, C m, bool valid, SupportSums<C>* red) {
    TauSearch<C> search;
    search.init(valid);
    return column_search(x, cached, base, L, inner, tile, active, m, search, red);
}

template <typename S, int E, int W>
__device__ __forceinline__ void sparsemax_warp(const S* x, S* y, long long rows, int L) {
    typedef typename compute_of<S>::type C;
    const C ninf = neg_inf(C());
    const int lane = threadIdx.x % W;
    const int groups_per_warp = 32 / W;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long nwarps = ((long long)gridDim.x * blockDim.x) / 32;
    const int group = (threadIdx.x % 32) / W;
    // Warp-uniform loops (rows and passes): the full-mask shuffles reach all 32 lanes.
    for (long long base = warp * groups_per_warp; base < rows; base += nwarps * groups_per_warp) {
        const long long row = base + group;
        const bool active = row < rows;
        const long long off = active ? row * (long long)L : 0;
        C z[E];
        C m = ninf;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            z[e] = (active && k < L) ? to_c(x[off + k]) : ninf;
            m = nan_max(m, z[e]);
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) m = nan_max(m, __shfl_xor_sync(0xffffffffu, m, d, W));
        const bool valid = active && is_finite(m);
#pragma unroll
        for (int e = 0; e < E; ++e) z[e] = z[e] - m;  // the padding stays -inf: above no probe
        const C tau = warp_tau<C, E, W>(z, valid);
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            if (active && k < L) y[off + k] = to_s(sparsemax_out(z[e], tau, valid), (S*)0);
        }
    }
}

template <typename S>
__device__ __forceinline__ void sparsemax_cols(const S* x, S* y, long long outer, long long L, long long inner, int ct,
                                               int cache) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    C* red_max = reinterpret_cast<C*>(red);  // the max's tree reuses the same shared memory
    GA_EXTERN_SHARED(ga_dyn_smem);
    C* cached = cache ? reinterpret_cast<C*>(ga_dyn_smem) : (C*)0;
    const Tile tile = make_tile(ct);
    const long long i = (long long)blockIdx.x * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
        const long long base = o * L * inner + i;
        C m = neg_inf(C());
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const C v = to_c(x[base + k * inner]);
                if (cached) cached[k * ct + tile.tx] = v;  // read back by this same thread only
                m = nan_max(m, v);
            }
        }
        m = tile_reduce(m, red_max, tile, MergeNanMax());
        const bool valid = is_finite(m);  // false for the columns past `inner` too: they stop at once
        const C tau = column_tau(x, (const C*)cached, base, L, inner, ct, tile, active, m, valid, red);
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const long long e = base + k * inner;
                const C z = (cached ? cached[k * ct + tile.tx] : to_c(x[e])) - m;
                y[e] = to_s(sparsemax_out(z, tau, valid), (S*)0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The split over blocks. Block b of the 1-D grid: segment b % segs of column tile (b / segs) %
// tiles of slice b / (segs * tiles) (the plan keeps the grid below 2**31: 32-bit division); each
// launch visits the blocks in the reverse of the previous one's order, so the segments read last,
// still in L2, are read first. The workspace (its size: gpuact._kernel_sources.sparsemax_workspace)
// holds, for P = outer * segs * inner (slice o, segment j, column i at (o * segs + j) * inner + i)
// and the outer * inner columns:
//   C wmax[P]; SupportSums<C> sums[2][P]; TauSearch<C> state[2][outer * inner]
// a pass reading the sums and state of the previous pass (buffer (pass - 1) & 1) and writing its
// own (pass & 1), which the blocks of one launch never both read and write.

// gpuact._kernel_sources.sparsemax_workspace counts 2 sizeof(C) + 8 bytes for each record
static_assert(sizeof(SupportSums<float>) == 16 && sizeof(SupportSums<double>) == 24, "SupportSums layout");
static_assert(sizeof(TauSearch<float>) == 16 && sizeof(TauSearch<double>) == 24, "TauSearch layout");

struct SparsemaxSplitBlock {
    unsigned seg, tile, o;
};

__device__ __forceinline__ SparsemaxSplitBlock sparsemax_split_block(bool reverse, unsigned segs, unsigned tiles) {
    unsigned b = reverse ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
    SparsemaxSplitBlock r;
    r.seg = b % segs;
    b /= segs;
    r.tile = b % tiles;
    r.o = b / tiles;
    return r;
}

template <typename C> struct SparsemaxSplitWorkspace {
    C* wmax;
    SupportSums<C>* sums;
    TauSearch<C>* state;
    long long parts, cols;
    __device__ __forceinline__ SparsemaxSplitWorkspace(void* ws, long long outer, int segs, long long inner) {
        parts = outer * segs * inner;
        cols = outer * inner;
        wmax = reinterpret_cast<C*>(ws);
        sums = reinterpret_cast<SupportSums<C>*>(wmax + parts);
        state = reinterpret_cast<TauSearch<C>*>(sums + 2 * parts);
    }
    __device__ __forceinline__ long long part(unsigned o, int seg, int segs, long long inner, long long i) const {
        return ((long long)o * segs + seg) * inner + i;
    }
};

// The column's max over the segments' maxima (every thread of a column gets it).
template <typename C>
__device__ __forceinline__ C split_column_max(const SparsemaxSplitWorkspace<C>& w, unsigned o, int segs,
                                              long long inner, long long i, const Tile& tile, bool active, C* red) {
    C m = neg_inf(C());
    if (active) {
        for (int j = tile.ty; j < segs; j += tile.ny) m = nan_max(m, w.wmax[w.part(o, j, segs, inner, i)]);
    }
    return tile_reduce(m, red, tile, MergeNanMax());
}

// The column's search after pass `pass` - 1's sums (the state before pass `pass`'s probes).
template <typename C>
__device__ __forceinline__ TauSearch<C> split_column_state(const SparsemaxSplitWorkspace<C>& w, int pass, unsigned o,
                                                           int segs, long long inner, long long i, const Tile& tile,
                                                           bool active, bool valid, SupportSums<C>* red) {
    TauSearch<C> search;
    search.init(valid && active);  // a thread past the tile's columns searches nothing
    if (pass == 0) return search;
    const int prev = (pass - 1) & 1;
    if (active) search = w.state[prev * w.cols + (long long)o * inner + i];
    SupportSums<C> r;
    r.s_lo = r.s_mid = C(0);
    r.n_lo = r.n_mid = 0;
    if (active && !search.done) {
        const SupportSums<C>* sums = w.sums + prev * w.parts;
        for (int j = tile.ty; j < segs; j += tile.ny) r = AddSupportSums()(r, sums[w.part(o, j, segs, inner, i)]);
    }
    r = tile_reduce(r, red, tile, AddSupportSums());
    if (!search.done) search.step(r, search.mid());
    return search;
}

template <typename S>
__device__ __forceinline__ void sparsemax_split_max(const S* x, typename compute_of<S>::type* ws, long long outer,
                                                    long long L, long long inner, int ct, int tiles, int segs,
                                                    long long seg_len) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(ws, outer, segs, inner);
    const SparsemaxSplitBlock blk = sparsemax_split_block(false, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const long long base = (long long)blk.o * L * inner + i;
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    C m = neg_inf(C());
    if (active) {
        for (long long k = k0 + tile.ty; k < k1; k += tile.ny) m = nan_max(m, to_c(x[base + k * inner]));
    }
    m = tile_reduce(m, reinterpret_cast<C*>(red), tile, MergeNanMax());
    if (active && tile.ty == 0) w.wmax[w.part(blk.o, blk.seg, segs, inner, i)] = m;
}

template <typename S>
__device__ __forceinline__ void sparsemax_split_pass(const S* x, typename compute_of<S>::type* ws, long long outer,
                                                     long long L, long long inner, int ct, int tiles, int segs,
                                                     long long seg_len, int pass) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(ws, outer, segs, inner);
    const SparsemaxSplitBlock blk = sparsemax_split_block((pass & 1) == 0, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const C m = split_column_max(w, blk.o, segs, inner, i, tile, active, reinterpret_cast<C*>(red));
    const TauSearch<C> search =
        split_column_state(w, pass, blk.o, segs, inner, i, tile, active, is_finite(m), red);
    if (active && blk.seg == 0 && tile.ty == 0) w.state[(pass & 1) * w.cols + (long long)blk.o * inner + i] = search;
    const bool busy = active && !search.done;
    if (!__syncthreads_or(busy)) return;  // every column of the tile is done: nothing to read
    const C mid = search.mid();
    SupportSums<C> r;
    r.s_lo = r.s_mid = C(0);
    r.n_lo = r.n_mid = 0;
    if (busy) {
        C c_lo = C(0), c_mid = C(0);
        const long long base = (long long)blk.o * L * inner + i;
        const long long k0 = (long long)blk.seg * seg_len;
        const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
        for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
            const C z = to_c(x[base + k * inner]) - m;
            if (z > search.lo) {
                kahan_add(r.s_lo, c_lo, z);
                ++r.n_lo;
            }
            if (z > mid) {
                kahan_add(r.s_mid, c_mid, z);
                ++r.n_mid;
            }
        }
        r.s_lo -= c_lo;
        r.s_mid -= c_mid;
    }
    r = tile_reduce(r, red, tile, AddSupportSums());
    if (busy && tile.ty == 0) w.sums[(pass & 1) * w.parts + w.part(blk.o, blk.seg, segs, inner, i)] = r;
}

// One block per (slice, tile): the last pass's sums merged and the search stepped once more; where
// it is still not done, it goes on over the whole column here, before any block writes (in place,
// the segments' writes would change what it reads). tau goes to the state buffer (passes & 1).
template <typename S>
__device__ __forceinline__ void sparsemax_split_resolve(const S* x, typename compute_of<S>::type* ws,
                                                        long long outer, long long L, long long inner, int ct,
                                                        int tiles, int segs, long long seg_len, int passes) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(ws, outer, segs, inner);
    const unsigned o = blockIdx.x / tiles, t = blockIdx.x % tiles;
    const Tile tile = make_tile(ct);
    const long long i = (long long)t * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const C m = split_column_max(w, o, segs, inner, i, tile, active, reinterpret_cast<C*>(red));
    TauSearch<C> search = split_column_state(w, passes, o, segs, inner, i, tile, active, is_finite(m), red);
    search.lo = column_search(x, (const C*)0, (long long)o * L * inner + i, L, inner, tile, active, m, search, red);
    search.done = true;
    if (active && tile.ty == 0) w.state[(passes & 1) * w.cols + (long long)o * inner + i] = search;
}

// Block (slice, tile, segment) writes its segment with the column's tau.
template <typename S>
__device__ __forceinline__ void sparsemax_split_finish(const S* x, S* y, const typename compute_of<S>::type* ws,
                                                       long long outer, long long L, long long inner, int ct,
                                                       int tiles, int segs, long long seg_len, int passes) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(const_cast<C*>(ws), outer, segs, inner);
    const SparsemaxSplitBlock blk = sparsemax_split_block((passes & 1) == 0, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const C m = split_column_max(w, blk.o, segs, inner, i, tile, active, reinterpret_cast<C*>(red));
    if (!active) return;  // no barrier below
    const bool valid = is_finite(m);
    const C tau = w.state[(passes & 1) * w.cols + (long long)blk.o * inner + i].lo;
    const long long base = (long long)blk.o * L * inner + i;
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
        const long long e = base + k * inner;
        y[e] = to_s(sparsemax_out(to_c(x[e]) - m, tau, valid), (S*)0);
    }
}

}  // namespace ga

#endif  // GPUACT_SPARSEMAX_CU
