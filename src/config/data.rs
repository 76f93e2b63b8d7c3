//! `[run]` (output folder, seed, arm label) and `[data]` (the CSV, its columns, the split,
//! the bounds on one molecule), each with its own checks.
use crate::config::error::{at_least_1, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folder for the dataset file, metrics, checkpoints (relative to the current directory).
    pub out_dir: PathBuf,
    /// Master seed: splits, shuffles, initialization.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The arm (variant) this run belongs to, for `zo-hpc report`'s grouping by
    /// arm and pairing by seed (default: the run folder's name without a trailing
    /// seed). Letters, digits, `_`, `-`, `.`; it changes no result.
    #[serde(default)]
    pub arm: Option<String>,
}

impl RunConfig {
    /// `arm`, when given, is a non-empty label of letters, digits, `_`, `-`, `.`
    /// (it names files and table rows). `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        match &self.arm {
            Some(a)
                if a.is_empty()
                    || !a
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
            {
                Err(ConfigError::value(
                    path,
                    "run.arm",
                    format!("{a:?}: use letters, digits, '_', '-' or '.' (at least one)"),
                ))
            }
            _ => Ok(()),
        }
    }
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
    /// Seed of the train/test split (default `run.seed`). Set it to keep one split
    /// (one dataset file) for runs with several `run.seed`s.
    #[serde(default)]
    pub split_seed: Option<u64>,
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

    /// The CSV exists; counts and bounds are at least 1; `n_labeled` within `n_train`.
    /// `path` is the config file (named in errors).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if !self.csv.is_file() {
            return Err(ConfigError::value(
                path,
                "data.csv",
                format!("file not found: {}", self.csv.display()),
            ));
        }
        at_least_1(path, "data.n_train", self.n_train)?;
        at_least_1(path, "data.max_atoms", self.max_atoms)?;
        at_least_1(path, "data.max_smiles_length", self.max_smiles_length)?;
        if self.n_labeled == Some(0) {
            return Err(ConfigError::value(
                path,
                "data.n_labeled",
                "must be at least 1",
            ));
        }
        if self.n_labeled.is_some_and(|n| n > self.n_train) {
            return Err(ConfigError::value(
                path,
                "data.n_labeled",
                format!("must not exceed data.n_train = {}", self.n_train),
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> RunConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn arm_is_optional_and_checked() {
        let p = Path::new("c.toml");
        let none = run("out_dir = \"o\"\n");
        assert_eq!(none.arm, None);
        assert!(none.check(p).is_ok());
        let es = run("out_dir = \"o\"\narm = \"es_frz-2.b\"\n");
        assert_eq!(es.arm.as_deref(), Some("es_frz-2.b"));
        assert!(es.check(p).is_ok());
        for bad in ["", "a b", "a/b"] {
            let r = run(&format!("out_dir = \"o\"\narm = \"{bad}\"\n"));
            let err = r.check(p).unwrap_err().to_string();
            assert!(err.contains("run.arm") && err.contains("c.toml"), "{err}");
        }
    }
}
