//! `[zo]`: Stage 2's zeroth-order settings (estimator, queries, smoothing, λ, the
//! decoder's mode, caches, where Stage 2 starts from), with their own checks. The
//! `Debug` text enters the stage key and is written by hand.
use crate::config::error::{existing, positive, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What Stage 2 does with the JT-VAE decoder (tree decoder + assembly scorer).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecoderMode {
    /// Kept as Stage 1 left it (the paper).
    Frozen,
    /// Trained: zeroth-order through the black box plus λ·∇ of the JT-VAE loss.
    Zo,
}

/// What Stage 2 does with the latent estimate ĝ (`zo.latent`): the controls of
/// issue 19 that isolate the zeroth-order term.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LatentMode {
    /// The estimator's ĝ drives the encoder (the paper).
    Estimate,
    /// No latent queries at all: Stage 2 is the re-fit alone (the control arm).
    Off,
    /// ĝ computed as usual, then replaced by a random direction of the same norm
    /// (keyed (seed, "placebo", step, gid)): the same step sizes without the signal.
    Placebo,
    /// −ĝ: the sign flipped.
    Flipped,
}

/// How a query's change of the loss δ is measured (`zo.delta`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeltaMode {
    /// a·(h_k − h), a = ∂L/∂h (first-order in h; the paper's chain rule).
    Linear,
    /// ℓ(head(h_k), y) − ℓ(head(h), y): the exact change of the sample's loss
    /// (one more head pass per changed query).
    Exact,
}

/// A group of Stage-2 parameters that `zo.freeze` can hold fixed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The JT-VAE encoder (everything of the JT-VAE but the decoder).
    Encoder,
    /// The MPNN's message passing and readout (w1).
    MpnnEmbed,
    /// The MPNN's prediction head (w2).
    MpnnHead,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoConfig {
    /// Latent estimator: "forward" (the paper; q > 1 averages q directions),
    /// "central" (antithetic pairs), "sphere" (unit-sphere directions), "coordinate"
    /// (one query per latent coordinate; q is ignored), "score" (the score function
    /// through the decoder sampled at `temperature`; q samples per molecule).
    #[serde(default = "default_estimator")]
    pub estimator: crate::zo::estimator::Estimator,
    /// Random directions per sample and step.
    #[serde(default = "d1usize")]
    pub q: usize,
    /// Smoothing parameter µ1 (the paper: 0.001); the query is z + µ·σ·u, u ~ N(0, I).
    #[serde(default = "default_mu")]
    pub mu: f64,
    /// Standard deviation σ of the direction entries.
    #[serde(default = "d1f64")]
    pub sigma: f64,
    /// Weight λ of the JT-VAE loss in Stage 2 (the paper: 1).
    #[serde(default = "d1f64")]
    pub lambda: f64,
    /// "frozen" (the paper) or "zo".
    #[serde(default = "default_decoder_mode")]
    pub decoder: DecoderMode,
    /// Directions over the decoder's parameters per step (decoder = "zo").
    #[serde(default = "d1usize")]
    pub q_decoder: usize,
    /// Smoothing µ2 for the decoder's parameters (decoder = "zo").
    #[serde(default = "default_mu")]
    pub mu_decoder: f64,
    /// Temperature τ of the stochastic decoder of estimator "score" (> 0).
    #[serde(default = "d1f64")]
    pub temperature: f64,
    /// "estimate" (default), "off" (no latent queries), "placebo" (a random
    /// direction of ĝ's norm) or "flipped" (−ĝ).
    #[serde(default = "default_latent")]
    pub latent: LatentMode,
    /// "linear" (default: a·(h_k − h)) or "exact" (the change of the sample's loss).
    #[serde(default = "default_delta")]
    pub delta: DeltaMode,
    /// Global-norm clip of the zeroth-order part of the gradient on its own, before
    /// it joins the rest (0: off, the default; `train.clip_norm` still clips all).
    #[serde(default)]
    pub clip_zo: f64,
    /// Parameter groups held fixed in Stage 2: any of "encoder", "mpnn_embed",
    /// "mpnn_head" (the decoder is governed by `decoder`).
    #[serde(default)]
    pub freeze: Vec<Group>,
    /// Adaptive radius: when set, µ is the first step's smoothing and each later
    /// step's µ is adjusted to hold this share of latent queries that flip.
    #[serde(default)]
    pub target_flip: Option<f64>,
    /// Hidden width of the control variate s: z → h (estimator = "cv").
    #[serde(default = "default_cv_hidden")]
    pub cv_hidden: usize,
    /// Skip featurizing and embedding a perturbed query whose molecule equals the
    /// base molecule (its difference is exactly zero). Off only for benchmarks.
    #[serde(default = "default_true")]
    pub skip_unchanged: bool,
    /// Featurization cache entries per rank (by canonical SMILES; 0 disables).
    #[serde(default = "default_cache")]
    pub cache_size: usize,
    /// Checks the source for determinism: molecules found in the cache are asked
    /// again and answers unlike the cached one counted (`source_differ`); the cached
    /// answer is used, so results are those without the check (not in the stage key).
    #[serde(default)]
    pub cache_check: bool,
    /// Test molecules decoded at the end of each Stage-2 epoch for the RMSE through
    /// the pipeline (0: skip).
    #[serde(default = "default_eval_limit")]
    pub eval_limit: usize,
    /// Stage-1 JT-VAE checkpoint to start from; default `<out_dir>/jtvae/checkpoint.h5`.
    #[serde(default)]
    pub init_jtvae: Option<PathBuf>,
    /// Stage-1 MPNN checkpoint to start from; default `<out_dir>/mpnn/checkpoint.h5`.
    #[serde(default)]
    pub init_mpnn: Option<PathBuf>,
    /// Folder of pretrained Stage-1 models (`jtvae.h5`, `mpnn.h5`, written by
    /// `zo-hpc export`; relative to the config file): Stage 2 starts from them when
    /// the run has no Stage-1 checkpoint of its own and no `init_*` is given.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
}

