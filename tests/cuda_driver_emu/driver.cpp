// A stand-in for the CUDA driver library (libcuda.so), built by build.rs from kernels/*.cu and
// the CPU emulation of CUDA in tests/kernel_emu/include/, so that the CUDA backend's host side
// (every cudarc call, every launch's arguments, grid and shared memory, the error paths) runs
// end to end on a machine without a GPU. src/cuda/driver.rs loads it when told to
// (NEURAL_STYLE_CUDA_DRIVER=emulated); tests/cuda_parity.rs uses it where no GPU is present.
//
// What it enforces, as a real driver and GPU do:
//   - launch limits: 1024 threads a block, the grid's limits, static + dynamic shared memory
//     within 48 KiB unless cuFuncSetAttribute raised the function's limit (never past the
//     device's opt-in maximum), registers x threads within the SM's register file (the
//     cubin's register counts), the threads within the kernel's __launch_bounds__;
//   - parameters: read by the kernel's real C++ signature, which must agree, parameter by
//     parameter, with the cubin's (EIATTR_KPARAM_INFO); every pointer inside a live allocation
//     and aligned for its type;
//   - memory: each allocation ends at a guard page (and starts after one), so a kernel that
//     reads or writes past its buffer faults; the bytes between the end of a buffer and its
//     guard page are a canary, checked after every launch; freed memory stays unmapped for a
//     while, so a use after free faults; copies must lie inside their allocations;
//     CUDA_ERROR_OUT_OF_MEMORY past NEURAL_STYLE_EMU_MEMORY bytes (default: the device's);
//   - a fault inside a kernel is reported, as CUDA_ERROR_ILLEGAL_ADDRESS (or MISALIGNED_ADDRESS,
//     LAUNCH_FAILED), by the next synchronising call, and is then sticky, as on a GPU;
//   - modules: cuModuleLoadData reads the entry names out of the PTX or the cubin it is given
//     (and refuses a cubin of another architecture); a function the image lacks is NOT_FOUND.
// The device: an H200 (sm_90, 132 SMs) by default, an A100 with NEURAL_STYLE_EMU_SM=80.
// Kernels run synchronously inside cuLaunchKernel, on the emulation's worker threads; one API
// call at a time. Timings mean nothing.
#include "../../kernels/conv3x3.cu"
#include "../../kernels/conv3x3_mma.cu"
#include "../../kernels/gram.cu"
#include "../../kernels/gram_mma.cu"
#include "../../kernels/loss.cu"
#include "../../kernels/pool.cu"
#include "../../kernels/relu.cu"
#include "../../kernels/vector.cu"

#include <sys/uio.h>

#include <chrono>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
struct CUuuid { char bytes[16]; };

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

// ---- the device -----------------------------------------------------------------------------
struct Device {
    int sm;  // 90 or 80
    const char* name;
    int sms, clock_khz, mem_clock_khz, l2_bytes, smem_per_sm, smem_optin;
    unsigned long long memory;  // bytes
};

static unsigned long long parse_bytes(const char* v, unsigned long long fallback) {
    if (!v || !*v) return fallback;
    char* end = nullptr;
    const double x = std::strtod(v, &end);
    double mult = 1;
    if (end && (*end == 'k' || *end == 'K')) mult = 1024.0;
    if (end && (*end == 'm' || *end == 'M')) mult = 1024.0 * 1024;
    if (end && (*end == 'g' || *end == 'G')) mult = 1024.0 * 1024 * 1024;
    if (!(x > 0) || x * mult > 1e15) return fallback;
    return (unsigned long long)(x * mult);
}

static const Device& device() {
    static Device d = [] {
        const char* sm = std::getenv("NEURAL_STYLE_EMU_SM");
        Device d;
        if (sm && std::atoi(sm) == 80)
            d = {80, "NVIDIA A100-SXM4-80GB (emulated driver)", 108, 1410000, 1593000, 40 << 20, 167936, 166912, 85899345920ull};
        else
            d = {90, "NVIDIA H200 (emulated driver)", 132, 1980000, 2619000, 50 << 20, 233472, 232448, 150754820096ull};
        d.memory = parse_bytes(std::getenv("NEURAL_STYLE_EMU_MEMORY"), d.memory);
        return d;
    }();
    return d;
}

// ---- the kernels: each one's C++ signature, and how to run it -------------------------------
struct Param {
    size_t size, align;
    bool pointer;
    size_t pointee_align;  // what the kernel's loads through it need
};

struct KernelEntry {
    const char* name;
    std::vector<Param> params;
    // Runs the kernel on the parameter values (one pointer per parameter, to its bytes).
    std::string (*run)(void* const* values, emu_dim3 grid, unsigned threads, size_t smem);
};

template <class T>
Param param_of() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        using P = std::remove_cv_t<std::remove_pointer_t<U>>;
        return {sizeof(U), alignof(U), true, std::is_void_v<P> ? 1 : alignof(P)};
    } else {
        return {sizeof(U), alignof(U), false, 0};
    }
}

template <class F>
struct Signature;
template <class... A>
struct Signature<void(A...)> {
    using Args = std::tuple<std::remove_cv_t<A>...>;
    template <void (*F)(A...), size_t... I>
    static std::string run(void* const* v, emu_dim3 grid, unsigned threads, size_t smem, std::index_sequence<I...>) {
        Args args{*static_cast<std::remove_cv_t<A>*>(v[I])...};
        return emu_run_grid(grid, threads, smem, [](void* c) { std::apply(F, *static_cast<Args*>(c)); }, &args);
    }
    template <void (*F)(A...)>
    static KernelEntry entry(const char* name) {
        return {name, {param_of<A>()...}, [](void* const* v, emu_dim3 g, unsigned t, size_t s) {
                    return run<F>(v, g, t, s, std::index_sequence_for<A...>{});
                }};
    }
};

