//! Training loops and what they share: the device choice, the parameter list with
//! its flat gradient buffer, the Adam optimizer whose state can be checkpointed,
//! and the MPNN stage (first-order, data-parallel).
pub mod adam;
pub mod device;
pub mod mpnn_stage;
pub mod params;

/// Command-line options that change how a run proceeds (not what it computes).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `<out_dir>/checkpoint.h5`.
    pub resume: bool,
    /// Exit abruptly (no final checkpoint) after this global step: simulates a crash.
    pub abort_after_step: Option<usize>,
}
