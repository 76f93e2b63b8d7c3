//! `[jtvae]`: the JT-VAE's data (vocabulary and training CSVs), sizes, KL weight
//! and decoding bounds, with its own checks. `DEFAULT_MAX_TREE_NODES` is the
//! decoder's default tree-size bound (the decoder reads `max_tree_nodes`). The
//! `Debug` text enters the stage keys and is written by hand.
use crate::config::error::{existing, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Default largest junction tree the decoder may build (fast_jtnn: 100).
pub const DEFAULT_MAX_TREE_NODES: usize = 100;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JtvaeConfig {
    /// CSV (plain or .gz) whose SMILES the vocabulary is built over (all rows, not only
    /// the labeled split); default: `data.csv`.
    #[serde(default)]
    pub vocab_csv: Option<PathBuf>,
    /// CSV (plain or .gz) whose SMILES the JT-VAE trains on (e.g. a large unlabeled
    /// set), minus the molecules of the held-out split; default: the training split.
    #[serde(default)]
    pub train_csv: Option<PathBuf>,
    /// At most this many molecules of `train_csv` (the first in file order, after
    /// invalid, duplicate and held-out ones are dropped); default: all.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Hidden width of every JT-VAE network (paper: 450).
    #[serde(default = "d450")]
    pub hidden: i64,
    /// Latent size, split evenly into tree and graph halves (paper: 56 = 28 + 28).
    #[serde(default = "d56")]
    pub latent: i64,
    /// Message-passing iterations over the junction tree in the encoder (paper: 20).
    #[serde(default = "d20")]
    pub depth_tree: i64,
    /// Message-passing iterations over bonds in the graph encoder (paper: 3).
    #[serde(default = "d3")]
    pub depth_graph: i64,
    /// Weight of the KL term after warm-up (values above ~0.01 ruin reconstruction).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Steps over which the KL weight grows linearly from 0 to `beta` (0: constant).
    #[serde(default)]
    pub beta_warmup: usize,
    /// The reference fast_jtnn's schedule instead of the warm-up: β = 0 before step
    /// `start`, then `step` more every `every` steps, up to `beta`.
    #[serde(default)]
    pub beta_ramp: Option<BetaRamp>,
    /// At most this many candidate attachments per tree node in the assembly loss.
    #[serde(default = "default_max_candidates")]
    pub max_candidates: usize,
    /// Decoding gives up (a counted failure) beyond this many junction-tree nodes
    /// (fast_jtnn: 100). Bounds the work of one decode.
    #[serde(default = "default_max_tree_nodes")]
    pub max_tree_nodes: usize,
    /// Decode workers per rank, each decoding a contiguous part of a batch with one
    /// libtorch thread; default: the rank's share of the node's cores.
    #[serde(default)]
    pub decode_threads: Option<usize>,
    /// Held-out molecules decoded at the end of every epoch for reconstruction
    /// accuracy (0: skip).
    #[serde(default = "default_recon_samples")]
    pub recon_samples: usize,
}

/// `jtvae.beta_ramp = { start = 40000, every = 1000, step = 0.002 }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BetaRamp {
    pub start: usize,
    pub every: usize,
    pub step: f64,
}

/// Written out by hand so that `train_limit`, when not set, leaves the text (which
/// enters the stage keys) as it was before the key existed: runs made then resume.
impl std::fmt::Debug for JtvaeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("JtvaeConfig");
        d.field("vocab_csv", &self.vocab_csv)
            .field("train_csv", &self.train_csv);
        if let Some(n) = self.train_limit {
            d.field("train_limit", &n);
        }
        d.field("hidden", &self.hidden)
            .field("latent", &self.latent)
            .field("depth_tree", &self.depth_tree)
            .field("depth_graph", &self.depth_graph)
            .field("beta", &self.beta)
            .field("beta_warmup", &self.beta_warmup);
        // Only when set, so keys of runs without it are unchanged.
        if let Some(r) = &self.beta_ramp {
            d.field("beta_ramp", r);
        }
        d.field("max_candidates", &self.max_candidates)
            .field("max_tree_nodes", &self.max_tree_nodes)
            .field("decode_threads", &self.decode_threads)
            .field("recon_samples", &self.recon_samples)
            .finish()
    }
}

impl JtvaeConfig {
    /// The KL weight at global step `step`: `beta`, or grown linearly over
    /// `beta_warmup` steps, or by `beta_ramp`'s steps (capped at `beta`).
    pub fn beta_at(&self, step: usize) -> f64 {
        if let Some(r) = &self.beta_ramp {
            if step < r.start {
                return 0.0;
            }
            let raises = ((step - r.start) / r.every + 1) as f64;
            return (r.step * raises).min(self.beta);
        }
        if self.beta_warmup == 0 {
            self.beta
        } else {
            self.beta * ((step + 1) as f64 / self.beta_warmup as f64).min(1.0)
        }
    }

