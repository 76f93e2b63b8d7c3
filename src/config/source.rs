//! `[source]`: the knowledge source behind the MPNN, a tagged enum with one
//! variant per `kind` holding that kind's keys only, so a key of another kind
//! (e.g. `command` under `kind = "physics"`) cannot be represented. The file's
//! table is read flat (`SourceKeys`, unknown keys rejected with their line) and
//! then sorted into its variant, where a key of another kind is an error naming
//! the key and the kind it belongs to. `key()` enters the stage keys.
use crate::config::error::{positive, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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

/// `[source]`: the black box, with the keys of its kind only.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(try_from = "SourceKeys")]
pub enum SourceConfig {
    /// `kind = "rdkit"` (the default): no keys of its own.
    #[default]
    Rdkit,
    /// `kind = "external"`.
    External(ExternalConfig),
    /// `kind = "physics"`.
    Physics(PhysicsConfig),
}

/// The keys of `kind = "external"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExternalConfig {
    /// The command and its arguments; it runs in the config file's folder.
    pub command: Vec<String>,
    /// Seconds one batch may take before the source counts as hung and is
    /// restarted (default 60).
    pub timeout_s: Option<f64>,
    /// Restarts allowed per rank and run; after that every query fails (counted),
    /// the run goes on (default 5).
    pub max_restarts: Option<usize>,
    /// Molecules per request (default 64).
    pub batch_size: Option<usize>,
    /// Largest magnitude of a number in an answer row (default 1e6): a molecule
    /// with a larger (finite) value fails, counted, as one with `NaN` would.
    pub max_abs_feature: Option<f64>,
}

/// The keys of `kind = "physics"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PhysicsConfig {
    /// "mopac" (default) or "xtb".
    pub program: Option<PhysicsProgram>,
    /// Seconds the program may take for one molecule (default 20).
    pub time_limit_s: Option<f64>,
    /// Seconds RDKit's 3-D embedding may take for one molecule (default 30).
    pub embed_time_limit_s: Option<f64>,
    /// The persistent HDF5 cache of results by canonical SMILES (relative to the
    /// config file); default `physics_<program>.h5` beside the dataset file.
    pub cache: Option<PathBuf>,
    /// Molecules computed at once per rank (default: the rank's cores).
    pub threads: Option<usize>,
}

/// `[source]` as written: every kind's keys in one table (sorted into a
/// `SourceConfig` variant by `TryFrom`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceKeys {
    /// "rdkit" (default), "external" or "physics".
    #[serde(default)]
    kind: SourceKind,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    timeout_s: Option<f64>,
    #[serde(default)]
    max_restarts: Option<usize>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    max_abs_feature: Option<f64>,
    #[serde(default)]
    program: Option<PhysicsProgram>,
    #[serde(default)]
    time_limit_s: Option<f64>,
    #[serde(default)]
    embed_time_limit_s: Option<f64>,
    #[serde(default)]
    cache: Option<PathBuf>,
    #[serde(default)]
    threads: Option<usize>,
}

impl TryFrom<SourceKeys> for SourceConfig {
    type Error = String;

    /// The variant of `k.kind`; a key given for another kind is an error naming it.
    fn try_from(k: SourceKeys) -> Result<SourceConfig, String> {
        let given = [
            ("command", !k.command.is_empty(), SourceKind::External),
            ("timeout_s", k.timeout_s.is_some(), SourceKind::External),
            (
                "max_restarts",
                k.max_restarts.is_some(),
                SourceKind::External,
            ),
            ("batch_size", k.batch_size.is_some(), SourceKind::External),
            (
                "max_abs_feature",
                k.max_abs_feature.is_some(),
                SourceKind::External,
            ),
            ("program", k.program.is_some(), SourceKind::Physics),
            (
                "time_limit_s",
                k.time_limit_s.is_some(),
                SourceKind::Physics,
            ),
            (
                "embed_time_limit_s",
                k.embed_time_limit_s.is_some(),
                SourceKind::Physics,
            ),
            ("cache", k.cache.is_some(), SourceKind::Physics),
            ("threads", k.threads.is_some(), SourceKind::Physics),
        ];
        for (key, set, kind) in given {
            if set && k.kind != kind {
                return Err(format!(
                    "key `source.{key}`: only for kind = \"{}\" (this source is \"{}\")",
                    format!("{kind:?}").to_lowercase(),
                    format!("{:?}", k.kind).to_lowercase()
                ));
            }
        }
        Ok(match k.kind {
            SourceKind::Rdkit => SourceConfig::Rdkit,
            SourceKind::External => SourceConfig::External(ExternalConfig {
                command: k.command,
                timeout_s: k.timeout_s,
                max_restarts: k.max_restarts,
                batch_size: k.batch_size,
                max_abs_feature: k.max_abs_feature,
            }),
            SourceKind::Physics => SourceConfig::Physics(PhysicsConfig {
                program: k.program,
                time_limit_s: k.time_limit_s,
                embed_time_limit_s: k.embed_time_limit_s,
                cache: k.cache,
                threads: k.threads,
            }),
        })
    }
}

impl SourceConfig {
    /// Which kind of source this is.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Rdkit => SourceKind::Rdkit,
            SourceConfig::External(_) => SourceKind::External,
            SourceConfig::Physics(_) => SourceKind::Physics,
        }
    }

    /// What decides the source's answers (its kind, command or program), for the
    /// stage key; not how it runs (threads, batch size, time limits, cache file), so
    /// a run resumed with other such settings goes on.
    pub fn key(&self) -> String {
        match self {
            SourceConfig::Rdkit => "source=rdkit".into(),
            SourceConfig::External(e) => format!("source=external command={:?}", e.command),
            SourceConfig::Physics(p) => {
                format!("source=physics program={:?}", p.program.unwrap_or_default())
            }
        }
    }

    /// A relative cache file is taken relative to `base` (the config file's folder).
    pub fn rebase(&mut self, base: &Path) {
        if let SourceConfig::Physics(p) = self {
            if let Some(c) = p.cache.as_mut() {
                if c.is_relative() {
                    *c = base.join(&*c);
                }
            }
        }
    }

    /// The command is given for `external`; times positive, counts at least 1.
    /// `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let (time, count) = match self {
            SourceConfig::Rdkit => return Ok(()),
            SourceConfig::External(e) => {
                if e.command.is_empty() {
                    return Err(ConfigError::value(
                        path,
                        "source.command",
                        "kind = \"external\" needs the command to run, e.g. [\"python3\", \"my_source.py\"]",
                    ));
                }
                if let Some(m) = e.max_abs_feature {
                    positive(path, "source.max_abs_feature", m)?;
                }
                (("timeout_s", e.timeout_s), ("batch_size", e.batch_size))
            }
            SourceConfig::Physics(p) => {
                if let Some(t) = p.embed_time_limit_s {
                    positive(path, "source.embed_time_limit_s", t)?;
                }
                (("time_limit_s", p.time_limit_s), ("threads", p.threads))
            }
        };
        if let (key, Some(v)) = time {
            positive(path, &format!("source.{key}"), v)?;
        }
        if count.1 == Some(0) {
            return Err(ConfigError::value(
                path,
                &format!("source.{}", count.0),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
