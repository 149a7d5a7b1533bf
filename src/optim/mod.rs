//! Optimisers over backend vector ops: the image stays on the device; only scalars cross.

pub mod adam;
pub mod lbfgs;

pub use adam::Adam;
pub use lbfgs::Lbfgs;
