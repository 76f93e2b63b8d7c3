//! `[train]`: the stages to run (`Stage`), the optimizer and schedule settings,
//! the per-stage overrides (`[train.<stage>]`), with their own checks.
use crate::config::error::{at_least_1, ConfigError};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// First-order (Stage 1) training of the JT-VAE on the junction trees of the
    /// training molecules (needs a `[jtvae]` section).
    Jtvae,
    /// First-order (Stage 1) training of the MPNN on the featurized data set.
    Mpnn,
    /// Stage 2: end to end through the decoder and the black box, the latent
    /// gradient estimated by zeroth-order differences (needs `[jtvae]`; starts
    /// from the Stage-1 checkpoints).
    Zo,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Jtvae, Stage::Mpnn, Stage::Zo];

    /// The name in configs, on the command line and as the stage's sub-folder.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Jtvae => "jtvae",
            Stage::Mpnn => "mpnn",
            Stage::Zo => "zo",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Training settings of one stage that override `[train]` (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTrain {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub lr_decay: Option<LrDecay>,
    pub clip_norm: Option<f64>,
    pub checkpoint_every: Option<usize>,
    pub log_every: Option<usize>,
    pub max_steps: Option<usize>,
    pub eval_batch_size: Option<usize>,
    pub micro_batch: Option<usize>,
    pub eval_every: Option<usize>,
    pub eval_every_steps: Option<usize>,
}

/// `lr_decay = { factor = 0.9, every = 40000 }`: the rate is multiplied by
/// `factor` after every `every` steps (fast_jtnn's schedule).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LrDecay {
    pub factor: f64,
    pub every: usize,
}

impl LrDecay {
    /// The learning rate of step `step` (0-based) from the base rate `lr`.
    pub fn rate(&self, lr: f64, step: usize) -> f64 {
        lr * self
            .factor
            .powi(i32::try_from(step / self.every).unwrap_or(i32::MAX))
    }