    /// The CSVs exist; `train_limit` only with `train_csv` and at least 1; sizes,
    /// KL weight and bounds in range. `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        for (key, v) in [
            ("jtvae.vocab_csv", &self.vocab_csv),
            ("jtvae.train_csv", &self.train_csv),
        ] {
            // The MOSES files are fetched only for the configs that use them.
            if let Some(v) = v.as_ref().filter(|v| !v.is_file()) {
                if v.to_string_lossy().contains("moses") {
                    let message = format!(
                        "file not found: {} (fetch it with scripts/fetch_moses.sh)",
                        v.display()
                    );
                    return Err(ConfigError::value(path, key, message));
                }
            }
            existing(path, key, v.as_ref())?;
        }
        if self.train_limit.is_some() && self.train_csv.is_none() {
            return Err(ConfigError::value(
                path,
                "jtvae.train_limit",
                "limits the molecules of jtvae.train_csv, which is not set",
            ));
        }
        if self.train_limit == Some(0) {
            return Err(ConfigError::value(
                path,
                "jtvae.train_limit",
                "must be at least 1",
            ));
        }
        self.check_sizes(path)
    }

    fn check_sizes(&self, path: &Path) -> Result<(), ConfigError> {
        if self.latent < 2 || self.latent % 2 != 0 {
            return Err(ConfigError::value(
                path,
                "jtvae.latent",
                "must be even and at least 2 (tree half + graph half)",
            ));
        }
        for (key, v) in [
            ("jtvae.hidden", self.hidden),
            ("jtvae.depth_tree", self.depth_tree),
            ("jtvae.depth_graph", self.depth_graph),
        ] {
            if v < 1 {
                return Err(ConfigError::value(path, key, "must be at least 1"));
            }
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(ConfigError::value(
                path,
                "jtvae.beta",
                "must be a number >= 0",
            ));
        }
        if let Some(r) = &self.beta_ramp {
            if r.every < 1 {
                return Err(ConfigError::value(
                    path,
                    "jtvae.beta_ramp.every",
                    "must be at least 1",
                ));
            }
            if !(r.step > 0.0 && r.step.is_finite()) {
                return Err(ConfigError::value(
                    path,
                    "jtvae.beta_ramp.step",
                    "must be a number > 0",
                ));
            }
            if self.beta_warmup > 0 {
                return Err(ConfigError::value(
                    path,
                    "jtvae.beta_ramp",
                    "give either beta_warmup (linear) or beta_ramp (steps), not both",
                ));
            }
        }
        if self.max_tree_nodes < 1 {
            return Err(ConfigError::value(
                path,
                "jtvae.max_tree_nodes",
                "must be at least 1",
            ));
        }
        if self.max_candidates < 2 {
            return Err(ConfigError::value(
                path,
                "jtvae.max_candidates",
                "must be at least 2",
            ));
        }
        Ok(())
    }
}

fn default_max_tree_nodes() -> usize {
    DEFAULT_MAX_TREE_NODES
}

fn default_recon_samples() -> usize {
    100
}

fn default_beta() -> f64 {
    0.005
}
fn default_max_candidates() -> usize {
    30
}

impl Default for JtvaeConfig {
    fn default() -> Self {
        JtvaeConfig {
            vocab_csv: None,
            train_csv: None,
            train_limit: None,
            hidden: 450,
            latent: 56,
            depth_tree: 20,
            depth_graph: 3,
            beta: default_beta(),
            beta_warmup: 0,
            beta_ramp: None,
            max_candidates: default_max_candidates(),
            max_tree_nodes: default_max_tree_nodes(),
            decode_threads: None,
            recon_samples: default_recon_samples(),
        }
    }
}

fn d450() -> i64 {
    450
}
fn d56() -> i64 {
    56
}
fn d20() -> i64 {
    20
}
fn d3() -> i64 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stage keys hold `{:?}` of the JT-VAE section: its hand-written Debug must
    /// give the derive's text, without `train_limit` when it is not set.
    #[test]
    fn jtvae_debug_text_is_the_derived_one_and_names_a_limit_only_when_set() {
        let mut j = JtvaeConfig::default();
        assert_eq!(
            format!("{j:?}"),
            format!(
                "JtvaeConfig {{ vocab_csv: None, train_csv: None, hidden: 450, latent: 56, depth_tree: 20, depth_graph: 3, beta: 0.005, beta_warmup: 0, max_candidates: 30, max_tree_nodes: {}, decode_threads: None, recon_samples: 100 }}",
                DEFAULT_MAX_TREE_NODES
            )
        );
        j.train_limit = Some(7);
        assert!(format!("{j:?}").contains("train_csv: None, train_limit: 7, hidden: 450"));
        j.beta_ramp = Some(BetaRamp {
            start: 4,
            every: 2,
            step: 0.5,
        });
        assert!(format!("{j:?}").contains("beta_warmup: 0, beta_ramp: BetaRamp"));
    }

    #[test]
    fn beta_follows_the_warm_up_or_the_ramp() {
        let mut j = JtvaeConfig {
            beta: 0.25,
            ..JtvaeConfig::default()
        };
        assert_eq!(j.beta_at(0), 0.25);
        j.beta_warmup = 4;
        let warm: Vec<f64> = (0..5).map(|s| j.beta_at(s)).collect();
        assert_eq!(warm, [0.0625, 0.125, 0.1875, 0.25, 0.25]);
        j.beta_warmup = 0;
        j.beta_ramp = Some(BetaRamp {
            start: 10,
            every: 5,
            step: 0.1,
        });
        let ramp: Vec<f64> = [0, 9, 10, 14, 15, 19, 20, 100]
            .iter()
            .map(|&s| j.beta_at(s))
            .collect();
        assert_eq!(ramp, [0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.25, 0.25]);
    }
}
