// A CPU emulation of the slice of CUDA that kernels/*.cu use, so that the kernels' indexing,
// tiling, barriers and reductions can be executed and checked on a machine without a GPU.
//
// Thread model: the blocks of a grid are shared out among a pool of worker OS threads (one per
// core); a worker runs a block's CUDA threads as fibers, each on a stack of its own, switching
// only at barriers (__syncthreads, and the warp barriers of the emulated warp-collective
// instructions). A switch is a few dozen instructions (emu_fiber_switch below), so a block of
// 256 threads crossing a barrier costs microseconds, not the milliseconds of 256 OS threads.
// Barriers are strict: a block barrier waits for every thread of the block and a warp barrier
// for every lane of the warp; one that can never complete (a thread returned early, or a warp
// diverged) ends the launch with an error instead of hanging.
//
// Per-thread state (threadIdx, the cp.async queues, the warp-instruction phase) lives in the
// fiber's EmuLane; per-block state (blockIdx, __shared__ arrays, dynamic shared memory, the warp
// exchange slots) is thread_local to the worker, which runs one block at a time.
// WMMA (mma.h here) keeps a whole fragment per thread. The warp-level instructions of
// kernels/mma_sync.cuh (mma.sync, ldmatrix, cp.async) are emulated in mma_sync_emu.h.
//
// A fault inside a kernel (emu_kernel_fault, or a hardware fault that the CUDA driver stand-in
// in tests/cuda_driver_emu turns into one) unwinds the block with siglongjmp and fails the
// launch with a message; tests/kernel_emu/check.cpp prints it and aborts.
// Not a performance model, and not a substitute for the parity tests on a real GPU.
#pragma once
// Kernel headers test this to pick the emulated warp primitives instead of inline PTX.
#define NS_KERNEL_EMU 1
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };

// cp.async, per thread: copies issued since the last commit (`open`) and committed groups not
// yet waited for (`groups`, oldest first). A copy lands in shared memory only when a
// cp.async.wait_group retires its group, so a kernel that reads a stage before waiting for it
// reads stale bytes (or the 0xFF poison), as it could on a GPU.
struct EmuCopy { void* dst; const void* src; int bytes, src_bytes; };
struct EmuCpAsync { std::vector<EmuCopy> open; std::deque<std::vector<EmuCopy>> groups; };

// Everything a CUDA thread has of its own besides its registers (which are its fiber's stack).
struct EmuLane {
    emu_dim3 idx;
    EmuCpAsync cp;
    unsigned warp_phase = 0;  // mma_sync_emu.h's double-buffered exchange slot
};
inline thread_local EmuLane* emu_lane = nullptr;
#define threadIdx (emu_lane->idx)
#define emu_cp_async (emu_lane->cp)
inline thread_local emu_dim3 blockIdx;
// One launch runs at a time (emu_run_grid holds emu_launch_mutex), so these are plain globals.
inline emu_dim3 gridDim, blockDim;

// Dynamic shared memory (extern __shared__), up to the 227 KiB an H100/H200 block may have.
// Filled with 0xFF bytes (NaN as floats) before every block, so a read of a slot that nothing
// wrote shows up as NaN in the output.
alignas(128) inline thread_local unsigned char emu_dynamic_smem_buf[232448];
inline thread_local size_t emu_dynamic_smem_bytes = 0;

inline void emu_cp_async_apply(const std::vector<EmuCopy>& g) {
    for (const EmuCopy& c : g) {
        if (c.src_bytes > 0) std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
        std::memset((char*)c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));  // the zero-fill
    }
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per worker thread = one per block in flight.
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
using std::max;
using std::min;

// ---- fibers ---------------------------------------------------------------------------------
// emu_fiber_switch(save, load): pushes the callee-saved registers, stores the stack pointer in
// *save, switches to the stack `load` and pops that fiber's registers (System V x86-64).
#if defined(__x86_64__)
extern "C" void emu_fiber_switch(void** save, void* load);
asm(R"(
    .text
    .weak emu_fiber_switch
    .hidden emu_fiber_switch
    .type emu_fiber_switch,@function
emu_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_fiber_switch, .-emu_fiber_switch
)");
#else
#error "tests/kernel_emu: the fiber switch is written for x86-64 only"
#endif

