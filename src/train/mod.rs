//! Training: the data-parallel loop every stage shares (`trainer`), the device
//! choice, the parameter list with its flat gradient buffer, the Adam optimizer
//! whose state can be checkpointed, the stages (objectives) themselves and
//! `stages`, which runs them in order; the evaluation (`zo-hpc eval`) and the
//! zeroth-order diagnostics (`zo-hpc gradcheck`, with its signal test `signal`) of the model chain.
pub mod adam;
pub mod device;
pub mod evaluate;
pub mod exact;
pub mod gradcheck;
pub mod jtvae_stage;
pub mod mpnn_stage;
pub mod objective;
pub mod params;
pub mod progress;
pub mod reduce;
pub mod signal;
mod signal_rows;
mod signal_score;
pub mod stages;
pub mod stop;
pub mod trainer;
pub mod zo_stage;

/// Command-line options that change how a run proceeds (not what it computes).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `<out_dir>/checkpoint.h5`.
    pub resume: bool,
    /// Exit abruptly (no final checkpoint) after this global step: simulates a crash.
    pub abort_after_step: Option<usize>,
    /// Stop early with a checkpoint (`--time-limit`, batch-system signals).
    pub stop: stop::Stop,
    /// `--max-steps`: this invocation stops each stage at this global step, with a
    /// checkpoint that is not complete (unless the stage ends there anyway), so
    /// that `--resume` continues it. Not a setting: not in the stage key.
    pub max_steps: Option<usize>,
}
