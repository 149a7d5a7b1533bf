//! The emulated CUDA driver (tests/cuda_driver_emu) enforces what a real driver and GPU enforce,
//! so that the host mistakes a first GPU run would meet fail here first: each test makes one
//! mistake through cudarc, as src/cuda/ could, and checks the driver's answer. A kernel fault is
//! sticky for the whole process, as on a GPU, so every case runs in a child process of this
//! test binary (`child_scenario`, selected by NS_EMU_SCENARIO), always on the emulated driver.
//! Where the stand-in was not built (no kernels or no C++ compiler), each test writes
//! "SKIPPED cuda_emulated_driver::<test>: <why>" to stderr and passes, unless
//! NEURAL_STYLE_REQUIRE_KERNELS is set.

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use neural_style::cuda::{self, driver, kernels};
use std::process::Command;
use std::sync::Arc;

const SCENARIO: &str = "NS_EMU_SCENARIO";

/// Runs scenario `name` in a child process on the emulated driver, with `env` added; returns
/// (whether it exited 0, its stdout and stderr). None (after saying so) when the stand-in is absent.
fn run_child(name: &str, env: &[(&str, &str)]) -> Option<(bool, String)> {
    if driver::EMULATED_DRIVER_PATH.is_none() || !cuda::KERNELS_BUILT {
        assert!(std::env::var_os("NEURAL_STYLE_REQUIRE_KERNELS").is_none(), "NEURAL_STYLE_REQUIRE_KERNELS is set but the emulated driver was not built");
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED cuda_emulated_driver::{name}: the emulated CUDA driver was not built");
        return None;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", &child_scenario_name(), "--nocapture", "--test-threads=1"]).env(SCENARIO, name).env(driver::ENV, "emulated");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running this test binary as a child");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

/// Runs scenario `name` and expects it to succeed (its own asserts passed).
fn scenario(name: &str, env: &[(&str, &str)]) -> Option<String> {
    let (ok, text) = run_child(name, env)?;
    assert!(ok, "scenario {name} failed:\n{text}");
    assert!(text.contains(&format!("scenario {name} done")), "scenario {name} did not run:\n{text}");
    Some(text)
}

/// `child_scenario`'s name in this test binary, as `--exact` wants it: its module path without
/// the crate's name (`cuda_emulated_driver::child_scenario` in tests/it, the merged binary).
fn child_scenario_name() -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::child_scenario"),
        None => "child_scenario".to_string(),
    }
}

/// The entry point of the child processes; in the parent (no NS_EMU_SCENARIO) it has nothing to do.
#[test]
fn child_scenario() {
    let Ok(name) = std::env::var(SCENARIO) else { return };
    driver::select().expect("selecting the emulated driver");
    assert!(driver::is_emulated());
    let gpu = Gpu::new();
    match name.as_str() {
        "write_past_the_end" => write_past_the_end(&gpu),
        "write_into_the_slack" => write_into_the_slack(&gpu),
        "read_past_the_end" => read_past_the_end(&gpu),
        "use_after_free" => use_after_free(&gpu),
        "misaligned_pointer" => misaligned_pointer(&gpu),
        "swapped_arguments" => swapped_arguments(&gpu),
        "launch_limits" => launch_limits(&gpu),
        "shared_memory_opt_in" => shared_memory_opt_in(&gpu),
        "images_and_names" => images_and_names(&gpu),
        "out_of_memory" => out_of_memory(&gpu),
        other => panic!("no scenario {other}"),
    }
    println!("scenario {name} done");
}

struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl Gpu {
    fn new() -> Self {
        let ctx = CudaContext::new(0).expect("a context on the emulated device");
        let stream = ctx.default_stream();
        Gpu { ctx, stream }
    }

    /// Kernel `name` of `images`, from the cubin for this device (sm_90).
    fn function(&self, images: &kernels::KernelImages, name: &str) -> CudaFunction {
        let cubin = images.cubins.iter().find(|(a, _)| *a == 90).expect("an sm_90 cubin").1;
        let m = self.ctx.load_module(Ptx::from_binary(cubin.to_vec())).expect("loading the cubin");
        m.load_function(name).expect("the kernel is in its image")
    }

    fn buffer(&self, n: usize) -> CudaSlice<f32> {
        self.stream.clone_htod(&vec![1.0f32; n]).unwrap()
    }

    fn ptr(&self, b: &CudaSlice<f32>) -> u64 {
        b.device_ptr(&self.stream).0
    }
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// The launch succeeds, the fault comes from the next synchronising call, and then stays.
fn expect_fault_at_sync(gpu: &Gpu, launch: impl FnOnce() -> Result<(), cudarc::driver::DriverError>, code: &str, detail: &str) {
    launch().expect("a launch that faults while running returns success, as on a GPU");
    let err = gpu.stream.synchronize().expect_err("the fault must surface at the synchronisation").to_string();
    assert!(err.contains(code) && err.contains(detail), "{err}");
    let again = gpu.stream.clone_htod(&[1.0f32]).expect_err("the fault is sticky").to_string();
    assert!(again.contains(code), "{again}");
    println!("reported: {err}");
}

// fill(x, n, value) with n one past x's 64 floats: the write lands in the guard page.
fn write_past_the_end(gpu: &Gpu) {
    let f = gpu.function(&kernels::VECTOR, "fill");
    let mut x = gpu.buffer(64);
    let n = 65i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&mut x).arg(&n).arg(&0.5f32);
            unsafe { l.launch(grid(65)) }.map(|_| ())
        },
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "0 bytes past the end of an allocation of 256 bytes",
    );
}

// A buffer of 63 floats ends 4 bytes before its 16-byte-aligned end: a write there is caught by
// the canary after the launch.
fn write_into_the_slack(gpu: &Gpu) {
    let f = gpu.function(&kernels::VECTOR, "fill");
    let mut x = gpu.buffer(63);
    let n = 64i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&mut x).arg(&n).arg(&0.5f32);
            unsafe { l.launch(grid(64)) }.map(|_| ())
        },
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "wrote past the end of an allocation of 252 bytes",
    );
}

// relu_bwd(y, dy, n) with y shorter than n: the read of y[64] faults.
fn read_past_the_end(gpu: &Gpu) {
    let f = gpu.function(&kernels::RELU, "relu_bwd");
    let y = gpu.buffer(64);
    let mut dy = gpu.buffer(128);
    let n = 128i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&y).arg(&mut dy).arg(&n);
            unsafe { l.launch(grid(128)) }.map(|_| ())
        },
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "past the end of an allocation of 256 bytes",
    );
}

// A pointer kept after its buffer was freed.
fn use_after_free(gpu: &Gpu) {
    let f = gpu.function(&kernels::VECTOR, "fill");
    let x = gpu.buffer(64);
    let p = gpu.ptr(&x);
    drop(x);
    gpu.stream.synchronize().unwrap();
    let n = 64i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&p).arg(&n).arg(&0.5f32);
            unsafe { l.launch(grid(64)) }.map(|_| ())
        },
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "a freed allocation",
    );
}

// A float* two bytes into a buffer.
fn misaligned_pointer(gpu: &Gpu) {
    let f = gpu.function(&kernels::VECTOR, "fill");
    let x = gpu.buffer(64);
    let p = gpu.ptr(&x) + 2;
    let n = 8i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&p).arg(&n).arg(&0.5f32);
            unsafe { l.launch(grid(8)) }.map(|_| ())
        },
        "CUDA_ERROR_MISALIGNED_ADDRESS",
        "not 4-byte aligned",
    );
}

// relu_bwd's arguments pushed as (y, n, dy): the int's 4 bytes and 4 more read as a pointer.
fn swapped_arguments(gpu: &Gpu) {
    let f = gpu.function(&kernels::RELU, "relu_bwd");
    let y = gpu.buffer(64);
    let mut dy = gpu.buffer(64);
    let n = 64i32;
    expect_fault_at_sync(
        gpu,
        || {
            let mut l = gpu.stream.launch_builder(&f);
            l.arg(&y).arg(&n).arg(&mut dy);
            unsafe { l.launch(grid(64)) }.map(|_| ())
        },
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "pointer parameter 1",
    );
}