// One line per entry point of the PTX that build.rs compiled (generated from its .entry lines),
// so a kernel added to kernels/ is registered by itself, and one the emulation cannot compile
// fails the build.
#define NS_EMU_KERNEL(name) Signature<decltype(name)>::entry<&name>(#name),
static const std::vector<KernelEntry>& registry() {
    static const std::vector<KernelEntry> r = {
#include "emu_kernels.inc"
    };
    return r;
}
static const KernelEntry* find_kernel(const std::string& name) {
    for (const KernelEntry& k : registry())
        if (name == k.name) return &k;
    return nullptr;
}

// ---- state ----------------------------------------------------------------------------------
static std::recursive_mutex api_mutex;
#define API_LOCK std::lock_guard<std::recursive_mutex> api_lock(api_mutex)
static bool initialised = false;

struct Context { int refs = 0; };
static Context primary;
static thread_local Context* current_ctx = nullptr;

// A kernel fault not yet reported (`pending`), then reported and sticky (`sticky`).
static CUresult pending = CUDA_SUCCESS, sticky = CUDA_SUCCESS;
static std::string fault_detail;  // set once, with the first fault

static void note_fault(CUresult code, const std::string& what) {
    if (pending != CUDA_SUCCESS || sticky != CUDA_SUCCESS) return;
    pending = code;
    fault_detail = what;
    std::fprintf(stderr, "[emulated CUDA driver] %s\n", what.c_str());
}

// What a synchronising call returns: a pending fault becomes sticky.
static CUresult sync_status() {
    if (pending != CUDA_SUCCESS) {
        sticky = pending;
        pending = CUDA_SUCCESS;
    }
    return sticky;
}

#define CHECK_INIT                                        \
    do {                                                  \
        if (!initialised) return CUDA_ERROR_NOT_INITIALIZED; \
        if (sticky != CUDA_SUCCESS) return sticky;        \
    } while (0)

// ---- device memory --------------------------------------------------------------------------
struct Alloc {
    uintptr_t base;
    size_t size;        // bytes asked for
    uintptr_t map;      // the mapping: guard page, slack + data, guard page
    size_t map_len;
    size_t slack;       // canary bytes between base + size and the trailing guard page
    bool freed;
};
static std::map<uintptr_t, Alloc> allocs;  // by base
static std::deque<uintptr_t> quarantine;   // freed, oldest first
static unsigned long long used_bytes = 0;
constexpr unsigned char CANARY = 0xA5;
constexpr size_t QUARANTINE_MAX = 4096;

// Allocations start 16-byte aligned (what the kernels' widest loads need) and end as close to
// their trailing guard page as that allows.
constexpr size_t ALLOC_ALIGN = 16;

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// The allocation (live or freed) holding [p, p + n), or null; p == end is inside when n == 0.
static Alloc* find_alloc(uintptr_t p, size_t n = 1) {
    auto it = allocs.upper_bound(p);
    if (it == allocs.begin()) return nullptr;
    --it;
    Alloc& a = it->second;
    if (p < a.base || p + n > a.base + a.size || p + n < p) return nullptr;
    if (n == 0 && p > a.base + a.size) return nullptr;
    return &a;
}

// A human description of address p, for fault messages.
static std::string describe_address(const void* ptr) {
    const uintptr_t p = (uintptr_t)ptr;
    char buf[200];
    for (auto& [base, a] : allocs) {
        if (p >= a.map && p < a.map + a.map_len) {
            const char* state = a.freed ? "a freed allocation" : "an allocation";
            if (p >= a.base + a.size)
                std::snprintf(buf, sizeof buf, "%zu bytes past the end of %s of %zu bytes at 0x%llx", (size_t)(p - a.base - a.size), state, a.size,
                              (unsigned long long)a.base);
            else if (p < a.base)
                std::snprintf(buf, sizeof buf, "%zu bytes before the start of %s of %zu bytes at 0x%llx", (size_t)(a.base - p), state, a.size,
                              (unsigned long long)a.base);
            else
                std::snprintf(buf, sizeof buf, "inside %s of %zu bytes at 0x%llx (offset %zu)", state, a.size, (unsigned long long)a.base,
                              (size_t)(p - a.base));
            return buf;
        }
    }
    std::snprintf(buf, sizeof buf, "outside every allocation");
    return buf;
}

