//! CUDA backend (placeholder until the kernels land): reports that it is unavailable.

use crate::backend::Precision;
use anyhow::{bail, Result};

/// Why the GPU cannot be used here, or Ok if it can.
pub fn probe() -> Result<()> {
    bail!("this build has no CUDA backend yet")
}

pub struct CudaBackend;

impl CudaBackend {
    pub fn new(_ordinal: usize, _precision: Precision) -> Result<Self> {
        probe()?;
        Ok(CudaBackend)
    }
}
