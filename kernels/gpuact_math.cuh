// gpuact: the elementwise activations' math, written once for device and host.
//
// Every function is  T ga::<op>(T x, T p0, T p1, T p2, T p3)  for a compute type T (float or
// double; float16 data is computed in float). p0..p3 are the op's canonical parameters in the
// order of gpuact._contract.ops.ELEMENTWISE_PARAMS (unused ones are ignored), so one signature serves
// every op and a new parameter value is a new kernel argument, never a recompile.
//
// The formulas, and the order of their roundings, follow gpuact/backends/numpy_backend/formulas.py, the
// reference: NaN in gives NaN out (max/min here propagate NaN like np.maximum/np.minimum, unlike
// fmaxf), and +-inf give the mathematical limits (inputs clamped at NEGATIVE_SATURATION for
// silu/gelu/mish, softsign clamped to the largest finite value, ...).
//
// Compiles as CUDA (nvcc, NVRTC: no headers needed) and as plain C++ (g++ -O2, for the host
// comparison tests; never with -ffast-math, which would break the NaN tests).
// All constants are written as T(...): in the float path every literal is folded to float at
// compile time, so no double-precision instruction is emitted (checked by a test that compiles
// the float32 code with --warn-on-double-precision-use).
#ifndef GPUACT_MATH_CUH
#define GPUACT_MATH_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GA_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#ifdef GA_HOST_SIMD
// The CPU build's loops are cloned per instruction set (gpuact_cpu.cc): the math must be inlined
// into each clone to be vectorized for it, not called as one baseline copy.
#define GA_HD inline __attribute__((always_inline))
#include "gpuact_host_simd.h"
#else
#define GA_HD inline
#endif
#endif

