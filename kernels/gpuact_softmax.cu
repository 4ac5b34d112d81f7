// gpuact: fused softmax / log_softmax (with the Softmax layer's mask) on the (outer, L, inner) view
// of a C-contiguous input (gpuact_reduce.cuh), reading the input at most twice and writing the
// output once. Kernel templates only: gpuact._kernel_sources generates one extern "C" wrapper per
// kernel (and dtype) and compiles each kernel on its own.
//
//  * softmax_warp<S, E, W, BIAS>  (inner == 1, L <= 1024): a group of W lanes (W = 32, or a power of
//    two < 32 packing several short rows in one warp) holds a row in registers, E values per lane
//    (W * E >= L); max and sum are reduced with __shfl_xor_sync. Lanes read consecutive elements,
//    so every load is coalesced. The block size (32, 64 or 128) is the launch's choice.
//  * softmax_cols<S>  (the rest, when the (tile, outer) blocks fill the GPU): a block of
//    GA_TILE_THREADS threads on a tile of ct columns (ct = min(inner, 32)). One pass computes
//    each thread's online (max, sum) and keeps the values in dynamic shared memory when ct * L of
//    them fit (cache = 1; otherwise the second pass reads the input again, from L2 mostly); the
//    pairs are merged over the tile's rows; a second pass writes.
//  * softmax_split_partials<S> + softmax_split_finish<S>  (too few rows or tiles to fill the GPU:
//    long rows, or a non-last axis with a small inner size): L is cut into segments of seg_len,
//    one block per (slice, tile, segment). The first kernel writes each segment's (max, sum) per
//    column into a small workspace; the second merges a column's partials (every block of a
//    slice the same way, so they agree to the bit) and writes its segment. It visits the blocks
//    in the reverse order of the first, so the segments read last, still in L2, are re-read first.
//
// The fused bias (softmax(x + bias), an attention mask or a relative position bias): the bias is
// read in the kernel through a BiasView of its broadcast against x, strides per (outer, L, inner)
// with the outer index split in two runs (see BiasView); the plan describes it, or the backend
// falls back to materialising the broadcast bias at x's shape. Masked positions stay -inf.
//
// Semantics (gpuact.backends.numpy_backend.softmax): a row whose max is -inf (all -inf), +inf
// or NaN gives NaN throughout; -inf among finite values gives exactly 0 (log_softmax: -inf);
// masked positions (mask[e] == 0) count as -inf and are written as 0, so a fully masked row is
// all 0. float16 is computed in float32. x and y may be the same array (in place): every element
// is read before it is written, by the same thread, and no pointer is declared __restrict__.
#ifndef GPUACT_SOFTMAX_CU
#define GPUACT_SOFTMAX_CU

#include "gpuact_reduce.cuh"

