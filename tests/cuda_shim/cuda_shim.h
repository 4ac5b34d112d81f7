// A tiny CPU stand-in for the CUDA execution model, to run gpuact's fused kernels (softmax,
// sparsemax) on the host in the tests: a block's threads are std::threads (blocks run one after
// another, so a kernel's `__shared__` arrays can be function statics), __syncthreads is a
// block-wide barrier (__syncthreads_or a flag between barriers), and warp shuffles and votes go
// through a per-warp exchange buffer between two warp barriers.
// Every barrier gives up after GA_SHIM_TIMEOUT_S seconds and ends the process with a message:
// a barrier that not every thread reaches would otherwise hang the test run.
// Limits: blockDim.x a multiple of 32 and <= 1024 (the tests use <= 256); 1-D blocks, 2-D grids.
// Kernels without any barrier, shuffle or shared memory (the elementwise ones) may run through
// launch_independent instead: every thread of every block in turn on the calling thread.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#ifndef GA_SHIM_TIMEOUT_S
#define GA_SHIM_TIMEOUT_S 30
#endif

#define GA_CPU_SHIM 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

namespace ga_shim {

// Arrivals count on an atomic; waiters yield until the generation moves on (with a mutex and a
// condition variable, the softmax shim tests took 48 s instead of 32 s on 2 cores).
struct Barrier {
    const int n;
    std::atomic<int> count{0};
    std::atomic<unsigned long> gen{0};
    explicit Barrier(int n_) : n(n_) {}
    void wait() {
        const unsigned long g = gen.load(std::memory_order_acquire);
        if (count.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
            count.store(0, std::memory_order_relaxed);
            gen.fetch_add(1, std::memory_order_acq_rel);
            return;
        }
        const auto start = std::chrono::steady_clock::now();
        for (unsigned spins = 1; gen.load(std::memory_order_acquire) == g; ++spins) {
            std::this_thread::yield();
            if (spins % 4096 == 0 &&
                std::chrono::steady_clock::now() - start > std::chrono::seconds(GA_SHIM_TIMEOUT_S)) {
                std::fprintf(stderr, "cuda_shim: barrier timed out: not every thread reached it\n");
                std::fflush(stderr);
                std::_Exit(99);
            }
        }
    }
};

struct uint3_ { unsigned x, y, z; };

struct Block {
    std::unique_ptr<Barrier> bar;
    std::vector<std::unique_ptr<Barrier>> warp_bars;
    std::vector<unsigned long long> exchange;
    std::vector<unsigned char> smem;
    std::atomic<int> any{0};  // __syncthreads_or
};

struct Ctx {
    uint3_ tid, bid, bdim, gdim;
    Block* blk;
};
inline thread_local Ctx ctx;

template <typename F>
void launch(unsigned grid, unsigned grid_y, unsigned block, size_t smem_bytes, F fn) {
    if (block % 32 != 0 || block > 1024) {
        std::fprintf(stderr, "cuda_shim: blockDim %u is not a multiple of 32 <= 1024\n", block);
        std::_Exit(98);
    }
    // One std::thread per thread of a block, reused block after block (creating them per block
    // cost more than running most kernels). The hand-over between blocks has its own barrier:
    // a kernel's __syncthreads that some thread never reaches still times out, never pairing
    // with it.
    Block blk;
    blk.bar.reset(new Barrier((int)block));
    Barrier block_done((int)block);
    for (unsigned w = 0; w < block / 32; ++w) blk.warp_bars.emplace_back(new Barrier(32));
    blk.exchange.assign(block, 0);
    blk.smem.assign(smem_bytes + 16, 0xcd);  // garbage, like real shared memory
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([&, t] {
            for (unsigned by = 0; by < grid_y; ++by)
            for (unsigned b = 0; b < grid; ++b) {
                ctx = Ctx{{t, 0, 0}, {b, by, 0}, {block, 1, 1}, {grid, grid_y, 1}, &blk};
                fn();
                block_done.wait();
                if (t == 0) std::memset(blk.smem.data(), 0xcd, blk.smem.size());  // fresh garbage
                block_done.wait();
            }
        });
    }
    for (auto& th : threads) th.join();
}

// A kernel whose threads never communicate, run one CUDA thread after another (no std::thread).
template <typename F>
void launch_independent(unsigned grid, unsigned grid_y, unsigned block, F fn) {
    Block blk;  // no barriers: a kernel that reaches one fails at once (null pointer)
    for (unsigned by = 0; by < grid_y; ++by)
        for (unsigned b = 0; b < grid; ++b)
            for (unsigned t = 0; t < block; ++t) {
                ctx = Ctx{{t, 0, 0}, {b, by, 0}, {block, 1, 1}, {grid, grid_y, 1}, &blk};
                fn();
            }
}

template <typename T>
T exchange(T v, int src_of_lane_fn_result, int lane) {
    Block* blk = ctx.blk;
    const int warp = (int)ctx.tid.x / 32;
    unsigned long long* slot = &blk->exchange[warp * 32];
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    slot[lane] = u;
    blk->warp_bars[warp]->wait();
    T r;
    std::memcpy(&r, &slot[src_of_lane_fn_result], sizeof(T));
    blk->warp_bars[warp]->wait();
    return r;
}

// Every lane's value of `v`, from all 32 lanes of the caller's warp.
template <typename T>
void gather(T v, T* all) {
    Block* blk = ctx.blk;
    const int warp = (int)ctx.tid.x / 32;
    unsigned long long* slot = &blk->exchange[warp * 32];
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    slot[ctx.tid.x % 32] = u;
    blk->warp_bars[warp]->wait();
    for (int l = 0; l < 32; ++l) std::memcpy(&all[l], &slot[l], sizeof(T));
    blk->warp_bars[warp]->wait();
}

}  // namespace ga_shim

#define threadIdx (ga_shim::ctx.tid)
#define blockIdx (ga_shim::ctx.bid)
#define blockDim (ga_shim::ctx.bdim)
#define gridDim (ga_shim::ctx.gdim)
#define GA_EXTERN_SHARED(name) unsigned char* name = ga_shim::ctx.blk->smem.data()

inline void __syncthreads() { ga_shim::ctx.blk->bar->wait(); }

inline int __syncthreads_or(int pred) {
    ga_shim::Block* blk = ga_shim::ctx.blk;
    blk->bar->wait();  // the previous call's flag has been read and cleared
    if (pred) blk->any.store(1);
    blk->bar->wait();
    const int any = blk->any.load();
    blk->bar->wait();
    // cleared before thread 0 reaches the next call's first barrier, which nobody passes without it
    if (ga_shim::ctx.tid.x == 0) blk->any.store(0);
    return any;
}

inline int __any_sync(unsigned /*mask*/, int pred) {
    int all[32];
    ga_shim::gather(pred ? 1 : 0, all);
    for (int l = 0; l < 32; ++l)
        if (all[l]) return 1;
    return 0;
}

// CUDA semantics: lanes are split in segments of `width`; a source lane outside the caller's
// segment yields the caller's own value.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
    const int lane = (int)ga_shim::ctx.tid.x % 32;
    int src = lane ^ lane_mask;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = 32) {
    const int lane = (int)ga_shim::ctx.tid.x % 32;
    int src = lane + (int)delta;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
template <typename T> inline T __ldg(const T* p) { return *p; }

// CUDA's 16-byte vector types (the elementwise kernels' loads and stores)
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
