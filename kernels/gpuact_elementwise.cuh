// gpuact: the vectorised elementwise kernel bodies for contiguous arrays.
//
// Each thread moves 16-byte vectors (float4 = 4 floats, double2 = 2 doubles, uint4 = 8 halves or
// 8 bfloat16s),
// UNROLL of them loaded before any is computed or stored, so that enough bytes are in flight per
// SM to reach copy bandwidth; a grid-stride loop with 64-bit indices covers any size (> 2**31
// elements included), and the n % (16 / sizeof(S)) trailing elements are done one by one.
// Needs gpuact_math.cuh and gpuact_half.cuh first. The caller checks that every array is 16-byte
// aligned (else the strided ElementwiseKernel runs instead).
//
// One loop, vec_fused, serves every contiguous kernel:
//   forward                 y = f(x)                      (vec_apply)
//   forward with a bias     y = f(x + b)
//   backward                dx = dy * f'(x)
//   backward with a bias    dx = dy * f'(x + b)
// The output may be x or dy itself (in place): each element is loaded once, by the thread that
// stores it, before it stores it, and never loaded again. The loads are read-only (__ldg,
// ld.global.nc) only with NC: PTX allows .nc only for data that stays read-only while the kernel
// runs, which an input the kernel also writes is not, so the host launches the NC = false
// variant (plain ld.global) whenever the output is x or dy.
//
// The fused bias is one along x's trailing axes (a Dense layer's (units,) bias; any C-contiguous
// b of `units` elements that x's C-contiguous data repeats): element e takes b[e % units]. The
// column is kept incrementally: a thread finds its first one once, with a 32-bit modulo, then
// steps it by `step` = (grid stride in elements) % units per vector, with one compare and
// subtract; inside a vector the column counts up and wraps. No 64-bit division per element.
#ifndef GPUACT_ELEMENTWISE_CUH
#define GPUACT_ELEMENTWISE_CUH

#define GA_EW_THREADS 256
#define GA_EW_UNROLL 4