enum EmuFiberState : uint8_t { EMU_RUNNABLE, EMU_AT_BLOCK_BARRIER, EMU_AT_WARP_BARRIER, EMU_DONE };

struct EmuFiber {
    void* sp = nullptr;
    EmuLane lane;
    EmuFiberState state = EMU_DONE;
};

// Bytes of stack per CUDA thread (a kernel's locals, the WMMA emulation's whole fragments), and
// the most threads a block may have.
constexpr size_t EMU_STACK_BYTES = 128 * 1024;
constexpr unsigned EMU_MAX_THREADS = 1024;

// What a launch runs: body(ctx) once per CUDA thread of every block.
struct EmuGrid {
    emu_dim3 grid;
    unsigned threads = 0;
    size_t dynamic_smem = 0;
    void (*body)(void*) = nullptr;
    void* ctx = nullptr;
    std::atomic<unsigned long> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::string error;  // the first failure's message
};

// One worker OS thread: its fibers, their stacks, and the block it is running.
struct EmuWorker {
    std::vector<EmuFiber> fibers;
    unsigned char* stacks = nullptr;  // EMU_MAX_THREADS stacks, each above a guard page
    void* sched_sp = nullptr;         // the worker's own stack while a fiber runs
    unsigned current = 0;
    unsigned block_waiting = 0;
    unsigned warp_waiting[EMU_MAX_THREADS / 32] = {};
    EmuGrid* grid = nullptr;
    // The block in flight unwinds to here on a fault (siglongjmp: from a signal handler too).
    sigjmp_buf fault_jmp;
    bool in_block = false;
    std::string fault;
    void* fault_addr = nullptr;  // set by the driver stand-in's signal handler (siglongjmp value 2)
};
inline thread_local EmuWorker* emu_worker = nullptr;

inline size_t emu_page() { return (size_t)sysconf(_SC_PAGESIZE); }

// Ends the running block (and with it the launch) with `what`; outside a launch (a host-side
// check in check.cpp), prints it and aborts.
[[noreturn]] inline void emu_kernel_fault(const std::string& what) {
    EmuWorker* w = emu_worker;
    if (w && w->in_block) {
        w->fault = what;
        siglongjmp(w->fault_jmp, 1);
    }
    std::fprintf(stderr, "%s\n", what.c_str());
    std::abort();
}

// The thread and block that made a fault, for its message.
inline std::string emu_where() {
    char buf[96];
    if (emu_lane)
        std::snprintf(buf, sizeof buf, "thread %u of block (%u, %u, %u)", emu_lane->idx.x, blockIdx.x, blockIdx.y, blockIdx.z);
    else
        std::snprintf(buf, sizeof buf, "the host");
    return buf;
}

[[noreturn]] inline void emu_fiber_entry() {
    EmuWorker& w = *emu_worker;
    w.grid->body(w.grid->ctx);
    EmuFiber& f = w.fibers[w.current];
    f.state = EMU_DONE;
    emu_fiber_switch(&f.sp, w.sched_sp);
    __builtin_unreachable();
}

inline void emu_yield(EmuFiberState state) {
    EmuWorker& w = *emu_worker;
    EmuFiber& f = w.fibers[w.current];
    f.state = state;
    emu_fiber_switch(&f.sp, w.sched_sp);
}

inline void __syncthreads() {
    emu_worker->block_waiting++;
    emu_yield(EMU_AT_BLOCK_BARRIER);
}

// The synchronisation point of every emulated warp-collective instruction (mma.sync, ldmatrix):
// every lane of the warp (32 threads, fewer in a last partial warp).
inline void emu_warp_sync() {
    emu_worker->warp_waiting[threadIdx.x / 32]++;
    emu_yield(EMU_AT_WARP_BARRIER);
}