    fn check(&self, path: &Path, key: &str) -> Result<(), ConfigError> {
        if !(self.factor > 0.0 && self.factor <= 1.0) {
            return Err(ConfigError::value(
                path,
                &format!("{key}.factor"),
                "must be in (0, 1]",
            ));
        }
        if self.every < 1 {
            return Err(ConfigError::value(
                path,
                &format!("{key}.every"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DevicePref {
    /// CUDA (node-local rank mod GPU count) when available, else CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// One stage to train (older configs); use `stages` for the pipeline.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// The stages `zo-hpc train` runs, in order, each in `<out_dir>/<stage>/`
    /// (the paper's pipeline: ["jtvae", "mpnn", "zo"]). Default: ["mpnn"].
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
    /// Per-stage overrides of the settings below: `[train.jtvae]`, `[train.mpnn]`, `[train.zo]`.
    #[serde(default)]
    pub jtvae: Option<StageTrain>,
    #[serde(default)]
    pub mpnn: Option<StageTrain>,
    #[serde(default)]
    pub zo: Option<StageTrain>,
    pub epochs: usize,
    /// Global batch size (summed over ranks).
    pub batch_size: usize,
    pub lr: f64,
    /// Step decay of the learning rate (default: constant).
    #[serde(default)]
    pub lr_decay: Option<LrDecay>,
    /// Clip the global gradient norm to this value (0 disables).
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Write a checkpoint every this many steps (and at the end).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: usize,
    /// Log a progress line every this many steps when stderr is not a terminal.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Stop after this many steps in total (for quick runs); default: all epochs.
    #[serde(default)]
    pub max_steps: Option<usize>,
    #[serde(default = "default_device")]
    pub device: DevicePref,
    /// Intra-op threads per rank; default: cores on the node / ranks on the node.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Molecules per forward pass in evaluation.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Rank-count-invariant training: each global batch is cut into fixed
    /// micro-batches of this many samples (whole micro-batches go to ranks), each
    /// micro-batch's gradient is computed on its own, and the gradients are summed
    /// in 64-bit fixed point (integer addition is associative), so the trained
    /// parameters are bitwise the same for any number of ranks (CPU, same intra-op
    /// threads per rank). Default: off (one float32 allreduce of per-rank sums).
    #[serde(default)]
    pub micro_batch: Option<usize>,
    /// Evaluate every this many epochs (and after the first and the last); the
    /// epochs between hold NaN in metrics.h5. Evaluation never changes training.
    #[serde(default = "d1usize")]
    pub eval_every: usize,
    /// Also evaluate every this many steps, whatever the epoch (a MOSES epoch of
    /// the JT-VAE is 15 hours): rows of `/eval` in metrics.h5. Default: off.
    #[serde(default)]
    pub eval_every_steps: Option<usize>,
}

impl TrainConfig {
    /// The stages `train` runs, in order.
    pub fn stages(&self) -> Vec<Stage> {
        match (&self.stages, self.stage) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => vec![s],
            (None, None) => vec![Stage::Mpnn],
        }
    }

    /// Counts at least 1, `stage` or `stages` (not both, not empty), the per-stage
    /// overrides in range, a positive rate and clip >= 0. `path` is the config file
    /// (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        for (key, v) in [
            ("train.epochs", self.epochs),
            ("train.batch_size", self.batch_size),
            ("train.checkpoint_every", self.checkpoint_every),
            ("train.log_every", self.log_every),
            ("train.eval_batch_size", self.eval_batch_size),
            ("train.eval_every", self.eval_every),
        ] {
            at_least_1(path, key, v)?;
        }
        if let Some(d) = &self.lr_decay {
            d.check(path, "train.lr_decay")?;
        }
        for (key, v) in [
            ("train.micro_batch", self.micro_batch),
            ("train.eval_every_steps", self.eval_every_steps),
        ] {
            if v == Some(0) {
                return Err(ConfigError::value(path, key, "must be at least 1"));
            }
        }
        if self.stage.is_some() && self.stages.is_some() {
            return Err(ConfigError::value(
                path,
                "train.stage",
                "give either `stage` (one stage) or `stages` (the pipeline), not both",
            ));
        }
        if self.stages.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(ConfigError::value(
                path,
                "train.stages",
                "must name at least one stage",
            ));
        }
        for (name, o) in [
            ("jtvae", &self.jtvae),
            ("mpnn", &self.mpnn),
            ("zo", &self.zo),
        ] {
            if let Some(o) = o {
                o.check(path, name)?;
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ConfigError::value(
                path,
                "train.lr",
                "must be a positive number",
            ));
        }
        if self.clip_norm < 0.0 || !self.clip_norm.is_finite() {
            return Err(ConfigError::value(path, "train.clip_norm", "must be >= 0"));
        }
        Ok(())
    }
}

impl StageTrain {
    /// The overrides of `[train.<name>]` in range.
    fn check(&self, path: &Path, name: &str) -> Result<(), ConfigError> {
        for (key, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
            ("eval_batch_size", self.eval_batch_size),
            ("micro_batch", self.micro_batch),
            ("eval_every", self.eval_every),
            ("eval_every_steps", self.eval_every_steps),
        ] {
            if v == Some(0) {
                return Err(ConfigError::value(
                    path,
                    &format!("train.{name}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(d) = &self.lr_decay {
            d.check(path, &format!("train.{name}.lr_decay"))?;
        }
        if self.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
            return Err(ConfigError::value(
                path,
                &format!("train.{name}.lr"),
                "must be a positive number",
            ));
        }
        if self.clip_norm.is_some_and(|c| c < 0.0 || !c.is_finite()) {
            return Err(ConfigError::value(
                path,
                &format!("train.{name}.clip_norm"),
                "must be >= 0",
            ));
        }
        Ok(())
    }
}

fn d1usize() -> usize {
    1
}
fn default_clip() -> f64 {
    10.0
}
fn default_ckpt() -> usize {
    100
}
fn default_log_every() -> usize {
    20
}
fn default_device() -> DevicePref {
    DevicePref::Auto
}
fn default_eval_batch() -> usize {
    256
}

#[cfg(test)]
mod tests {
    use super::LrDecay;

    #[test]
    fn the_rate_falls_by_its_factor_every_n_steps() {
        let d = LrDecay {
            factor: 0.5,
            every: 3,
        };
        let r: Vec<f64> = (0..7).map(|s| d.rate(1.0, s)).collect();
        assert_eq!(r, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
    }
}
