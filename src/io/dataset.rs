//! The dataset HDF5 file written by `zo-hpc prepare` and read by `zo-hpc train`.
//!
//! Layout (see README, "HDF5 layouts"):
//! ```text
//! /smiles               str[n]   canonical SMILES, unique
//! /target               f64[n]   target values (original units)
//! /source_line          u64[n]   line of each molecule in the source CSV
//! /split/train          u64[k]   indices into /smiles
//! /split/test           u64[m]
//! /featurizer/atom_columns  str[78]  names of all atom feature columns
//! /featurizer/atom_keep     u64[a]   kept (non-constant on the training split) columns
//! /featurizer/bond_columns  str[12], /featurizer/bond_keep u64[b]
//! /jtvae/vocab            str[V]   cluster vocabulary (when the config has [jtvae])
//! /jtvae/train_smiles     str[k]   the JT-VAE's training molecules (canonical SMILES)
//! /jtvae/trees/ok         u8[k]    1 where the training molecule's tree is stored
//! /jtvae/trees/node_offset u64[k+1], /jtvae/trees/label u32[N]  vocabulary index per node
//! /jtvae/trees/atom_offset u64[N+1], /jtvae/trees/atoms u32[·]  cluster atoms per node
//! /jtvae/trees/edge_offset u64[k+1], /jtvae/trees/edges u32[E,2] tree edges (node pairs)
//! /jtvae/test_trees/…     the same for the m held-out molecules (/split/test order;
//!                         layout of both: io::trees)
//! /jtvae/candidates/train/…  assembly candidates of the k training molecules
//! /jtvae/candidates/test/…   and of the m held-out ones (layout: io::candidates)
//! attributes on /jtvae: vocab_source, n_vocab_molecules, n_vocab_failed, n_uncovered
//! /jtvae/graphs/train/…, /jtvae/graphs/test/…  RDKit atom and bond records of the
//!                         same molecules, for their encoder graphs (layout: io::records)
//! attributes on /jtvae/candidates: format (CANDIDATES_FORMAT), max_candidates
//! attributes on /jtvae/graphs: format (RECORDS_FORMAT)
//! attributes on /: format, source_csv, smiles_column, target_column, target_mean,
//!   target_std (training split), seed (the split's), rdkit_version, n_rows,
//!   n_invalid_smiles, n_bad_target, n_duplicates
//! /provenance/keys, /provenance/values, /provenance/notes  str[p]  what decided the
//!                         file: config keys and values, `sha256:<hex>` of each input
//!                         file (its path when prepared in notes); see data::provenance
//! ```
use super::candidates::{CandidateError, CandidateStore};
use super::h5::{self, ctx, H5Result};
use super::records::RecordStore;
use super::trees;
use crate::chem::featurize::{atom_columns, bond_columns};
use crate::chem::Featurizer;
use crate::jtvae::tree::TreeRecord;
use std::path::Path;

pub const FORMAT: &str = "zo-hpc-dataset/1";

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub smiles: Vec<String>,
    pub target: Vec<f64>,
    pub source_line: Vec<u64>,
    pub train: Vec<u64>,
    pub test: Vec<u64>,
    pub featurizer: Featurizer,
    pub target_mean: f64,
    pub target_std: f64,
    pub meta: DatasetMeta,
    /// JT-VAE vocabulary and training trees, when prepared with `[jtvae]`.
    pub jtvae: Option<JtvaeData>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JtvaeData {
    pub vocab: Vec<String>,
    pub vocab_source: String,
    pub n_vocab_molecules: u64,
    pub n_vocab_failed: u64,
    /// Training molecules whose tree has a cluster outside the vocabulary.
    pub n_uncovered: u64,
    /// `jtvae.train_limit` the training molecules were taken with (None: all of
    /// `jtvae.train_csv`, or the training split).
    pub train_limit: Option<u64>,
    /// Canonical SMILES of the JT-VAE's training molecules (the training split, or
    /// those of `jtvae.train_csv` outside the held-out split).
    pub train_smiles: Vec<String>,
    /// One per training molecule (in `train_smiles` order); None when not decomposable or not covered.
    pub train_trees: Vec<Option<TreeRecord>>,
    /// One per held-out molecule (`Dataset::test` order), likewise; empty in files
    /// written before they were stored.
    pub test_trees: Vec<Option<TreeRecord>>,
    /// Assembly candidates computed by `prepare`: written by `Dataset::write`, but
    /// not read by `Dataset::read` (they are large and only the JT-VAE stages need
    /// them): see `Dataset::read_candidates`.
    pub candidates: Option<StoredCandidates>,
    /// The molecules' parsed records (for their encoder graphs), likewise written
    /// but not read by `Dataset::read`: see `Dataset::read_graphs`.
    pub graphs: Option<StoredGraphs>,
}