/// As derived, without `pretrained`: the stage key is built from this text, and
/// where Stage 2 actually starts is in it already (`init_*`, see `for_stage`).
impl std::fmt::Debug for ZoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoConfig")
            .field("estimator", &self.estimator)
            .field("q", &self.q)
            .field("mu", &self.mu)
            .field("sigma", &self.sigma)
            .field("lambda", &self.lambda)
            .field("decoder", &self.decoder)
            .field("q_decoder", &self.q_decoder)
            .field("mu_decoder", &self.mu_decoder)
            .field("skip_unchanged", &self.skip_unchanged)
            .field("cache_size", &self.cache_size)
            .field("eval_limit", &self.eval_limit)
            .field("init_jtvae", &self.init_jtvae)
            .field("init_mpnn", &self.init_mpnn)
            .finish()?;
        // Issue 19's settings only when set, so that the stage keys of runs made
        // before them stay the same.
        let d = ZoConfig::default();
        if self.latent != d.latent {
            write!(f, " latent {:?}", self.latent)?;
        }
        if self.delta != d.delta {
            write!(f, " delta {:?}", self.delta)?;
        }
        if self.clip_zo != d.clip_zo {
            write!(f, " clip_zo {}", self.clip_zo)?;
        }
        if !self.freeze.is_empty() {
            write!(f, " freeze {:?}", self.freeze)?;
        }
        if let Some(t) = self.target_flip {
            write!(f, " target_flip {t}")?;
        }
        if self.cv_hidden != d.cv_hidden {
            write!(f, " cv_hidden {}", self.cv_hidden)?;
        }
        // The stochastic decoder's temperature only where it acts.
        if self.estimator == crate::zo::estimator::Estimator::Score {
            write!(f, " temperature {}", self.temperature)?;
        }
        Ok(())
    }
}

impl Default for ZoConfig {
    fn default() -> Self {
        ZoConfig {
            estimator: default_estimator(),
            q: 1,
            mu: default_mu(),
            sigma: 1.0,
            lambda: 1.0,
            decoder: default_decoder_mode(),
            q_decoder: 1,
            mu_decoder: default_mu(),
            temperature: 1.0,
            latent: default_latent(),
            delta: default_delta(),
            clip_zo: 0.0,
            freeze: Vec::new(),
            target_flip: None,
            cv_hidden: default_cv_hidden(),
            skip_unchanged: true,
            cache_size: default_cache(),
            cache_check: false,
            eval_limit: default_eval_limit(),
            init_jtvae: None,
            init_mpnn: None,
            pretrained: None,
        }
    }
}

