// gpuact: the vectorised elementwise kernel body for contiguous arrays.
//
// Each thread moves 16-byte vectors (float4 = 4 floats, double2 = 2 doubles, uint4 = 8 halves),
// UNROLL of them loaded before any is computed or stored, so that enough bytes are in flight per
// SM to reach copy bandwidth; a grid-stride loop with 64-bit indices covers any size (> 2**31
// elements included), and the n % (16 / sizeof(S)) trailing elements are done one by one.
// Needs gpuact_math.cuh and gpuact_half.cuh first. The caller checks that x and y are 16-byte
// aligned (else the strided ElementwiseKernel runs instead).
#ifndef GPUACT_ELEMENTWISE_CUH
#define GPUACT_ELEMENTWISE_CUH

#define GA_EW_THREADS 256
#define GA_EW_UNROLL 4

namespace ga {

template <typename S> struct vec16;
template <> struct vec16<float> {
    typedef float4 V;
    template <typename Op> __device__ __forceinline__ static V apply(V v, const Op& op) {
        v.x = op(v.x); v.y = op(v.y); v.z = op(v.z); v.w = op(v.w);
        return v;
    }
};
template <> struct vec16<double> {
    typedef double2 V;
    template <typename Op> __device__ __forceinline__ static V apply(V v, const Op& op) {
        v.x = op(v.x); v.y = op(v.y);
        return v;
    }
};
template <> struct vec16<unsigned short> {  // 8 halves, two per 32-bit word
    typedef uint4 V;
    template <typename Op> __device__ __forceinline__ static unsigned int pair(unsigned int w, const Op& op) {
        unsigned int lo = f2h(op(h2f((unsigned short)(w & 0xffffu))));
        unsigned int hi = f2h(op(h2f((unsigned short)(w >> 16))));
        return lo | (hi << 16);
    }
    template <typename Op> __device__ __forceinline__ static V apply(V v, const Op& op) {
        v.x = pair(v.x, op); v.y = pair(v.y, op); v.z = pair(v.z, op); v.w = pair(v.w, op);
        return v;
    }
};

template <typename S, typename Op>
__device__ __forceinline__ void vec_apply(const S* __restrict__ x, S* __restrict__ y, long long n, const Op& op) {
    typedef typename vec16<S>::V V;
    const long long per = (long long)(sizeof(V) / sizeof(S));
    const long long nvec = n / per;
    const V* __restrict__ xv = reinterpret_cast<const V*>(x);
    V* __restrict__ yv = reinterpret_cast<V*>(y);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long base = tid; base < nvec; base += stride * GA_EW_UNROLL) {
        V v[GA_EW_UNROLL];
#pragma unroll
        for (int u = 0; u < GA_EW_UNROLL; ++u) {
            long long i = base + u * stride;
            if (i < nvec) v[u] = __ldg(xv + i);
        }
#pragma unroll
        for (int u = 0; u < GA_EW_UNROLL; ++u) {
            long long i = base + u * stride;
            if (i < nvec) yv[i] = vec16<S>::apply(v[u], op);
        }
    }
    const long long t = nvec * per + tid;  // the scalar tail, fewer than `per` elements
    if (t < n) y[t] = to_s(op(to_c(x[t])), (S*)0);
}

}  // namespace ga

#endif  // GPUACT_ELEMENTWISE_CUH