namespace ga {

// The bias of the element (o, k, i) of the (outer, L, inner) view, o the outer (slice) index:
// o = (o0 * n1 + o1) * n2 + o2 in up to three runs of the outer axes, each walked by one stride,
// at o0 * s0 + o1 * s1 + o2 * s2 + k * kstride + i * istride elements from p. Three runs cover
// every broadcast of 4-D attention scores (B, H, Q, L) along L: a (B, 1, 1, L) padding mask is
// s0 = L, n1 = 1, n2 = H * Q, s2 = 0; a (B, 1, Q, L) one s0 = Q * L, n1 = H, s1 = 0, n2 = Q,
// s2 = L; a (1, 1, Q, L) or (H, Q, L) bias one run. The plan keeps outer < 2**32 where there is
// more than one run (a 32-bit division a run, once per slice; none for one run: n2 = outer).
// mode 0: no bias; 1: stored as S; 2: stored as the compute type C (a float32 bias on float16 data).
template <typename S> struct BiasView {
    typedef typename compute_of<S>::type C;
    const void* p;
    int mode;
    long long s0, s1, s2, n1, n2, kstride, istride;
    __device__ __forceinline__ long long slice(long long o) const {
        if (o < n2) return o * s2;
        const unsigned int q = (unsigned int)o / (unsigned int)n2;
        const long long inner_run = (o - (long long)q * n2) * s2;
        if (q < n1) return inner_run + (long long)q * s1;
        const unsigned int q0 = q / (unsigned int)n1;
        return inner_run + (long long)(q - q0 * (unsigned int)n1) * s1 + (long long)q0 * s0;
    }
    __device__ __forceinline__ C at(long long off) const {
        return mode == 1 ? to_c(static_cast<const S*>(p)[off]) : static_cast<const C*>(p)[off];
    }
};

// The kernels' bias parameters: the pointer `bias` (after the other pointers) and these integers
// (after the other integers), and the view made of them.
#define GA_BIAS_INTS \
    int bias_mode, long long b_s0, long long b_s1, long long b_s2, long long b_n1, long long b_n2, long long b_k, \
        long long b_i
#define GA_BIAS_VIEW(S) BiasView<S>{bias, bias_mode, b_s0, b_s1, b_s2, b_n1, b_n2, b_k, b_i}

// x + bias at element e (bias element be), or -inf where the mask is 0. x and the bias are read
// whatever the mask says (every element exists), so their loads need not wait for the mask's.
template <typename S>
__device__ __forceinline__ typename compute_of<S>::type masked_load(const S* x, const unsigned char* mask,
                                                                    const BiasView<S>& bias, long long e,
                                                                    long long be) {
    typedef typename compute_of<S>::type C;
    C v = to_c(x[e]);
    if (bias.mode) v += bias.at(be);
    return (mask && !mask[e]) ? neg_inf(C()) : v;
}

// The warp kernels come in two variants, the plan picks one: BIAS false compiles the bias away
// (its mode a constant 0), so the kernels without one keep their registers (sm_90, E = 32: 80
// for float16 and float32, where the bias takes 116 and 93).
#define GA_WARP_BIAS_VIEW(S, BIAS) (BIAS ? GA_BIAS_VIEW(S) : BiasView<S>{bias, 0, 0, 0, 0, 1, 1, 0, 0})

template <typename S, int E, int W, bool BIAS>
__device__ __forceinline__ void softmax_warp(const S* x, S* y, const unsigned char* mask, const void* bias,
                                             long long rows, int L, int log_mode, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    const BiasView<S> bv = GA_WARP_BIAS_VIEW(S, BIAS);
    const C ninf = neg_inf(C());
    const int lane = threadIdx.x % W;
    const int groups_per_warp = 32 / W;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const long long nwarps = ((long long)gridDim.x * blockDim.x) / 32;
    const int group = (threadIdx.x % 32) / W;
    // Every lane of a warp runs the same iterations (rows past the end just idle), so the
    // full-mask shuffles below are always reached by all 32 lanes.
    for (long long base = warp * groups_per_warp; base < rows; base += nwarps * groups_per_warp) {
        const long long row = base + group;
        const bool active = row < rows;
        const long long off = active ? row * (long long)L : 0;
        const long long boff = (active && bv.mode) ? bv.slice(row) : 0;
        C v[E];
        C m = ninf;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            v[e] = (active && k < L) ? masked_load(x, mask, bv, off + k, boff + k * bv.kstride) : ninf;
            m = max_(m, v[e]);
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) m = max_(m, __shfl_xor_sync(0xffffffffu, m, d, W));
        C s = C(0);
        if (log_mode) {
#pragma unroll
            for (int e = 0; e < E; ++e) {
                v[e] = v[e] - m;
                if (lane + e * W < L) s += exp_(v[e]);
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; ++e) {
                v[e] = exp_(v[e] - m);
                if (lane + e * W < L) s += v[e];
            }
        }
#pragma unroll
        for (int d = W / 2; d > 0; d /= 2) s += __shfl_xor_sync(0xffffffffu, s, d, W);
        // one log or one reciprocal per row (a division per element would call the slow-path
        // subroutine of double division, which makes ptxas spill around the call)
        const C ls = log_mode ? log_(s) : recip(s);
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            if (active && k < L) {
                C r = log_mode ? v[e] - ls : v[e] * ls;
                if (mask && !mask[off + k]) r = C(0);
                y[off + k] = to_s(r, (S*)0);
            }
        }
    }
}

// A (max m, sum s of exp(. - m)) pair: a row, a segment or a thread's share of one.
template <typename C> struct MaxSum {
    C m, s;
};