static CUresult mem_alloc(CUdeviceptr* dptr, size_t bytes) {
    CHECK_INIT;
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    const size_t rounded = round_up(bytes, 512);
    if (bytes > device().memory || used_bytes + rounded > device().memory) return CUDA_ERROR_OUT_OF_MEMORY;
    const size_t page = emu_page(), body = round_up(round_up(bytes, ALLOC_ALIGN), page), len = body + 2 * page;
    void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    const uintptr_t map = (uintptr_t)m;
    if (body > 0 && mprotect((void*)(map + page), body, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, len);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    Alloc a;
    a.map = map;
    a.map_len = len;
    a.base = map + page + body - round_up(bytes, ALLOC_ALIGN);
    a.size = bytes;
    a.slack = round_up(bytes, ALLOC_ALIGN) - bytes;
    a.freed = false;
    // New device memory holds garbage on a GPU: here 0xFF bytes (NaN), and the canary after it.
    std::memset((void*)a.base, 0xFF, bytes);
    std::memset((void*)(a.base + bytes), CANARY, a.slack);
    allocs[a.base] = a;
    used_bytes += rounded;
    *dptr = a.base;
    return CUDA_SUCCESS;
}

static bool canary_intact(const Alloc& a) {
    const unsigned char* c = (const unsigned char*)(a.base + a.size);
    for (size_t i = 0; i < a.slack; i++)
        if (c[i] != CANARY) return false;
    return true;
}

static CUresult mem_free(CUdeviceptr p) {
    CHECK_INIT;
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end() || it->second.freed) {
        std::fprintf(stderr, "[emulated CUDA driver] cuMemFree of 0x%llx, which is not a live allocation (%s)\n", p,
                     describe_address((void*)p).c_str());
        return CUDA_ERROR_INVALID_VALUE;
    }
    Alloc& a = it->second;
    if (!canary_intact(a))
        note_fault(CUDA_ERROR_ILLEGAL_ADDRESS, "a kernel wrote past the end of the allocation of " + std::to_string(a.size) + " bytes freed now");
    // Unmapped but reserved: a kernel that touches it faults; the pages go back to the system.
    mmap((void*)a.map, a.map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    a.freed = true;
    used_bytes -= round_up(a.size, 512);
    quarantine.push_back(a.base);
    while (quarantine.size() > QUARANTINE_MAX) {
        auto old = allocs.find(quarantine.front());
        quarantine.pop_front();
        if (old != allocs.end()) {
            munmap((void*)old->second.map, old->second.map_len);
            allocs.erase(old);
        }
    }
    return CUDA_SUCCESS;
}

// Whether [p, p + n) lies in one live allocation; says why not on stderr.
static bool device_range_ok(const char* api, CUdeviceptr p, size_t n) {
    Alloc* a = find_alloc((uintptr_t)p, n);
    if (a && !a->freed) return true;
    std::fprintf(stderr, "[emulated CUDA driver] %s: [0x%llx, +%zu bytes) is not inside a live allocation (0x%llx is %s)\n", api, p, n, p,
                 describe_address((void*)p).c_str());
    return false;
}

// Copies n bytes of host memory at src without faulting on a bad address.
static bool safe_read(void* dst, const void* src, size_t n) {
    iovec local{dst, n}, remote{const_cast<void*>(src), n};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n;
}

// ---- modules --------------------------------------------------------------------------------
struct Function {
    std::string name;
    const KernelEntry* kernel;
    int regs = 0;                 // 0: unknown (PTX, JIT)
    int static_smem = 0;          // bytes of __shared__
    int max_threads = 1024;       // __launch_bounds__
    int max_dynamic_smem = 0;     // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    std::vector<std::pair<int, int>> image_params;  // (offset, size) per parameter, from a cubin
    bool has_image_params = false;
};
struct Module {
    std::map<std::string, Function> functions;
};
static std::set<Module*> modules;
static std::set<Function*> functions;

template <class T>
static bool rd(const std::vector<unsigned char>& b, size_t off, T& v) {
    if (off + sizeof(T) > b.size() || off + sizeof(T) < off) return false;
    std::memcpy(&v, b.data() + off, sizeof(T));
    return true;
}

// The entry points of a CUDA ELF image, with their registers, static shared memory, launch
// bounds and parameter layout; "" or why the image is refused.
static std::string parse_cubin(const unsigned char* image, Module& m) {
    uint64_t shoff;
    uint16_t shentsize, shnum, shstrndx;
    std::vector<unsigned char> head(64);
    if (!safe_read(head.data(), image, 64)) return "unreadable image";
    rd(head, 0x28, shoff), rd(head, 0x3a, shentsize), rd(head, 0x3c, shnum), rd(head, 0x3e, shstrndx);
    if (head[4] != 2 || shentsize != 64 || shnum == 0 || shstrndx >= shnum || shoff > (1ull << 30)) return "not a 64-bit CUDA ELF image";
    const int arch = head[48];  // e_flags & 0xff: the SASS architecture
    if (arch / 10 != device().sm / 10 || arch > device().sm)
        return "a cubin for sm_" + std::to_string(arch) + " does not run on this sm_" + std::to_string(device().sm) + " device";
    const size_t len = shoff + (size_t)shnum * 64;
    std::vector<unsigned char> b(len);
    if (!safe_read(b.data(), image, len)) return "truncated image";
    struct Sec { uint32_t name, type; uint64_t off, size; uint32_t link, info; };
    std::vector<Sec> secs(shnum);
    for (unsigned i = 0; i < shnum; i++) {
        const size_t h = shoff + 64 * i;
        rd(b, h, secs[i].name), rd(b, h + 4, secs[i].type), rd(b, h + 24, secs[i].off), rd(b, h + 32, secs[i].size);
        rd(b, h + 40, secs[i].link), rd(b, h + 44, secs[i].info);
    }
    size_t end = len;
    for (auto& s : secs)
        if (s.type != 8) end = std::max<size_t>(end, s.off + s.size);  // not NOBITS
    if (end > (1ull << 30)) return "image sections out of range";
    b.resize(end);
    if (!safe_read(b.data(), image, end)) return "truncated image";
    auto str = [&](uint64_t base, uint32_t off) -> std::string {
        std::string s;
        for (size_t p = base + off; p < b.size() && b[p]; p++) s += (char)b[p];
        return s;
    };
    const uint64_t shstr = secs[shstrndx].off;
    // Symbol names by index (REGCOUNT records name functions by symbol).
    std::vector<std::string> syms;
    for (auto& s : secs)
        if (s.type == 2 && s.link < shnum)
            for (uint64_t p = s.off; p + 24 <= s.off + s.size; p += 24) {
                uint32_t n;
                rd(b, p, n);
                syms.push_back(str(secs[s.link].off, n));
            }
    for (auto& s : secs) {
        const std::string n = str(shstr, s.name);
        if (n.rfind(".text.", 0) == 0) m.functions[n.substr(6)].name = n.substr(6);
    }
    for (auto& s : secs) {
        const std::string n = str(shstr, s.name);
        auto records = [&](auto on) {
            for (uint64_t p = s.off; p + 2 <= s.off + s.size;) {
                const int fmt = b[p], attr = b[p + 1];
                p += 2;
                uint16_t sz = 0;
                if (fmt == 4) {
                    rd(b, p, sz);
                    p += 2;
                    on(attr, p, (size_t)sz);
                    p += sz;
                } else if (fmt == 3 || fmt == 2) {
                    on(attr, p, (size_t)2);
                    p += 2;
                }
            }
        };
        if (n.rfind(".nv.shared.", 0) == 0 && m.functions.count(n.substr(11))) m.functions[n.substr(11)].static_smem = (int)s.size;
        if (n == ".nv.info")
            records([&](int attr, uint64_t p, size_t sz) {
                uint32_t sym, regs;
                if (attr == 0x2f && sz == 8 && rd(b, p, sym) && rd(b, p + 4, regs) && sym < syms.size() && m.functions.count(syms[sym]))
                    m.functions[syms[sym]].regs = (int)regs;  // EIATTR_REGCOUNT
            });
        if (n.rfind(".nv.info.", 0) == 0 && m.functions.count(n.substr(9))) {
            Function& f = m.functions[n.substr(9)];
            f.has_image_params = true;
            records([&](int attr, uint64_t p, size_t sz) {
                uint16_t ordinal, offset;
                uint32_t flags, x;
                if (attr == 0x17 && sz == 12 && rd(b, p + 4, ordinal) && rd(b, p + 6, offset) && rd(b, p + 8, flags)) {  // EIATTR_KPARAM_INFO
                    if (f.image_params.size() <= ordinal) f.image_params.resize(ordinal + 1, {-1, -1});
                    f.image_params[ordinal] = {offset, (int)((flags >> 18) & 0x3fff)};
                }
                if (attr == 0x05 && sz == 12 && rd(b, p, x)) f.max_threads = (int)x;  // EIATTR_MAX_THREADS
            });
        }
    }
    return "";
}

// The entry points of a PTX module (`.entry NAME(`); it must target this device or an older one.
static std::string parse_ptx(const char* text, Module& m) {
    std::string ptx;
    char chunk[4096];
    for (size_t off = 0;; off += sizeof chunk) {
        if (!safe_read(chunk, text + off, sizeof chunk)) {  // the last page: byte by byte
            for (size_t i = 0; safe_read(chunk, text + off + i, 1) && chunk[0]; i++) ptx += chunk[0];
            break;
        }
        const size_t n = strnlen(chunk, sizeof chunk);
        ptx.append(chunk, n);
        if (n < sizeof chunk || ptx.size() > (64u << 20)) break;
    }
    const size_t t = ptx.find(".target sm_");
    if (ptx.find(".version ") == std::string::npos || t == std::string::npos) return "not a PTX module (no .version or .target)";
    const int arch = std::atoi(ptx.c_str() + t + 11);
    if (arch > device().sm) return "PTX for sm_" + std::to_string(arch) + " does not JIT for this sm_" + std::to_string(device().sm) + " device";
    for (size_t p = 0; (p = ptx.find(".entry ", p)) != std::string::npos; p += 7) {
        size_t s = p + 7, e = s;
        while (e < ptx.size() && (isalnum((unsigned char)ptx[e]) || ptx[e] == '_' || ptx[e] == '$')) e++;
        const std::string name = ptx.substr(s, e - s);
        if (!name.empty()) m.functions[name].name = name;
        const size_t body = ptx.find('{', e), ntid = ptx.find(".maxntid ", e);
        if (ntid != std::string::npos && ntid < body) m.functions[name].max_threads = std::atoi(ptx.c_str() + ntid + 9);
    }
    return "";
}

// ---- the API --------------------------------------------------------------------------------
static void install_fault_handler();

EXPORT CUresult cuInit(unsigned flags) {
    API_LOCK;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    if (!initialised) {
        install_fault_handler();
        initialised = true;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDriverGetVersion(int* v) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = 12080;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetCount(int* n) {
    API_LOCK;
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    API_LOCK;
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", device().name);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid(CUuuid* u, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!u) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(u->bytes, "neural-style-emu", 16);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid* u, CUdevice d) { return cuDeviceGetUuid(u, d); }
EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = device().memory;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    const Device& g = device();
    switch (attr) {
        case 1: *v = 1024; break;                   // MAX_THREADS_PER_BLOCK
        case 2: case 3: *v = 1024; break;           // MAX_BLOCK_DIM_X, Y
        case 4: *v = 64; break;                     // MAX_BLOCK_DIM_Z
        case 5: *v = 2147483647; break;             // MAX_GRID_DIM_X
        case 6: case 7: *v = 65535; break;          // MAX_GRID_DIM_Y, Z
        case 8: *v = 49152; break;                  // MAX_SHARED_MEMORY_PER_BLOCK
        case 9: *v = 65536; break;                  // TOTAL_CONSTANT_MEMORY
        case 10: *v = 32; break;                    // WARP_SIZE
        case 11: *v = 2147483647; break;            // MAX_PITCH
        case 12: *v = 65536; break;                 // MAX_REGISTERS_PER_BLOCK
        case 13: *v = g.clock_khz; break;           // CLOCK_RATE
        case 14: *v = 512; break;                   // TEXTURE_ALIGNMENT
        case 15: *v = 1; break;                     // GPU_OVERLAP
        case 16: *v = g.sms; break;                 // MULTIPROCESSOR_COUNT
        case 19: *v = 1; break;                     // CAN_MAP_HOST_MEMORY
        case 31: *v = 1; break;                     // CONCURRENT_KERNELS
        case 32: *v = 1; break;                     // ECC_ENABLED
        case 36: *v = g.mem_clock_khz; break;       // MEMORY_CLOCK_RATE
        case 37: *v = 5120; break;                  // GLOBAL_MEMORY_BUS_WIDTH
        case 38: *v = g.l2_bytes; break;            // L2_CACHE_SIZE
        case 39: *v = 2048; break;                  // MAX_THREADS_PER_MULTIPROCESSOR
        case 40: *v = 3; break;                     // ASYNC_ENGINE_COUNT
        case 41: *v = 1; break;                     // UNIFIED_ADDRESSING
        case 75: *v = g.sm / 10; break;             // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = g.sm % 10; break;             // COMPUTE_CAPABILITY_MINOR
        case 81: *v = g.smem_per_sm; break;         // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        case 82: *v = 65536; break;                 // MAX_REGISTERS_PER_MULTIPROCESSOR
        case 83: *v = 1; break;                     // MANAGED_MEMORY
        case 97: *v = g.smem_optin; break;          // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 106: *v = 32; break;                   // MAX_BLOCKS_PER_MULTIPROCESSOR
        case 115: *v = 1; break;                    // MEMORY_POOLS_SUPPORTED
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(Context** ctx, CUdevice d) {
    API_LOCK;
    CHECK_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    primary.refs++;
    *ctx = &primary;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    API_LOCK;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (primary.refs <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    primary.refs--;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetCurrent(Context* ctx) {
    if (ctx && ctx != &primary) return CUDA_ERROR_INVALID_CONTEXT;
    current_ctx = ctx;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetCurrent(Context** ctx) {
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = current_ctx;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxPushCurrent_v2(Context* ctx) { return cuCtxSetCurrent(ctx); }
EXPORT CUresult cuCtxPopCurrent_v2(Context** ctx) {
    if (ctx) *ctx = current_ctx;
    current_ctx = nullptr;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetDevice(CUdevice* d) {
    if (!current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    *d = 0;
    return CUDA_SUCCESS;
}

// Every call that works on device memory or streams needs the context current on this thread.
#define CHECK_CTX                                              \
    do {                                                       \
        CHECK_INIT;                                            \
        if (current_ctx != &primary || primary.refs <= 0) return CUDA_ERROR_INVALID_CONTEXT; \
    } while (0)

EXPORT CUresult cuCtxSynchronize() {
    API_LOCK;
    CHECK_CTX;
    return sync_status();
}
EXPORT CUresult cuCtxGetLimit(size_t* v, int) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetLimit(int, size_t) { return CUDA_SUCCESS; }
EXPORT CUresult cuCtxSetFlags(unsigned) { return CUDA_SUCCESS; }
EXPORT CUresult cuCtxGetCacheConfig(int* c) {
    if (c) *c = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetCacheConfig(int) { return CUDA_SUCCESS; }
EXPORT CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return CUDA_SUCCESS;
}

// Streams and events: work runs at once, so a stream is only a handle to check.
struct Stream { int priority = 0; };
struct Event { std::chrono::steady_clock::time_point at; bool recorded = false; };
static std::set<Stream*> streams;
static std::set<Event*> events;

static bool stream_ok(Stream* s) { return s == nullptr || (Stream*)1 == s || (Stream*)2 == s || streams.count(s); }
#define CHECK_STREAM(s) \
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE

EXPORT CUresult cuStreamCreateWithPriority(Stream** s, unsigned, int priority) {
    API_LOCK;
    CHECK_CTX;
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    *s = new Stream{priority};
    streams.insert(*s);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamCreate(Stream** s, unsigned flags) { return cuStreamCreateWithPriority(s, flags, 0); }
EXPORT CUresult cuStreamDestroy_v2(Stream* s) {
    API_LOCK;
    if (!streams.erase(s)) return CUDA_ERROR_INVALID_HANDLE;
    delete s;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamSynchronize(Stream* s) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    return sync_status();
}
EXPORT CUresult cuStreamQuery(Stream* s) { return cuStreamSynchronize(s); }
EXPORT CUresult cuStreamWaitEvent(Stream* s, Event* e, unsigned) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    if (!events.count(e)) return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventCreate(Event** e, unsigned) {
    API_LOCK;
    CHECK_CTX;
    if (!e) return CUDA_ERROR_INVALID_VALUE;
    *e = new Event;
    events.insert(*e);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventDestroy_v2(Event* e) {
    API_LOCK;
    if (!events.erase(e)) return CUDA_ERROR_INVALID_HANDLE;
    delete e;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventRecord(Event* e, Stream* s) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    if (!events.count(e)) return CUDA_ERROR_INVALID_HANDLE;
    e->at = std::chrono::steady_clock::now();
    e->recorded = true;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventSynchronize(Event* e) {
    API_LOCK;
    CHECK_CTX;
    if (!events.count(e)) return CUDA_ERROR_INVALID_HANDLE;
    return sync_status();
}
EXPORT CUresult cuEventQuery(Event* e) { return cuEventSynchronize(e); }
EXPORT CUresult cuEventElapsedTime(float* ms, Event* a, Event* b) {
    API_LOCK;
    CHECK_CTX;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!events.count(a) || !events.count(b)) return CUDA_ERROR_INVALID_HANDLE;
    if (!a->recorded || !b->recorded) return CUDA_ERROR_NOT_READY;
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventElapsedTime_v2(float* ms, Event* a, Event* b) { return cuEventElapsedTime(ms, a, b); }

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    API_LOCK;
    CHECK_CTX;
    return mem_alloc(p, bytes);
}
EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, Stream* s) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    return mem_alloc(p, bytes);
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    API_LOCK;
    CHECK_CTX;
    return mem_free(p);
}
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, Stream* s) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    return mem_free(p);
}
EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    API_LOCK;
    CHECK_CTX;
    if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
    *total = device().memory;
    *free_bytes = device().memory - std::min<unsigned long long>(used_bytes, device().memory);
    return CUDA_SUCCESS;
}

static CUresult copy_htod(CUdeviceptr dst, const void* src, size_t n, bool sync) {
    API_LOCK;
    CHECK_CTX;
    if (n == 0) return CUDA_SUCCESS;
    if (!device_range_ok("cuMemcpyHtoD", dst, n) || !src) return CUDA_ERROR_INVALID_VALUE;
    if (!safe_read((void*)dst, src, n)) return CUDA_ERROR_INVALID_VALUE;
    return sync ? sync_status() : CUDA_SUCCESS;
}
static CUresult copy_dtoh(void* dst, CUdeviceptr src, size_t n) {
    API_LOCK;
    CHECK_CTX;
    // A device-to-host copy waits for the kernels before it: it reports their faults.
    if (const CUresult r = sync_status(); r != CUDA_SUCCESS) return r;
    if (n == 0) return CUDA_SUCCESS;
    if (!device_range_ok("cuMemcpyDtoH", src, n) || !dst) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(dst, (const void*)src, n);
    return CUDA_SUCCESS;
}
static CUresult copy_dtod(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    API_LOCK;
    CHECK_CTX;
    if (n == 0) return CUDA_SUCCESS;
    if (!device_range_ok("cuMemcpyDtoD (source)", src, n) || !device_range_ok("cuMemcpyDtoD (destination)", dst, n)) return CUDA_ERROR_INVALID_VALUE;
    std::memmove((void*)dst, (const void*)src, n);
    return CUDA_SUCCESS;
}
static CUresult set_d8(CUdeviceptr dst, unsigned char v, size_t n) {
    API_LOCK;
    CHECK_CTX;
    if (n == 0) return CUDA_SUCCESS;
    if (!device_range_ok("cuMemsetD8", dst, n)) return CUDA_ERROR_INVALID_VALUE;
    std::memset((void*)dst, v, n);
    return CUDA_SUCCESS;
}
static CUresult set_d32(CUdeviceptr dst, unsigned v, size_t n) {
    API_LOCK;
    CHECK_CTX;
    if (n == 0) return CUDA_SUCCESS;
    if (dst % 4 != 0 || n > SIZE_MAX / 4 || !device_range_ok("cuMemsetD32", dst, 4 * n)) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < n; i++) std::memcpy((void*)(dst + 4 * i), &v, 4);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, size_t n) { return copy_htod(d, h, n, true); }
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, size_t n, Stream* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_htod(d, h, n, false);
}
EXPORT CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, size_t n) { return copy_dtoh(h, d, n); }
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, size_t n, Stream* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_dtoh(h, d, n);
}
EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { return copy_dtod(d, s, n); }
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr src, size_t n, Stream* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return copy_dtod(d, src, n);
}
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { return set_d8(d, v, n); }
EXPORT CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, Stream* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return set_d8(d, v, n);
}
EXPORT CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) { return set_d32(d, v, n); }
EXPORT CUresult cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, Stream* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return set_d32(d, v, n);
}

