//! The JT-VAE's training samples as both stages hold them: an `Example` (SMILES,
//! junction tree, encoder graph, assembly candidates), each part either expanded
//! in memory or `Held` compact in the dataset file's `Stores`; `Prepared`, what
//! `prepare` stored for the molecules (with the fallback of computing it here);
//! and `flat`, the canonical SMILES without stereo that decoding produces.
use crate::chem::{self, Featurizer};
use crate::io::candidates::CandidateStore;
use crate::io::candidates::CANDIDATES_FORMAT;
use crate::io::dataset::{Dataset, DatasetError, StoredCandidates, StoredGraphs};
use crate::io::records::{RecordStore, RECORDS_FORMAT};
use crate::jtvae::candidates::{training_candidates, LabelGraphs, NodeCandidates};
use crate::jtvae::model::Sample;
use crate::jtvae::tree::TreeRecord;
use crate::jtvae::tree::{decompose_smiles, LabelCache};
use crate::jtvae::vocab::Vocab;
use std::borrow::Cow;
use std::sync::Arc;

/// One JT-VAE molecule: its SMILES, junction tree, encoder graph and assembly
/// candidates. The graph and candidates are either expanded here (built at
/// start-up) or, when `prepare` stored them, left compact in the dataset file's
/// stores (shared by every example) and expanded per batch by `sample`: expanded
/// f32 rows take ~40 times the stored small integers, which for MOSES' 1.6 M
/// molecules is the difference between ~3 GB and more than a node's memory.
pub(crate) struct Example {
    pub smiles: String,
    pub tree: TreeRecord,
    graph: Held<chem::MolGraph>,
    candidates: Held<Vec<NodeCandidates>>,
}

/// Where an example's graph or candidates are.
pub(crate) enum Held<T> {
    /// Expanded in memory.
    Here(T),
    /// Item `k` of `set` in the stores.
    Stored(Arc<Stores>, MoleculeSet, usize),
}

/// The compact molecule records and candidates read from the dataset file.
pub(crate) struct Stores {
    graphs: Option<StoredGraphs>,
    candidates: Option<StoredCandidates>,
    featurizer: Featurizer,
}

impl Stores {
    fn records(&self, set: MoleculeSet) -> Option<&RecordStore> {
        self.graphs.as_ref().map(|g| match set {
            MoleculeSet::Train => &g.train,
            MoleculeSet::Test => &g.test,
        })
    }

    fn candidates(&self, set: MoleculeSet) -> Option<&CandidateStore> {
        self.candidates.as_ref().map(|c| match set {
            MoleculeSet::Train => &c.train,
            MoleculeSet::Test => &c.test,
        })
    }
}

impl Example {
    /// Builds the example of `smi`: its tree (decomposed unless given), its encoder
    /// graph (featurized unless given) and its assembly candidates from
    /// `candidates`, called last, only for a molecule usable otherwise (`None`: it
    /// cannot be assembled). `None` when it is outside the vocabulary, cannot be
    /// featurized or cannot be assembled.
    pub(crate) fn build(
        smi: &str,
        tree: Option<TreeRecord>,
        graph: Option<Held<chem::MolGraph>>,
        vocab: &Vocab,
        cache: &mut LabelCache,
        candidates: impl FnOnce(&mut LabelCache) -> Option<Held<Vec<NodeCandidates>>>,
    ) -> Option<Example> {
        let tree = tree.or_else(|| decompose_smiles(smi, cache).ok()?.1.record(vocab).ok())?;
        let graph = match graph {
            Some(g) => g,
            None => Held::Here(Featurizer::full().featurize(smi).ok()?),
        };
        let candidates = candidates(cache)?;
        Some(Example {
            smiles: smi.to_string(),
            graph,
            tree,
            candidates,
        })
    }

    /// The molecule as the model takes it, expanding what is stored compact.
    pub(crate) fn sample(&self) -> Sample<'_> {
        let graph = match &self.graph {
            Held::Here(g) => Cow::Borrowed(g),
            Held::Stored(st, set, k) => {
                let rec = st.records(*set).and_then(|r| r.record(*k, &self.smiles));
                // Checked when the example was built (`Prepared::graph`).
                Cow::Owned(
                    st.featurizer
                        .graph(&rec.expect("stored record checked at build")),
                )
            }
        };
        let candidates = match &self.candidates {
            Held::Here(c) => Cow::Borrowed(c.as_slice()),
            Held::Stored(st, set, k) => {
                let nodes = st.candidates(*set).and_then(|c| c.nodes(*k));
                // Checked when the example was built (`Prepared::candidates`).
                Cow::Owned(nodes.expect("stored candidates checked at build"))
            }
        };
        Sample {
            graph,
            tree: &self.tree,
            candidates,
        }
    }

    /// Candidate groups (tree nodes with a choice of attachment).
    pub(crate) fn n_groups(&self) -> usize {
        match &self.candidates {
            Held::Here(c) => c.len(),
            Held::Stored(st, set, k) => st.candidates(*set).map_or(0, |c| c.groups(*k)),
        }
    }

    /// Bytes of expanded feature rows this example keeps in memory (0 when its
    /// graph and candidates are stored compact).
    pub(crate) fn expanded_bytes(&self) -> usize {
        let bytes = |g: &chem::MolGraph| {
            4 * (g.atom_x.len() + g.edge_x.len()) + 8 * (g.src.len() + g.dst.len())
        };
        let graph = match &self.graph {
            Held::Here(g) => bytes(g),
            Held::Stored(..) => 0,
        };
        let cands = match &self.candidates {
            Held::Here(c) => c.iter().flat_map(|n| &n.graphs).map(bytes).sum(),
            Held::Stored(..) => 0,
        };
        graph + cands
    }
}