namespace ga {

// ---- the math library, overloaded on float / double ----------------------------------------
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
GA_HD float exp_(float x) { return ::expf(x); }
GA_HD double exp_(double x) { return ::exp(x); }
GA_HD float expm1_(float x) { return ::expm1f(x); }
GA_HD double expm1_(double x) { return ::expm1(x); }
GA_HD float log1p_(float x) { return ::log1pf(x); }
GA_HD double log1p_(double x) { return ::log1p(x); }
GA_HD float log_(float x) { return ::logf(x); }
GA_HD double log_(double x) { return ::log(x); }
GA_HD float tanh_(float x) { return ::tanhf(x); }
GA_HD double tanh_(double x) { return ::tanh(x); }
GA_HD float erfc_(float x) { return ::erfcf(x); }
GA_HD double erfc_(double x) { return ::erfc(x); }
GA_HD float sqrt_(float x) { return ::sqrtf(x); }
GA_HD double sqrt_(double x) { return ::sqrt(x); }
GA_HD float hypot_(float x, float y) { return ::hypotf(x, y); }
GA_HD double hypot_(double x, double y) { return ::hypot(x, y); }
GA_HD float abs_(float x) { return ::fabsf(x); }
GA_HD double abs_(double x) { return ::fabs(x); }
#elif defined(GA_HOST_SIMD)
// the CPU build (kernels/gpuact_cpu.cc): float32 math that vectorizes, double from the C library
GA_HD float exp_(float x) { return simd::exp(x); }
GA_HD float expm1_(float x) { return simd::expm1(x); }
GA_HD float log1p_(float x) { return simd::log1p(x); }
GA_HD float log1p_unit_(float x) { return simd::log1p_unit(x); }
GA_HD float exp_nonpositive_(float x) { return simd::exp_nonpositive(x); }
GA_HD float exp_negative_(float x) { return simd::exp_negative(x); }
GA_HD float gelu_of_(float u) { return simd::gelu(u); }
GA_HD float log_(float x) { return simd::log(x); }
GA_HD float tanh_(float x) { return simd::tanh(x); }
GA_HD float hypot_(float x, float y) { return simd::hypot(x, y); }
#else
GA_HD float exp_(float x) { return std::exp(x); }
GA_HD float expm1_(float x) { return std::expm1(x); }
GA_HD float log1p_(float x) { return std::log1p(x); }
GA_HD float log_(float x) { return std::log(x); }
GA_HD float tanh_(float x) { return std::tanh(x); }
GA_HD float erfc_(float x) { return std::erfc(x); }
GA_HD float hypot_(float x, float y) { return std::hypot(x, y); }
#endif
#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
GA_HD double exp_(double x) { return std::exp(x); }
GA_HD double expm1_(double x) { return std::expm1(x); }
GA_HD double log1p_(double x) { return std::log1p(x); }
GA_HD double log_(double x) { return std::log(x); }
GA_HD double tanh_(double x) { return std::tanh(x); }
GA_HD double erfc_(double x) { return std::erfc(x); }
GA_HD float sqrt_(float x) { return std::sqrt(x); }
GA_HD double sqrt_(double x) { return std::sqrt(x); }
GA_HD double hypot_(double x, double y) { return std::hypot(x, y); }
GA_HD float abs_(float x) { return std::fabs(x); }
GA_HD double abs_(double x) { return std::fabs(x); }
#endif

// max / min that keep a NaN in their first argument, as np.maximum / np.minimum do (fmaxf would
// drop it). The second argument is always a bound or 0 here, never NaN. One compare and one
// select: the host build's loops vectorize them to a single maxps / minps.
template <typename T> GA_HD T max_(T a, T b) { return a < b ? b : a; }
template <typename T> GA_HD T min_(T a, T b) { return b < a ? b : a; }
// np.clip(x, lo, hi) for lo <= hi, NaN kept.
template <typename T> GA_HD T clip_(T x, T lo, T hi) { return min_(max_(x, lo), hi); }

template <typename T> struct limits;
template <> struct limits<float> {
    GA_HD static float max() { return 3.40282346638528859812e+38f; }
};
template <> struct limits<double> {
    GA_HD static double max() { return 1.79769313486231570815e+308; }
};

// gpuact._contract.ops.NEGATIVE_SATURATION, SELU_ALPHA, SELU_SCALE
#define GA_NEG_SAT T(-1.0e4)
template <typename T> GA_HD T selu_alpha() { return T(1.6732632423543772848170429916717); }
template <typename T> GA_HD T selu_scale() { return T(1.0507009873554804934193349852946); }
#define GA_OP(name) template <typename T> GA_HD T name(T x, T p0, T p1, T p2, T p3)
#define GA_UNUSED (void)p0; (void)p1; (void)p2; (void)p3

#if !defined(GA_HOST_SIMD) || defined(__CUDACC__) || defined(__CUDACC_RTC__)
GA_HD float log1p_unit_(float x) { return log1p_(x); }
GA_HD float exp_nonpositive_(float x) { return exp_(x); }
GA_HD float exp_negative_(float x) { return exp_(x); }
GA_HD float gelu_of_(float u) { return erfc_(u * -0.70710678118654752f) * 0.5f * u; }
GA_HD float normal_tail_gauss_(float u, float& gauss) {
    gauss = exp_(u * u * -0.5f);
    return erfc_(abs_(u) * 0.70710678118654752f) * 0.5f;
}
#else
GA_HD float normal_tail_gauss_(float u, float& gauss) { return simd::normal_tail_gauss(u, gauss); }
#endif
GA_HD double exp_nonpositive_(double x) { return exp_(x); }  // e**x for x <= 0 (softmax)
// e**x for x <= 0 with subnormal results (the CPU build's float32 skips exp's overflow handling)
GA_HD double exp_negative_(double x) { return exp_(x); }
// x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2)) for x >= -1e4 (the CPU build's float32: simd::gelu)
GA_HD double gelu_of_(double u) { return erfc_(u * -0.70710678118654752440084436210485) * 0.5 * u; }
// Phi(-|u|) = erfc(|u| / sqrt 2) / 2 and gauss = e**(-u**2 / 2), for |u| <= 1e4 (gelu's
// derivative needs both; the CPU build's float32 shares one exp between them)
GA_HD double normal_tail_gauss_(double u, double& gauss) {
    gauss = exp_(u * u * -0.5);
    return erfc_(abs_(u) * 0.70710678118654752440084436210485) * 0.5;
}
GA_HD double log1p_unit_(double x) { return log1p_(x); }  // ln(1 + x) for x in [0, 1]
// log1p(exp(-|x|)), the smooth part of softplus / log_sigmoid / mish
template <typename T> GA_HD T log1p_exp_neg_abs(T x) { return log1p_unit_(exp_negative_(-abs_(x))); }
// y = max(x, 0) + alpha * expm1(min(x, 0) / divisor): a division, not a product with 1 / divisor,
// so that a tiny celu alpha (1 / alpha = inf) still gives x for x >= 0, not 0 * inf = NaN
template <typename T> GA_HD T elu_core(T x, T alpha, T divisor) {
    return max_(x, T(0)) + alpha * expm1_(min_(x, T(0)) / divisor);
}
// 1 / (1 + e**-t) for t >= 0, e**t / (1 + e**t) below: one exp of -|t|, which never overflows, and
// results below the smallest normal float stay subnormal (sigmoid(-100) in float32 is 3.8e-44,
// where 1 / (1 + e**100) = 1 / inf gives 0). NaN fails the comparison and stays NaN.
template <typename T> GA_HD T sigmoid_core(T t) {
    T e = exp_negative_(-abs_(t));
    T r = T(1) / (T(1) + e);
    return t >= T(0) ? r : e * r;
}
// x * sigmoid(t)
template <typename T> GA_HD T x_times_sigmoid_of(T x, T t) { return x * sigmoid_core(t); }

// ---- the activations -------------------------------------------------------------------------

// relu(alpha, threshold, lo, hi): clamp(x if x > threshold else 0, lo, hi) - alpha * max(threshold - x, 0)
GA_OP(relu) {
    T y = (x <= p1) ? T(0) : x;  // NaN: the comparison is false, NaN stays
    y = min_(max_(y, p2), p3);    // lo = -inf, hi = inf when max_value is None: no-ops
    if (p0 != T(0)) y = y - p0 * max_(p1 - x, T(0));
    return y;
}
GA_OP(sigmoid) { GA_UNUSED; return sigmoid_core(x); }
GA_OP(softplus) { GA_UNUSED; return max_(x, T(0)) + log1p_exp_neg_abs(x); }
GA_OP(log_sigmoid) { GA_UNUSED; return min_(x, T(0)) - log1p_exp_neg_abs(x); }
GA_OP(softsign) {
    GA_UNUSED;
    T t = clip_(x, -limits<T>::max(), limits<T>::max());  // +-inf -> +-max / (max + 1) = +-1
    return t / (abs_(t) + T(1));
}
GA_OP(tanh) { GA_UNUSED; return tanh_(x); }
GA_OP(elu) { GA_UNUSED; return elu_core(x, p0, T(1)); }
GA_OP(selu) { GA_UNUSED; return elu_core(x, selu_alpha<T>(), T(1)) * selu_scale<T>(); }
GA_OP(celu) { GA_UNUSED; return elu_core(x, p0, p0); }
GA_OP(exponential) { GA_UNUSED; return exp_(x); }
GA_OP(linear) { GA_UNUSED; return x; }
GA_OP(relu6) { GA_UNUSED; return min_(max_(x, T(0)), T(6)); }
// max(x, 0) + slope * min(x, 0); slope 0 gives 0 for x <= 0 (also -inf) and keeps NaN
GA_OP(leaky_relu) {
    GA_UNUSED;
    T t = (p0 == T(0)) ? ((x != x) ? x : T(0)) : min_(x, T(0)) * p0;
    return max_(x, T(0)) + t;
}
GA_OP(silu) {
    GA_UNUSED;
    T u = max_(x, GA_NEG_SAT);
    return x_times_sigmoid_of(u, u);
}
// 0.5 x (1 + tanh(z)) = x * sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3)
GA_OP(gelu_tanh) {
    GA_UNUSED;
    T u = max_(x, GA_NEG_SAT);
    T t = (u * u * T(0.044715) + T(1)) * u * T(1.5957691216057307117597842397375);  // 2 sqrt(2/pi)
    return x_times_sigmoid_of(u, t);
}
// x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2))
GA_OP(gelu) {
    GA_UNUSED;
    return gelu_of_(max_(x, GA_NEG_SAT));
}
template <typename T> GA_HD T hard_sigmoid_core(T x) { return min_(max_(x + T(3), T(0)), T(6)) / T(6); }
GA_OP(hard_sigmoid) { GA_UNUSED; return hard_sigmoid_core(x); }
GA_OP(hard_silu) { GA_UNUSED; return hard_sigmoid_core(x) * max_(x, T(-3)); }
GA_OP(mish) {
    GA_UNUSED;
    T u = max_(x, GA_NEG_SAT);
    return tanh_(max_(u, T(0)) + log1p_exp_neg_abs(u)) * u;
}
GA_OP(hard_tanh) { GA_UNUSED; return clip_(x, T(-1), T(1)); }
GA_OP(hard_shrink) { GA_UNUSED; return (abs_(x) <= p0) ? T(0) : x; }
GA_OP(soft_shrink) { GA_UNUSED; return x - clip_(x, -p0, p0); }
GA_OP(tanh_shrink) { GA_UNUSED; return x - tanh_(x); }
GA_OP(threshold) { GA_UNUSED; return (x <= p0) ? p1 : x; }
// p0 = sqrt(b), computed in double on the host (b itself may be beyond the float range).
// s = hypot(x, sqrt b) never overflows; for x < 0, (x + s) / 2 = b / (2 (s - x)) has no
// cancellation, written sqrt b * (sqrt b / (2 (s - x))) so that b is never formed; for x >= 0,
// x / 2 + s / 2 stays finite up to the largest float, where (x + s) / 2 overflowed above max / 2.
GA_OP(squareplus) {
    GA_UNUSED;
    T s = hypot_(x, p0);
    return (x < T(0)) ? p0 * (p0 / ((s - x) * T(2))) : x * T(0.5) + s * T(0.5);
}
GA_OP(sparse_plus) {
    GA_UNUSED;
    T c = clip_(x, T(-1), T(1)) + T(1);
    return (x >= T(1)) ? x : c * c * T(0.25);
}
GA_OP(sparse_sigmoid) { GA_UNUSED; return clip_((x + T(1)) * T(0.5), T(0), T(1)); }

#undef GA_OP
#undef GA_UNUSED
#undef GA_NEG_SAT

}  // namespace ga

#endif  // GPUACT_MATH_CUH
