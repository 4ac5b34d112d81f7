// gpuact: float32 exp, expm1, log, log1p, tanh, gelu's normal tail and hypot for the CPU build, written so that
// GCC vectorizes a loop that calls them (no branches, no calls, no errno): every special case is a
// select at the end, never an early return. Included by gpuact_math.cuh only when GA_HOST_SIMD is
// defined (kernels/gpuact_cpu.cc); the CUDA build and the plain host tests use the C library.
//
// Accuracy, checked against float64 NumPy over the whole float32 range by tests/test_native_cpu.py:
// exp and expm1 within 2 ulp, log1p within 4, tanh within 5, gelu within 5e-6 relative (a fitted
// tail of the normal distribution, normal_tail_gauss). Subnormal inputs and results are kept
// (no flush to zero), NaN propagates, and +-inf give the limits.
#ifndef GPUACT_HOST_SIMD_H
#define GPUACT_HOST_SIMD_H

#include <cstdint>
#include <cstring>

// always inlined, so that each instruction-set clone of the calling loop vectorizes it for itself
#define GA_SIMD_INLINE inline __attribute__((always_inline))

namespace ga {
namespace simd {

GA_SIMD_INLINE float bits_to_float(int32_t i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
GA_SIMD_INLINE int32_t float_to_bits(float f) { int32_t i; std::memcpy(&i, &f, sizeof i); return i; }
GA_SIMD_INLINE bool is_nan(float x) { return x != x; }
GA_SIMD_INLINE float abs(float x) { return bits_to_float(float_to_bits(x) & 0x7fffffff); }
// x with the sign of s
GA_SIMD_INLINE float copy_sign(float x, float s) {
    return bits_to_float((float_to_bits(x) & 0x7fffffff) | (float_to_bits(s) & int32_t(0x80000000u)));
}
// round to nearest integer for |v| < 2**22 without roundps (absent from baseline x86-64)
GA_SIMD_INLINE float round_small(float v) { return (v + 12582912.0f) - 12582912.0f; }
// 2**n for integer n in [-126, 127], built in the exponent field
GA_SIMD_INLINE float pow2i(int32_t n) { return bits_to_float((n + 127) << 23); }

const float kLog2e = 1.44269504088896341f;
// ln 2 split so that n * kLn2Hi is exact for |n| < 2**9 (Cephes)
const float kLn2Hi = 0.693359375f;
const float kLn2Lo = -2.12194440e-4f;

// x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2 (Cody-Waite: r is exact to float32)
GA_SIMD_INLINE float reduce_ln2(float x, float& n) {
    n = round_small(x * kLog2e);
    return x - n * kLn2Hi - n * kLn2Lo;
}

// reduce_ln2's r, with n given as bits: v = x / ln2 + 1.5 * 2**23 (round_small's first step) holds
// n in its low mantissa bits (its bits are 0x4B400000 + n), so pow2_from_bits gives 2**(n + k) as
// (bits + 127 + k) << 23, the 0x4B4 shifted out, with no float-to-int conversion
GA_SIMD_INLINE float reduce_ln2_bits(float x, uint32_t& n_bits) {
    float v = x * kLog2e + 12582912.0f;
    n_bits = uint32_t(float_to_bits(v));
    float n = v - 12582912.0f;
    return x - n * kLn2Hi - n * kLn2Lo;
}
// 2**(n + k) for n from reduce_ln2_bits and biased_k = 127 + k, n + biased_k in [1, 254]
GA_SIMD_INLINE float pow2_from_bits(uint32_t n_bits, uint32_t biased_k) {
    return bits_to_float(int32_t((n_bits + biased_k) << 23));
}

// e**r for |r| <= ln2 / 2: 1 + r + c2 r**2 + ... + c6 r**6 in Horner's form (6 FMAs), c2..c6 a
// least-squares fit of the relative error (3.6e-9, against float32's 6e-8 spacing; within 1 ulp
// evaluated in float32). Cephes's degree-7 form costs two operations more for no visible gain.
const float kExpC6 = 1.37514085508883e-3f;
const float kExpC5 = 8.368918672204018e-3f;
const float kExpC4 = 4.166953265666962e-2f;
const float kExpC3 = 1.66665181517601e-1f;
const float kExpC2 = 4.9999988079071045e-1f;
GA_SIMD_INLINE float exp_reduced(float r) {
    float p = kExpC6;
    p = p * r + kExpC5;
    p = p * r + kExpC4;
    p = p * r + kExpC3;
    p = p * r + kExpC2;
    p = p * r + 1.0f;
    return p * r + 1.0f;
}
// exp_reduced(d / 2) for d = 2r, bit for bit: c_k scaled by 2**-k (exactly), so that every Horner
// step is exp_reduced's scaled by a power of two, which rounds alike
GA_SIMD_INLINE float exp_reduced_of_double(float d) {
    float p = kExpC6 * (1.0f / 64.0f);
    p = p * d + kExpC5 * (1.0f / 32.0f);
    p = p * d + kExpC4 * (1.0f / 16.0f);
    p = p * d + kExpC3 * (1.0f / 8.0f);
    p = p * d + kExpC2 * (1.0f / 4.0f);
    p = p * d + 0.5f;
    return p * d + 1.0f;
}

// e**(-w / 2) 2**64 for w = u**2 >= 0 (or NaN): exp_negative(-w / 2) before its last scaling by
// 2**-64, bit for bit, one multiplication cheaper: the halving is folded into the constants (the
// reduction computes d = 2r from w itself, and exp_reduced_of_double takes d). gelu folds the
// 2**-64 into its own product as well (normal_tail).
GA_SIMD_INLINE float exp_minus_half_scaled(float w) {
    float wc = w > 208.0f ? 208.0f : w;  // exp_negative's clamp at -104; NaN flows through
    float v = wc * (-0.5f * kLog2e) + 12582912.0f;
    uint32_t n_bits = uint32_t(float_to_bits(v));
    float n = v - 12582912.0f;
    float d = n * (-2.0f * kLn2Hi) - wc;
    d = n * (-2.0f * kLn2Lo) + d;
    return exp_reduced_of_double(d) * pow2_from_bits(n_bits, 127u + 64u);
}

// ln(2**k (1 + f)) for f in [sqrt(1/2) - 1, sqrt 2 - 1], Cephes logf's polynomial in f
GA_SIMD_INLINE float log_reduced(float f, float k) {
    float z = f * f;
    float p = 7.0376836292E-2f;
    p = p * f - 1.1514610310E-1f;
    p = p * f + 1.1676998740E-1f;
    p = p * f - 1.2420140846E-1f;
    p = p * f + 1.4249322787E-1f;
    p = p * f - 1.6668057665E-1f;
    p = p * f + 2.0000714765E-1f;
    p = p * f - 2.4999993993E-1f;
    p = p * f + 3.3333331174E-1f;
    float y = p * f * z + k * kLn2Lo - 0.5f * z;
    return (f + y) + k * kLn2Hi;
}

// e**r - 1 - r for |r| <= ln2 / 2, Taylor to r**8 (truncation below 1e-9 relative to r, which
// expm1 of a small x needs; exp, whose result is near 1, has a cheaper polynomial)
GA_SIMD_INLINE float expm1_poly_tail(float r) {
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    return p * r * r;
}

// e**x: x = n ln2 + r, e**r by exp_reduced, times 2**n applied in two halves so that results
// down to the smallest subnormal (n = -149) and up to overflow come out right. The clamps are written so that NaN fails both comparisons and
// becomes -104 (a harmless finite input), and is put back by the last select.
GA_SIMD_INLINE float exp(float x) {
    float xc = x > -104.0f ? x : -104.0f;  // below: 0 in float32
    xc = xc < 89.0f ? xc : 89.0f;          // above: inf in float32
    float n;
    float er = exp_reduced(reduce_ln2(xc, n));
    int32_t ni = int32_t(n);
    int32_t half = ni >> 1;
    float y = er * pow2i(half) * pow2i(ni - half);
    return is_nan(x) ? x : y;
}

// e**t for t <= 0, bit for bit exp(t) (subnormal results included; NaN gives a NaN) with neither exp's
// upper clamp nor its two-step scaling: 2**n for n in [-150, 0] is applied as 2**(n + 64), a normal
// power that scales exactly, times 2**-64, the one rounding (the last step of exp's two as well).
// n comes as bits from the rounding itself (reduce_ln2_bits). sigmoid, softplus and the normal density only
// ever take e**-|t|, where this is cheaper than exp: no upper clamp, one scaling, no conversion and
// no NaN select.
GA_SIMD_INLINE float exp_negative(float t) {
    // below -104: 0 in float32. NaN fails the comparison and flows through every step below (2**n
    // from its bits is some finite or infinite power, and NaN times it is NaN), so no select at
    // the end is needed to keep it
    float tc = t < -104.0f ? -104.0f : t;
    uint32_t n_bits;
    float r = reduce_ln2_bits(tc, n_bits);
    return exp_reduced(r) * pow2_from_bits(n_bits, 127u + 64u) * 5.42101086242752217e-20f;
}

// e**t for t <= 0 (or NaN), softmax's exp(x - max): no overflow to handle, and results below the
// smallest normal float (t < -87.34) come out as 0 instead of subnormal, so 2**n is one exponent
// field. Those results are below 1.2e-38, which no softmax output or row sum can tell from 0;
// dropping the two-step scaling and the upper clamp makes it a fifth cheaper than exp.
GA_SIMD_INLINE float exp_nonpositive(float t) {
    const float kMinArg = -87.33654475f;  // ln 2**-126
    float tc = t < kMinArg ? kMinArg : t;  // NaN fails both comparisons and flows through, as in exp_negative
    uint32_t n_bits;
    float r = reduce_ln2_bits(tc, n_bits);
    float y = exp_reduced(r) * pow2_from_bits(n_bits, 127u);
    return t < kMinArg ? 0.0f : y;
}

// e**x - 1 = 2**n (e**r - 1) + (2**n - 1), evaluated as 2 (h (e**r - 1) + (h - 1/2)) with
// h = 2**(n-1) so that n = 128 (x near the float32 overflow) needs no 2**128.
GA_SIMD_INLINE float expm1(float x) {
    float xc = x > -25.0f ? x : -25.0f;  // e**-25 - 1 rounds to -1 in float32; NaN -> -25
    xc = xc < 89.0f ? xc : 89.0f;
    float n;
    float r = reduce_ln2(xc, n);
    float em1 = r + expm1_poly_tail(r);
    float h = pow2i(int32_t(n) - 1);
    float y = 2.0f * (h * em1 + (h - 0.5f));
    return is_nan(x) ? x : y;
}

// ln x for x > 0 (Cephes logf): x = 2**e m, m in [sqrt(1/2), sqrt 2), ln m by log_reduced(m - 1).
GA_SIMD_INLINE float log(float x) {
    const float kMinNormal = 1.17549435e-38f;
    bool subnormal = x < kMinNormal;
    float xs = subnormal ? x * 16777216.0f : x;  // 2**24: subnormals become normal
    int32_t bits = float_to_bits(xs);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
    bool small = m < 0.707106781186547524f;
    float f = small ? m + m - 1.0f : m - 1.0f;
    float ef = float(small ? e - 1 : e) - (subnormal ? 24.0f : 0.0f);
    float y = log_reduced(f, ef);
    const float inf = __builtin_inff();
    y = x == inf ? inf : y;
    y = x == 0.0f ? -inf : y;
    y = (x < 0.0f || is_nan(x)) ? __builtin_nanf("") : y;
    return is_nan(x) ? x : y;
}

// ln(1 + x): with u = 1 + x rounded, ln u * x / (u - 1) cancels u's rounding error (Goldberg).
GA_SIMD_INLINE float log1p(float x) {
    float u = 1.0f + x;
    float d = u - 1.0f;
    float y = log(u) * (x / (d == 0.0f ? 1.0f : d));
    y = d == 0.0f ? x : y;                    // tiny x (and +-0)
    y = x == __builtin_inff() ? x : y;        // inf / inf above
    return is_nan(x) ? x : y;
}

// ln(1 + e) for e in [0, 1] (NaN passes): log_reduced applied to f = e itself (or to
// (e - 1) / 2 above sqrt 2 - 1, with ln 2 added), so 1 + e is never rounded and no division or
// special-case select is needed. softplus, log_sigmoid and mish call it with e = e**-|x|.
GA_SIMD_INLINE float log1p_unit(float e) {
    bool big = e > 0.41421356237309505f;
    float f = big ? (e - 1.0f) * 0.5f : e;
    return log_reduced(f, big ? 1.0f : 0.0f);
}

// tanh x as Eigen's rational approximation (odd degree-13 numerator over even degree-6
// denominator, x clamped where it reaches 1): no exp and one division, 1.5x the speed of
// -expm1(-2|x|) / (expm1(-2|x|) + 2), and within 5 ulp of float64 over the float32 range.
GA_SIMD_INLINE float tanh(float x) {
    const float kClamp = 7.90531110763549805f;
    float c = x > kClamp ? kClamp : x;
    c = c < -kClamp ? -kClamp : c;
    float x2 = c * c;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * c;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float y = p / q;
    y = abs(x) < 0.0004f ? x : y;  // tanh x rounds to x there; keeps -0 and subnormals exact
    return is_nan(x) ? x : y;
}

// Phi(-|u|) (|u| at most 1e4) and gauss = e**(-u**2 / 2), with one exp and one division:
// Phi(-|u|) = s P(s) gauss, s = 1 / (1 + 0.305 |u|), P a degree-7 polynomial fitted to
// Phi(-|u|) e**(u**2 / 2) / s for |u| <= 14.6 (s >= 0.183; beyond, the tail is below float32's
// smallest subnormal) by iteratively reweighted least squares: relative error 1.0e-7, 2.2e-7 with
// its float32 coefficients evaluated in float32. The constant in s is chosen for the fit: with
// 1 / (2 sqrt 2) degree 7 was 7.8e-7 (degree 8 needed for 4.3e-8), with 0.305 it is 1.0e-7, a
// sharp minimum (0.30: 1.7e-7, 0.31: 1.6e-7). Horner's form is well conditioned there: the terms'
// magnitudes add up to at most 1.76 times the value, so its rounding stays a few ulps. Degree 6
// (1.5e-6 with 1 / (2 sqrt 2); 6.2e-7 at its best constant, 0.265) was 6% faster for gelu but not
// good enough for its derivative, Phi(u) + u gauss / sqrt(2 pi),
// whose absolute error, at its zero near u = -0.75 and scaled by dy (and by geglu's other half),
// left the contract's tolerance. The exponent is u * u * -0.5, one rounding, which the result
// carries amplified by u**2 / 2: gelu is within 1e-6 relative where it exceeds 1e-6 in magnitude,
// and within 5e-6 over all its normal results (at u near -13). gelu's derivative needs both
// (Phi and the normal density); gelu itself only the tail (normal_tail below).
//
// s = 1 / (1 + 0.305 |u|), the variable of the tail's polynomial
GA_SIMD_INLINE float tail_variable(float u) { return 1.0f / (1.0f + abs(u) * 0.305f); }
// P(s) times `scale`, a constant power of two folded into the coefficients (exactly, at compile time)
GA_SIMD_INLINE float tail_polynomial(float s, float scale) {
    float h = 0.03659576177597046f * scale;
    h = h * s - 0.15257298946380615f * scale;
    h = h * s + 0.18502768874168396f * scale;
    h = h * s - 0.037366319447755814f * scale;
    h = h * s + 0.12071103602647781f * scale;
    h = h * s + 0.10351134836673737f * scale;
    h = h * s + 0.12245289236307144f * scale;
    h = h * s + 0.12164060771465302f * scale;
    return h;
}
GA_SIMD_INLINE float normal_tail_gauss(float u, float& gauss) {
    float s = tail_variable(u);
    float h = tail_polynomial(s, 1.0f);
    gauss = exp_negative(u * u * -0.5f);
    return h * s * gauss;
}
// Phi(-|u|) alone: normal_tail_gauss's tail bit for bit where the density is normal (|u| < 13.2),
// with one rounding fewer below, and two operations fewer: the density's halving is folded into
// its exp's constants (exp_minus_half_scaled), and its 2**-64 into P's. (The same forms in
// normal_tail_gauss, which gives the density too, measured 10% slower for gelu's derivative.)
GA_SIMD_INLINE float normal_tail(float u) {
    float s = tail_variable(u);
    float h = tail_polynomial(s, 5.42101086242752217e-20f);  // 2**-64
    return h * s * exp_minus_half_scaled(u * u);
}

// gelu(u) = u Phi(u) for u >= -1e4 (or NaN) from the tail Phi(-|u|): u (1 - tail) above 0, u tail
// at or below (-0 stays -0). One exp and one division, against erfc's form, which computes the
// same tail and then 2 - erfc for the positive half. Written as u times a factor, u = +inf needs no
// case of its own: its tail is 0 (s is 0 and the exp's clamp gives 0), and inf (1 - 0) is inf.
GA_SIMD_INLINE float gelu(float u) {
    float tail = normal_tail(u);
    return u * (u > 0.0f ? 1.0f - tail : tail);  // NaN propagates through the tail
}

// sqrt(x**2 + y**2) in double: exact enough, never overflows for float inputs, and vectorizes.
GA_SIMD_INLINE float hypot(float x, float y) {
    double dx = x, dy = y;
    float h = float(__builtin_sqrt(dx * dx + dy * dy));
    const float inf = __builtin_inff();
    h = (is_nan(x) || is_nan(y)) ? __builtin_nanf("") : h;
    return (abs(x) == inf || abs(y) == inf) ? inf : h;  // hypot(inf, NaN) is inf, as in C
}

}  // namespace simd
}  // namespace ga

#endif  // GPUACT_HOST_SIMD_H