/// Which list of the dataset file a molecule belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MoleculeSet {
    /// The JT-VAE's training molecules (`/jtvae/train_smiles`).
    Train,
    /// The held-out split (`/split/test`).
    Test,
}

/// What `prepare` stored for the JT-VAE's molecules (their parsed records and
/// assembly candidates), with the fallback of computing it here (the old way:
/// minutes for a large training set, on every rank) where the file has none, or
/// none made with the config's settings. Counts which it did.
pub(crate) struct Prepared {
    stores: Arc<Stores>,
    /// `None`: examples get no candidates (encoding and decoding only).
    max_candidates: Option<usize>,
    labels: LabelGraphs,
    /// Molecules whose candidates were read from the file, and built here.
    pub read: usize,
    pub built: usize,
}

impl Prepared {
    /// Nothing stored: trees decomposed, graphs featurized and, with
    /// `max_candidates`, candidates built here.
    pub(crate) fn none(max_candidates: Option<usize>) -> Prepared {
        Prepared {
            stores: Arc::new(Stores {
                graphs: None,
                candidates: None,
                featurizer: Featurizer::full(),
            }),
            max_candidates,
            labels: LabelGraphs::default(),
            read: 0,
            built: 0,
        }
    }

    /// Reads what the dataset file `path` (read into `ds`) stores: the records,
    /// and with `max_candidates` the candidates. Candidates made with another
    /// `jtvae.max_candidates` or candidate format, or none at all (an older file),
    /// are built here instead, with a warning on rank 0 that names the reason.
    pub(crate) fn open(
        ds: &Dataset,
        path: &std::path::Path,
        max_candidates: Option<usize>,
        root: bool,
    ) -> Result<Prepared, DatasetError> {
        let p = Prepared::none(max_candidates);
        let graphs = ds.read_graphs(path)?.filter(|g| g.format == RECORDS_FORMAT);
        if graphs.is_none() && root {
            log::info!(
                "{}: no molecule records for this zo-hpc (an older file): featurizing the molecules here",
                path.display()
            );
        }
        let stores = |candidates| Stores {
            graphs,
            candidates,
            featurizer: Featurizer::full(),
        };
        let Some(max) = max_candidates else {
            return Ok(Prepared {
                stores: Arc::new(stores(None)),
                ..p
            });
        };
        let stored = ds.read_candidates(path)?;
        let problem = match &stored {
            None => Some(
                "it has no assembly candidates (prepared by an older zo-hpc)".to_string(),
            ),
            Some(c) if c.format != CANDIDATES_FORMAT => Some(format!(
                "its assembly candidates have format {:?}, this zo-hpc makes {CANDIDATES_FORMAT:?}",
                c.format
            )),
            Some(c) if c.max_candidates != max as u64 => Some(format!(
                "its assembly candidates were made with jtvae.max_candidates = {}, the config has {max}",
                c.max_candidates
            )),
            Some(_) => None,
        };
        if root {
            match &problem {
                None => log::info!("candidates: read from dataset {}", path.display()),
                Some(why) => log::warn!(
                    "{}: {why}; building them in memory on every rank instead (slow: delete the file and run `zo-hpc prepare` to store them)",
                    path.display()
                ),
            }
        }
        let candidates = if problem.is_none() { stored } else { None };
        Ok(Prepared {
            stores: Arc::new(stores(candidates)),
            ..p
        })
    }

    /// The encoder graph of `smi`, item `k` of `set` in the dataset file, when its
    /// record is stored (`None`: featurize it).
    pub(crate) fn graph(&self, set: MoleculeSet, k: Option<usize>) -> Option<Held<chem::MolGraph>> {
        let k = k?;
        let records = self.stores.records(set)?;
        (records.ok.get(k) == Some(&1)).then(|| Held::Stored(self.stores.clone(), set, k))
    }

    /// The candidates of `smi`, item `k` of `set` in the dataset file when it is
    /// one (`None` for a molecule the file does not list: built here); none
    /// without `max_candidates`.
    pub(crate) fn candidates(
        &mut self,
        set: MoleculeSet,
        k: Option<usize>,
        smi: &str,
        cache: &mut LabelCache,
    ) -> Option<Held<Vec<NodeCandidates>>> {
        let Some(max) = self.max_candidates else {
            return Some(Held::Here(Vec::new()));
        };
        match (self.stores.candidates(set), k) {
            (Some(s), Some(k)) => {
                self.read += 1;
                // Not built (no tree, or the gold path failed): not trainable.
                (s.ok.get(k) == Some(&1)).then(|| Held::Stored(self.stores.clone(), set, k))
            }
            _ => {
                self.built += 1;
                training_candidates(smi, max, cache, &mut self.labels)
                    .ok()
                    .map(Held::Here)
            }
        }
    }

    /// Where the candidates came from, for the start-up log.
    pub(crate) fn summary(&self) -> String {
        match self.max_candidates {
            None => "no candidates: evaluation".into(),
            Some(_) => format!(
                "candidates of {} molecules read from the dataset, {} built here",
                self.read, self.built
            ),
        }
    }
}

/// Canonical SMILES without stereo, the form decoding produces.
pub(crate) fn flat(smiles: &str) -> Option<String> {
    let m = chem::parse_kekule(smiles).ok()?;
    chem::graph_smiles(&m.atoms, &m.bonds, false).ok()
}