// Two pairs into one (the tree merges).
struct MergeMaxSum {
    template <typename C>
    __device__ __forceinline__ MaxSum<C> operator()(MaxSum<C> a, MaxSum<C> b) const {
        const C mm = a.m > b.m ? a.m : b.m;
        MaxSum<C> r;
        r.s = (a.m == mm ? a.s : a.s * exp_(a.m - mm)) + (b.m == mm ? b.s : b.s * exp_(b.m - mm));
        r.m = mm;
        return r;
    }
};

// A thread's running pair over many elements or partial pairs, its sum Kahan-compensated (c).
// The reference m moves only to a value more than 1 above it, so m stays within 1 below the
// true max (every term is at most e) and each rescale multiplies the sum by less than 1/e, which
// damps that rescale's own rounding: moving m at every new max drifts by about an ulp per
// element on an ascending row (2.6e-5 over 10**4 float32 elements; 1e-7 this way).
template <typename C> struct OnlineSoftmax {
    C m, s, c;
    __device__ __forceinline__ void init() {
        m = neg_inf(C());
        s = C(0);
        c = C(0);
    }
    // merge in the pair (m2, s2); one element v is (v, 1)
    __device__ __forceinline__ void add(C m2, C s2) {
        if (m2 > m + C(1)) {  // also the first element above -inf: exp(-inf) = 0 clears the sum
            const C f = exp_(m - m2);
            s *= f;
            c *= f;
            m = m2;
            kahan_add(s, c, s2);
        } else {
            // m2 == m: no exp(-inf - -inf) = NaN for an all--inf start; a NaN m2 makes s NaN
            kahan_add(s, c, m2 == m ? s2 : s2 * exp_(m2 - m));
        }
    }
    __device__ __forceinline__ MaxSum<C> total() const {
        MaxSum<C> r;
        r.m = m;
        r.s = s - c;
        return r;
    }
};

// What turns an element into its output once its row's pair (M, S) is known: exp(v - M) / S, or
// (v - M) - log S. NaN throughout when M is not finite (the max is +inf, or all is -inf) or S is
// NaN (the row holds a NaN). One log or one reciprocal per row.
template <typename C> struct RowScale {
    C m, k;
    int log_mode;
    __device__ __forceinline__ RowScale(MaxSum<C> row, int log_mode_) : m(row.m), log_mode(log_mode_) {
        const C s = is_finite(row.m) ? row.s : qnan(C());
        k = log_mode ? log_(s) : recip(s);
    }
    __device__ __forceinline__ C operator()(C v) const { return log_mode ? (v - m) - k : exp_(v - m) * k; }
};

// Rows k0 <= k < k1 of the thread's column (element base + k * inner, bias element
// bbase + k * kstride) into their outputs, from the shared-memory copy when there is one.
template <typename S, typename C>
__device__ __forceinline__ void softmax_write(const S* x, S* y, const unsigned char* mask, const BiasView<S>& bv,
                                              long long base, long long bbase, long long inner, long long k0,
                                              long long k1, const Tile& tile, const RowScale<C>& scale,
                                              const C* cached) {
    for (long long k = k0 + tile.ty; k < k1; k += tile.ny) {
        const long long e = base + k * inner;
        C r = scale(cached ? cached[k * tile.ct + tile.tx] : masked_load(x, mask, bv, e, bbase + k * bv.kstride));
        if (mask && !mask[e]) r = C(0);
        y[e] = to_s(r, (S*)0);
    }
}

template <typename S>
__device__ __forceinline__ void softmax_cols(const S* x, S* y, const unsigned char* mask, const void* bias,
                                             long long outer, long long L, long long inner, int ct, int log_mode,
                                             int cache, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    __shared__ MaxSum<C> red[GA_TILE_THREADS];
    GA_EXTERN_SHARED(ga_dyn_smem);
    C* cached = cache ? reinterpret_cast<C*>(ga_dyn_smem) : (C*)0;
    const Tile tile = make_tile(ct);
    // blockIdx.x: the tile of ct columns; blockIdx.y strides over `outer` (the same count for the
    // whole block, so every thread reaches the same barriers).
    const long long i = (long long)blockIdx.x * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
        const long long base = o * L * inner + i;
        const long long bbase = (active && bv.mode) ? bv.slice(o) + i * bv.istride : 0;
        OnlineSoftmax<C> acc;
        acc.init();
        if (active) {
            for (long long k = tile.ty; k < L; k += tile.ny) {
                const C v = masked_load(x, mask, bv, base + k * inner, bbase + k * bv.kstride);
                if (cached) cached[k * ct + tile.tx] = v;  // read back by this same thread only
                acc.add(v, C(1));
            }
        }
        const RowScale<C> scale(tile_reduce(acc.total(), red, tile, MergeMaxSum()), log_mode);
        if (active) softmax_write(x, y, mask, bv, base, bbase, inner, (long long)0, L, tile, scale, (const C*)cached);
    }
}

