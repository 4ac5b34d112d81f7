// gpuact: the fused softmax / log_softmax backward on the (outer, L, inner) view of C-contiguous x
// and dy, the forward recomputed in the kernel (gpuact_softmax.cu: the same loads, bias, mask and
// special values), x and dy each read once from DRAM where a slice fits on chip, dx written once:
//
//   softmax:      dx = y (dy - sum(dy y)),       y = exp(v - m) / s
//   log_softmax:  dx = dy - y sum(dy)
//
// with v = x + bias (or -inf where the mask is 0), m the slice's max and s = sum exp(v - m). One
// reduction gives a slice's triple (m, s, t): t = sum dy exp(v - m) (softmax; rescaled with s
// when m moves) or t = sum dy (log_softmax). Then dot = t / s. The kernels mirror the forward's:
//
//  * softmax_grad_warp<S, E, W, BIAS>  (inner == 1, L <= the plan's warp limit): W lanes hold a
//    row's v and dy in registers, E of each per lane; the triple is reduced with __shfl_xor_sync.
//    BIAS false: compiled without the bias, as the forward's.
//  * softmax_grad_cols<S>  (the rest, when the (tile, outer) blocks fill the GPU): a block on a
//    tile of ct columns; one pass accumulates each thread's online triple and keeps v and dy in
//    dynamic shared memory when 2 ct L values fit (cache = 1, else the second pass reads x and dy
//    again, from L2 mostly); the triples are merged over the tile's rows; a second pass writes dx.
//  * softmax_grad_split_partials<S> + softmax_grad_split_finish<S>  (too few rows or tiles to fill
//    the GPU): L cut into segments, one block per (slice, tile, segment); the first kernel writes
//    each segment's triple per column into a small workspace, the second merges a column's
//    partials (every block of a slice the same way) and writes its segment (in the reverse block
//    order of the first, so the segments read last, still in L2, are re-read first).
//
// Semantics (gpuact.backends.numpy_backend.softmax_grad): a slice whose max is not finite (all
// -inf, a +inf, a NaN) gives NaN, as the forward; a NaN in dy makes its slice NaN (softmax: also
// where it meets y = 0, 0 * NaN in sum(dy y)). Masked positions (mask == 0) count as -inf in the
// forward, their dy as 0, and get dx = 0 (a fully masked slice is all 0). float16 is
// computed in float32. dx may be x or dy itself (in place): every element is read before it is
// written, by the thread that writes it.
#ifndef GPUACT_SOFTMAX_GRAD_CU
#define GPUACT_SOFTMAX_GRAD_CU

#include "gpuact_softmax.cu"