// Runs every CUDA thread of the current block to its end; false (w.fault says why) when the
// block's barriers can never complete.
inline bool emu_run_block(EmuWorker& w, unsigned n) {
    const size_t page = emu_page();
    for (unsigned t = 0; t < n; t++) {
        EmuFiber& f = w.fibers[t];
        f.lane.idx = {t, 0, 0};
        f.lane.cp.open.clear();
        f.lane.cp.groups.clear();
        f.lane.warp_phase = 0;
        f.state = EMU_RUNNABLE;
        // A fresh frame at the top of the fiber's stack: six zero registers, then a "return"
        // into emu_fiber_entry, entered with the stack aligned as after a call.
        uintptr_t* sp = (uintptr_t*)(w.stacks + (size_t)(t + 1) * (EMU_STACK_BYTES + page));
        *--sp = 0;
        *--sp = (uintptr_t)&emu_fiber_entry;
        for (int r = 0; r < 6; r++) *--sp = 0;
        f.sp = sp;
    }
    w.block_waiting = 0;
    std::fill(std::begin(w.warp_waiting), std::end(w.warp_waiting), 0u);
    unsigned alive = n;
    while (alive > 0) {
        bool ran = false;
        for (unsigned t = 0; t < n; t++) {
            EmuFiber& f = w.fibers[t];
            if (f.state != EMU_RUNNABLE) continue;
            w.current = t;
            emu_lane = &f.lane;
            emu_fiber_switch(&w.sched_sp, f.sp);
            ran = true;
            if (f.state == EMU_DONE) alive--;
        }
        emu_lane = nullptr;
        bool released = false;
        if (w.block_waiting == n) {
            for (unsigned t = 0; t < n; t++) w.fibers[t].state = EMU_RUNNABLE;
            w.block_waiting = 0;
            released = true;
        }
        for (unsigned warp = 0; warp * 32 < n; warp++) {
            const unsigned lanes = std::min(32u, n - 32 * warp);
            if (w.warp_waiting[warp] != lanes) continue;
            for (unsigned t = 32 * warp; t < 32 * warp + lanes; t++) w.fibers[t].state = EMU_RUNNABLE;
            w.warp_waiting[warp] = 0;
            released = true;
        }
        if (alive > 0 && !ran && !released) {
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "block (%u, %u, %u): a barrier that can never complete (%u of %u threads at __syncthreads, "
                          "%u returned; or a warp's lanes at different warp-collective instructions)",
                          blockIdx.x, blockIdx.y, blockIdx.z, w.block_waiting, n, n - alive);
            w.fault = buf;
            return false;
        }
    }
    return true;
}

// Fault handling of the worker threads (installed by the CUDA driver stand-in); an alternate
// signal stack, since a fault may be a fiber's stack overflowing into its guard page.
inline void (*emu_worker_setup)() = nullptr;
// Says where a faulting address lies (which allocation, how far past its end), for the message.
inline std::string (*emu_describe_address)(const void*) = nullptr;

inline void emu_worker_main(EmuWorker& w, EmuGrid& g) {
    for (;;) {
        if (g.failed.load(std::memory_order_relaxed)) return;
        const unsigned long b = g.next_block.fetch_add(1);
        const unsigned long blocks = (unsigned long)g.grid.x * g.grid.y * g.grid.z;
        if (b >= blocks) return;
        blockIdx = {(unsigned)(b % g.grid.x), (unsigned)(b / g.grid.x % g.grid.y), (unsigned)(b / ((unsigned long)g.grid.x * g.grid.y))};
        emu_dynamic_smem_bytes = g.dynamic_smem;
        std::memset(emu_dynamic_smem_buf, 0xFF, g.dynamic_smem);
        w.fault.clear();
        bool ok;
        const int jumped = sigsetjmp(w.fault_jmp, 1);
        if (jumped == 0) {
            w.in_block = true;
            ok = emu_run_block(w, g.threads);
            for (unsigned t = 0; ok && t < g.threads; t++) {
                const EmuCpAsync& cp = w.fibers[t].lane.cp;
                bool pending = !cp.open.empty();
                for (auto& grp : cp.groups) pending |= !grp.empty();
                if (pending) {
                    w.fault = "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) +
                              ") thread " + std::to_string(t) + " ended with cp.async copies never waited for";
                    ok = false;
                }
            }
        } else {
            ok = false;  // unwound from a fault: w.fault says what, or a signal did
            if (jumped == 2) {
                char buf[64];
                std::snprintf(buf, sizeof buf, ": invalid memory access at %p", w.fault_addr);
                w.fault = emu_where() + buf + (emu_describe_address ? ", " + emu_describe_address(w.fault_addr) : std::string());
            }
        }
        w.in_block = false;
        emu_lane = nullptr;
        if (!ok) {
            std::lock_guard<std::mutex> lock(g.error_mutex);
            if (!g.failed.exchange(true)) g.error = w.fault;
            return;
        }
    }
}

