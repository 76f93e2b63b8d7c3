//! The run configuration: a TOML file deserialized into typed sections, one file
//! per section (`data`: `[run]` and `[data]`; `mpnn`, `jtvae`, `zo`, `train`,
//! `source`), each checking its own values; `Config` holds them, checks what spans
//! sections, and derives each stage's config, checkpoint and key. Unknown keys,
//! wrong types and missing files are errors that name the file, the line and the
//! key (`error`). Relative data paths are taken relative to the config file's
//! folder; the output folder is taken relative to the current directory.
pub mod data;
pub mod error;
pub mod jtvae;
pub mod mpnn;
pub mod overrides;
pub mod source;
pub mod train;
pub mod zo;

pub use data::{DataConfig, RunConfig};
pub use error::ConfigError;
pub use jtvae::JtvaeConfig;
pub use mpnn::MpnnConfig;
pub use source::{ExternalConfig, PhysicsConfig, PhysicsProgram, SourceConfig, SourceKind};
pub use train::{DevicePref, Stage, StageTrain, TrainConfig};
pub use zo::{DecoderMode, DeltaMode, Group, LatentMode, ZoConfig};

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a stage key's part for `Config::stage_inputs` begins.
pub const INPUTS: &str = "|inputs ";

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
    /// Digests of the files a stage starts from (Stage 2: its Stage-1 checkpoints),
    /// set on rank 0 by `train::stages`; part of the stage key, so that a Stage 2 is
    /// not taken as done or resumed after its Stage 1 changed.
    #[serde(skip)]
    pub stage_inputs: String,
    /// The `--set KEY=VALUE`s written into `text` (empty: the file as it is).
    #[serde(skip)]
    pub overrides: Vec<String>,
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

    /// `load` with `--set KEY=VALUE`s written into the text first (`overrides`);
    /// a set the config refuses is an error naming it.
    pub fn load_with(path: &Path, sets: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if sets.is_empty() {
            return Self::from_str(&text, path);
        }
        let effective = overrides::apply(&text, sets)?;
        match Self::from_str(&effective, path) {
            Ok(mut cfg) => {
                cfg.overrides = sets.to_vec();
                Ok(cfg)
            }
            Err(e) => Err(Self::blame(&text, path, sets, e)),
        }
    }

    /// The error `e` of a config with `sets` applied, named after the first set
    /// that fails on its own (when the file alone loads).
    fn blame(text: &str, path: &Path, sets: &[String], e: ConfigError) -> ConfigError {
        if Self::from_str(text, path).is_err() {
            return e;
        }
        for set in sets {
            let one = std::slice::from_ref(set);
            if let Err(alone) = overrides::apply(text, one).and_then(|t| Self::from_str(&t, path)) {
                return match alone {
                    ConfigError::Set { .. } => alone,
                    other => ConfigError::Set {
                        set: set.clone(),
                        message: other.to_string(),
                    },
                };
            }
        }
        e
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
        // One rule for every path in the file: relative to the file's folder
        // (`--out-dir` on the command line stays relative to the working directory).
        if cfg.run.out_dir.is_relative() {
            cfg.run.out_dir = base.join(&cfg.run.out_dir);
        }
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
        cfg.source.rebase(base);
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

    /// Each section's checks, then what spans sections: every stage but the MPNN's
    /// needs `[jtvae]`.
    fn check(&self) -> Result<(), ConfigError> {
        let path = self.path.as_path();
        self.run.check(path)?;
        self.data.check(path)?;
        if let Some(j) = &self.jtvae {
            j.check(path)?;
        }
        self.train.check(path)?;
        for st in self.stages() {
            if st != Stage::Mpnn && self.jtvae.is_none() {
                return Err(ConfigError::value(
                    path,
                    "train.stages",
                    format!("\"{}\" needs a [jtvae] section", st.name()),
                ));
            }
        }
        self.source.check(path)?;
        self.zo.check(path)?;
        self.mpnn.check(path)
    }

    /// The stages `train` runs, in order.
    pub fn stages(&self) -> Vec<Stage> {
        self.train.stages()
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
            t.lr_decay = o.lr_decay.or(t.lr_decay);
            t.clip_norm = o.clip_norm.unwrap_or(t.clip_norm);
            t.checkpoint_every = o.checkpoint_every.unwrap_or(t.checkpoint_every);
            t.log_every = o.log_every.unwrap_or(t.log_every);
            t.max_steps = o.max_steps.or(t.max_steps);
            t.eval_batch_size = o.eval_batch_size.unwrap_or(t.eval_batch_size);
            t.micro_batch = o.micro_batch.or(t.micro_batch);
            t.eval_every = o.eval_every.unwrap_or(t.eval_every);
            t.eval_every_steps = o.eval_every_steps.or(t.eval_every_steps);
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
        if let Some(d) = &t.lr_decay {
            train.push_str(&format!(" lr_decay={}/{}", d.factor, d.every));
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
        // Only when set, so keys of runs without it are unchanged.
        if let Some(s) = d.split_seed {
            data.push_str(&format!(" split_seed={s}"));
        }
        // Only fewer labels change the key (and never the unsupervised JT-VAE's).
        if d.labeled() < d.n_train && stage != Stage::Jtvae {
            data.push_str(&format!(" n_labeled={}", d.labeled()));
        }
        // Only when not the default, so keys of runs without `[source]` are unchanged.
        let source = match self.source {
            SourceConfig::Rdkit => String::new(),
            _ => format!("|{}", self.source.key()),
        };
        let key = match stage {
            Stage::Jtvae => format!("jtvae|{data}|{train}|{:?}", self.jtvae),
            Stage::Mpnn => format!("mpnn|{data}|{train}|{:?}{source}", self.mpnn),
            Stage::Zo => format!(
                "zo|{data}|{train}|{:?}|{:?}|{:?}{source}",
                self.jtvae, self.mpnn, self.zo
            ),
        };
        if self.stage_inputs.is_empty() {
            key
        } else {
            format!("{key}{INPUTS}{}", self.stage_inputs)
        }
    }

    /// The train/test split's seed: `data.split_seed`, else `run.seed`.
    pub fn split_seed(&self) -> u64 {
        self.data.split_seed.unwrap_or(self.run.seed)
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
        let SourceConfig::Physics(p) = &phys.source else {
            panic!("{:?}", phys.source)
        };
        assert_eq!(p.cache.as_deref(), Some(dir.path().join("c.h5").as_path()));
        assert_eq!(phys.stage_key(Stage::Jtvae), plain.stage_key(Stage::Jtvae));
        assert_ne!(phys.stage_key(Stage::Mpnn), plain.stage_key(Stage::Mpnn));
        assert_ne!(phys.stage_key(Stage::Zo), plain.stage_key(Stage::Zo));
        // How the source runs does not change the key; what it computes does.
        let tuned =
            load("kind = \"physics\"\nthreads = 3\ntime_limit_s = 5\nembed_time_limit_s = 9\n")
                .unwrap();
        assert_eq!(tuned.stage_key(Stage::Mpnn), phys.stage_key(Stage::Mpnn));
        let xtb = load("kind = \"physics\"\nprogram = \"xtb\"\n").unwrap();
        assert_ne!(xtb.stage_key(Stage::Mpnn), phys.stage_key(Stage::Mpnn));
    }

    /// The stage keys (stored in checkpoints, compared on resume) of a source of
    /// each kind: their text must never change.
    #[test]
    fn source_stage_key_texts_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let load = |src: &str| {
            Config::load(&write_cfg(dir.path(), &format!("{GOOD}[source]\n{src}"))).unwrap()
        };
        let ext = load("kind = \"external\"\ncommand = [\"python3\", \"s.py\"]\nbatch_size = 3\n");
        assert_eq!(
            ext.source.key(),
            "source=external command=[\"python3\", \"s.py\"]"
        );
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

    /// Issue 21: the reference's recipe as config (`train.lr_decay`,
    /// `jtvae.beta_ramp`): checked by name, in the stage key only when set.
    #[test]
    fn lr_decay_and_beta_ramp_are_checked_and_enter_the_key_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let load = |body: &str| Config::load(&write_cfg(dir.path(), body));
        let plain = load(GOOD).unwrap();
        assert!(!plain.stage_key(Stage::Mpnn).contains("lr_decay"));
        let decay = GOOD.replace(
            "lr = 0.001",
            "lr = 0.001
lr_decay = { factor = 0.9, every = 40000 }",
        );
        let d = load(&decay).unwrap();
        assert!(d.stage_key(Stage::Mpnn).contains("lr_decay=0.9/40000"));
        for (bad, key) in [
            ("{ factor = 1.5, every = 10 }", "train.lr_decay.factor"),
            ("{ factor = 0.5, every = 0 }", "train.lr_decay.every"),
            ("{ factor = 0.5, evry = 10 }", "evry"),
        ] {
            let body = GOOD.replace("lr = 0.001", &format!("lr = 0.001\nlr_decay = {bad}"));
            let err = load(&body).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let jt = |extra: &str| format!("{GOOD}[jtvae]\n{extra}\n");
        let ramp = load(&jt(
            "beta = 1.0\nbeta_ramp = { start = 40000, every = 1000, step = 0.002 }",
        ))
        .unwrap();
        assert!(ramp
            .stage_key(Stage::Jtvae)
            .contains("beta_ramp: BetaRamp { start: 40000"));
        let both = load(&jt(
            "beta_warmup = 10\nbeta_ramp = { start = 1, every = 1, step = 0.1 }",
        ));
        let err = both.unwrap_err().to_string();
        assert!(
            err.contains("jtvae.beta_ramp") && err.contains("not both"),
            "{err}"
        );
    }
}
