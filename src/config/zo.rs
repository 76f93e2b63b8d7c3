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
    /// Skip featurizing and embedding a perturbed query whose molecule equals the
    /// base molecule (its difference is exactly zero). Off only for benchmarks.
    #[serde(default = "default_true")]
    pub skip_unchanged: bool,
    /// Featurization cache entries per rank (by canonical SMILES; 0 disables).
    #[serde(default = "default_cache")]
    pub cache_size: usize,
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
        let mut d = f.debug_struct("ZoConfig");
        d.field("estimator", &self.estimator)
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
            .field("init_mpnn", &self.init_mpnn);
        // Only where it acts, so that other configs keep their stage keys.
        if self.estimator == crate::zo::estimator::Estimator::Score {
            d.field("temperature", &self.temperature);
        }
        d.finish()
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
            skip_unchanged: true,
            cache_size: default_cache(),
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
        existing(path, "zo.init_jtvae", self.init_jtvae.as_ref())?;
        existing(path, "zo.init_mpnn", self.init_mpnn.as_ref())
    }
}

fn default_estimator() -> crate::zo::estimator::Estimator {
    crate::zo::estimator::Estimator::Forward
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
    }
}
