//! `[mpnn]`: the property predictor's sizes (defaults of the paper), checked to be
//! at least 1.
use crate::config::error::ConfigError;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpnnConfig {
    #[serde(default = "d128")]
    pub node_out: i64,
    #[serde(default = "d64")]
    pub edge_hidden: i64,
    #[serde(default = "d6")]
    pub message_steps: i64,
    #[serde(default = "d6")]
    pub set2set_iters: i64,
    #[serde(default = "d3")]
    pub set2set_layers: i64,
    #[serde(default = "d128")]
    pub head_hidden: i64,
}

impl Default for MpnnConfig {
    fn default() -> Self {
        MpnnConfig {
            node_out: 128,
            edge_hidden: 64,
            message_steps: 6,
            set2set_iters: 6,
            set2set_layers: 3,
            head_hidden: 128,
        }
    }
}

impl MpnnConfig {
    /// Every size is at least 1; `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        for (key, v) in [
            ("mpnn.node_out", self.node_out),
            ("mpnn.edge_hidden", self.edge_hidden),
            ("mpnn.message_steps", self.message_steps),
            ("mpnn.set2set_iters", self.set2set_iters),
            ("mpnn.set2set_layers", self.set2set_layers),
            ("mpnn.head_hidden", self.head_hidden),
        ] {
            if v < 1 {
                return Err(ConfigError::value(path, key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

fn d128() -> i64 {
    128
}
fn d64() -> i64 {
    64
}
fn d6() -> i64 {
    6
}
fn d3() -> i64 {
    3
}