/// RDKit's atom and bond records of the JT-VAE's training and held-out molecules,
/// from which `Featurizer::graph` builds their encoder graphs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGraphs {
    /// `RECORDS_FORMAT` of the build that stored them.
    pub format: String,
    /// One per `JtvaeData::train_smiles`, in order.
    pub train: RecordStore,
    /// One per held-out molecule (`Dataset::test`), in order.
    pub test: RecordStore,
}

impl StoredGraphs {
    fn write(&self, jtvae: &hdf5::Group) -> hdf5::Result<()> {
        let g = jtvae.create_group("graphs")?;
        h5::write_str_attr(&g, "format", &self.format)?;
        self.train.write(&g, "train")?;
        self.test.write(&g, "test")?;
        Ok(())
    }

    fn read(jtvae: &hdf5::Group) -> hdf5::Result<StoredGraphs> {
        let g = jtvae.group("graphs")?;
        Ok(StoredGraphs {
            format: h5::read_str_attr(&g, "format")?,
            train: RecordStore::read(&g, "train")?,
            test: RecordStore::read(&g, "test")?,
        })
    }
}

/// The assembly candidates of the JT-VAE's training molecules and of the held-out
/// split, with what they depend on besides the molecules.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCandidates {
    /// `CANDIDATES_FORMAT` of the build that computed them.
    pub format: String,
    /// `jtvae.max_candidates` they were computed with.
    pub max_candidates: u64,
    /// One per `JtvaeData::train_smiles`, in order.
    pub train: CandidateStore,
    /// One per held-out molecule (`Dataset::test`), in order.
    pub test: CandidateStore,
}

impl StoredCandidates {
    fn write(&self, jtvae: &hdf5::Group) -> hdf5::Result<()> {
        let g = jtvae.create_group("candidates")?;
        h5::write_str_attr(&g, "format", &self.format)?;
        h5::write_attr(&g, "max_candidates", &self.max_candidates)?;
        self.train.write(&g, "train")?;
        self.test.write(&g, "test")?;
        Ok(())
    }

    fn read(jtvae: &hdf5::Group) -> hdf5::Result<StoredCandidates> {
        let g = jtvae.group("candidates")?;
        Ok(StoredCandidates {
            format: h5::read_str_attr(&g, "format")?,
            max_candidates: h5::read_attr(&g, "max_candidates")?,
            train: CandidateStore::read(&g, "train")?,
            test: CandidateStore::read(&g, "test")?,
        })
    }
}

impl JtvaeData {
    /// Fills in `train_smiles` of files written before it existed (the training
    /// split of `smiles`), and checks the trees against the molecule lists.
    fn complete_and_check(
        &mut self,
        smiles: &[String],
        train: &[u64],
        test: &[u64],
    ) -> Result<(), String> {
        if self.train_smiles.is_empty() {
            self.train_smiles = train
                .iter()
                .filter_map(|&i| smiles.get(i as usize).cloned())
                .collect();
        }
        if self.train_trees.len() != self.train_smiles.len() {
            return Err(format!(
                "/jtvae/trees has {} trees for {} training molecules",
                self.train_trees.len(),
                self.train_smiles.len()
            ));
        }
        if !self.test_trees.is_empty() && self.test_trees.len() != test.len() {
            return Err(format!(
                "/jtvae/test_trees has {} trees for {} held-out molecules",
                self.test_trees.len(),
                test.len()
            ));
        }
        Ok(())
    }

    fn write(&self, f: &hdf5::Group) -> hdf5::Result<()> {
        let g = f.create_group("jtvae")?;
        h5::write_strings(&g, "vocab", &self.vocab)?;
        h5::write_strings(&g, "train_smiles", &self.train_smiles)?;
        h5::write_str_attr(&g, "vocab_source", &self.vocab_source)?;
        h5::write_attr(&g, "n_vocab_molecules", &self.n_vocab_molecules)?;
        h5::write_attr(&g, "n_vocab_failed", &self.n_vocab_failed)?;
        h5::write_attr(&g, "n_uncovered", &self.n_uncovered)?;
        // 0: no limit.
        h5::write_attr(&g, "train_limit", &self.train_limit.unwrap_or(0))?;
        trees::write(&g, "trees", &self.train_trees)?;
        trees::write(&g, "test_trees", &self.test_trees)?;
        if let Some(c) = &self.candidates {
            c.write(&g)?;
        }
        if let Some(r) = &self.graphs {
            r.write(&g)?;
        }
        Ok(())
    }

