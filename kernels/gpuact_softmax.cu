// gpuact: fused softmax / log_softmax (with the Softmax layer's mask), one launch each, reading
// the input once and writing the output once.
//
// The input is C-contiguous and seen as (outer, L, inner): softmax runs along L, the element
// (o, k, i) sits at (o * L + k) * inner + i. Two kernel families:
//
//  * gpuact_softmax_warp_<dt>_w<W>_e<E>  (inner == 1, L <= 1024): a group of W lanes (W = 32, or
//    a power of two < 32 packing several short rows in one warp) holds a row in registers, E
//    values per lane (W * E >= L); max and sum are reduced with __shfl_xor_sync. Lanes read
//    consecutive elements, so every load is coalesced.
//  * gpuact_softmax_cols_<dt>  (everything else): a block of 256 threads takes a tile of CT
//    columns (CT = min(inner, 32); CT = 1 for long last-axis rows) and TY = 256 / CT threads per
//    column; thread (tx, ty) reads elements k = ty, ty + TY, ... of column tx, so consecutive
//    threads read consecutive addresses: coalesced across `inner` without a transposing copy.
//    One pass computes an online (running max, rescaled sum) per thread and keeps the values in
//    dynamic shared memory when CT * L of them fit (cache = 1; otherwise the second pass reads
//    the input again, from L2 mostly); (max, sum) pairs are merged over ty in shared memory;
//    a second pass writes.
//
// Semantics (gpuact.backends.numpy_backend.softmax): a row whose max is -inf (all -inf), +inf
// or NaN gives NaN throughout; -inf among finite values gives exactly 0 (log_softmax: -inf);
// masked positions (mask[e] == 0) count as -inf and are written as 0, so a fully masked row is
// all 0. float16 is computed in float32. x and y may be the same array (in place): every element
// is read before it is written, by the same thread, and no pointer is declared __restrict__.
#include "gpuact_math.cuh"
#include "gpuact_half.cuh"

#ifndef GA_EXTERN_SHARED
#define GA_EXTERN_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#define GA_SM_THREADS 256
#define GA_WARP_THREADS 128

