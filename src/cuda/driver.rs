//! Which CUDA driver library this process talks to: the system's libcuda (the default), or the
//! emulated stand-in that build.rs builds from tests/cuda_driver_emu/ (C++ over kernels/*.cu and
//! the CPU emulation of CUDA in tests/kernel_emu/include/), chosen with
//! `NEURAL_STYLE_CUDA_DRIVER`:
//!   - unset, empty or `system`: the system's libcuda.so, as cudarc finds it;
//!   - `emulated`: the stand-in this binary was built with (its path is fixed at build time);
//!   - a path: a stand-in built elsewhere (it must be one: it must export
//!     `neural_style_emulated_driver`).
//!
//! How: the stand-in's SONAME is `libcuda.so`, the first name cudarc's loader asks `dlopen` for;
//! once the stand-in is loaded (RTLD_GLOBAL, never unloaded) that `dlopen` returns it. So the
//! choice must be made before cudarc's first call, which is why every entry point of the CUDA
//! backend calls `select` first. The stand-in runs every kernel on the CPU: its timings mean
//! nothing.

use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable that chooses the driver.
pub const ENV: &str = "NEURAL_STYLE_CUDA_DRIVER";

/// The stand-in build.rs built (absent when it could not: no kernels or no C++ compiler).
pub const EMULATED_DRIVER_PATH: Option<&str> = option_env!("NEURAL_STYLE_EMULATED_DRIVER");

/// What the stand-in exports and a real libcuda does not.
const MARKER: &[u8] = b"neural_style_emulated_driver";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// The system's libcuda.
    System,
    /// The emulated stand-in at this path.
    Emulated(PathBuf),
}

impl DriverChoice {
    /// The value of NEURAL_STYLE_CUDA_DRIVER.
    pub fn parse(value: Option<&str>) -> Result<DriverChoice> {
        match value.map(str::trim) {
            None | Some("") | Some("system") => Ok(DriverChoice::System),
            Some("emulated") => match EMULATED_DRIVER_PATH {
                Some(p) => Ok(DriverChoice::Emulated(PathBuf::from(p))),
                None => bail!(
                    "{ENV}=emulated, but this binary was built without the emulated CUDA driver (it needs the CUDA kernels and a C++ \
                     compiler at build time; see docs/GPU.md)"
                ),
            },
            Some(path) => Ok(DriverChoice::Emulated(PathBuf::from(path))),
        }
    }

    /// The emulated stand-in where the system has no libcuda (and the stand-in was built), the
    /// system's libcuda otherwise; NEURAL_STYLE_CUDA_DRIVER, when set, decides instead. For tests
    /// that must run on the real driver where there is one and on the stand-in elsewhere.
    pub fn emulated_unless_a_driver_is_installed() -> Result<DriverChoice> {
        if let Some(v) = std::env::var_os(ENV) {
            return DriverChoice::parse(Some(&v.to_string_lossy()));
        }
        // SAFETY: dlopen of the names cudarc would try; each handle is closed again.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return Ok(DriverChoice::System);
        }
        Ok(EMULATED_DRIVER_PATH.map_or(DriverChoice::System, |p| DriverChoice::Emulated(PathBuf::from(p))))
    }
}

static SELECTED: OnceLock<Result<DriverChoice, String>> = OnceLock::new();

/// Makes the choice of NEURAL_STYLE_CUDA_DRIVER, once per process (later calls return the first
/// outcome). Must run before cudarc's first call.
pub fn select() -> Result<&'static DriverChoice> {
    select_with(|| DriverChoice::parse(std::env::var(ENV).ok().as_deref()))
}

/// `select` with the choice made by `choose` (called only by the first caller).
pub fn select_with(choose: impl FnOnce() -> Result<DriverChoice>) -> Result<&'static DriverChoice> {
    SELECTED
        .get_or_init(|| {
            let choice = choose().map_err(|e| format!("{e:#}"))?;
            if let DriverChoice::Emulated(path) = &choice {
                load(path).map_err(|e| format!("{e:#}"))?;
            }
            Ok(choice)
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Whether this process runs on the emulated driver (false before `select`).
pub fn is_emulated() -> bool {
    matches!(SELECTED.get(), Some(Ok(DriverChoice::Emulated(_))))
}

/// What the program's first line and `--log-json` say of the driver, when it is the stand-in.
pub fn emulated_note() -> Option<String> {
    match SELECTED.get() {
        Some(Ok(DriverChoice::Emulated(p))) => {
            Some(format!("emulated CUDA driver ({}): kernels run on the CPU, timings mean nothing", p.display()))
        }
        _ => None,
    }
}

fn load(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{ENV}: the emulated CUDA driver {} cannot be read: {e}", path.display()))?;
    if !meta.is_file() {
        bail!("{ENV}: {} is not a file", path.display());
    }
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: the stand-in's initialisers only set up its own statics.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        // (libloading's message is "dlopen failed"; dlerror's text is its source, kept by `context`.)
        .map_err(|e| anyhow::Error::new(e).context(format!("{ENV}: loading the emulated CUDA driver {} failed", path.display())))?;
    // SAFETY: only the symbol's presence is checked; it is not called.
    if unsafe { lib.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(MARKER) }.is_err() {
        bail!("{ENV}: {} is not the neural-style emulated CUDA driver (it lacks neural_style_emulated_driver)", path.display());
    }
    // Never unloaded: cudarc's dlopen("libcuda.so") must keep finding it.
    std::mem::forget(lib);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_parses() {
        assert_eq!(DriverChoice::parse(None).unwrap(), DriverChoice::System);
        assert_eq!(DriverChoice::parse(Some("")).unwrap(), DriverChoice::System);
        assert_eq!(DriverChoice::parse(Some(" system ")).unwrap(), DriverChoice::System);
        assert_eq!(DriverChoice::parse(Some("/x/libcuda.so")).unwrap(), DriverChoice::Emulated("/x/libcuda.so".into()));
        match EMULATED_DRIVER_PATH {
            Some(p) => assert_eq!(DriverChoice::parse(Some("emulated")).unwrap(), DriverChoice::Emulated(p.into())),
            None => assert!(DriverChoice::parse(Some("emulated")).unwrap_err().to_string().contains("built without")),
        }
    }

    #[test]
    fn a_library_that_is_not_the_stand_in_is_refused() {
        for bad in ["/nonexistent/libcuda.so", "/", "/etc/hostname"] {
            let err = load(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(ENV), "{bad}: {err}");
        }
        // A real shared library without the marker.
        if let Some(libc) = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"].into_iter().find(|p| Path::new(p).exists()) {
            let err = load(Path::new(libc)).unwrap_err().to_string();
            assert!(err.contains("not the neural-style emulated CUDA driver"), "{err}");
        }
    }
}
