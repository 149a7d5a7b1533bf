//! Compiles kernels/*.cu for the CUDA backend and generates `$OUT_DIR/kernels.rs`, which
//! src/cuda/ includes. Per kernel file it embeds:
//!   - SASS (cubins) for sm_80 and sm_90 (`NEURAL_STYLE_CUBIN_ARCHS`, e.g. `80,86,90,100`,
//!     overrides): the backend loads the newest one of the GPU's major version that the GPU runs
//!     (an sm_80 cubin runs on sm_86/87/89, CUDA's binary compatibility within a major version), so
//!     nothing is JIT-compiled at start-up and the driver never sees a PTX ISA newer than it knows.
//!     sm_86/sm_89 cubins of their own would add nothing our kernels use and cost 40 s of each
//!     clean build on 2 cores;
//!   - PTX for compute_80 (`NEURAL_STYLE_CUDA_ARCH` overrides, e.g. `90`): the fallback for other GPUs.
//!
//! Compiler, in order: nvcc (CUDA_HOME / CUDA_PATH / PATH / /usr/local/cuda), then NVRTC
//! (libnvrtc.so.12) from NVRTC_LIB, NEURAL_STYLE_CUDA_WHEELS, this checkout's `.cuda-tools/`
//! (where .ci/install_cuda_tools.sh puts the PyPI wheels), the python3 on PATH's site-packages,
//! /usr/local/cuda. An nvcc that cannot compile even an empty kernel (say, an unsupported host
//! compiler) is skipped with a warning. A kernel that fails to compile fails the build with the
//! compiler's log. With no working compiler the build succeeds with a warning (`--device cuda`
//! then explains), unless NEURAL_STYLE_REQUIRE_KERNELS=1, which makes that an error.
//! Cargo re-runs this script when the environment or the probed tool folders change, so
//! installing the tools and rebuilding needs no `cargo clean`.
//! The PTX is also copied to `<target dir>/ptx/` for .ci/check_ptxas.sh.

