// gpuact: the fused sparsemax backward on the (outer, L, inner) view of C-contiguous x and dy:
//
//   dx = s (dy - mean of dy over the support),  s = [sparsemax(x) > 0]
//
// tau recomputed by the forward's own search (gpuact_sparsemax.cu: TauSearch on z = x - max),
// then one reduction of (sum of dy, count) over the support, then dx written. Like the forward:
//
//  * sparsemax_grad_warp<S, E, W>  (inner == 1, L <= the plan's warp limit): W lanes hold a row's
//    z and dy in registers, E of each per lane; every reduction is a __shfl_xor_sync tree.
//  * sparsemax_grad_cols<S>  (the rest): a block on a tile of ct columns; z and dy stay in dynamic
//    shared memory when 2 ct L values fit (cache = 1), else every pass reads x (and the last two
//    read dy) again.
//  * sparsemax_grad_split_*<S>  (where the forward splits): the forward's split search, then the
//    support's dy sums per segment and the write (see the end of the file).
//
// Semantics (gpuact.backends.numpy_backend.sparsemax_grad): a slice without a projection (a NaN,
// a +inf, all -inf) is NaN throughout, as the forward; a NaN in dy on the support makes the
// support's dx NaN, off the support dx is 0. float16 is computed in float32. dx may be x or dy
// itself: every element is read before it is written, by the thread that writes it.
#ifndef GPUACT_SPARSEMAX_GRAD_CU
#define GPUACT_SPARSEMAX_GRAD_CU

#include "gpuact_sparsemax.cu"

namespace ga {

// The backward of one element once its slice's tau and support mean are known.
template <typename C> __device__ __forceinline__ C sparsemax_grad_out(C z, C g, C tau, C mean, bool valid) {
    if (!valid) return qnan(C());
    return sparsemax_out(z, tau, valid) > C(0) ? g - mean : C(0);
}

template <typename S, int E, int W>
__device__ __forceinline__ void sparsemax_grad_warp(const S* dy, const S* x, S* dx, long long rows, int L) {
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
        C z[E], g[E];
        C m = ninf;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            const bool in = active && k < L;
            z[e] = in ? to_c(x[off + k]) : ninf;
            g[e] = in ? to_c(dy[off + k]) : C(0);
            m = nan_max(m, z[e]);
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) m = nan_max(m, __shfl_xor_sync(0xffffffffu, m, d, W));
        const bool valid = active && is_finite(m);
#pragma unroll
        for (int e = 0; e < E; ++e) z[e] = z[e] - m;  // the padding stays -inf: above no probe
        const C tau = warp_tau<C, E, W>(z, valid);
        C sum = C(0);
        int count = 0;
#pragma unroll
        for (int e = 0; e < E; ++e) {  // the padding (-inf) is on no support
            const bool on = sparsemax_out(z[e], tau, valid) > C(0);
            sum += on ? g[e] : C(0);
            count += on;
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) {
            sum += __shfl_xor_sync(0xffffffffu, sum, d, W);
            count += __shfl_xor_sync(0xffffffffu, count, d, W);
        }
        const C mean = sum / C(count > 0 ? count : 1);
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            if (active && k < L) dx[off + k] = to_s(sparsemax_grad_out(z[e], g[e], tau, mean, valid), (S*)0);
        }
    }
}