// Launch configurations a GPU refuses fail at the launch, and leave the context usable.
fn launch_limits(gpu: &Gpu) {
    let fill = gpu.function(&kernels::VECTOR, "fill");
    let conv = gpu.function(&kernels::CONV3X3, "conv3x3_fwd_fp32");
    let mut x = gpu.buffer(4096);
    let n = 4096i32;
    let try_fill = |cfg: LaunchConfig, x: &mut CudaSlice<f32>| {
        let mut l = gpu.stream.launch_builder(&fill);
        l.arg(x).arg(&n).arg(&0.5f32);
        unsafe { l.launch(cfg) }.map(|_| ())
    };
    let refused = |cfg: LaunchConfig, x: &mut CudaSlice<f32>, what: &str| {
        let err = try_fill(cfg, x).expect_err(what).to_string();
        assert!(err.contains("CUDA_ERROR_INVALID_VALUE"), "{what}: {err}");
    };
    refused(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1025, 1, 1), shared_mem_bytes: 0 }, &mut x, "1025 threads");
    refused(LaunchConfig { grid_dim: (1, 65536, 1), block_dim: (64, 1, 1), shared_mem_bytes: 0 }, &mut x, "grid y 65536");
    refused(LaunchConfig { grid_dim: (0, 1, 1), block_dim: (64, 1, 1), shared_mem_bytes: 0 }, &mut x, "an empty grid");
    refused(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (64, 1, 1), shared_mem_bytes: 48 * 1024 + 4 }, &mut x, "48 KiB + 4 of shared memory");
    // conv3x3_fwd_fp32 is built with __launch_bounds__(128).
    let (xb, w, b, mut y) = (gpu.buffer(16), gpu.buffer(9 * 16), gpu.buffer(4), gpu.buffer(16));
    let (h, wd, ci, co) = (2i32, 2i32, 4i32, 4i32);
    let mut l = gpu.stream.launch_builder(&conv);
    l.arg(&xb).arg(&w).arg(&b).arg(&mut y).arg(&h).arg(&wd).arg(&ci).arg(&co);
    let err = unsafe { l.launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }) }.expect_err("256 threads over the launch bounds").to_string();
    assert!(err.contains("CUDA_ERROR_INVALID_VALUE"), "{err}");
    // The same launches within the limits run.
    try_fill(grid(4096), &mut x).unwrap();
    assert!(gpu.stream.clone_dtoh(&x).unwrap().iter().all(|&v| v == 0.5));
}

// The mma kernels' 96 KiB of dynamic shared memory need cuFuncSetAttribute first; past the
// device's opt-in maximum (227 KiB) that call fails.
fn shared_memory_opt_in(gpu: &Gpu) {
    use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYNAMIC;
    let f = gpu.function(&kernels::CONV3X3_MMA, "conv3x3_fwd_mma_tf32");
    let (x, w, b, mut y) = (gpu.buffer(4 * 4 * 8), gpu.buffer(9 * 8 * 128), gpu.buffer(128), gpu.buffer(4 * 4 * 128));
    let (h, wd, ci, co) = (4i32, 4i32, 8i32, 128i32);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 98304 };
    let launch = |y: &mut CudaSlice<f32>| {
        let mut l = gpu.stream.launch_builder(&f);
        l.arg(&x).arg(&w).arg(&b).arg(y).arg(&h).arg(&wd).arg(&ci).arg(&co);
        unsafe { l.launch(cfg) }.map(|_| ())
    };
    let err = launch(&mut y).expect_err("96 KiB without the opt-in").to_string();
    assert!(err.contains("CUDA_ERROR_INVALID_VALUE"), "{err}");
    assert!(f.set_attribute(MAX_DYNAMIC, 232448 + 4).is_err(), "past the opt-in maximum");
    f.set_attribute(MAX_DYNAMIC, 98304).unwrap();
    launch(&mut y).unwrap();
    gpu.stream.synchronize().unwrap();
    // 8 channels of 1 x 9 taps of 1 + bias 1 = 73 at an inner pixel (tf32 rounds none of them).
    let out = gpu.stream.clone_dtoh(&y).unwrap();
    assert_eq!(out[(4 + 1) * 128], 73.0, "pixel (1, 1), channel 0");
}