use std::env;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KERNELS: [&str; 8] = ["conv3x3", "gram", "pool", "relu", "loss", "vector", "conv3x3_mma", "gram_mma"];
const DEFAULT_CUBIN_ARCHS: [u32; 2] = [80, 90];
const DEFAULT_PTX_ARCH: u32 = 80;
/// Every variable this script reads: a change to any of them re-runs it.
const ENV_VARS: [&str; 12] = [
    "CXX",
    "NEURAL_STYLE_CUDA_ARCH",
    "NEURAL_STYLE_CUBIN_ARCHS",
    "NEURAL_STYLE_CUDA_WHEELS",
    "NEURAL_STYLE_NO_CUDA",
    "NEURAL_STYLE_REQUIRE_KERNELS",
    "NVRTC_LIB",
    "CUDA_INCLUDE",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "NVCC_CCBIN",
];

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for v in ENV_VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // .cuda-tools/ always exists (its README is tracked), so watching it costs nothing until the
    // install script fills it; a watched path that does not exist would re-run this every build.
    let tools_dir = manifest.join(".cuda-tools");
    if tools_dir.is_dir() {
        println!("cargo:rerun-if-changed={}", tools_dir.display());
    }
    let require = env::var("NEURAL_STYLE_REQUIRE_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0");
    let ptx_arch = match env::var("NEURAL_STYLE_CUDA_ARCH") {
        Ok(a) if !a.trim().is_empty() => parse_arch(&a).unwrap_or_else(|| panic!("NEURAL_STYLE_CUDA_ARCH={a:?}: expected a compute capability such as 80 or compute_90")),
        _ => DEFAULT_PTX_ARCH,
    };
    let cubin_archs: Vec<u32> = match env::var("NEURAL_STYLE_CUBIN_ARCHS") {
        Ok(a) if !a.trim().is_empty() => a
            .split(',')
            .map(|s| parse_arch(s).unwrap_or_else(|| panic!("NEURAL_STYLE_CUBIN_ARCHS={a:?}: expected a list such as 80,86,90")))
            .collect(),
        _ => DEFAULT_CUBIN_ARCHS.to_vec(),
    };

    let no_kernels = |reason: String| {
        if require {
            panic!("NEURAL_STYLE_REQUIRE_KERNELS is set, but the CUDA kernels cannot be built: {reason}");
        }
        println!("cargo:warning={reason}: the CUDA kernels are not built; install the tools with `bash .ci/install_cuda_tools.sh` (or set NVRTC_LIB / CUDA_HOME) and rebuild");
        write_kernels_rs(&out, None, &reason, ptx_arch, &[]);
    };
    if env::var_os("NEURAL_STYLE_NO_CUDA").is_some() {
        return no_kernels("NEURAL_STYLE_NO_CUDA is set".into());
    }
    let compilers = find_compilers(&tools_dir);
    if compilers.is_empty() {
        return no_kernels("no CUDA compiler (nvcc or libnvrtc.so.12) was found when this binary was built".into());
    }

    let mut skipped = Vec::new();
    for compiler in &compilers {
        match build_all(compiler, &manifest, &out, ptx_arch, &cubin_archs, require) {
            Ok(()) => {
                for s in &skipped {
                    println!("cargo:warning={s}");
                }
                let with = format!(
                    "compute_{ptx_arch} PTX (ISA {}) and SASS for {} by {}",
                    ptx_isa(&fs::read_to_string(out.join("conv3x3.ptx")).unwrap()),
                    cubin_archs.iter().map(|a| format!("sm_{a}")).collect::<Vec<_>>().join(", "),
                    compiler.describe()
                );
                copy_ptx_for_ptxas(&out);
                write_kernels_rs(&out, Some(&with), "", ptx_arch, &cubin_archs);
                return;
            }
            Err(BuildError::Kernel(log)) => panic!("{log}"),
            Err(BuildError::Tool(why)) => skipped.push(format!("{} cannot compile CUDA here, skipped: {why}", compiler.describe())),
        }
    }
    no_kernels(format!("no working CUDA compiler: {}", skipped.join("; ")));
}

/// The emulated CUDA driver (tests/cuda_driver_emu/driver.cpp over kernels/*.cu and the CPU
/// emulation in tests/kernel_emu/include/) as `$OUT_DIR/emulated-driver/libcuda.so`, built with
/// the system C++ compiler (`CXX`, else g++), its path given to the crate as
/// NEURAL_STYLE_EMULATED_DRIVER (src/cuda/driver.rs). Its kernel registry is generated from the
/// PTX's `.entry` lines, so every entry point the GPU gets is registered, and one the emulation
/// cannot compile fails the build. Without a C++ compiler the build goes on without it (a warning),
/// unless NEURAL_STYLE_REQUIRE_KERNELS=1 (CI), which makes that an error.
/// `start_emulated_driver` starts the compiler (it runs beside the cubin compiles: together they
/// are most of this script's time) and `finish_emulated_driver` waits for it.
fn start_emulated_driver(manifest: &Path, out: &Path) -> EmulatedDriverBuild {
    let emu = manifest.join("tests/cuda_driver_emu");
    let include = manifest.join("tests/kernel_emu/include");
    println!("cargo:rerun-if-changed={}", emu.display());
    println!("cargo:rerun-if-changed={}", include.display());
    let mut registry = String::from("// Generated by build.rs from the PTX's .entry lines: one per kernel.\n");
    let mut names: Vec<String> = Vec::new();
    for name in KERNELS {
        let ptx = fs::read_to_string(out.join(format!("{name}.ptx"))).unwrap();
        for line in ptx.lines() {
            if let Some(rest) = line.trim().strip_prefix(".visible .entry ").or_else(|| line.trim().strip_prefix(".entry ")) {
                let entry: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !entry.is_empty() && !names.contains(&entry) {
                    names.push(entry);
                }
            }
        }
    }
    for n in &names {
        registry += &format!("NS_EMU_KERNEL({n})\n");
    }
    fs::write(out.join("emu_kernels.inc"), registry).unwrap();
    let dir = out.join("emulated-driver");
    fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libcuda.so");
    let cxx = env::var("CXX").ok().filter(|c| !c.trim().is_empty()).unwrap_or_else(|| "g++".into());
    let child = Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-Wno-unused-result"])
        .arg("-Wl,-soname,libcuda.so")
        .arg(format!("-I{}", include.display()))
        .args(["-include", "cuda_emu.h"])
        .arg(format!("-I{}", out.display()))
        .arg(emu.join("driver.cpp"))
        .arg("-o")
        .arg(&lib)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    EmulatedDriverBuild { cxx, lib, child }
}