EXPORT CUresult cuModuleLoadData(Module** out, const void* image) {
    API_LOCK;
    CHECK_CTX;
    if (!out || !image) return CUDA_ERROR_INVALID_VALUE;
    auto m = std::make_unique<Module>();
    unsigned char magic[4] = {};
    safe_read(magic, image, 4);
    const bool elf = std::memcmp(magic, "\x7f" "ELF", 4) == 0;
    const std::string why = elf ? parse_cubin((const unsigned char*)image, *m) : parse_ptx((const char*)image, *m);
    if (!why.empty()) {
        std::fprintf(stderr, "[emulated CUDA driver] cuModuleLoadData: %s\n", why.c_str());
        return why.find("does not") != std::string::npos ? (elf ? CUDA_ERROR_NO_BINARY_FOR_GPU : CUDA_ERROR_INVALID_PTX) : CUDA_ERROR_INVALID_IMAGE;
    }
    if (m->functions.empty()) return CUDA_ERROR_INVALID_IMAGE;
    *out = m.release();
    modules.insert(*out);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuModuleUnload(Module* m) {
    API_LOCK;
    if (!modules.erase(m)) return CUDA_ERROR_INVALID_HANDLE;
    for (auto& [name, f] : m->functions) functions.erase(&f);
    delete m;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuModuleGetFunction(Function** out, Module* m, const char* name) {
    API_LOCK;
    CHECK_CTX;
    if (!out || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!modules.count(m)) return CUDA_ERROR_INVALID_HANDLE;
    auto it = m->functions.find(name);
    if (it == m->functions.end()) return CUDA_ERROR_NOT_FOUND;  // not in this image
    Function& f = it->second;
    f.kernel = find_kernel(name);
    if (!f.kernel) {
        std::fprintf(stderr, "[emulated CUDA driver] %s is in the image but not in the emulation's registry (emu_kernels.inc)\n", name);
        return CUDA_ERROR_NOT_FOUND;
    }
    // The C++ signature the emulation calls must be the one the image was compiled from.
    if (f.has_image_params) {
        std::string why;
        size_t offset = 0;
        if (f.image_params.size() != f.kernel->params.size())
            why = std::to_string(f.image_params.size()) + " parameters in the image, " + std::to_string(f.kernel->params.size()) + " in the C++ signature";
        for (size_t i = 0; why.empty() && i < f.image_params.size(); i++) {
            offset = round_up(offset, f.kernel->params[i].align);
            if (f.image_params[i] != std::pair<int, int>((int)offset, (int)f.kernel->params[i].size))
                why = "parameter " + std::to_string(i) + " is " + std::to_string(f.image_params[i].second) + " bytes at offset " +
                      std::to_string(f.image_params[i].first) + " in the image, " + std::to_string(f.kernel->params[i].size) + " at " +
                      std::to_string(offset) + " in the C++ signature";
            offset += f.kernel->params[i].size;
        }
        if (!why.empty()) {
            std::fprintf(stderr, "[emulated CUDA driver] %s: %s\n", name, why.c_str());
            return CUDA_ERROR_INVALID_IMAGE;
        }
    }
    f.max_dynamic_smem = 49152 - f.static_smem;
    functions.insert(&f);
    *out = &f;
    return CUDA_SUCCESS;
}

// The most threads a block of f may have: its launch bounds, and its registers.
static int max_threads_of(const Function& f) {
    int n = std::min(1024, f.max_threads > 0 ? f.max_threads : 1024);
    if (f.regs > 0) {
        const int per_warp = (int)round_up((size_t)f.regs * 32, 256);
        n = std::min(n, 65536 / per_warp * 32);
    }
    return n;
}

EXPORT CUresult cuFuncSetAttribute(Function* f, int attr, int value) {
    API_LOCK;
    CHECK_CTX;
    if (!functions.count(f)) return CUDA_ERROR_INVALID_HANDLE;
    if (attr == 8) {  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value + f->static_smem > device().smem_optin) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_smem = value;
        return CUDA_SUCCESS;
    }
    if (attr == 9) return value >= -1 && value <= 100 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;  // carveout
    return CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuFuncGetAttribute(int* v, int attr, Function* f) {
    API_LOCK;
    CHECK_CTX;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (!functions.count(f)) return CUDA_ERROR_INVALID_HANDLE;
    switch (attr) {
        case 0: *v = max_threads_of(*f); break;
        case 1: *v = f->static_smem; break;
        case 4: *v = f->regs; break;
        case 5: case 6: *v = device().sm; break;
        case 8: *v = f->max_dynamic_smem; break;
        default: *v = 0;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuFuncSetCacheConfig(Function* f, int) { return functions.count(f) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }

EXPORT CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem,
                               Stream* s, void** params, void** extra) {
    API_LOCK;
    CHECK_CTX;
    CHECK_STREAM(s);
    if (!functions.count(f)) return CUDA_ERROR_INVALID_HANDLE;
    const std::string name = f->name;
    auto refuse = [&](CUresult r, const std::string& why) {
        std::fprintf(stderr, "[emulated CUDA driver] cuLaunchKernel(%s, grid (%u, %u, %u), block (%u, %u, %u), %u bytes of dynamic shared memory): %s\n",
                     name.c_str(), gx, gy, gz, bx, by, bz, smem, why.c_str());
        return r;
    };
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long)bx * by * bz > 1024)
        return refuse(CUDA_ERROR_INVALID_VALUE, "block dimensions over the device's limits");
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535)
        return refuse(CUDA_ERROR_INVALID_VALUE, "grid dimensions over the device's limits");
    if ((int)smem > f->max_dynamic_smem)
        return refuse(CUDA_ERROR_INVALID_VALUE, std::to_string(f->static_smem) + " bytes of static shared memory + " + std::to_string(smem) +
                                                    " dynamic is over the function's limit of " + std::to_string(f->static_smem + f->max_dynamic_smem) +
                                                    " (raise it with cuFuncSetAttribute)");
    const int threads = (int)(bx * by * bz);
    if (threads > max_threads_of(*f))
        return refuse(f->regs > 0 && threads <= std::min(1024, f->max_threads) ? CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES : CUDA_ERROR_INVALID_VALUE,
                      std::to_string(threads) + " threads, more than the " + std::to_string(max_threads_of(*f)) + " its launch bounds (" +
                          std::to_string(f->max_threads) + ") and registers (" + std::to_string(f->regs) + " a thread) allow");
    if (extra) return refuse(CUDA_ERROR_NOT_SUPPORTED, "the `extra` parameter buffer is not emulated");
    if (by != 1 || bz != 1) return refuse(CUDA_ERROR_NOT_SUPPORTED, "the emulation runs 1-D blocks only");
    const auto& sig = f->kernel->params;
    if (!sig.empty() && !params) return refuse(CUDA_ERROR_INVALID_VALUE, "kernelParams is null");
    // The parameter values, read through kernelParams by the signature, as the driver does.
    std::vector<std::vector<unsigned char>> values(sig.size());
    std::vector<void*> value_ptrs(sig.size());
    for (size_t i = 0; i < sig.size(); i++) {
        void* p = nullptr;
        values[i].resize(sig[i].size);
        if (!safe_read(&p, params + i, sizeof p) || !p || !safe_read(values[i].data(), p, sig[i].size))
            return refuse(CUDA_ERROR_INVALID_VALUE, "kernelParams[" + std::to_string(i) + "] cannot be read");
        value_ptrs[i] = values[i].data();
    }
    if (pending != CUDA_SUCCESS) return CUDA_SUCCESS;  // an earlier kernel faulted: this one never runs
    // Every pointer inside a live allocation and aligned for its loads; else the kernel faults.
    std::vector<Alloc*> touched;
    for (size_t i = 0; i < sig.size(); i++) {
        if (!sig[i].pointer) continue;
        uintptr_t p;
        std::memcpy(&p, values[i].data(), sizeof p);
        if (p == 0) continue;
        Alloc* a = find_alloc(p, 0);
        char buf[160];
        if (!a || a->freed) {
            std::snprintf(buf, sizeof buf, "kernel %s: pointer parameter %zu (0x%llx) is not inside a live allocation: it is ", name.c_str(), i,
                          (unsigned long long)p);
            note_fault(CUDA_ERROR_ILLEGAL_ADDRESS, buf + describe_address((void*)p));
            return CUDA_SUCCESS;
        }
        if (p % sig[i].pointee_align != 0) {
            std::snprintf(buf, sizeof buf, "kernel %s: pointer parameter %zu (0x%llx) is not %zu-byte aligned", name.c_str(), i, (unsigned long long)p,
                          sig[i].pointee_align);
            note_fault(CUDA_ERROR_MISALIGNED_ADDRESS, buf);
            return CUDA_SUCCESS;
        }
        touched.push_back(a);
    }
    const std::string err = f->kernel->run(value_ptrs.data(), {gx, gy, gz}, bx, smem);
    if (!err.empty()) {
        const CUresult code = err.find("invalid memory access") != std::string::npos ? CUDA_ERROR_ILLEGAL_ADDRESS
                              : err.find("aligned") != std::string::npos             ? CUDA_ERROR_MISALIGNED_ADDRESS
                                                                                     : CUDA_ERROR_LAUNCH_FAILED;
        note_fault(code, "kernel " + name + ": " + err);
        return CUDA_SUCCESS;
    }
    for (Alloc* a : touched)
        if (!canary_intact(*a)) {
            note_fault(CUDA_ERROR_ILLEGAL_ADDRESS, "kernel " + name + " wrote past the end of an allocation of " + std::to_string(a->size) + " bytes");
            break;
        }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorName(CUresult r, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (r) {
#define NAME(c) \
    case c: *s = #c; break;
        NAME(CUDA_SUCCESS) NAME(CUDA_ERROR_INVALID_VALUE) NAME(CUDA_ERROR_OUT_OF_MEMORY) NAME(CUDA_ERROR_NOT_INITIALIZED) NAME(CUDA_ERROR_NO_DEVICE)
        NAME(CUDA_ERROR_INVALID_DEVICE) NAME(CUDA_ERROR_INVALID_IMAGE) NAME(CUDA_ERROR_INVALID_CONTEXT) NAME(CUDA_ERROR_NO_BINARY_FOR_GPU)
        NAME(CUDA_ERROR_INVALID_PTX) NAME(CUDA_ERROR_INVALID_HANDLE) NAME(CUDA_ERROR_NOT_FOUND) NAME(CUDA_ERROR_NOT_READY)
        NAME(CUDA_ERROR_ILLEGAL_ADDRESS) NAME(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES) NAME(CUDA_ERROR_MISALIGNED_ADDRESS)
        NAME(CUDA_ERROR_LAUNCH_FAILED) NAME(CUDA_ERROR_NOT_SUPPORTED)
#undef NAME
        default: *s = nullptr; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGetErrorString(CUresult r, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    static std::string with_detail;
    const char* base;
    switch (r) {
        case CUDA_SUCCESS: base = "no error"; break;
        case CUDA_ERROR_INVALID_VALUE: base = "invalid argument"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: base = "out of memory"; break;
        case CUDA_ERROR_NOT_INITIALIZED: base = "initialization error"; break;
        case CUDA_ERROR_NO_DEVICE: base = "no CUDA-capable device is detected"; break;
        case CUDA_ERROR_INVALID_DEVICE: base = "invalid device ordinal"; break;
        case CUDA_ERROR_INVALID_IMAGE: base = "device kernel image is invalid"; break;
        case CUDA_ERROR_INVALID_CONTEXT: base = "invalid device context"; break;
        case CUDA_ERROR_NO_BINARY_FOR_GPU: base = "no kernel image is available for execution on the device"; break;
        case CUDA_ERROR_INVALID_PTX: base = "a PTX JIT compilation failed"; break;
        case CUDA_ERROR_INVALID_HANDLE: base = "invalid resource handle"; break;
        case CUDA_ERROR_NOT_FOUND: base = "named symbol not found"; break;
        case CUDA_ERROR_NOT_READY: base = "device not ready"; break;
        case CUDA_ERROR_ILLEGAL_ADDRESS: base = "an illegal memory access was encountered"; break;
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: base = "too many resources requested for launch"; break;
        case CUDA_ERROR_MISALIGNED_ADDRESS: base = "misaligned address"; break;
        case CUDA_ERROR_LAUNCH_FAILED: base = "unspecified launch failure"; break;
        case CUDA_ERROR_NOT_SUPPORTED: base = "operation not supported"; break;
        default: *s = nullptr; return CUDA_ERROR_INVALID_VALUE;
    }
    // The sticky fault's string says what faulted (set once: the fault is sticky).
    if (r == sticky && r != CUDA_SUCCESS && !fault_detail.empty()) {
        if (with_detail.empty()) with_detail = std::string(base) + " [emulated driver: " + fault_detail + "]";
        *s = with_detail.c_str();
    } else {
        *s = base;
    }
    return CUDA_SUCCESS;
}

// ---- faults inside kernels ------------------------------------------------------------------
static struct sigaction previous_segv, previous_bus;

static void on_fault(int sig, siginfo_t* info, void* uc) {
    EmuWorker* w = emu_worker;
    if (w && w->in_block) {
        w->fault_addr = info->si_addr;
        siglongjmp(w->fault_jmp, 2);
    }
    // Not a kernel's: whoever handled it before (Rust's stack-overflow report, or the default).
    struct sigaction& prev = sig == SIGSEGV ? previous_segv : previous_bus;
    if (prev.sa_flags & SA_SIGINFO) {
        prev.sa_sigaction(sig, info, uc);
    } else if (prev.sa_handler != SIG_IGN && prev.sa_handler != SIG_DFL) {
        prev.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);  // returning re-runs the faulting instruction, which now kills
    }
}

static void worker_setup() {
    // An alternate signal stack: the fault may be a fiber stack overflowing into its guard.
    static thread_local std::vector<unsigned char> alt(1 << 16);
    stack_t st{};
    st.ss_sp = alt.data();
    st.ss_size = alt.size();
    sigaltstack(&st, nullptr);
}

static void install_fault_handler() {
    emu_worker_setup = worker_setup;
    emu_describe_address = describe_address;
    struct sigaction sa{};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
}

// Lets src/cuda/driver.rs (and anyone) tell the stand-in from a real libcuda.
EXPORT const char* neural_style_emulated_driver() { return "neural-style emulated CUDA driver (tests/cuda_driver_emu)"; }