template <typename S>
__device__ __forceinline__ void sparsemax_grad_cols(const S* dy, const S* x, S* dx, long long outer, long long L,
                                                    long long inner, int ct, int cache) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    C* red_max = reinterpret_cast<C*>(red);  // the max's tree reuses the same shared memory
    GA_EXTERN_SHARED(ga_dyn_smem);
    // the tile's x, then its dy: ct * L values each
    C* cached = cache ? reinterpret_cast<C*>(ga_dyn_smem) : (C*)0;
    C* cached_g = cache ? cached + ct * L : (C*)0;
    const Tile tile = make_tile(ct);
    const long long i = (long long)blockIdx.x * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
        const long long base = o * L * inner + i;
        C m = neg_inf(C());
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const C v = to_c(x[base + k * inner]);
                if (cached) {  // read back by this same thread only
                    cached[k * ct + tile.tx] = v;
                    cached_g[k * ct + tile.tx] = to_c(dy[base + k * inner]);
                }
                m = nan_max(m, v);
            }
        }
        m = tile_reduce(m, red_max, tile, MergeNanMax());
        const bool valid = is_finite(m);  // false for the columns past `inner` too: they stop at once
        const C tau = column_tau(x, (const C*)cached, base, L, inner, ct, tile, active, m, valid, red);
        // the support's sum of dy and count (in the lo fields; the tree adds all four)
        SupportSums<C> r;
        r.s_lo = r.s_mid = C(0);
        r.n_lo = r.n_mid = 0;
        C c_sum = C(0);
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const long long e = base + k * inner;
                const C z = (cached ? cached[k * ct + tile.tx] : to_c(x[e])) - m;
                if (sparsemax_out(z, tau, valid) > C(0)) {
                    kahan_add(r.s_lo, c_sum, cached ? cached_g[k * ct + tile.tx] : to_c(dy[e]));
                    ++r.n_lo;
                }
            }
        }
        r.s_lo -= c_sum;
        r = tile_reduce(r, red, tile, AddSupportSums());
        const C mean = r.s_lo / C(r.n_lo > 0 ? r.n_lo : 1);
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const long long e = base + k * inner;
                const C z = (cached ? cached[k * ct + tile.tx] : to_c(x[e])) - m;
                const C g = cached ? cached_g[k * ct + tile.tx] : to_c(dy[e]);
                dx[e] = to_s(sparsemax_grad_out(z, g, tau, mean, valid), (S*)0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The split over blocks (gpuact_sparsemax.cu): the forward's max, passes and resolve find each
// column's tau (in the state buffer passes & 1); then the sums kernel writes each segment's (sum
// of dy, count) over the support into the lo fields of the sums buffer passes & 1 (which the
// resolve, reading buffer (passes - 1) & 1, left free), and the finish merges them and writes its
// segment of dx (dx may be x or dy: each element read by the thread that writes it). The
// forward's kernels under the backward's names, so that a group compiles and is tested whole:
template <typename S>
__device__ __forceinline__ void sparsemax_grad_split_max(const S* x, typename compute_of<S>::type* ws, long long outer,
                                                         long long L, long long inner, int ct, int tiles, int segs,
                                                         long long seg_len) {
    sparsemax_split_max(x, ws, outer, L, inner, ct, tiles, segs, seg_len);
}

template <typename S>
__device__ __forceinline__ void sparsemax_grad_split_pass(const S* x, typename compute_of<S>::type* ws,
                                                          long long outer, long long L, long long inner, int ct,
                                                          int tiles, int segs, long long seg_len, int pass) {
    sparsemax_split_pass(x, ws, outer, L, inner, ct, tiles, segs, seg_len, pass);
}

template <typename S>
__device__ __forceinline__ void sparsemax_grad_split_resolve(const S* x, typename compute_of<S>::type* ws,
                                                             long long outer, long long L, long long inner, int ct,
                                                             int tiles, int segs, long long seg_len, int passes) {
    sparsemax_split_resolve(x, ws, outer, L, inner, ct, tiles, segs, seg_len, passes);
}

template <typename S>
__device__ __forceinline__ void sparsemax_grad_split_sums(const S* dy, const S* x, typename compute_of<S>::type* ws,
                                                          long long outer, long long L, long long inner, int ct,
                                                          int tiles, int segs, long long seg_len, int passes) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(ws, outer, segs, inner);
    const SparsemaxSplitBlock blk = sparsemax_split_block((passes & 1) == 0, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const C m = split_column_max(w, blk.o, segs, inner, i, tile, active, reinterpret_cast<C*>(red));
    const bool valid = is_finite(m);
    SupportSums<C> r;
    r.s_lo = r.s_mid = C(0);
    r.n_lo = r.n_mid = 0;
    if (active && valid) {
        const C tau = w.state[(passes & 1) * w.cols + (long long)blk.o * inner + i].lo;
        const long long base = (long long)blk.o * L * inner + i;
        const long long k0 = (long long)blk.seg * seg_len;
        const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
        C c_sum = C(0);
        for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
            const long long e = base + k * inner;
            if (sparsemax_out(to_c(x[e]) - m, tau, true) > C(0)) {
                kahan_add(r.s_lo, c_sum, to_c(dy[e]));
                ++r.n_lo;
            }
        }
        r.s_lo -= c_sum;
    }
    r = tile_reduce(r, red, tile, AddSupportSums());
    if (active && tile.ty == 0) w.sums[(passes & 1) * w.parts + w.part(blk.o, blk.seg, segs, inner, i)] = r;
}

template <typename S>
__device__ __forceinline__ void sparsemax_grad_split_finish(const S* dy, const S* x, S* dx,
                                                            const typename compute_of<S>::type* ws, long long outer,
                                                            long long L, long long inner, int ct, int tiles, int segs,
                                                            long long seg_len, int passes) {
    typedef typename compute_of<S>::type C;
    __shared__ SupportSums<C> red[GA_TILE_THREADS];
    const SparsemaxSplitWorkspace<C> w(const_cast<C*>(ws), outer, segs, inner);
    const SparsemaxSplitBlock blk = sparsemax_split_block((passes & 1) != 0, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const C m = split_column_max(w, blk.o, segs, inner, i, tile, active, reinterpret_cast<C*>(red));
    SupportSums<C> r;
    r.s_lo = r.s_mid = C(0);
    r.n_lo = r.n_mid = 0;
    if (active) {
        const SupportSums<C>* sums = w.sums + (passes & 1) * w.parts;
        for (int j = tile.ty; j < segs; j += tile.ny) r = AddSupportSums()(r, sums[w.part(blk.o, j, segs, inner, i)]);
    }
    r = tile_reduce(r, red, tile, AddSupportSums());
    if (!active) return;  // no barrier below
    const bool valid = is_finite(m);
    const C tau = w.state[(passes & 1) * w.cols + (long long)blk.o * inner + i].lo;
    const C mean = r.s_lo / C(r.n_lo > 0 ? r.n_lo : 1);
    const long long base = (long long)blk.o * L * inner + i;
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
        const long long e = base + k * inner;
        dx[e] = to_s(sparsemax_grad_out(to_c(x[e]) - m, to_c(dy[e]), tau, mean, valid), (S*)0);
    }
}

}  // namespace ga

#endif  // GPUACT_SPARSEMAX_GRAD_CU