    fn read(f: &hdf5::Group) -> hdf5::Result<JtvaeData> {
        let g = f.group("jtvae")?;
        let trees = trees::read(&g, "trees")?;
        // Files written before the held-out trees were stored: decomposed when needed.
        let test_trees = if g.link_exists("test_trees") {
            trees::read(&g, "test_trees")?
        } else {
            Vec::new()
        };
        Ok(JtvaeData {
            vocab: h5::read_strings(&g, "vocab")?,
            // Files written before `train_smiles` existed: the training split (filled in by `Dataset::read`).
            train_smiles: if g.link_exists("train_smiles") {
                h5::read_strings(&g, "train_smiles")?
            } else {
                Vec::new()
            },
            vocab_source: h5::read_str_attr(&g, "vocab_source")?,
            n_vocab_molecules: h5::read_attr(&g, "n_vocab_molecules")?,
            n_vocab_failed: h5::read_attr(&g, "n_vocab_failed")?,
            n_uncovered: h5::read_attr(&g, "n_uncovered")?,
            // Files written before the limit existed: none.
            train_limit: if g.attr("train_limit").is_ok() {
                Some(h5::read_attr::<u64>(&g, "train_limit")?).filter(|&n| n > 0)
            } else {
                None
            },
            train_trees: trees,
            test_trees,
            candidates: None,
            graphs: None,
        })
    }
}

/// Provenance and the counts of what `prepare` could not use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetMeta {
    pub source_csv: String,
    pub smiles_column: String,
    pub target_column: String,
    pub seed: u64,
    pub rdkit_version: String,
    pub n_rows: u64,
    pub n_invalid_smiles: u64,
    pub n_bad_target: u64,
    pub n_duplicates: u64,
    /// What decided the file (`data::provenance`): settings and input digests, in
    /// `/provenance` (`keys`, `values`, `notes`); empty in a file from an older zo-hpc.
    pub provenance: Vec<ProvenanceEntry>,
}

/// One thing that decided a dataset file: a config key (or `rdkit_version`), its
/// value (`sha256:<hex>` for an input file's contents) and a note not compared
/// (the file's path when it was prepared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceEntry {
    pub key: String,
    pub value: String,
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    H5(#[from] h5::H5Error),
    #[error("{file}: not a zo-hpc dataset file ({why}); create it with `zo-hpc prepare`")]
    Layout { file: String, why: String },
    #[error("{file}: {source}; delete it and run `zo-hpc prepare` again")]
    Candidates {
        file: String,
        #[source]
        source: CandidateError,
    },
}

impl Dataset {
    pub fn write(&self, path: &Path) -> Result<(), h5::WriteError> {
        h5::write_atomically(path, |f| {
            h5::write_strings(f, "smiles", &self.smiles)?;
            h5::write_vec(f, "target", &self.target)?;
            h5::write_vec(f, "source_line", &self.source_line)?;
            let split = f.create_group("split")?;
            h5::write_vec(&split, "train", &self.train)?;
            h5::write_vec(&split, "test", &self.test)?;
            let fz = f.create_group("featurizer")?;
            h5::write_strings(&fz, "atom_columns", &atom_columns())?;
            h5::write_strings(&fz, "bond_columns", &bond_columns())?;
            let keep = |v: &[usize]| v.iter().map(|&c| c as u64).collect::<Vec<_>>();
            h5::write_vec(&fz, "atom_keep", &keep(&self.featurizer.atom_keep))?;
            h5::write_vec(&fz, "bond_keep", &keep(&self.featurizer.bond_keep))?;
            let m = &self.meta;
            h5::write_str_attr(f, "format", FORMAT)?;
            h5::write_str_attr(f, "source_csv", &m.source_csv)?;
            h5::write_str_attr(f, "smiles_column", &m.smiles_column)?;
            h5::write_str_attr(f, "target_column", &m.target_column)?;
            h5::write_str_attr(f, "rdkit_version", &m.rdkit_version)?;
            h5::write_attr(f, "target_mean", &self.target_mean)?;
            h5::write_attr(f, "target_std", &self.target_std)?;
            h5::write_attr(f, "seed", &m.seed)?;
            h5::write_attr(f, "n_rows", &m.n_rows)?;
            h5::write_attr(f, "n_invalid_smiles", &m.n_invalid_smiles)?;
            h5::write_attr(f, "n_bad_target", &m.n_bad_target)?;
            h5::write_attr(f, "n_duplicates", &m.n_duplicates)?;
            write_provenance(f, &m.provenance)?;
            if let Some(j) = &self.jtvae {
                j.write(f)?;
            }
            Ok(())
        })
    }