// Block b of the split kernels' 1-D grid: segment b % segs of column tile (b / segs) % tiles of
// slice b / (segs * tiles). The plan keeps the grid below 2**31 blocks: 32-bit division.
struct SplitBlock {
    unsigned seg, tile, o;
};

__device__ __forceinline__ SplitBlock split_block(unsigned b, unsigned segs, unsigned tiles) {
    SplitBlock r;
    r.seg = b % segs;
    b /= segs;
    r.tile = b % tiles;
    r.o = b / tiles;
    return r;
}

// The split kernels' workspace: the pair of (slice o, segment, column i) at (o * segs + segment) * inner + i.
template <typename S>
__device__ __forceinline__ void softmax_split_partials(const S* x, const unsigned char* mask,
                                                       typename compute_of<S>::type* ws, const void* bias, long long L,
                                                       long long inner, int ct, int tiles, int segs, long long seg_len,
                                                       GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    __shared__ MaxSum<C> red[GA_TILE_THREADS];
    const SplitBlock blk = split_block(blockIdx.x, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const long long base = (long long)blk.o * L * inner + i;
    const long long bbase = (active && bv.mode) ? bv.slice(blk.o) + i * bv.istride : 0;
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    OnlineSoftmax<C> acc;
    acc.init();
    if (active) {
        for (long long k = k0 + tile.ty; k < k1; k += tile.ny)
            acc.add(masked_load(x, mask, bv, base + k * inner, bbase + k * bv.kstride), C(1));
    }
    const MaxSum<C> part = tile_reduce(acc.total(), red, tile, MergeMaxSum());
    MaxSum<C>* parts = reinterpret_cast<MaxSum<C>*>(ws);
    if (active && tile.ty == 0) parts[((long long)blk.o * segs + blk.seg) * inner + i] = part;
}

template <typename S>
__device__ __forceinline__ void softmax_split_finish(const S* x, S* y, const unsigned char* mask,
                                                     const typename compute_of<S>::type* ws, const void* bias,
                                                     long long L, long long inner, int ct, int tiles, int segs,
                                                     long long seg_len, int log_mode, GA_BIAS_INTS) {
    typedef typename compute_of<S>::type C;
    const BiasView<S> bv = GA_BIAS_VIEW(S);
    __shared__ MaxSum<C> red[GA_TILE_THREADS];
    const SplitBlock blk = split_block(gridDim.x - 1 - blockIdx.x, segs, tiles);
    const Tile tile = make_tile(ct);
    const long long i = (long long)blk.tile * ct + tile.tx;
    const bool active = tile.in_tile && i < inner;
    const MaxSum<C>* parts = reinterpret_cast<const MaxSum<C>*>(ws) + (long long)blk.o * segs * inner + i;
    OnlineSoftmax<C> acc;
    acc.init();
    if (active) {
        for (int j = tile.ty; j < segs; j += tile.ny) {
            const MaxSum<C> p = parts[(long long)j * inner];
            acc.add(p.m, p.s);
        }
    }
    const RowScale<C> scale(tile_reduce(acc.total(), red, tile, MergeMaxSum()), log_mode);
    const long long k0 = (long long)blk.seg * seg_len;
    const long long k1 = k0 + seg_len < L ? k0 + seg_len : L;
    const long long bbase = (active && bv.mode) ? bv.slice(blk.o) + i * bv.istride : 0;
    if (active)
        softmax_write(x, y, mask, bv, (long long)blk.o * L * inner + i, bbase, inner, k0, k1, tile, scale, (const C*)0);
}

}  // namespace ga

#endif  // GPUACT_SOFTMAX_CU