struct EmulatedDriverBuild {
    cxx: String,
    lib: PathBuf,
    child: std::io::Result<std::process::Child>,
}

fn finish_emulated_driver(build: EmulatedDriverBuild, require: bool) {
    let EmulatedDriverBuild { cxx, lib, child } = build;
    let failure = match child.and_then(|c| c.wait_with_output()) {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-env=NEURAL_STYLE_EMULATED_DRIVER={}", lib.display());
            return;
        }
        // The compiler ran and the emulation does not compile: always a build failure.
        Ok(o) => panic!("{cxx} failed to build the emulated CUDA driver (tests/cuda_driver_emu):\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("no C++ compiler ({cxx}: {e}) to build the emulated CUDA driver"),
    };
    if require {
        panic!("NEURAL_STYLE_REQUIRE_KERNELS is set: {failure}");
    }
    println!("cargo:warning={}", failure.lines().next().unwrap_or(""));
}

/// `80`, `sm_80`, `compute_80` -> 80.
fn parse_arch(s: &str) -> Option<u32> {
    s.trim().trim_start_matches("compute_").trim_start_matches("sm_").parse().ok()
}

/// The `.version` line of a PTX file: its ISA version, which the driver must know.
fn ptx_isa(ptx: &str) -> String {
    ptx.lines().find_map(|l| l.trim().strip_prefix(".version ")).unwrap_or("?").trim().to_string()
}

enum BuildError {
    /// The compiler itself does not work here (missing host compiler, unloadable library).
    Tool(String),
    /// A kernel does not compile: always a build failure.
    Kernel(String),
}

/// Every kernel's PTX (with the cubin of the PTX's own architecture from the same compile), then
/// (with the emulated driver's C++ build beside them, which needs the PTX's entry names) its other
/// cubins: each compile is a job for a pool of `NUM_JOBS` threads (cargo's `-j`), since one file
/// for one architecture is one single-threaded compiler call.
fn build_all(compiler: &Compiler, manifest: &Path, out: &Path, ptx_arch: u32, cubin_archs: &[u32], require: bool) -> Result<(), BuildError> {
    compiler.self_test(out).map_err(BuildError::Tool)?;
    let kernels_dir = manifest.join("kernels");
    // NVRTC compiling for sm_80 also returns the PTX it assembled, identical to compute_80's: one
    // front-end pass gives both (8 of 24 compiles saved).
    let ptx_target = if cubin_archs.contains(&ptx_arch) { Target::PtxAndCubin(ptx_arch) } else { Target::Ptx(ptx_arch) };
    let ptx_jobs: Vec<(&str, Target)> = KERNELS.iter().map(|&name| (name, ptx_target)).collect();
    compile_in_parallel(compiler, &kernels_dir, out, ptx_jobs)?;
    let emulated_driver = start_emulated_driver(manifest, out);
    let cubin_jobs: Vec<(&str, Target)> =
        KERNELS.iter().flat_map(|&name| cubin_archs.iter().filter(|&&a| a != ptx_arch).map(move |&a| (name, Target::Cubin(a)))).collect();
    let cubins = compile_in_parallel(compiler, &kernels_dir, out, cubin_jobs);
    finish_emulated_driver(emulated_driver, require);
    cubins
}