namespace ga {

// A 16-byte vector V of storage type S and its N elements; apply(v, d, g) replaces element j of v
// by g(v_j, d_j) (compute type), in memory order.
template <typename S> struct vec16;
template <> struct vec16<float> {
    typedef float4 V;
    enum { N = 4 };
    template <typename G> __device__ __forceinline__ static V apply(V v, V d, G& g) {
        v.x = g(v.x, d.x); v.y = g(v.y, d.y); v.z = g(v.z, d.z); v.w = g(v.w, d.w);
        return v;
    }
};
template <> struct vec16<double> {
    typedef double2 V;
    enum { N = 2 };
    template <typename G> __device__ __forceinline__ static V apply(V v, V d, G& g) {
        v.x = g(v.x, d.x); v.y = g(v.y, d.y);
        return v;
    }
};
// The 16-bit storage types' conversions on raw bits (gpuact_half.cuh): float16, bfloat16.
template <typename S> struct bits16;
template <> struct bits16<unsigned short> {
    __device__ __forceinline__ static float widen(unsigned short h) { return h2f(h); }
    __device__ __forceinline__ static unsigned short narrow(float f) { return f2h(f); }
};
template <> struct bits16<bf16> {
    __device__ __forceinline__ static float widen(unsigned short h) { return b2f(h); }
    __device__ __forceinline__ static unsigned short narrow(float f) { return f2b(f); }
};
// 8 16-bit values, two per 32-bit word, the low one first
template <typename S> struct vec16_halves {
    typedef uint4 V;
    enum { N = 8 };
    typedef bits16<S> B;
    template <typename G> __device__ __forceinline__ static unsigned int pair(unsigned int w, unsigned int dw, G& g) {
        unsigned int lo = B::narrow(g(B::widen((unsigned short)(w & 0xffffu)), B::widen((unsigned short)(dw & 0xffffu))));
        unsigned int hi = B::narrow(g(B::widen((unsigned short)(w >> 16)), B::widen((unsigned short)(dw >> 16))));
        return lo | (hi << 16);
    }
    template <typename G> __device__ __forceinline__ static V apply(V v, V d, G& g) {
        v.x = pair(v.x, d.x, g); v.y = pair(v.y, d.y, g); v.z = pair(v.z, d.z, g); v.w = pair(v.w, d.w, g);
        return v;
    }
};
template <> struct vec16<unsigned short> : vec16_halves<unsigned short> {};
template <> struct vec16<bf16> : vec16_halves<bf16> {};

// No bias: x as it is.
struct NoBias {
    __device__ __forceinline__ void start(long long) {}
    __device__ __forceinline__ void next_vector() {}
    __device__ __forceinline__ void tail(long long) {}
    template <typename C> __device__ __forceinline__ C operator()(C v) { return v; }
};

// The bias along x's trailing axes (B: its storage type, S or the compute type), read at the
// column `col` of the next element (see the top of the file).
template <typename B> struct TrailingBias {
    const B* b;
    long long units;     // b's elements
    long long step;      // (grid stride in elements) % units, from the host
    long long tail_col;  // (first element of the scalar tail) % units, from the host
    long long col_v, col;
    // `first`, the thread's first element, is below 2**32 (the plan's grid): a 32-bit modulo
    __device__ __forceinline__ void start(long long first) {
        col_v = first < units ? first : (long long)((unsigned int)first % (unsigned int)units);
        col = col_v;
    }
    __device__ __forceinline__ void next_vector() {
        col_v += step;
        if (col_v >= units) col_v -= units;
        col = col_v;
    }
    // the tail's element k (k < 8)
    __device__ __forceinline__ void tail(long long k) {
        col = tail_col + k;
        while (col >= units) col -= units;
    }
    template <typename C> __device__ __forceinline__ C operator()(C v) {
        const C r = v + to_c(b[col]);
        col = (col + 1 == units) ? 0 : col + 1;
        return r;
    }
};

// What one element becomes: f(bias(x)), or with HAS_DY dy * f(bias(x)).
template <bool HAS_DY, typename Bias, typename F> struct FusedElement {
    Bias& bias;
    const F& f;
    template <typename C> __device__ __forceinline__ C operator()(C x, C dy) {
        const C r = f(bias(x));
        return HAS_DY ? dy * r : r;
    }
};

// A 16-byte load: through the read-only data path (NC) or a plain one (the output aliases it).
template <bool NC, typename V> __device__ __forceinline__ V load16(const V* p) {
    if (NC) return __ldg(p);
    return *p;
}

template <typename S, bool HAS_DY, bool NC, typename Bias, typename F>
__device__ __forceinline__ void vec_fused(const S* dy, const S* x, S* y, long long n, Bias bias, const F& f) {
    typedef vec16<S> VT;
    typedef typename VT::V V;
    const long long per = VT::N;
    const long long nvec = n / per;
    const V* xv = reinterpret_cast<const V*>(x);
    const V* dv = reinterpret_cast<const V*>(HAS_DY ? dy : x);
    V* yv = reinterpret_cast<V*>(y);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    FusedElement<HAS_DY, Bias, F> g = {bias, f};
    bias.start(tid * per);
    for (long long base = tid; base < nvec; base += stride * GA_EW_UNROLL) {
        V v[GA_EW_UNROLL], d[GA_EW_UNROLL];
#pragma unroll
        for (int u = 0; u < GA_EW_UNROLL; ++u) {
            long long i = base + u * stride;
            if (i < nvec) {
                v[u] = load16<NC>(xv + i);
                d[u] = HAS_DY ? load16<NC>(dv + i) : v[u];
            }
        }
#pragma unroll
        for (int u = 0; u < GA_EW_UNROLL; ++u) {
            long long i = base + u * stride;
            if (i < nvec) yv[i] = VT::apply(v[u], d[u], g);
            bias.next_vector();
        }
    }
    const long long t = nvec * per + tid;  // the scalar tail, fewer than `per` elements
    if (t < n) {
        bias.tail(tid);
        y[t] = to_s(g(to_c(x[t]), HAS_DY ? to_c(dy[t]) : to_c(x[t])), (S*)0);
    }
}

// The forward's contiguous body: y = op(x)
template <typename S, bool NC, typename Op>
__device__ __forceinline__ void vec_apply(const S* x, S* y, long long n, const Op& op) {
    vec_fused<S, false, NC>((const S*)0, x, y, n, NoBias(), op);
}

}  // namespace ga

#endif  // GPUACT_ELEMENTWISE_CUH