// A pool of worker threads (NEURAL_STYLE_EMU_THREADS, default one per core), started once.
class EmuPool {
public:
    static EmuPool& get() {
        static EmuPool* pool = new EmuPool();  // never destroyed: workers may outlive main's statics
        return *pool;
    }

    // Runs grid g on every worker; returns when all its blocks are done or one failed.
    void run(EmuGrid& g) {
        std::unique_lock<std::mutex> lock(mutex_);
        grid_ = &g;
        busy_ = (unsigned)workers_.size();
        generation_++;
        wake_.notify_all();
        done_.wait(lock, [&] { return busy_ == 0; });
        grid_ = nullptr;
    }

private:
    EmuPool() {
        unsigned n = std::max(1u, std::thread::hardware_concurrency());
        if (const char* v = std::getenv("NEURAL_STYLE_EMU_THREADS")) n = std::clamp(std::atoi(v), 1, 256);
        for (unsigned i = 0; i < n; i++) workers_.emplace_back([this] { loop(); });
        for (auto& t : workers_) t.detach();
    }

    void loop() {
        EmuWorker w;
        const size_t page = emu_page(), span = EMU_MAX_THREADS * (EMU_STACK_BYTES + page);
        void* m = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::perror("kernel emulation: mmap of the fiber stacks");
            std::abort();
        }
        w.stacks = (unsigned char*)m;
        for (unsigned t = 0; t < EMU_MAX_THREADS; t++) mprotect(w.stacks + (size_t)t * (EMU_STACK_BYTES + page), page, PROT_NONE);
        w.fibers.resize(EMU_MAX_THREADS);
        emu_worker = &w;
        if (emu_worker_setup) emu_worker_setup();
        unsigned long seen = 0;
        for (;;) {
            EmuGrid* g;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                g = grid_;
            }
            w.grid = g;
            emu_worker_main(w, *g);
            w.grid = nullptr;
            std::lock_guard<std::mutex> lock(mutex_);
            if (--busy_ == 0) done_.notify_all();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    EmuGrid* grid_ = nullptr;
    unsigned busy_ = 0;
    unsigned long generation_ = 0;
};

inline std::mutex emu_launch_mutex;

// Runs body(ctx) as every thread of every block of `grid` (1-D blocks of `threads`), with
// `dynamic_smem` bytes of dynamic shared memory; "" on success, else the first failure.
inline std::string emu_run_grid(emu_dim3 grid, unsigned threads, size_t dynamic_smem, void (*body)(void*), void* ctx) {
    if (threads == 0 || threads > EMU_MAX_THREADS) return "a block of " + std::to_string(threads) + " threads";
    if (dynamic_smem > sizeof emu_dynamic_smem_buf)
        return std::to_string(dynamic_smem) + " bytes of dynamic shared memory, more than a GPU block can have";
    if ((unsigned long)grid.x * grid.y * grid.z == 0) return "";
    std::lock_guard<std::mutex> lock(emu_launch_mutex);
    gridDim = grid;
    blockDim = {threads, 1, 1};
    EmuGrid g;
    g.grid = grid;
    g.threads = threads;
    g.dynamic_smem = dynamic_smem;
    g.body = body;
    g.ctx = ctx;
    EmuPool::get().run(g);
    return g.failed ? g.error : "";
}

// Runs kernel() on every block of grid, block.x threads each (1-D blocks only), with
// dynamic_smem bytes of dynamic shared memory; a failure is printed and aborts (check.cpp).
template <class F>
void emu_launch(emu_dim3 grid, unsigned threads, F kernel, size_t dynamic_smem = 0) {
    const std::string err = emu_run_grid(grid, threads, dynamic_smem, [](void* k) { (*static_cast<F*>(k))(); }, &kernel);
    if (!err.empty()) {
        std::fprintf(stderr, "emu_launch: %s\n", err.c_str());
        std::abort();
    }
}