    /// The assembly candidates stored in the dataset file at `path` (of a dataset
    /// `self` read from it), checked against its molecule lists; `None` when it has
    /// none (prepared without `[jtvae]`, or by a zo-hpc that did not store them).
    pub fn read_candidates(&self, path: &Path) -> Result<Option<StoredCandidates>, DatasetError> {
        let Some(j) = &self.jtvae else {
            return Ok(None);
        };
        let f = h5::open(path)?;
        let g = ctx(f.group("jtvae"), path, || "opening /jtvae".into())?;
        if !g.link_exists("candidates") {
            return Ok(None);
        }
        let c = ctx(StoredCandidates::read(&g), path, || {
            "reading /jtvae/candidates".into()
        })?;
        let bad = |source| DatasetError::Candidates {
            file: path.display().to_string(),
            source,
        };
        for (set, store, n) in [
            ("/jtvae/candidates/train", &c.train, j.train_smiles.len()),
            ("/jtvae/candidates/test", &c.test, self.test.len()),
        ] {
            store.check(set).map_err(bad)?;
            if store.len() != n {
                return Err(bad(CandidateError::Inconsistent {
                    set: set.into(),
                    what: format!("length: {} molecules for {n}", store.len()),
                }));
            }
        }
        Ok(Some(c))
    }

    /// The parsed records of the JT-VAE's molecules stored in the dataset file at
    /// `path` (of a dataset `self` read from it), checked against its molecule
    /// lists; `None` when it has none.
    pub fn read_graphs(&self, path: &Path) -> Result<Option<StoredGraphs>, DatasetError> {
        let Some(j) = &self.jtvae else {
            return Ok(None);
        };
        let f = h5::open(path)?;
        let g = ctx(f.group("jtvae"), path, || "opening /jtvae".into())?;
        if !g.link_exists("graphs") {
            return Ok(None);
        }
        let r = ctx(StoredGraphs::read(&g), path, || {
            "reading /jtvae/graphs".into()
        })?;
        for (set, store, n) in [
            ("/jtvae/graphs/train", &r.train, j.train_smiles.len()),
            ("/jtvae/graphs/test", &r.test, self.test.len()),
        ] {
            let why = match store.check() {
                Err(why) => why,
                Ok(()) if store.len() != n => format!("{} molecules for {n}", store.len()),
                Ok(()) => continue,
            };
            return Err(DatasetError::Layout {
                file: path.display().to_string(),
                why: format!("{set}: {why}"),
            });
        }
        Ok(Some(r))
    }