impl ZoConfig {
    /// Query counts at least 1, smoothing positive, λ >= 0, given start files
    /// present. `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if self.q == 0 {
            return Err(ConfigError::value(path, "zo.q", "must be at least 1"));
        }
        if self.q_decoder == 0 {
            return Err(ConfigError::value(
                path,
                "zo.q_decoder",
                "must be at least 1",
            ));
        }
        positive(path, "zo.mu", self.mu)?;
        positive(path, "zo.sigma", self.sigma)?;
        positive(path, "zo.mu_decoder", self.mu_decoder)?;
        positive(path, "zo.temperature", self.temperature)?;
        if !(self.lambda >= 0.0 && self.lambda.is_finite()) {
            return Err(ConfigError::value(
                path,
                "zo.lambda",
                "must be a number >= 0",
            ));
        }
        if !(self.clip_zo >= 0.0 && self.clip_zo.is_finite()) {
            return Err(ConfigError::value(path, "zo.clip_zo", "must be >= 0"));
        }
        if let Some(t) = self.target_flip {
            if !(t > 0.0 && t < 1.0) {
                return Err(ConfigError::value(
                    path,
                    "zo.target_flip",
                    "must lie strictly between 0 and 1 (a share of queries)",
                ));
            }
        }
        if self.cv_hidden == 0 {
            return Err(ConfigError::value(
                path,
                "zo.cv_hidden",
                "must be at least 1",
            ));
        }
        let score = self.estimator == crate::zo::estimator::Estimator::Score;
        if score && matches!(self.latent, LatentMode::Placebo | LatentMode::Flipped) {
            return Err(ConfigError::value(
                path,
                "zo.latent",
                "\"placebo\" and \"flipped\" act on a finite-difference estimate; estimator \"score\" takes \"estimate\" or \"off\"",
            ));
        }
        self.estimator
            .check_q(self.q)
            .map_err(|m| ConfigError::value(path, "zo.q", m))?;
        existing(path, "zo.init_jtvae", self.init_jtvae.as_ref())?;
        existing(path, "zo.init_mpnn", self.init_mpnn.as_ref())
    }
}

fn default_estimator() -> crate::zo::estimator::Estimator {
    crate::zo::estimator::Estimator::Forward
}
fn default_latent() -> LatentMode {
    LatentMode::Estimate
}
fn default_delta() -> DeltaMode {
    DeltaMode::Linear
}
fn default_cv_hidden() -> usize {
    64
}
fn d1usize() -> usize {
    1
}
fn d1f64() -> f64 {
    1.0
}
fn default_mu() -> f64 {
    1e-3
}
fn default_decoder_mode() -> DecoderMode {
    DecoderMode::Frozen
}
fn default_true() -> bool {
    true
}
fn default_cache() -> usize {
    100_000
}
fn default_eval_limit() -> usize {
    500
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::estimator::Estimator;

    #[test]
    fn temperature_is_checked_and_keys_only_the_score_estimator() {
        let path = Path::new("c.toml");
        let score = ZoConfig {
            estimator: Estimator::Score,
            q: 4,
            ..Default::default()
        };
        assert!(score.check(path).is_ok());
        for bad in [0.0, -1.0, f64::NAN] {
            let c = ZoConfig {
                temperature: bad,
                ..score.clone()
            };
            let e = c.check(path).unwrap_err().to_string();
            assert!(e.contains("zo.temperature"), "{e}");
        }
        let warm = ZoConfig {
            temperature: 0.5,
            ..score.clone()
        };
        assert_ne!(format!("{score:?}"), format!("{warm:?}"));
        let forward = ZoConfig::default();
        assert!(!format!("{forward:?}").contains("temperature"));
        let placebo = ZoConfig {
            latent: LatentMode::Placebo,
            ..score.clone()
        };
        let e = placebo.check(path).unwrap_err().to_string();
        assert!(e.contains("zo.latent"), "{e}");
    }
}
