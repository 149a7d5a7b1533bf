//! The integration tests, as one test binary (`cargo test --test it`): one linked
//! binary instead of one per file, which is most of the test command's build time on 2 cores.
//! Each file is a module, so a test shows as `<file>::<test>`; select one file with
//! `cargo test --test it <file>::` (e.g. `resume::`).
//!
//! Tests that need a process of their own stay separate binaries at tests/*.rs:
//! - tests/promises.rs sets and removes environment variables (HOME, TORCH_HOME,
//!   XDG_CACHE_HOME, NEURAL_STYLE_MODEL) for the model discovery order; in a shared process
//!   they would reach the other tests' children and `std::env` readers.
//! - tests/cuda_parity.rs selects the CUDA driver once for its whole process (the emulated
//!   stand-in where no libcuda is installed, loaded into the process), which
//!   `cuda_emulated_driver::the_stand_in_is_not_loaded_unless_asked_for` checks is not done
//!   here; scripts/gpu_pack.sh and .ci/cuda_checks.sh also build and ship it alone.
//!
//! Everything here runs the `neural-style` binary or the library in-process without touching
//! process-wide state: the CLI tests give each child its environment and working directory,
//! the address-space limits (`ulimit -v`) and signals apply to children only, and the CUDA
//! driver is selected only in children (`cuda_emulated_driver` runs its cases as children of
//! this binary).

mod common;

mod bounded;
mod browser;
mod cli;
mod cpu_bf16;
mod cpu_ops;
mod cuda_emulated_cli;
mod cuda_emulated_driver;
mod figures;
mod from_png_records;
mod fuzz_corpus;
mod gatys_objective;
mod golden;
mod hostile_inputs;
mod interrupt;
mod k8s_manifest;
mod keras_objective;
mod lbfgs_edges;
mod lbfgs_golden;
mod model_files;
mod multiscale;
mod objective_details;
mod objective_gradient;
mod objective_options;
mod objective_reuse;
mod resume;
mod serve;
mod serve_multi;
mod snapshots;
mod slurm;
mod winograd;
