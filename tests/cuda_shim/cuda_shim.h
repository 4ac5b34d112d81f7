// A tiny CPU stand-in for the CUDA execution model, to run gpuact's kernels on the host in the
// tests. Blocks run one after another (so a kernel's `__shared__` arrays can be function statics);
// a block's threads run in one of three modes:
//  * OS threads: one std::thread per CUDA thread (reused block after block), __syncthreads a
//    block-wide barrier (__syncthreads_or a flag between barriers), warp shuffles and votes through
//    a per-warp exchange buffer between two warp barriers (launch(), and launch3 THREADS);
//  * fibers: the same barriers, shuffles and votes, with the block's threads as cooperative fibers
//    on the calling OS thread, switched at each barrier (launch3 FIBERS): the same semantics, 10-20x
//    less CPU than a kernel-scheduled thread per CUDA thread on a 2-core machine;
//  * serial: every thread of a block runs to completion in turn (launch3 SERIAL), exact for
//    kernels without __syncthreads, shuffles or votes (no intra-block communication to
//    interleave); a barrier reached in serial mode ends the process with a message.
// A barrier that not every thread reaches ends the process with a message: in OS-thread mode after
// GA_SHIM_TIMEOUT_S seconds, in fiber mode as soon as no fiber can make progress (a hang otherwise).
// launch(): 1-D blocks (a multiple of 32, <= 1024), 2-D grids. launch3(): 3-D grids and blocks of
// any size <= 1024 (the last warp may be partial). Also CUDA's vector types with their alignment.
#pragma once
#include <ucontext.h>

#include <algorithm>
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
#ifndef GA_SHIM_FIBER_STACK
#define GA_SHIM_FIBER_STACK (64 * 1024)
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

[[noreturn]] inline void die(const char* msg, int code) {
    std::fprintf(stderr, "cuda_shim: %s\n", msg);
    std::fflush(stderr);
    std::_Exit(code);
}

struct Fibers;

// OS threads: arrivals count on an atomic; waiters yield until the generation moves on (with a
// mutex and a condition variable, the softmax shim tests took 48 s instead of 32 s on 2 cores).
// Fibers: the last arrival moves the generation on; the others yield to the block's scheduler.
struct Barrier {
    const int n;
    std::atomic<int> count{0};
    std::atomic<unsigned long> gen{0};
    Fibers* fibers;
    explicit Barrier(int n_, Fibers* f = nullptr) : n(n_), fibers(f) {}
    void wait();
};

struct uint3_ { unsigned x, y, z; };
struct Dim3 { unsigned x = 1, y = 1, z = 1; };

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
// the running CUDA thread's indices: per OS thread, and switched with each fiber
inline thread_local Ctx* ctxp;

// One block's threads as fibers (ucontext) on this OS thread, run round-robin; a fiber waiting at a
// barrier yields until the barrier's generation moves.
struct Fibers {
    struct F {
        ucontext_t uc;
        Ctx ctx;
        bool done;
    };
    ucontext_t main;
    std::vector<F> f;
    std::unique_ptr<char[]> stacks;
    unsigned current = 0;
    unsigned long progress = 0;  // arrivals and exits: a round without any is a deadlock
    void (*body)(void*) = nullptr;
    void* arg = nullptr;
    void yield() { swapcontext(&f[current].uc, &main); }
};
inline thread_local Fibers* tl_fibers;

inline void fiber_entry() {
    Fibers* s = tl_fibers;
    s->body(s->arg);
    s->f[s->current].done = true;
    ++s->progress;
}  // returning resumes uc_link, the scheduler

inline void Barrier::wait() {
    const unsigned long g = gen.load(std::memory_order_acquire);
    if (fibers) ++fibers->progress;
    if (count.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        count.store(0, std::memory_order_relaxed);
        gen.fetch_add(1, std::memory_order_acq_rel);
        return;
    }
    if (fibers) {
        while (gen.load(std::memory_order_acquire) == g) fibers->yield();
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    for (unsigned spins = 1; gen.load(std::memory_order_acquire) == g; ++spins) {
        std::this_thread::yield();
        if (spins % 4096 == 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(GA_SHIM_TIMEOUT_S))
            die("barrier timed out: not every thread reached it", 99);
    }
}

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
            Ctx ctx;
            ctxp = &ctx;
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

enum Mode { SERIAL = 0, FIBERS = 1, THREADS = 2 };

// Any 3-D grid and block, in any mode. The body is type-erased: the machinery is compiled once per
// translation unit, not once per kernel.
inline void launch3_erased(Dim3 grid, Dim3 block, size_t smem_bytes, int mode, void (*body)(void*), void* arg) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024) die("a block of 0 or more than 1024 threads", 98);
    const unsigned nwarps = (n + 31) / 32;
    Fibers fibers;
    if (mode == FIBERS) {
        fibers.f.resize(n);
        fibers.stacks.reset(new char[(size_t)n * GA_SHIM_FIBER_STACK]);
        fibers.body = body;
        fibers.arg = arg;
    }
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk;
        if (mode != SERIAL) {
            Fibers* f = mode == FIBERS ? &fibers : nullptr;
            blk.bar.reset(new Barrier((int)n, f));
            for (unsigned w = 0; w < nwarps; ++w)
                blk.warp_bars.emplace_back(new Barrier((int)std::min(32u, n - 32 * w), f));
        }
        blk.exchange.assign(nwarps * 32, 0);
        blk.smem.assign(smem_bytes + 16, 0xcd);  // garbage, like real shared memory
        auto ctx_of = [&](unsigned t) {
            return Ctx{{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)}, {bx, by, bz},
                       {block.x, block.y, block.z}, {grid.x, grid.y, grid.z}, &blk};
        };
        if (mode == SERIAL) {
            for (unsigned t = 0; t < n; ++t) {
                Ctx ctx = ctx_of(t);
                ctxp = &ctx;
                body(arg);
            }
        } else if (mode == FIBERS) {
            tl_fibers = &fibers;
            for (unsigned t = 0; t < n; ++t) {
                Fibers::F& fb = fibers.f[t];
                fb.ctx = ctx_of(t);
                fb.done = false;
                getcontext(&fb.uc);
                fb.uc.uc_stack.ss_sp = fibers.stacks.get() + (size_t)t * GA_SHIM_FIBER_STACK;
                fb.uc.uc_stack.ss_size = GA_SHIM_FIBER_STACK;
                fb.uc.uc_link = &fibers.main;
                makecontext(&fb.uc, fiber_entry, 0);
            }
            for (unsigned live = n; live;) {
                const unsigned long before = fibers.progress;
                for (unsigned t = 0; t < n; ++t) {
                    if (fibers.f[t].done) continue;
                    fibers.current = t;
                    ctxp = &fibers.f[t].ctx;
                    swapcontext(&fibers.main, &fibers.f[t].uc);
                    if (fibers.f[t].done) --live;
                }
                if (live && fibers.progress == before) die("deadlock: not every thread reached a barrier", 99);
            }
        } else {
            std::vector<std::thread> threads;
            threads.reserve(n);
            for (unsigned t = 0; t < n; ++t) {
                threads.emplace_back([&, t] {
                    Ctx ctx = ctx_of(t);
                    ctxp = &ctx;
                    body(arg);
                });
            }
            for (auto& th : threads) th.join();
        }
    }
}