namespace ga {

// dy at element e, 0 where the mask is 0 (a masked position takes no part in the sums); loaded
// whatever the mask says, as masked_load does x, so the two loads do not wait on each other
template <typename S>
__device__ __forceinline__ typename compute_of<S>::type masked_dy(const S* dy, const unsigned char* mask,
                                                                  long long e) {
    typedef typename compute_of<S>::type C;
    const C g = to_c(dy[e]);
    return (mask && !mask[e]) ? C(0) : g;
}

// A slice's (or segment's, or thread's share's) triple: max m, s = sum exp(v - m), and t.
template <typename C> struct MaxSumDot {
    C m, s, t;
};

// Two triples into one (the tree merges); t is rescaled with s for softmax, summed for log_softmax.
struct MergeMaxSumDot {
    int log_mode;
    template <typename C>
    __device__ __forceinline__ MaxSumDot<C> operator()(MaxSumDot<C> a, MaxSumDot<C> b) const {
        const C mm = a.m > b.m ? a.m : b.m;
        // a.m == mm: no exp(-inf - -inf) = NaN when both are -inf; a NaN m gives NaN sums
        const C fa = a.m == mm ? C(1) : exp_(a.m - mm);
        const C fb = b.m == mm ? C(1) : exp_(b.m - mm);
        MaxSumDot<C> r;
        r.m = mm;
        r.s = a.s * fa + b.s * fb;
        r.t = log_mode ? a.t + b.t : a.t * fa + b.t * fb;
        return r;
    }
};

// A thread's running triple over many elements or partial triples, both sums Kahan-compensated,
// with OnlineSoftmax's rule for moving the reference max (only past 1 above it).
template <typename C> struct OnlineSoftmaxDot {
    C m, s, cs, t, ctt;
    int log_mode;
    __device__ __forceinline__ void init(int log_mode_) {
        m = neg_inf(C());
        s = cs = t = ctt = C(0);
        log_mode = log_mode_;
    }
    // merge in the triple (m2, s2, t2); one element v with its dy is (v, 1, dy)
    __device__ __forceinline__ void add(C m2, C s2, C t2) {
        if (m2 > m + C(1)) {  // also the first element above -inf: exp(-inf) = 0 clears the sums
            const C f = exp_(m - m2);
            s *= f;
            cs *= f;
            if (!log_mode) {
                t *= f;
                ctt *= f;
            }
            m = m2;
            kahan_add(s, cs, s2);
            kahan_add(t, ctt, t2);
        } else {
            const C f = m2 == m ? C(1) : exp_(m2 - m);
            kahan_add(s, cs, s2 * f);
            kahan_add(t, ctt, log_mode ? t2 : t2 * f);
        }
    }
    __device__ __forceinline__ MaxSumDot<C> total() const {
        MaxSumDot<C> r;
        r.m = m;
        r.s = s - cs;
        r.t = t - ctt;
        return r;
    }
};

// What turns (v, dy) into dx once the slice's triple is known; NaN throughout when the max is
// not finite or a sum is NaN. One reciprocal per slice.
template <typename C> struct GradScale {
    C m, inv, t, dot;
    int log_mode;
    __device__ __forceinline__ GradScale(MaxSumDot<C> r, int log_mode_) : m(r.m), t(r.t), log_mode(log_mode_) {
        inv = recip(is_finite(r.m) ? r.s : qnan(C()));
        dot = t * inv;
    }
    __device__ __forceinline__ C operator()(C v, C g) const {
        const C y = exp_(v - m) * inv;
        return log_mode ? g - y * t : y * (g - dot);
    }
};

template <typename S, int E, int W, bool BIAS>
__device__ __forceinline__ void softmax_grad_warp(const S* dy, const S* x, S* dx, const unsigned char* mask,
                                                  const void* bias, long long rows, int L, int log_mode,
                                                  GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    const BiasView<S> bv = GA_WARP_BIAS_VIEW(S, BIAS);
    const C ninf = neg_inf(C());
    const int lane = threadIdx.x % W;
    const int groups_per_warp = 32 / W;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long nwarps = ((long long)gridDim.x * blockDim.x) / 32;
    const int group = (threadIdx.x % 32) / W;
    // warp-uniform loop: the full-mask shuffles are reached by all 32 lanes
    for (long long base = warp * groups_per_warp; base < rows; base += nwarps * groups_per_warp) {
        const long long row = base + group;
        const bool active = row < rows;
        const long long off = active ? row * (long long)L : 0;
        const long long boff = (active && bv.mode) ? bv.slice(row) : 0;
        C v[E], g[E];
        C m = ninf;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            const bool in = active && k < L;
            v[e] = in ? masked_load(x, mask, bv, off + k, boff + k * bv.kstride) : ninf;
            g[e] = in ? masked_dy(dy, mask, off + k) : C(0);
            m = max_(m, v[e]);
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) m = max_(m, __shfl_xor_sync(0xffffffffu, m, d, W));
        MaxSumDot<C> r;
        r.m = m;
        r.s = C(0);
        r.t = C(0);
#pragma unroll
        for (int e = 0; e < E; ++e) {  // at most 32 terms a lane: plain sums
            v[e] = exp_(v[e] - m);
            if (lane + e * W < L) {
                r.s += v[e];
                r.t += log_mode ? g[e] : g[e] * v[e];
            }
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) {
            r.s += __shfl_xor_sync(0xffffffffu, r.s, d, W);
            r.t += __shfl_xor_sync(0xffffffffu, r.t, d, W);
        }
        // v[e] holds exp(v - m) already: y = v[e] / s, without GradScale's second exp
        const GradScale<C> scale(r, log_mode);
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            if (active && k < L) {
                const C y = v[e] * scale.inv;
                C res = log_mode ? g[e] - y * scale.t : y * (g[e] - scale.dot);
                if (mask && !mask[off + k]) res = C(0);
                dx[off + k] = to_s(res, (S*)0);
            }
        }
    }
}

// Rows k0 <= k < k1 of the thread's column (element base + k * inner, bias element
// bbase + k * kstride) into dx, from the shared-memory copies of v and dy when there are some.
template <typename S, typename C>
__device__ __forceinline__ void softmax_grad_write(const S* dy, const S* x, S* dx, const unsigned char* mask,
                                                   const BiasView<S>& bv, long long base, long long bbase,
                                                   long long inner, long long k0, long long k1, const Tile& tile,
                                                   const GradScale<C>& scale, const C* cached_v, const C* cached_g) {
    for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
        const long long e = base + k * inner;
        const long long c = k * tile.ct + tile.tx;
        const C v = cached_v ? cached_v[c] : masked_load(x, mask, bv, e, bbase + k * bv.kstride);
        const C g = cached_v ? cached_g[c] : masked_dy(dy, mask, e);
        C r = scale(v, g);
        if (mask && !mask[e]) r = C(0);
        dx[e] = to_s(r, (S*)0);
    }
}

