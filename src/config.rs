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
    /// Zeroth-order Stage 2 (stage "zo"): estimator, queries, smoothing, λ, decoder mode.
    #[serde(default)]
    pub zo: ZoConfig,
    /// The knowledge source behind the MPNN (default: RDKit in process).
    #[serde(default)]
    pub source: SourceConfig,
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
    /// Labeled training molecules the MPNN and Stage 2 learn from: the first this
    /// many of the training split (default: all `n_train`). The split, the held-out
    /// molecules and the unsupervised JT-VAE stay as they are, so runs with fewer
    /// labels share the dataset file and Stage-1 JT-VAE (the data-scarcity study).
    #[serde(default)]
    pub n_labeled: Option<usize>,
    /// Dataset HDF5 file written by `prepare`; default `<out_dir>/dataset.h5`.
    #[serde(default)]
    pub dataset: Option<PathBuf>,
    /// Largest molecule accepted anywhere (CSV rows, black-box queries), in atoms.
    #[serde(default = "default_max_atoms")]
    pub max_atoms: usize,
    /// Longest SMILES accepted anywhere, in bytes (checked before parsing).
    #[serde(default = "default_max_smiles_length")]
    pub max_smiles_length: usize,
}

impl DataConfig {
    /// How many training molecules carry a label for the MPNN and Stage 2.
    pub fn labeled(&self) -> usize {
        self.n_labeled.unwrap_or(self.n_train).min(self.n_train)
    }

    /// The bounds on one molecule's work (`chem::Limits`).
    pub fn limits(&self) -> crate::chem::Limits {
        crate::chem::Limits {
            max_atoms: self.max_atoms,
            max_smiles_length: self.max_smiles_length,
        }
    }
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
            .field("beta_warmup", &self.beta_warmup)
            .field("max_candidates", &self.max_candidates)
            .field("max_tree_nodes", &self.max_tree_nodes)
            .field("decode_threads", &self.decode_threads)
            .field("recon_samples", &self.recon_samples)
            .finish()
    }
}

fn default_max_tree_nodes() -> usize {
    crate::jtvae::decode::MAX_TREE_NODES
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
    pub clip_norm: Option<f64>,
    pub checkpoint_every: Option<usize>,
    pub log_every: Option<usize>,
    pub max_steps: Option<usize>,
    pub eval_batch_size: Option<usize>,
    pub micro_batch: Option<usize>,
    pub eval_every: Option<usize>,
}

/// Which knowledge source answers the black-box queries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The in-process RDKit featurizer (the paper).
    #[default]
    Rdkit,
    /// A user command kept running per rank, speaking the line protocol of
    /// `blackbox::external` (see the README).
    External,
    /// The RDKit featurizer plus columns a physics program computes for the
    /// molecule (`blackbox::physics`).
    Physics,
}

/// The physics program of `kind = "physics"`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PhysicsProgram {
    /// MOPAC (PM7 single point at an RDKit/MMFF geometry).
    #[default]
    Mopac,
    /// xtb (GFN2-xTB single point at an RDKit/MMFF geometry).
    Xtb,
}

/// `[source]`: the black box. Keys that belong to another kind are errors.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// "rdkit" (default), "external" or "physics".
    #[serde(default)]
    pub kind: SourceKind,
    /// external: the command and its arguments; it runs in the config file's folder.
    #[serde(default)]
    pub command: Vec<String>,
    /// external: seconds one batch may take before the source counts as hung and is
    /// restarted (default 60).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// external: restarts allowed per rank and run; after that every query fails
    /// (counted), the run goes on (default 5).
    #[serde(default)]
    pub max_restarts: Option<usize>,
    /// external: molecules per request (default 64).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// physics: "mopac" (default) or "xtb".
    #[serde(default)]
    pub program: Option<PhysicsProgram>,
    /// physics: seconds the program may take for one molecule (default 20).
    #[serde(default)]
    pub time_limit_s: Option<f64>,
    /// physics: the persistent HDF5 cache of results by canonical SMILES (relative
    /// to the config file); default `physics_<program>.h5` beside the dataset file.
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// physics: molecules computed at once per rank (default: the rank's cores).
    #[serde(default)]
    pub threads: Option<usize>,
}

