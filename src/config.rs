//! The run configuration: a TOML file deserialized into typed sections. Unknown
//! keys, wrong types and missing files are errors that name the file, the line
//! and the key. Relative data paths are taken relative to the config file's folder;
//! the output folder is taken relative to the current directory.
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub mpnn: MpnnConfig,
    /// JT-VAE settings; when present, `prepare` also builds the cluster vocabulary
    /// and the junction trees of the training molecules.
    #[serde(default)]
    pub jtvae: Option<JtvaeConfig>,
    pub train: TrainConfig,
    /// The config file's text, kept for the outputs (set by `load`).
    #[serde(skip)]
    pub text: String,
    /// The config file's path (set by `load`).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folder for the dataset file, metrics, checkpoints (relative to the current directory).
    pub out_dir: PathBuf,
    /// Master seed: splits, shuffles, initialization.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// CSV (plain or .gz) with a SMILES column and numeric columns.
    pub csv: PathBuf,
    #[serde(default = "default_smiles_column")]
    pub smiles_column: String,
    pub target_column: String,
    pub n_train: usize,
    pub n_test: usize,
    /// Dataset HDF5 file written by `prepare`; default `<out_dir>/dataset.h5`.
    #[serde(default)]
    pub dataset: Option<PathBuf>,
}

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

#[derive(Debug, Clone, Deserialize)]
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
    /// At most this many candidate attachments per tree node in the assembly loss.
    #[serde(default = "default_max_candidates")]
    pub max_candidates: usize,
    /// Held-out molecules decoded at the end of every epoch for reconstruction
    /// accuracy (0: skip).
    #[serde(default = "default_recon_samples")]
    pub recon_samples: usize,
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
            hidden: 450,
            latent: 56,
            depth_tree: 20,
            depth_graph: 3,
            beta: default_beta(),
            beta_warmup: 0,
            max_candidates: default_max_candidates(),
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

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// First-order training of the MPNN on the featurized data set.
    Mpnn,
    /// First-order (Stage 1) training of the JT-VAE on the junction trees of the
    /// training molecules (needs a `[jtvae]` section).
    Jtvae,
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
    #[serde(default = "default_stage")]
    pub stage: Stage,
    pub epochs: usize,
    /// Global batch size (summed over ranks).
    pub batch_size: usize,
    pub lr: f64,
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
}

fn default_seed() -> u64 {
    42
}
fn default_smiles_column() -> String {
    "smiles".into()
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
fn default_stage() -> Stage {
    Stage::Mpnn
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

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative data paths.
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.text = text.to_string();
        cfg.path = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data.csv.is_relative() {
            cfg.data.csv = base.join(&cfg.data.csv);
        }
        if let Some(ds) = &cfg.data.dataset {
            if ds.is_relative() {
                cfg.data.dataset = Some(base.join(ds));
            }
        }
        if let Some(j) = cfg.jtvae.as_mut() {
            for v in [j.vocab_csv.as_mut(), j.train_csv.as_mut()]
                .into_iter()
                .flatten()
            {
                if v.is_relative() {
                    *v = base.join(&*v);
                }
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    fn value_err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.data.csv.is_file() {
            return Err(self.value_err(
                "data.csv",
                format!("file not found: {}", self.data.csv.display()),
            ));
        }
        if let Some(j) = &self.jtvae {
            for (key, v) in [
                ("jtvae.vocab_csv", &j.vocab_csv),
                ("jtvae.train_csv", &j.train_csv),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !v.is_file()) {
                    return Err(self.value_err(key, format!("file not found: {}", v.display())));
                }
            }
        }
        let positive = [
            ("data.n_train", self.data.n_train),
            ("train.epochs", self.train.epochs),
            ("train.batch_size", self.train.batch_size),
            ("train.checkpoint_every", self.train.checkpoint_every),
            ("train.log_every", self.train.log_every),
            ("train.eval_batch_size", self.train.eval_batch_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(self.value_err(key, "must be at least 1"));
            }
        }
        if self.train.stage == Stage::Jtvae && self.jtvae.is_none() {
            return Err(self.value_err("train.stage", "\"jtvae\" needs a [jtvae] section"));
        }
        if let Some(j) = &self.jtvae {
            if j.latent < 2 || j.latent % 2 != 0 {
                return Err(self.value_err(
                    "jtvae.latent",
                    "must be even and at least 2 (tree half + graph half)",
                ));
            }
            for (key, v) in [
                ("jtvae.hidden", j.hidden),
                ("jtvae.depth_tree", j.depth_tree),
                ("jtvae.depth_graph", j.depth_graph),
            ] {
                if v < 1 {
                    return Err(self.value_err(key, "must be at least 1"));
                }
            }
            if !(j.beta >= 0.0 && j.beta.is_finite()) {
                return Err(self.value_err("jtvae.beta", "must be a number >= 0"));
            }
            if j.max_candidates < 2 {
                return Err(self.value_err("jtvae.max_candidates", "must be at least 2"));
            }
        }
        if !(self.train.lr > 0.0 && self.train.lr.is_finite()) {
            return Err(self.value_err("train.lr", "must be a positive number"));
        }
        if self.train.clip_norm < 0.0 || !self.train.clip_norm.is_finite() {
            return Err(self.value_err("train.clip_norm", "must be >= 0"));
        }
        let m = &self.mpnn;
        for (key, v) in [
            ("mpnn.node_out", m.node_out),
            ("mpnn.edge_hidden", m.edge_hidden),
            ("mpnn.message_steps", m.message_steps),
            ("mpnn.set2set_iters", m.set2set_iters),
            ("mpnn.set2set_layers", m.set2set_layers),
            ("mpnn.head_hidden", m.head_hidden),
        ] {
            if v < 1 {
                return Err(self.value_err(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Where the dataset HDF5 file lives.
    pub fn dataset_path(&self) -> PathBuf {
        self.data
            .dataset
            .clone()
            .unwrap_or_else(|| self.run.out_dir.join("dataset.h5"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cfg(dir: &Path, body: &str) -> PathBuf {
        std::fs::write(dir.join("d.csv"), "smiles,y\nC,1\n").unwrap();
        let p = dir.join("c.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    const GOOD: &str = "[run]\nout_dir = \"o\"\n[data]\ncsv = \"d.csv\"\ntarget_column = \"y\"\nn_train = 1\nn_test = 0\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n";

    #[test]
    fn good_config_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&write_cfg(dir.path(), GOOD)).unwrap();
        assert_eq!(cfg.mpnn.node_out, 128);
        assert_eq!(cfg.train.stage, Stage::Mpnn);
        assert!(cfg.data.csv.starts_with(dir.path()));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let body = GOOD.replace("lr = 0.001", "lr = 0.001\nlearning_rate = 3");
        let err = Config::load(&write_cfg(dir.path(), &body))
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate"), "{err}");
        assert!(err.contains("line 12"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }

    #[test]
    fn wrong_type_and_missing_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let body = GOOD.replace("epochs = 1", "epochs = \"many\"");
        let err = Config::load(&write_cfg(dir.path(), &body))
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs"), "{err}");
        let body = GOOD.replace("d.csv", "missing.csv");
        let err = Config::load(&write_cfg(dir.path(), &body))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.csv") && err.contains("missing.csv"),
            "{err}"
        );
    }
}