template <typename S>
__device__ __forceinline__ void softmax_grad_cols(const S* dy, const S* x, S* dx, const unsigned char* mask,
                                                  const void* bias, long long outer, long long L, long long inner,
                                                  int ct, int log_mode, int cache, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    __shared__ MaxSumDot<C> red[GA_TILE_THREADS];
    GA_EXTERN_SHARED(ga_dyn_smem);
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    // the tile's v, then its dy: ct * L values each
    C* cached_v = cache ? reinterpret_cast<C*>(ga_dyn_smem) : (C*)0;
    C* cached_g = cache ? cached_v + ct * L : (C*)0;
    const Tile tile = make_tile(ct);
    const long long i = (long long)blockIdx.x * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const MergeMaxSumDot merge = {log_mode};
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
        const long long base = o * L * inner + i;
        const long long bbase = (active && bv.mode) ? bv.slice(o) + i * bv.istride : 0;
        OnlineSoftmaxDot<C> acc;
        acc.init(log_mode);
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const long long e = base + k * inner;
                const C v = masked_load(x, mask, bv, e, bbase + k * bv.kstride);
                const C g = masked_dy(dy, mask, e);
                if (cached_v) {  // read back by this same thread only
                    cached_v[k * ct + tile.tx] = v;
                    cached_g[k * ct + tile.tx] = g;
                }
                acc.add(v, C(1), g);
            }
        }
        const GradScale<C> scale(tile_reduce(acc.total(), red, tile, merge), log_mode);
        if (active)
            softmax_grad_write(dy, x, dx, mask, bv, base, bbase, inner, (long long)0, L, tile, scale,
                               (const C*)cached_v, (const C*)cached_g);
    }
}

// The workspace: the triple of (slice o, segment, column i) at (o * segs + segment) * inner + i.
template <typename S>
__device__ __forceinline__ void softmax_grad_split_partials(const S* dy, const S* x, const unsigned char* mask,
                                                            typename compute_of<S>::type* ws, const void* bias,
                                                            long long L, long long inner, int ct, int tiles, int segs,
                                                            long long seg_len, int log_mode, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    __shared__ MaxSumDot<C> red[GA_TILE_THREADS];
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    const SplitBlock blk = split_block(blockIdx.x, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const long long base = (long long)blk.o * L * inner + i;
    const long long bbase = (active && bv.mode) ? bv.slice(blk.o) + i * bv.istride : 0;
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    OnlineSoftmaxDot<C> acc;
    acc.init(log_mode);
    if (active) {
        for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
            const long long e = base + k * inner;
            acc.add(masked_load(x, mask, bv, e, bbase + k * bv.kstride), C(1), masked_dy(dy, mask, e));
        }
    }
    const MergeMaxSumDot merge = {log_mode};
    const MaxSumDot<C> part = tile_reduce(acc.total(), red, tile, merge);
    MaxSumDot<C>* parts = reinterpret_cast<MaxSumDot<C>*>(ws);
    if (active && tile.ty == 0) parts[((long long)blk.o * segs + blk.seg) * inner + i] = part;
}

template <typename S>
__device__ __forceinline__ void softmax_grad_split_finish(const S* dy, const S* x, S* dx, const unsigned char* mask,
                                                          const typename compute_of<S>::type* ws, const void* bias,
                                                          long long L, long long inner, int ct, int tiles, int segs,
                                                          long long seg_len, int log_mode, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    __shared__ MaxSumDot<C> red[GA_TILE_THREADS];
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    const SplitBlock blk = split_block(gridDim.x - 1 - blockIdx.x, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const MaxSumDot<C>* parts = reinterpret_cast<const MaxSumDot<C>*>(ws) + (long long)blk.o * segs * inner + i;
    OnlineSoftmaxDot<C> acc;
    acc.init(log_mode);
    if (active) {
        for (int j = tile.ty; j < segs; j += tile.ny) {
            const MaxSumDot<C> p = parts[(long long)j * inner];
            acc.add(p.m, p.s, p.t);
        }
    }
    const MergeMaxSumDot merge = {log_mode};
    const GradScale<C> scale(tile_reduce(acc.total(), red, tile, merge), log_mode);
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    const long long bbase = (active && bv.mode) ? bv.slice(blk.o) + i * bv.istride : 0;
    if (active)
        softmax_grad_write(dy, x, dx, mask, bv, (long long)blk.o * L * inner + i, bbase, inner, k0, k1, tile, scale,
                           (const C*)0, (const C*)0);
}

}  // namespace ga

#endif  // GPUACT_SOFTMAX_GRAD_CU