/// Compiles kernels/<name>.cu for each (name, target) into `out` (<name>.ptx, <name>.sm_XX.cubin).
/// The first failure (in job order) is returned once every thread has stopped.
fn compile_in_parallel(compiler: &Compiler, kernels_dir: &Path, out: &Path, jobs: Vec<(&str, Target)>) -> Result<(), BuildError> {
    let threads = env::var("NUM_JOBS").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(1).clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<(), BuildError>>>> = jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, target)) = jobs.get(i) else { break };
                let result = compile_one(compiler, kernels_dir, out, name, target);
                let failed = result.is_err();
                *results[i].lock().unwrap() = Some(result);
                if failed {
                    // Stop handing out work: the build fails anyway.
                    next.store(jobs.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    results.into_iter().filter_map(|r| r.into_inner().unwrap()).find(Result::is_err).unwrap_or(Ok(()))
}

fn compile_one(compiler: &Compiler, kernels_dir: &Path, out: &Path, name: &str, target: &Target) -> Result<(), BuildError> {
    let src = kernels_dir.join(format!("{name}.cu"));
    let target_name = match *target {
        Target::Ptx(a) => format!("compute_{a}"),
        Target::Cubin(a) | Target::PtxAndCubin(a) => format!("sm_{a}"),
    };
    let images = compiler
        .compile(&src, kernels_dir, target)
        .map_err(|log| BuildError::Kernel(format!("kernels/{name}.cu failed to compile for {target_name} with {}:\n{log}", compiler.describe())))?;
    if let Some(ptx) = images.ptx {
        fs::write(out.join(format!("{name}.ptx")), ptx).unwrap();
    }
    if let (Some(cubin), Target::Cubin(a) | Target::PtxAndCubin(a)) = (images.cubin, *target) {
        fs::write(out.join(format!("{name}.sm_{a}.cubin")), cubin).unwrap();
    }
    Ok(())
}

/// For .ci/check_ptxas.sh: `<target>/ptx/*.ptx` (`<target>/<profile>/build/<pkg>-<hash>/out` -> `<target>`).
fn copy_ptx_for_ptxas(out: &Path) {
    let Some(dir) = out.ancestors().nth(4).map(|t| t.join("ptx")) else { return };
    let _ = fs::create_dir_all(&dir);
    for name in KERNELS {
        let _ = fs::copy(out.join(format!("{name}.ptx")), dir.join(format!("{name}.ptx")));
    }
}

fn write_kernels_rs(out: &Path, built_with: Option<&str>, missing: &str, ptx_arch: u32, cubin_archs: &[u32]) {
    let built = built_with.is_some();
    let mut s = String::from("// Generated by build.rs.\n");
    s += &format!("pub const KERNELS_BUILT: bool = {built};\n");
    s += &format!("pub const KERNELS_BUILT_WITH: &str = {:?};\n", built_with.unwrap_or(""));
    s += &format!("pub const KERNELS_MISSING_REASON: &str = {missing:?};\n");
    s += &format!("pub const PTX_ARCH: u32 = {ptx_arch};\n");
    s += &format!("pub const CUBIN_ARCHS: &[u32] = &{:?};\n", if built { cubin_archs } else { &[] });
    let summary = match built_with {
        Some(w) => format!("CUDA kernels: {w}"),
        None => format!("CUDA kernels: not built ({missing})"),
    };
    s += &format!("pub const LONG_VERSION: &str = {:?};\n", format!("{}\n{summary}", env::var("CARGO_PKG_VERSION").unwrap()));
    s += "/// One kernel file: its PTX and its cubins as (sm, bytes).\npub struct KernelImages { pub name: &'static str, pub ptx: &'static str, pub cubins: &'static [(u32, &'static [u8])] }\n";
    for name in KERNELS {
        let konst = name.to_uppercase();
        if built {
            let cubins: Vec<String> = cubin_archs
                .iter()
                .map(|a| format!("({a}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.sm_{a}.cubin\")))"))
                .collect();
            s += &format!(
                "pub const {konst}: KernelImages = KernelImages {{ name: {name:?}, ptx: include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.ptx\")), cubins: &[{}] }};\n",
                cubins.join(", ")
            );
        } else {
            s += &format!("pub const {konst}: KernelImages = KernelImages {{ name: {name:?}, ptx: \"\", cubins: &[] }};\n");
        }
    }
    let all: Vec<String> = KERNELS.iter().map(|n| n.to_uppercase()).collect();
    s += &format!("pub const ALL: [&KernelImages; {}] = [{}];\n", KERNELS.len(), all.iter().map(|k| format!("&{k}")).collect::<Vec<_>>().join(", "));
    fs::write(out.join("kernels.rs"), s).unwrap();
}

#[derive(Clone, Copy)]
enum Target {
    /// PTX for a virtual architecture (compute_XX).
    Ptx(u32),
    /// SASS for a real one (sm_XX).
    Cubin(u32),
    /// Both, for the same XX.
    PtxAndCubin(u32),
}

/// What one compile produced: the target's PTX and/or cubin.
struct Images {
    ptx: Option<Vec<u8>>,
    cubin: Option<Vec<u8>>,
}

enum Compiler {
    Nvcc(PathBuf),
    Nvrtc { lib: PathBuf, includes: Vec<PathBuf> },
}

impl Compiler {
    fn describe(&self) -> String {
        match self {
            Compiler::Nvcc(p) => format!("nvcc ({})", p.display()),
            Compiler::Nvrtc { lib, .. } => format!("NVRTC ({})", lib.display()),
        }
    }

    /// Compiles an empty kernel: tells a compiler that does not work here from a broken kernel.
    fn self_test(&self, out: &Path) -> Result<(), String> {
        let dir = out.join("self_test");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let src = dir.join("empty.cu");
        fs::write(&src, "extern \"C\" __global__ void empty() {}\n").map_err(|e| e.to_string())?;
        self.compile(&src, &dir, &Target::Ptx(DEFAULT_PTX_ARCH)).map(drop).map_err(|log| log.lines().take(6).collect::<Vec<_>>().join(" / "))
    }

    fn compile(&self, src: &Path, include_dir: &Path, target: &Target) -> Result<Images, String> {
        match (self, *target) {
            // nvcc makes one output per call.
            (Compiler::Nvcc(_), Target::PtxAndCubin(a)) => Ok(Images {
                ptx: self.compile(src, include_dir, &Target::Ptx(a))?.ptx,
                cubin: self.compile(src, include_dir, &Target::Cubin(a))?.cubin,
            }),
            (Compiler::Nvcc(nvcc), _) => {
                let (mode, arch, ext) = match *target {
                    Target::Ptx(a) => ("-ptx", format!("-arch=compute_{a}"), format!("compute_{a}.ptx")),
                    Target::Cubin(a) | Target::PtxAndCubin(a) => ("-cubin", format!("-arch=sm_{a}"), format!("sm_{a}.cubin")),
                };
                // One temp file per source and target: compiles run in parallel.
                let stem = src.file_stem().unwrap_or_default().to_string_lossy();
                let tmp = PathBuf::from(env::var("OUT_DIR").unwrap()).join(format!("nvcc_tmp.{stem}.{ext}"));
                let mut cmd = Command::new(nvcc);
                cmd.args([mode, &arch, "-std=c++17", "-lineinfo", "-I"]).arg(include_dir).arg("-o").arg(&tmp).arg(src);
                if let Some(ccbin) = env::var_os("NVCC_CCBIN") {
                    cmd.arg("-ccbin").arg(ccbin);
                }
                let o = cmd.output().map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
                if !o.status.success() {
                    return Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
                }
                let image = fs::read(&tmp).map_err(|e| e.to_string())?;
                Ok(match *target {
                    Target::Ptx(_) => Images { ptx: Some(image), cubin: None },
                    _ => Images { ptx: None, cubin: Some(image) },
                })
            }
            (Compiler::Nvrtc { lib, includes }, _) => {
                let arch = match *target {
                    Target::Ptx(a) => format!("--gpu-architecture=compute_{a}"),
                    Target::Cubin(a) | Target::PtxAndCubin(a) => format!("--gpu-architecture=sm_{a}"),
                };
                let mut opts = vec![arch, "--std=c++17".into(), "-lineinfo".into(), format!("-I{}", include_dir.display())];
                opts.extend(includes.iter().map(|inc| format!("-I{}", inc.display())));
                nvrtc_compile(lib, src, &opts, !matches!(target, Target::Cubin(_)), !matches!(target, Target::Ptx(_)))
            }
        }
    }
}

/// Every compiler found, in order of preference. Emits rerun-if-changed for each one found, so
/// a tool that changes or goes away re-runs this script.
fn find_compilers(tools_dir: &Path) -> Vec<Compiler> {
    let mut found = Vec::new();
    // nvcc first: a full toolkit knows its own headers.
    let mut nvcc_candidates = Vec::new();
    for v in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(v) {
            nvcc_candidates.push(PathBuf::from(p).join("bin/nvcc"));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        nvcc_candidates.extend(env::split_paths(&path).map(|p| p.join("nvcc")));
    }
    nvcc_candidates.push("/usr/local/cuda/bin/nvcc".into());
    if let Some(nvcc) = nvcc_candidates.into_iter().find(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", nvcc.display());
        found.push(Compiler::Nvcc(nvcc));
    }

    // NVRTC: an explicit library, then folders holding nvidia/cuda_nvrtc (pip wheels).
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(w) = env::var_os("NEURAL_STYLE_CUDA_WHEELS") {
        roots.extend(env::split_paths(&w));
    }
    roots.push(tools_dir.to_path_buf());
    roots.extend(python_site_packages());
    let mut lib = env::var_os("NVRTC_LIB").map(PathBuf::from).filter(|p| p.is_file());
    let mut includes: Vec<PathBuf> = env::var_os("CUDA_INCLUDE").map(|v| env::split_paths(&v).collect()).unwrap_or_default();
    for root in &roots {
        // Accept either site-packages or site-packages/nvidia.
        for base in [root.join("nvidia"), root.clone()] {
            let l = base.join("cuda_nvrtc/lib/libnvrtc.so.12");
            if lib.is_none() && l.is_file() {
                lib = Some(l);
            }
            for inc in [base.join("cuda_runtime/include"), base.join("cuda_nvcc/include")] {
                if inc.is_dir() && !includes.contains(&inc) {
                    includes.push(inc);
                }
            }
        }
    }
    for cuda in ["/usr/local/cuda", "/opt/cuda"] {
        let l = Path::new(cuda).join("lib64/libnvrtc.so");
        if lib.is_none() && l.is_file() {
            lib = Some(l);
        }
        let inc = Path::new(cuda).join("include");
        if inc.is_dir() && !includes.contains(&inc) {
            includes.push(inc);
        }
    }
    if let Some(lib) = lib {
        println!("cargo:rerun-if-changed={}", lib.display());
        found.push(Compiler::Nvrtc { lib, includes });
    }
    found
}

/// site-packages folders of the python3 (or python) on PATH, without running pip.
fn python_site_packages() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for py in ["python3", "python"] {
        let Ok(o) = Command::new(py)
            .args(["-c", "import site,sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"])
            .output()
        else {
            continue;
        };
        if o.status.success() {
            out.extend(String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).filter(|p| p.is_dir()));
            break;
        }
    }
    out
}