    pub fn read(path: &Path) -> Result<Dataset, DatasetError> {
        let f = h5::open(path)?;
        let layout = |why: String| DatasetError::Layout {
            file: path.display().to_string(),
            why,
        };
        match h5::read_str_attr(&f, "format") {
            Ok(fmt) if fmt == FORMAT => {}
            Ok(fmt) => {
                return Err(layout(format!(
                    "format attribute is {fmt:?}, expected {FORMAT:?}"
                )))
            }
            Err(_) => return Err(layout("no `format` attribute on /".into())),
        }
        let c = |what: &str| what.to_string();
        let rd = |r: hdf5::Result<Vec<u64>>, what: &str| -> H5Result<Vec<u64>> {
            ctx(r, path, || c(what))
        };
        let smiles = ctx(h5::read_strings(&f, "smiles"), path, || {
            c("reading /smiles")
        })?;
        let target = ctx(h5::read_vec::<f64>(&f, "target"), path, || {
            c("reading /target")
        })?;
        let source_line = rd(h5::read_vec(&f, "source_line"), "reading /source_line")?;
        let split = ctx(f.group("split"), path, || c("opening /split"))?;
        let train = rd(h5::read_vec(&split, "train"), "reading /split/train")?;
        let test = rd(h5::read_vec(&split, "test"), "reading /split/test")?;
        let fz = ctx(f.group("featurizer"), path, || c("opening /featurizer"))?;
        let atom_keep = rd(
            h5::read_vec(&fz, "atom_keep"),
            "reading /featurizer/atom_keep",
        )?;
        let bond_keep = rd(
            h5::read_vec(&fz, "bond_keep"),
            "reading /featurizer/bond_keep",
        )?;
        let atom_cols = ctx(h5::read_strings(&fz, "atom_columns"), path, || {
            c("reading /featurizer/atom_columns")
        })?;
        let bond_cols = ctx(h5::read_strings(&fz, "bond_columns"), path, || {
            c("reading /featurizer/bond_columns")
        })?;
        if atom_cols != atom_columns() || bond_cols != bond_columns() {
            return Err(layout(
                "its featurizer columns differ from this build's featurizer; run `zo-hpc prepare` again".into(),
            ));
        }
        let n = smiles.len();
        if target.len() != n || source_line.len() != n {
            return Err(layout(format!(
                "/smiles has {n} entries but /target has {} and /source_line {}",
                target.len(),
                source_line.len()
            )));
        }
        if let Some(bad) = train.iter().chain(&test).find(|&&i| i as usize >= n) {
            return Err(layout(format!("split index {bad} out of range (n = {n})")));
        }
        let keep_ok =
            |k: &[u64], dim: usize| !k.is_empty() && k.iter().all(|&c| (c as usize) < dim);
        if !keep_ok(&atom_keep, atom_cols.len()) || !keep_ok(&bond_keep, bond_cols.len()) {
            return Err(layout(
                "featurizer keep lists are empty or out of range".into(),
            ));
        }
        let a = |name: &str| {
            ctx(h5::read_attr::<f64>(&f, name), path, || {
                format!("reading attribute {name}")
            })
        };
        let u = |name: &str| {
            ctx(h5::read_attr::<u64>(&f, name), path, || {
                format!("reading attribute {name}")
            })
        };
        let s = |name: &str| {
            ctx(h5::read_str_attr(&f, name), path, || {
                format!("reading attribute {name}")
            })
        };
        let jtvae = if f.link_exists("jtvae") {
            Some(ctx(JtvaeData::read(&f), path, || c("reading /jtvae"))?)
        } else {
            None
        };
        let mut jtvae = jtvae;
        if let Some(j) = jtvae.as_mut() {
            j.complete_and_check(&smiles, &train, &test)
                .map_err(layout)?;
        }
        Ok(Dataset {
            jtvae,
            smiles,
            target,
            source_line,
            train,
            test,
            featurizer: Featurizer {
                atom_keep: atom_keep.iter().map(|&c| c as usize).collect(),
                bond_keep: bond_keep.iter().map(|&c| c as usize).collect(),
            },
            target_mean: a("target_mean")?,
            target_std: a("target_std")?,
            meta: DatasetMeta {
                source_csv: s("source_csv")?,
                smiles_column: s("smiles_column")?,
                target_column: s("target_column")?,
                seed: u("seed")?,
                rdkit_version: s("rdkit_version")?,
                n_rows: u("n_rows")?,
                n_invalid_smiles: u("n_invalid_smiles")?,
                n_bad_target: u("n_bad_target")?,
                n_duplicates: u("n_duplicates")?,
                provenance: ctx(read_provenance(&f), path, || c("reading /provenance"))?,
            },
        })
    }
}

/// `/provenance`: three string arrays of equal length (nothing when `entries` is empty).
fn write_provenance(f: &hdf5::File, entries: &[ProvenanceEntry]) -> hdf5::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let g = f.create_group("provenance")?;
    let col = |pick: fn(&ProvenanceEntry) -> &String| {
        entries.iter().map(|e| pick(e).clone()).collect::<Vec<_>>()
    };
    h5::write_strings(&g, "keys", &col(|e| &e.key))?;
    h5::write_strings(&g, "values", &col(|e| &e.value))?;
    h5::write_strings(&g, "notes", &col(|e| &e.note))
}

/// `/provenance` of a file, empty when the file has none (an older zo-hpc's).
fn read_provenance(f: &hdf5::File) -> hdf5::Result<Vec<ProvenanceEntry>> {
    if !f.link_exists("provenance") {
        return Ok(Vec::new());
    }
    let g = f.group("provenance")?;
    let keys = h5::read_strings(&g, "keys")?;
    let values = h5::read_strings(&g, "values")?;
    let notes = h5::read_strings(&g, "notes")?;
    if values.len() != keys.len() || notes.len() != keys.len() {
        return Err(hdf5::Error::from("keys, values and notes differ in length"));
    }
    Ok(keys
        .into_iter()
        .zip(values)
        .zip(notes)
        .map(|((key, value), note)| ProvenanceEntry { key, value, note })
        .collect())
}
