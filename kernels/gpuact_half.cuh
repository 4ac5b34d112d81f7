// gpuact: float16 and bfloat16 <-> float on raw 16-bit storage (unsigned short, bf16), without
// cuda_fp16.h or cuda_bf16.h, so the kernels compile under NVRTC with no CUDA include directory.
//   device code: the PTX cvt instructions (round to nearest even, as NumPy's astype(float16));
//   plain C++ (the tests' CPU threads shim, g++ >= 12 on x86-64): the _Float16 type.
// The CPU shim (tests/cuda_shim/cuda_shim.h) defines __device__, __global__, ... before this.
#ifndef GPUACT_HALF_CUH
#define GPUACT_HALF_CUH

namespace ga {

#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#elif defined(__CUDACC__)
// nvcc's host pass: these are device-only functions, never called from host code.
__device__ float h2f(unsigned short h);
__device__ unsigned short f2h(float f);
#else
inline float h2f(unsigned short h) {
    _Float16 v;
    __builtin_memcpy(&v, &h, 2);
    return (float)v;
}
inline unsigned short f2h(float f) {
    _Float16 v = (_Float16)f;
    unsigned short h;
    __builtin_memcpy(&h, &v, 2);
    return h;
}
#endif

// bfloat16 as raw 16-bit storage in its own type (a struct, so that overloads tell it from float16):
// widening is the bits shifted up (exact); narrowing rounds to nearest even (cvt.rn.bf16.f32,
// sm_80 and later; on the host the same rounding on the bits, NaN kept quiet with its sign).
struct bf16 {
    unsigned short bits;
};
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float b2f(unsigned short h) { return __uint_as_float((unsigned int)h << 16); }
__device__ __forceinline__ unsigned short f2b(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#elif defined(__CUDACC__)
__device__ float b2f(unsigned short h);
__device__ unsigned short f2b(float f);
#else
inline float b2f(unsigned short h) {
    unsigned int u = (unsigned int)h << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
inline unsigned short f2b(float f) {
    unsigned int u;
    __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#endif

// Storage type S (unsigned short = float16, bf16, float, double) -> compute type, and back.
template <typename S> struct compute_of { typedef S type; };
template <> struct compute_of<unsigned short> { typedef float type; };
template <> struct compute_of<bf16> { typedef float type; };

__device__ __forceinline__ float to_c(unsigned short v) { return h2f(v); }
__device__ __forceinline__ float to_c(bf16 v) { return b2f(v.bits); }
__device__ __forceinline__ float to_c(float v) { return v; }
__device__ __forceinline__ double to_c(double v) { return v; }
__device__ __forceinline__ unsigned short to_s(float v, unsigned short*) { return f2h(v); }
__device__ __forceinline__ bf16 to_s(float v, bf16*) { return bf16{f2b(v)}; }
__device__ __forceinline__ float to_s(float v, float*) { return v; }
__device__ __forceinline__ double to_s(double v, double*) { return v; }

}  // namespace ga

#endif  // GPUACT_HALF_CUH