template <typename F>
void launch3(Dim3 grid, Dim3 block, size_t smem_bytes, int mode, F fn) {
    launch3_erased(grid, block, smem_bytes, mode, [](void* f) { (*static_cast<F*>(f))(); }, &fn);
}

inline unsigned linear_tid() {
    return ctxp->tid.x + ctxp->bdim.x * (ctxp->tid.y + ctxp->bdim.y * ctxp->tid.z);
}

// A kernel whose threads never communicate, run one CUDA thread after another on the calling
// thread (as launch3 SERIAL, for the 1-D launches of the elementwise kernels).
template <typename F>
void launch_independent(unsigned grid, unsigned grid_y, unsigned block, F fn) {
    Block blk;  // no barriers: a kernel that reaches one fails at once (null pointer)
    for (unsigned by = 0; by < grid_y; ++by)
        for (unsigned b = 0; b < grid; ++b)
            for (unsigned t = 0; t < block; ++t) {
                Ctx c{{t, 0, 0}, {b, by, 0}, {block, 1, 1}, {grid, grid_y, 1}, &blk};
                ctxp = &c;
                fn();
            }
}

template <typename T>
T exchange(T v, int src_of_lane_fn_result, int lane) {
    Block* blk = ctxp->blk;
    if (blk->warp_bars.empty()) die("a warp shuffle was reached in serial mode", 97);
    const int warp = (int)linear_tid() / 32;
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
    Block* blk = ctxp->blk;
    if (blk->warp_bars.empty()) die("a warp vote was reached in serial mode", 97);
    const int warp = (int)linear_tid() / 32;
    unsigned long long* slot = &blk->exchange[warp * 32];
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    slot[linear_tid() % 32] = u;
    blk->warp_bars[warp]->wait();
    for (int l = 0; l < 32; ++l) std::memcpy(&all[l], &slot[l], sizeof(T));
    blk->warp_bars[warp]->wait();
}

}  // namespace ga_shim

#define threadIdx (ga_shim::ctxp->tid)
#define blockIdx (ga_shim::ctxp->bid)
#define blockDim (ga_shim::ctxp->bdim)
#define gridDim (ga_shim::ctxp->gdim)
#define GA_EXTERN_SHARED(name) unsigned char* name = ga_shim::ctxp->blk->smem.data()

inline void __syncthreads() {
    if (!ga_shim::ctxp->blk->bar) ga_shim::die("__syncthreads was reached in serial mode", 97);
    ga_shim::ctxp->blk->bar->wait();
}

inline int __syncthreads_or(int pred) {
    ga_shim::Block* blk = ga_shim::ctxp->blk;
    __syncthreads();  // the previous call's flag has been read and cleared
    if (pred) blk->any.store(1);
    __syncthreads();
    const int any = blk->any.load();
    __syncthreads();
    // cleared before thread 0 reaches the next call's first barrier, which nobody passes without it
    if (ga_shim::linear_tid() == 0) blk->any.store(0);
    return any;
}

inline int __any_sync(unsigned /*mask*/, int pred) {
    int all[32] = {};
    ga_shim::gather(pred ? 1 : 0, all);
    for (int l = 0; l < 32; ++l)
        if (all[l]) return 1;
    return 0;
}

// CUDA semantics: lanes are split in segments of `width`; a source lane outside the caller's
// segment yields the caller's own value.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
    const int lane = (int)ga_shim::linear_tid() % 32;
    int src = lane ^ lane_mask;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = 32) {
    const int lane = (int)ga_shim::linear_tid() % 32;
    int src = lane + (int)delta;
    if (src / width != lane / width) src = lane;
    return ga_shim::exchange(v, src, lane);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
template <typename T> inline T __ldg(const T* p) { return *p; }

// CUDA's vector types, with its alignment (a 16-byte vector load needs a 16-byte aligned address).
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