// Images: a function the image lacks is NOT_FOUND; a cubin for another architecture is refused;
// the PTX loads and lists the same entry points.
fn images_and_names(gpu: &Gpu) {
    let cubin90 = kernels::VECTOR.cubins.iter().find(|(a, _)| *a == 90).unwrap().1;
    let m = gpu.ctx.load_module(Ptx::from_binary(cubin90.to_vec())).unwrap();
    let err = m.load_function("no_such_kernel").expect_err("not in the image").to_string();
    assert!(err.contains("CUDA_ERROR_NOT_FOUND"), "{err}");
    let err = m.load_function("relu_bwd").expect_err("relu_bwd is in relu.cu's image, not vector.cu's").to_string();
    assert!(err.contains("CUDA_ERROR_NOT_FOUND"), "{err}");
    let cubin80 = kernels::VECTOR.cubins.iter().find(|(a, _)| *a == 80).unwrap().1;
    let err = gpu.ctx.load_module(Ptx::from_binary(cubin80.to_vec())).expect_err("sm_80 SASS on sm_90").to_string();
    assert!(err.contains("CUDA_ERROR_NO_BINARY_FOR_GPU"), "{err}");
    let err = gpu.ctx.load_module(Ptx::from_binary(b"\x7fELF\x02 truncated".to_vec())).expect_err("a truncated image").to_string();
    assert!(err.contains("CUDA_ERROR_INVALID_IMAGE"), "{err}");
    let ptx = gpu.ctx.load_module(Ptx::from_src(kernels::VECTOR.ptx)).unwrap();
    for name in ["fill", "dot_partial", "adam_step"] {
        ptx.load_function(name).unwrap();
    }
    assert!(ptx.load_function("no_such_kernel").is_err());
}

// NEURAL_STYLE_EMU_MEMORY=64M: an allocation past it is CUDA_ERROR_OUT_OF_MEMORY, which the
// backend turns into OutOfDeviceMemory; mem_get_info reports the emulated total.
fn out_of_memory(gpu: &Gpu) {
    let (free, total) = gpu.ctx.mem_get_info().unwrap();
    assert_eq!(total, 64 << 20);
    assert!(free <= total);
    let err = gpu.stream.alloc_zeros::<f32>(20 << 20).expect_err("80 MB of 64").to_string();
    assert!(err.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{err}");
    let be = cuda::CudaBackend::new(0, neural_style::backend::Precision::Fp32).unwrap();
    let err = be.zeros(20 << 20).unwrap_err();
    assert!(err.downcast_ref::<neural_style::backend::OutOfDeviceMemory>().is_some(), "{err:#}");
    use neural_style::backend::Backend;
    let v = be.upload(&[1.0, 2.0]).unwrap();
    assert_eq!(be.dot(&v, &v).unwrap(), 5.0, "the backend works after the refusal");
}

#[test]
fn a_kernel_writing_past_its_buffer_faults_at_the_next_sync() {
    scenario("write_past_the_end", &[]);
}

#[test]
fn a_kernel_writing_into_the_alignment_slack_is_caught_by_the_canary() {
    scenario("write_into_the_slack", &[]);
}

#[test]
fn a_kernel_reading_past_its_buffer_faults() {
    scenario("read_past_the_end", &[]);
}

#[test]
fn a_freed_buffer_passed_to_a_kernel_faults() {
    scenario("use_after_free", &[]);
}

#[test]
fn a_misaligned_pointer_argument_faults() {
    scenario("misaligned_pointer", &[]);
}

#[test]
fn swapped_pointer_and_int_arguments_fault() {
    scenario("swapped_arguments", &[]);
}

#[test]
fn launches_over_the_limits_are_refused() {
    scenario("launch_limits", &[]);
}

#[test]
fn dynamic_shared_memory_over_48_kib_needs_the_opt_in() {
    scenario("shared_memory_opt_in", &[]);
}

#[test]
fn modules_hold_only_their_images_entry_points() {
    scenario("images_and_names", &[]);
}

#[test]
fn allocations_past_the_emulated_memory_are_out_of_memory() {
    scenario("out_of_memory", &[("NEURAL_STYLE_EMU_MEMORY", "64M")]);
}

/// The stand-in is loaded only when asked for: without NEURAL_STYLE_CUDA_DRIVER this process
/// (where no test selected it) has not loaded it.
#[test]
fn the_stand_in_is_not_loaded_unless_asked_for() {
    if std::env::var_os(driver::ENV).is_some() {
        return;
    }
    assert!(!driver::is_emulated());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    assert!(!maps.contains("emulated-driver/libcuda.so"), "the stand-in is mapped into a process that did not ask for it");
}