namespace ga {

__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }
__device__ __forceinline__ float qnan(float) { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ double qnan(double) { return __longlong_as_double(0x7ff8000000000000ULL); }
// 1 / s, once per row. For double, div.rn.f64 becomes a call to a slow-path subroutine in SASS,
// and the call makes ptxas spill the row held in registers; the reciprocal intrinsic does not.
__device__ __forceinline__ float recip(float s) { return 1.0f / s; }
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ double recip(double s) { return __drcp_rn(s); }
#else
__device__ __forceinline__ double recip(double s) { return 1.0 / s; }
#endif

template <typename S, int E, int W>
__device__ __forceinline__ void softmax_warp(const S* x, S* y, const unsigned char* mask, long long rows, int L,
                                             int log_mode) {
    typedef typename compute_of<S>::type C;
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
        C v[E];
        C m = ninf;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            const int k = lane + e * W;
            v[e] = ninf;
            if (active && k < L) {
                v[e] = to_c(x[off + k]);
                if (mask && !mask[off + k]) v[e] = ninf;
            }
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

// One element into a thread's running (max m, sum s of exp(. - m)).
template <typename C>
__device__ __forceinline__ void online_add(C& m, C& s, C v) {
    if (v > m) {
        s = s * exp_(m - v) + C(1);  // m = -inf at first: exp(-inf) = 0
        m = v;
    } else if (v == m) {
        s += C(1);  // also -inf == -inf: the count is harmless, a -inf max makes NaN at the end
    } else {
        s += exp_(v - m);  // NaN v: s becomes NaN, and so does the whole row
    }
}

template <typename C>
__device__ __forceinline__ void online_merge(C& m, C& s, C m2, C s2) {
    const C mm = m > m2 ? m : m2;
    s = (m == mm ? s : s * exp_(m - mm)) + (m2 == mm ? s2 : s2 * exp_(m2 - mm));
    m = mm;
}

template <typename S>
__device__ __forceinline__ void softmax_cols(const S* x, S* y, const unsigned char* mask, long long outer, long long L,
                                             long long inner, int CT, int log_mode, int cache) {
    typedef typename compute_of<S>::type C;
    __shared__ C red_m[GA_SM_THREADS];
    __shared__ C red_s[GA_SM_THREADS];
    GA_EXTERN_SHARED(ga_dyn_smem);
    C* cached = reinterpret_cast<C*>(ga_dyn_smem);
    const C ninf = neg_inf(C());
    const int t = threadIdx.x;
    const int TY = blockDim.x / CT;
    const int tx = t % CT;
    const int ty = t / CT;
    int pow2 = 1;
    while (pow2 < TY) pow2 *= 2;
    // blockIdx.x: the tile of CT columns; blockIdx.y strides over `outer` (the same count for the
    // whole block). No 64-bit division anywhere: in SASS it is a subroutine call, and the call
    // makes ptxas spill.
    const long long i = (long long)blockIdx.x * CT + tx;
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {
        const bool active = ty < TY && i < inner;
        const long long base = o * L * inner + i;
        C m = ninf, s = C(0);
        if (active) {
            for (long long k = ty; k < L; k += TY) {
                const long long e = base + k * inner;
                C v = to_c(x[e]);
                if (mask && !mask[e]) v = ninf;
                if (cache) cached[k * CT + tx] = v;
                online_add(m, s, v);
            }
        }
        red_m[t] = m;
        red_s[t] = s;
        __syncthreads();
        for (int d = pow2 / 2; d > 0; d /= 2) {
            if (ty < d && ty + d < TY) {
                C mm = red_m[t], ss = red_s[t];
                online_merge(mm, ss, red_m[t + d * CT], red_s[t + d * CT]);
                red_m[t] = mm;
                red_s[t] = ss;
            }
            __syncthreads();
        }
        const C M = red_m[tx];
        C Ssum = red_s[tx];
        if (!(M > ninf && M < -ninf)) Ssum = qnan(C());  // max -inf, +inf or NaN: NaN throughout
        const C lsum = log_mode ? log_(Ssum) : recip(Ssum);
        if (active) {
            for (long long k = ty; k < L; k += TY) {
                const long long e = base + k * inner;
                C v;
                if (cache) {
                    v = cached[k * CT + tx];
                } else {
                    v = to_c(x[e]);
                }
                C r = log_mode ? (v - M) - lsum : exp_(v - M) * lsum;
                if (mask && !mask[e]) r = C(0);
                y[e] = to_s(r, (S*)0);
            }
        }
        __syncthreads();  // red_m / red_s / cached are reused by the next tile
    }
}

}  // namespace ga

// No __launch_bounds__ on these kernels: with it, ptxas (sm_90) caps some variants'
// registers low enough to spill; without it they get what they need (<= 255) and never spill.
#define GA_WARP_KERNEL(DT, S, W, E)                                                                          \
    extern "C" __global__ void gpuact_softmax_warp_##DT##_w##W##_e##E(                                         \
        const S* x, S* y, const unsigned char* mask, long long rows, int L, int log_mode) {                  \
        ga::softmax_warp<S, E, W>(x, y, mask, rows, L, log_mode);                                            \
    }

#define GA_DTYPE_KERNELS(DT, S)                                                                              \
    GA_WARP_KERNEL(DT, S, 1, 1)                                                                              \
    GA_WARP_KERNEL(DT, S, 2, 1)                                                                              \
    GA_WARP_KERNEL(DT, S, 4, 1)                                                                              \
    GA_WARP_KERNEL(DT, S, 8, 1)                                                                              \
    GA_WARP_KERNEL(DT, S, 16, 1)                                                                             \
    GA_WARP_KERNEL(DT, S, 32, 1)                                                                             \
    GA_WARP_KERNEL(DT, S, 32, 2)                                                                             \
    GA_WARP_KERNEL(DT, S, 32, 4)                                                                             \
    GA_WARP_KERNEL(DT, S, 32, 8)                                                                             \
    GA_WARP_KERNEL(DT, S, 32, 16)                                                                            \
    GA_WARP_KERNEL(DT, S, 32, 32)                                                                            \
    extern "C" __global__ void gpuact_softmax_cols_##DT(                                                      \
        const S* x, S* y, const unsigned char* mask, long long outer, long long L, long long inner, int CT,   \
        int log_mode, int cache) {                                                                           \
        ga::softmax_cols<S>(x, y, mask, outer, L, inner, CT, log_mode, cache);                               \
    }

#if !defined(GA_ONLY_DTYPE) || GA_ONLY_DTYPE == 16
GA_DTYPE_KERNELS(f16, unsigned short)
#endif
#if !defined(GA_ONLY_DTYPE) || GA_ONLY_DTYPE == 32
GA_DTYPE_KERNELS(f32, float)
#endif
#if !defined(GA_ONLY_DTYPE) || GA_ONLY_DTYPE == 64
GA_DTYPE_KERNELS(f64, double)
#endif