// ---- a minimal NVRTC binding, loaded at build time from an explicit path ------------------------

type NvrtcProgram = *mut std::ffi::c_void;
type CreateFn = unsafe extern "C" fn(*mut NvrtcProgram, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> c_int;
type CompileFn = unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(NvrtcProgram, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut NvrtcProgram) -> c_int;

/// Compiles one file; returns its PTX (NUL dropped) with `want_ptx` and its SASS image with
/// `want_cubin` (which needs a real architecture, sm_XX, in `opts`).
fn nvrtc_compile(lib_path: &Path, src_path: &Path, opts: &[String], want_ptx: bool, want_cubin: bool) -> Result<Images, String> {
    let src = fs::read_to_string(src_path).map_err(|e| format!("{}: {e}", src_path.display()))?;
    unsafe {
        let lib = libloading::Library::new(lib_path).map_err(|e| format!("cannot load {}: {e}", lib_path.display()))?;
        let sym = |name: &[u8]| -> Result<*const (), String> {
            lib.get::<*const ()>(name).map(|s| *s).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(name)))
        };
        let create: CreateFn = std::mem::transmute(sym(b"nvrtcCreateProgram")?);
        let compile: CompileFn = std::mem::transmute(sym(b"nvrtcCompileProgram")?);
        let log_size: SizeFn = std::mem::transmute(sym(b"nvrtcGetProgramLogSize")?);
        let get_log: GetFn = std::mem::transmute(sym(b"nvrtcGetProgramLog")?);
        let ptx_fns: (SizeFn, GetFn) = (std::mem::transmute(sym(b"nvrtcGetPTXSize")?), std::mem::transmute(sym(b"nvrtcGetPTX")?));
        let cubin_fns: (SizeFn, GetFn) = (std::mem::transmute(sym(b"nvrtcGetCUBINSize")?), std::mem::transmute(sym(b"nvrtcGetCUBIN")?));
        let destroy: DestroyFn = std::mem::transmute(sym(b"nvrtcDestroyProgram")?);

        let c_src = CString::new(src).unwrap();
        let c_name = CString::new(src_path.file_name().unwrap().to_string_lossy().as_bytes()).unwrap();
        let mut prog: NvrtcProgram = std::ptr::null_mut();
        let rc = create(&mut prog, c_src.as_ptr(), c_name.as_ptr(), 0, std::ptr::null(), std::ptr::null());
        if rc != 0 {
            return Err(format!("nvrtcCreateProgram failed ({rc})"));
        }
        let c_opts: Vec<CString> = opts.iter().map(|o| CString::new(o.as_str()).unwrap()).collect();
        let p_opts: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
        let rc = compile(prog, p_opts.len() as c_int, p_opts.as_ptr());
        let mut n = 0usize;
        log_size(prog, &mut n);
        let mut log = vec![0 as c_char; n.max(1)];
        get_log(prog, log.as_mut_ptr());
        let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
        if rc != 0 {
            destroy(&mut prog);
            return Err(format!("options: {}\n{log}", opts.join(" ")));
        }
        let fetch = |(size, get): (SizeFn, GetFn), what: &str| -> Result<Vec<u8>, String> {
            let mut n = 0usize;
            size(prog, &mut n);
            let mut image = vec![0u8; n.max(1)];
            match get(prog, image.as_mut_ptr() as *mut c_char) {
                0 => Ok(image),
                rc => Err(format!("NVRTC could not return the {what} ({rc})")),
            }
        };
        let ptx = if want_ptx { Some(fetch(ptx_fns, "PTX")) } else { None };
        let cubin = if want_cubin { Some(fetch(cubin_fns, "cubin")) } else { None };
        destroy(&mut prog);
        let mut ptx = ptx.transpose()?;
        let cubin = cubin.transpose()?;
        if let Some(ptx) = &mut ptx {
            // The PTX is a NUL-terminated string.
            let end = ptx.iter().position(|&b| b == 0).unwrap_or(ptx.len());
            ptx.truncate(end);
            // The compiler's warnings, once per kernel file (the cubin-only compiles repeat them).
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                println!("cargo:warning={}: {line}", src_path.file_name().unwrap().to_string_lossy());
            }
        }
        Ok(Images { ptx, cubin })
    }
}