impl SourceConfig {
    /// What decides the source's answers (its kind, command or program), for the
    /// stage key; not how it runs (threads, batch size, time limits, cache file), so
    /// a run resumed with other such settings goes on.
    pub fn key(&self) -> String {
        match self.kind {
            SourceKind::Rdkit => "source=rdkit".into(),
            SourceKind::External => format!("source=external command={:?}", self.command),
            SourceKind::Physics => format!(
                "source=physics program={:?}",
                self.program.unwrap_or_default()
            ),
        }
    }
}

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
    /// (one query per latent coordinate; q is ignored).
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
            .finish()
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
            skip_unchanged: true,
            cache_size: default_cache(),
            eval_limit: default_eval_limit(),
            init_jtvae: None,
            init_mpnn: None,
            pretrained: None,
        }
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
}

fn default_seed() -> u64 {
    42
}
fn default_max_atoms() -> usize {
    crate::chem::limits::MAX_ATOMS
}
fn default_max_smiles_length() -> usize {
    crate::chem::limits::MAX_SMILES_LENGTH
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
        if let Some(p) = &cfg.zo.pretrained {
            if p.is_relative() {
                cfg.zo.pretrained = Some(base.join(p));
            }
        }
        if let Some(c) = cfg.source.cache.as_mut() {
            if c.is_relative() {
                *c = base.join(&*c);
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

    /// `[source]`: the keys of its kind only, with sane values.
    fn check_source(&self) -> Result<(), ConfigError> {
        let s = &self.source;
        let given = [
            ("command", !s.command.is_empty(), SourceKind::External),
            ("timeout_s", s.timeout_s.is_some(), SourceKind::External),
            (
                "max_restarts",
                s.max_restarts.is_some(),
                SourceKind::External,
            ),
            ("batch_size", s.batch_size.is_some(), SourceKind::External),
            ("program", s.program.is_some(), SourceKind::Physics),
            (
                "time_limit_s",
                s.time_limit_s.is_some(),
                SourceKind::Physics,
            ),
            ("cache", s.cache.is_some(), SourceKind::Physics),
            ("threads", s.threads.is_some(), SourceKind::Physics),
        ];
        for (key, set, kind) in given {
            if set && s.kind != kind {
                return Err(self.value_err(
                    &format!("source.{key}"),
                    format!(
                        "only for kind = \"{}\" (this source is \"{}\")",
                        format!("{kind:?}").to_lowercase(),
                        format!("{:?}", s.kind).to_lowercase()
                    ),
                ));
            }
        }
        if s.kind == SourceKind::External && s.command.is_empty() {
            return Err(self.value_err(
                "source.command",
                "kind = \"external\" needs the command to run, e.g. [\"python3\", \"my_source.py\"]",
            ));
        }
        for (key, v) in [("timeout_s", s.timeout_s), ("time_limit_s", s.time_limit_s)] {
            if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(self.value_err(&format!("source.{key}"), "must be a positive number"));
            }
        }
        for (key, v) in [("batch_size", s.batch_size), ("threads", s.threads)] {
            if v == Some(0) {
                return Err(self.value_err(&format!("source.{key}"), "must be at least 1"));
            }
        }
        Ok(())
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
                    // The MOSES files are fetched only for the configs that use them.
                    let hint = if v.to_string_lossy().contains("moses") {
                        " (fetch it with scripts/fetch_moses.sh)"
                    } else {
                        ""
                    };
                    return Err(
                        self.value_err(key, format!("file not found: {}{hint}", v.display()))
                    );
                }
            }
            if j.train_limit.is_some() && j.train_csv.is_none() {
                return Err(self.value_err(
                    "jtvae.train_limit",
                    "limits the molecules of jtvae.train_csv, which is not set",
                ));
            }
            if j.train_limit == Some(0) {
                return Err(self.value_err("jtvae.train_limit", "must be at least 1"));
            }
        }
        let positive = [
            ("data.n_train", self.data.n_train),
            ("data.max_atoms", self.data.max_atoms),
            ("data.max_smiles_length", self.data.max_smiles_length),
            ("train.epochs", self.train.epochs),
            ("train.batch_size", self.train.batch_size),
            ("train.checkpoint_every", self.train.checkpoint_every),
            ("train.log_every", self.train.log_every),
            ("train.eval_batch_size", self.train.eval_batch_size),
            ("train.eval_every", self.train.eval_every),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(self.value_err(key, "must be at least 1"));
            }
        }
        if self.data.n_labeled == Some(0) {
            return Err(self.value_err("data.n_labeled", "must be at least 1"));
        }
        if self.data.n_labeled.is_some_and(|n| n > self.data.n_train) {
            return Err(self.value_err(
                "data.n_labeled",
                format!("must not exceed data.n_train = {}", self.data.n_train),
            ));
        }
        if self.train.micro_batch == Some(0) {
            return Err(self.value_err("train.micro_batch", "must be at least 1"));
        }
        if self.train.stage.is_some() && self.train.stages.is_some() {
            return Err(self.value_err(
                "train.stage",
                "give either `stage` (one stage) or `stages` (the pipeline), not both",
            ));
        }
        if self.train.stages.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(self.value_err("train.stages", "must name at least one stage"));
        }
        for st in self.stages() {
            if st != Stage::Mpnn && self.jtvae.is_none() {
                return Err(self.value_err(
                    "train.stages",
                    format!("\"{}\" needs a [jtvae] section", st.name()),
                ));
            }
        }
        for (name, o) in [
            ("jtvae", &self.train.jtvae),
            ("mpnn", &self.train.mpnn),
            ("zo", &self.train.zo),
        ] {
            let Some(o) = o else { continue };
            for (key, v) in [
                ("epochs", o.epochs),
                ("batch_size", o.batch_size),
                ("checkpoint_every", o.checkpoint_every),
                ("log_every", o.log_every),
                ("eval_batch_size", o.eval_batch_size),
                ("micro_batch", o.micro_batch),
                ("eval_every", o.eval_every),
            ] {
                if v == Some(0) {
                    return Err(
                        self.value_err(&format!("train.{name}.{key}"), "must be at least 1")
                    );
                }
            }
            if o.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
                return Err(
                    self.value_err(&format!("train.{name}.lr"), "must be a positive number")
                );
            }
            if o.clip_norm.is_some_and(|c| c < 0.0 || !c.is_finite()) {
                return Err(self.value_err(&format!("train.{name}.clip_norm"), "must be >= 0"));
            }
        }
        self.check_source()?;
        let z = &self.zo;
        if z.q == 0 {
            return Err(self.value_err("zo.q", "must be at least 1"));
        }
        if z.q_decoder == 0 {
            return Err(self.value_err("zo.q_decoder", "must be at least 1"));
        }
        for (key, v) in [
            ("zo.mu", z.mu),
            ("zo.sigma", z.sigma),
            ("zo.mu_decoder", z.mu_decoder),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(self.value_err(key, "must be a positive number"));
            }
        }
        if !(z.lambda >= 0.0 && z.lambda.is_finite()) {
            return Err(self.value_err("zo.lambda", "must be a number >= 0"));
        }
        for (key, v) in [
            ("zo.init_jtvae", &z.init_jtvae),
            ("zo.init_mpnn", &z.init_mpnn),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_file()) {
                return Err(self.value_err(key, format!("file not found: {}", v.display())));
            }
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
            if j.max_tree_nodes < 1 {
                return Err(self.value_err("jtvae.max_tree_nodes", "must be at least 1"));
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

    /// The stages `train` runs, in order.
    pub fn stages(&self) -> Vec<Stage> {
        match (&self.train.stages, self.train.stage) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => vec![s],
            (None, None) => vec![Stage::Mpnn],
        }
    }

    /// The config one stage runs with: its `[train.<stage>]` overrides applied,
    /// `run.out_dir` = `<out_dir>/<stage>`, the dataset file still `<out_dir>/dataset.h5`.
    pub fn for_stage(&self, stage: Stage) -> Config {
        let mut c = self.clone();
        c.data.dataset = Some(self.dataset_path());
        c.run.out_dir = self.run.out_dir.join(stage.name());
        c.train.stage = Some(stage);
        c.train.stages = None;
        let o = match stage {
            Stage::Jtvae => &self.train.jtvae,
            Stage::Mpnn => &self.train.mpnn,
            Stage::Zo => &self.train.zo,
        };
        if let Some(o) = o {
            let t = &mut c.train;
            t.epochs = o.epochs.unwrap_or(t.epochs);
            t.batch_size = o.batch_size.unwrap_or(t.batch_size);
            t.lr = o.lr.unwrap_or(t.lr);
            t.clip_norm = o.clip_norm.unwrap_or(t.clip_norm);
            t.checkpoint_every = o.checkpoint_every.unwrap_or(t.checkpoint_every);
            t.log_every = o.log_every.unwrap_or(t.log_every);
            t.max_steps = o.max_steps.or(t.max_steps);
            t.eval_batch_size = o.eval_batch_size.unwrap_or(t.eval_batch_size);
            t.micro_batch = o.micro_batch.or(t.micro_batch);
            t.eval_every = o.eval_every.unwrap_or(t.eval_every);
        }
        c.train.jtvae = None;
        c.train.mpnn = None;
        c.train.zo = None;
        c.zo.init_jtvae = Some(self.stage_checkpoint(Stage::Jtvae));
        c.zo.init_mpnn = Some(self.stage_checkpoint(Stage::Mpnn));
        c
    }

    /// Where a stage's final checkpoint lives (for the pipeline's later stages):
    /// `zo.init_*`, else the run's own, else (when the run has none) the
    /// pretrained model of `zo.pretrained`.
    pub fn stage_checkpoint(&self, stage: Stage) -> PathBuf {
        let given = match stage {
            Stage::Jtvae => self.zo.init_jtvae.clone(),
            Stage::Mpnn => self.zo.init_mpnn.clone(),
            Stage::Zo => None,
        };
        given.unwrap_or_else(|| {
            let own = self.run.out_dir.join(stage.name()).join("checkpoint.h5");
            match &self.zo.pretrained {
                Some(dir) if stage != Stage::Zo && !own.is_file() => {
                    dir.join(format!("{}.h5", stage.name()))
                }
                _ => own,
            }
        })
    }

    /// A fingerprint of everything that determines a stage's result (for a
    /// per-stage config from `for_stage`): a completed checkpoint with the same
    /// key is not trained again.
    pub fn stage_key(&self, stage: Stage) -> String {
        let t = &self.train;
        let mut train = format!(
            "epochs={} batch={} lr={} clip={} max_steps={:?} seed={}",
            t.epochs, t.batch_size, t.lr, t.clip_norm, t.max_steps, self.run.seed
        );
        if let Some(m) = t.micro_batch {
            // Only when set, so keys of runs without it are unchanged.
            train.push_str(&format!(" micro_batch={m}"));
        }
        let d = &self.data;
        let mut data = format!(
            "csv={} smiles={} target={} n_train={} n_test={}",
            d.csv.display(),
            d.smiles_column,
            d.target_column,
            d.n_train,
            d.n_test
        );
        // Only fewer labels change the key (and never the unsupervised JT-VAE's).
        if d.labeled() < d.n_train && stage != Stage::Jtvae {
            data.push_str(&format!(" n_labeled={}", d.labeled()));
        }
        // Only when not the default, so keys of runs without `[source]` are unchanged.
        let source = match self.source.kind {
            SourceKind::Rdkit => String::new(),
            _ => format!("|{}", self.source.key()),
        };
        match stage {
            Stage::Jtvae => format!("jtvae|{data}|{train}|{:?}", self.jtvae),
            Stage::Mpnn => format!("mpnn|{data}|{train}|{:?}{source}", self.mpnn),
            Stage::Zo => format!(
                "zo|{data}|{train}|{:?}|{:?}|{:?}{source}",
                self.jtvae, self.mpnn, self.zo
            ),
        }
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
    /// The stage keys hold `{:?}` of the JT-VAE section: its hand-written Debug must
    /// give the derive's text, without `train_limit` when it is not set.
    #[test]
    fn jtvae_debug_text_is_the_derived_one_and_names_a_limit_only_when_set() {
        let mut j = JtvaeConfig::default();
        assert_eq!(
            format!("{j:?}"),
            format!(
                "JtvaeConfig {{ vocab_csv: None, train_csv: None, hidden: 450, latent: 56, depth_tree: 20, depth_graph: 3, beta: 0.005, beta_warmup: 0, max_candidates: 30, max_tree_nodes: {}, decode_threads: None, recon_samples: 100 }}",
                crate::jtvae::decode::MAX_TREE_NODES
            )
        );
        j.train_limit = Some(7);
        assert!(format!("{j:?}").contains("train_csv: None, train_limit: 7, hidden: 450"));
    }

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
        assert_eq!(cfg.stages(), vec![Stage::Mpnn]);
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

    #[test]
    fn source_keys_belong_to_their_kind_and_enter_the_mpnn_and_zo_keys() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Config::load(&write_cfg(dir.path(), GOOD)).unwrap();
        let load =
            |src: &str| Config::load(&write_cfg(dir.path(), &format!("{GOOD}[source]\n{src}")));
        let err = |src: &str| load(src).unwrap_err().to_string();
        let e = err("kind = \"physics\"\ncommand = [\"x\"]\n");
        assert!(
            e.contains("source.command") && e.contains("only for kind = \"external\""),
            "{e}"
        );
        let e = err("kind = \"external\"\n");
        assert!(e.contains("source.command"), "{e}");
        let e = err("kind = \"external\"\ncommand = [\"x\"]\ntimeout_s = 0\n");
        assert!(e.contains("source.timeout_s"), "{e}");
        let e = err("kind = \"quantum\"\n");
        assert!(e.contains("quantum") && e.contains("line 13"), "{e}");
        // An explicit default source keeps the keys of runs without `[source]`.
        let rdkit = load("kind = \"rdkit\"\n").unwrap();
        for st in [Stage::Jtvae, Stage::Mpnn, Stage::Zo] {
            assert_eq!(rdkit.stage_key(st), plain.stage_key(st));
        }
        let phys = load("kind = \"physics\"\ncache = \"c.h5\"\n").unwrap();
        assert_eq!(
            phys.source.cache.as_deref(),
            Some(dir.path().join("c.h5").as_path())
        );
        assert_eq!(phys.stage_key(Stage::Jtvae), plain.stage_key(Stage::Jtvae));
        assert_ne!(phys.stage_key(Stage::Mpnn), plain.stage_key(Stage::Mpnn));
        assert_ne!(phys.stage_key(Stage::Zo), plain.stage_key(Stage::Zo));
        // How the source runs does not change the key; what it computes does.
        let tuned = load("kind = \"physics\"\nthreads = 3\ntime_limit_s = 5\n").unwrap();
        assert_eq!(tuned.stage_key(Stage::Mpnn), phys.stage_key(Stage::Mpnn));
        let xtb = load("kind = \"physics\"\nprogram = \"xtb\"\n").unwrap();
        assert_ne!(xtb.stage_key(Stage::Mpnn), phys.stage_key(Stage::Mpnn));
    }

    /// The stage keys (stored in checkpoints, compared on resume) of a source of
    /// each kind: their text must never change.
    #[test]
    fn source_stage_key_texts_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let load =
            |src: &str| Config::load(&write_cfg(dir.path(), &format!("{GOOD}[source]\n{src}"))).unwrap();
        let ext = load("kind = \"external\"\ncommand = [\"python3\", \"s.py\"]\nbatch_size = 3\n");
        assert_eq!(ext.source.key(), "source=external command=[\"python3\", \"s.py\"]");
        let mopac = load("kind = \"physics\"\nthreads = 2\n");
        assert_eq!(mopac.source.key(), "source=physics program=Mopac");
        let xtb = load("kind = \"physics\"\nprogram = \"xtb\"\n");
        assert_eq!(xtb.source.key(), "source=physics program=Xtb");
        let rdkit = load("kind = \"rdkit\"\n");
        assert_eq!(rdkit.source.key(), "source=rdkit");
        let plain = Config::load(&write_cfg(dir.path(), GOOD)).unwrap();
        for (cfg, tail) in [
            (&ext, "|source=external command=[\"python3\", \"s.py\"]"),
            (&mopac, "|source=physics program=Mopac"),
            (&xtb, "|source=physics program=Xtb"),
            (&rdkit, ""),
        ] {
            for st in [Stage::Mpnn, Stage::Zo] {
                assert_eq!(cfg.stage_key(st), format!("{}{tail}", plain.stage_key(st)));
            }
            assert_eq!(cfg.stage_key(Stage::Jtvae), plain.stage_key(Stage::Jtvae));
        }
        assert_eq!(
            plain.stage_key(Stage::Mpnn),
            format!(
                "mpnn|csv={} smiles=smiles target=y n_train=1 n_test=0|epochs=1 batch=2 lr=0.001 clip=10 max_steps=None seed=42|MpnnConfig {{ node_out: 128, edge_hidden: 64, message_steps: 6, set2set_iters: 6, set2set_layers: 3, head_hidden: 128 }}",
                dir.path().join("d.csv").display()
            )
        );
    }

    #[test]
    fn pretrained_is_resolved_and_kept_out_of_the_stage_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&write_cfg(dir.path(), GOOD)).unwrap();
        let key = cfg.stage_key(Stage::Zo);
        // The key's text as the derived Debug wrote it (completed runs stay skipped).
        assert!(
            key.contains("ZoConfig { estimator: Forward, q: 1, mu: 0.001"),
            "{key}"
        );
        assert!(
            key.ends_with("init_jtvae: None, init_mpnn: None }"),
            "{key}"
        );
        let body = format!("{GOOD}[zo]\npretrained = \"models/x\"\n");
        let with = Config::load(&write_cfg(dir.path(), &body)).unwrap();
        assert_eq!(with.stage_key(Stage::Zo), key);
        let dir_x = dir.path().join("models/x");
        assert_eq!(with.zo.pretrained.as_deref(), Some(dir_x.as_path()));
        // No Stage 1 of its own: Stage 2 starts from the pretrained files.
        assert_eq!(with.stage_checkpoint(Stage::Jtvae), dir_x.join("jtvae.h5"));
        assert_eq!(with.stage_checkpoint(Stage::Mpnn), dir_x.join("mpnn.h5"));
    }

    #[test]
    fn micro_batch_is_validated_and_overridden_per_stage() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&write_cfg(dir.path(), GOOD)).unwrap();
        assert_eq!(cfg.train.micro_batch, None);
        let body = GOOD.replace("lr = 0.001", "lr = 0.001\nmicro_batch = 0");
        let err = Config::load(&write_cfg(dir.path(), &body))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.micro_batch"), "{err}");
        let body = GOOD.replace(
            "lr = 0.001",
            "lr = 0.001\nmicro_batch = 4\n[train.mpnn]\nmicro_batch = 2",
        );
        let cfg = Config::load(&write_cfg(dir.path(), &body)).unwrap();
        assert_eq!(cfg.train.micro_batch, Some(4));
        let mpnn = cfg.for_stage(Stage::Mpnn);
        assert_eq!(mpnn.train.micro_batch, Some(2));
        assert!(mpnn.stage_key(Stage::Mpnn).contains("micro_batch=2"));
    }
}
