// gpuact: what the fused reductions (softmax, sparsemax) share: special values, the compensated
// sum, and the column tile of a block with its shared-memory tree reduction.
//
// The reductions read a C-contiguous input as (outer, L, inner) and reduce along L: the element
// (o, k, i) sits at (o * L + k) * inner + i. A block of GA_TILE_THREADS threads takes a tile of
// ct columns (i) and ny = blockDim.x / ct threads per column: thread t has column tx = t % ct and
// rows k = ty, ty + ny, ... (ty = t / ct), so consecutive threads read consecutive addresses,
// coalesced across `inner` without a transposing copy.
//
// No 64-bit division anywhere in device code: in SASS it is a subroutine call, and the call makes
// ptxas spill.
#ifndef GPUACT_REDUCE_CUH
#define GPUACT_REDUCE_CUH

#include "gpuact_math.cuh"
#include "gpuact_half.cuh"

#ifndef GA_EXTERN_SHARED
#define GA_EXTERN_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// gpuact._kernel_sources.TILE_THREADS: the column kernels' block
#define GA_TILE_THREADS 256

namespace ga {

__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }
__device__ __forceinline__ float qnan(float) { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ double qnan(double) { return __longlong_as_double(0x7ff8000000000000ULL); }
template <typename C> __device__ __forceinline__ bool is_finite(C v) { return v > neg_inf(C()) && v < -neg_inf(C()); }

// 1 / s, once per row. For double, div.rn.f64 becomes a call to a slow-path subroutine in SASS,
// and the call makes ptxas spill the row held in registers; the reciprocal intrinsic does not.
__device__ __forceinline__ float recip(float s) { return 1.0f / s; }
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ double recip(double s) { return __drcp_rn(s); }
#else
__device__ __forceinline__ double recip(double s) { return 1.0 / s; }
#endif

// s += v, Kahan-compensated: c holds what the additions have lost so far (the sum is s - c). A
// thread that adds thousands of float32 terms would otherwise drift, and stall outright once s
// reaches 2**24 times a term (2**25 ones summed to 2**24). No FMA can be contracted from these
// additions, and no -ffast-math or --use_fast_math reassociates them away.
template <typename C>
__device__ __forceinline__ void kahan_add(C& s, C& c, C v) {
    const C y = v - c;
    const C t = s + y;
    c = (t - s) - y;
    s = t;
}

// A thread's place in a column tile of ct columns (see the top of the file).
struct Tile {
    int ct, ny, tx, ty;
    bool in_tile;  // false for the blockDim.x % ct threads left over: they hold no column
};

__device__ __forceinline__ Tile make_tile(int ct) {
    Tile tile;
    tile.ct = ct;
    tile.ny = blockDim.x / ct;
    tile.tx = threadIdx.x % ct;
    tile.ty = threadIdx.x / ct;
    tile.in_tile = tile.ty < tile.ny;
    return tile;
}

// Each column's ny per-thread values merged over ty, pairwise (a tree in red[], which holds
// blockDim.x values); every thread gets the total of its column tx. All threads of the block must
// call it; red[] is free again when it returns.
template <typename T, typename Merge>
__device__ __forceinline__ T tile_reduce(T v, T* red, const Tile& tile, Merge merge) {
    red[threadIdx.x] = v;
    __syncthreads();
    int pow2 = 1;
    while (pow2 < tile.ny) pow2 *= 2;
    for (int d = pow2 / 2; d > 0; d /= 2) {
        if (tile.ty < d && tile.ty + d < tile.ny) {
            red[threadIdx.x] = merge(red[threadIdx.x], red[threadIdx.x + d * tile.ct]);
        }
        __syncthreads();
    }
    const T total = red[tile.tx];
    __syncthreads();
    return total;
}

}  // namespace ga

#endif  // GPUACT_REDUCE_CUH
