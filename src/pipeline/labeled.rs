//! The labeled molecules of the pipeline: dataset rows the JT-VAE can encode,
//! with their normalized targets (Stage 2's training molecules, and the held-out
//! molecules of its evaluation and of `zo-hpc eval`).
use crate::data::samples::{Example, MoleculeSet, Prepared};
use crate::io::dataset::Dataset;
use crate::jtvae::tree::LabelCache;
use crate::jtvae::tree::TreeRecord;
use crate::jtvae::vocab::Vocab;
use std::collections::HashMap;

/// A labeled molecule the JT-VAE can encode.
pub(crate) struct Labeled {
    pub ex: Example,
    /// Normalized target.
    pub y: f32,
}

/// Builds the labeled examples of dataset rows `idx`, with what `src` gives
/// (stored records and candidates; `Prepared::none` computes everything); returns
/// them and how many could not be encoded. Rows that are JT-VAE training or
/// held-out molecules take their tree (and stored record and candidates) from the
/// dataset file instead of decomposing them again.
pub(crate) fn labeled(
    ds: &Dataset,
    idx: &[u64],
    vocab: &Vocab,
    src: &mut Prepared,
) -> (Vec<Labeled>, usize) {
    let mut cache = LabelCache::default();
    // Stored trees by SMILES, with each molecule's place in the file's lists.
    let mut stored: HashMap<&str, (&Option<TreeRecord>, MoleculeSet, usize)> = HashMap::new();
    if let Some(j) = &ds.jtvae {
        let test_smiles = ds.test.iter().map(|&i| ds.smiles[i as usize].as_str());
        for (k, (smi, tree)) in test_smiles.zip(&j.test_trees).enumerate() {
            stored.insert(smi, (tree, MoleculeSet::Test, k));
        }
        for (k, (smi, tree)) in j.train_smiles.iter().zip(&j.train_trees).enumerate() {
            stored.insert(smi, (tree, MoleculeSet::Train, k));
        }
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    for &i in idx {
        let smi = &ds.smiles[i as usize];
        let (tree, set, k) = match stored.get(smi.as_str()) {
            Some((Some(t), set, k)) => (Some((*t).clone()), *set, Some(*k)),
            // Stored without a tree: outside the vocabulary.
            Some((None, _, _)) => {
                skipped += 1;
                continue;
            }
            None => (None, MoleculeSet::Train, None),
        };
        let graph = src.graph(set, k);
        let ex = Example::build(smi, tree, graph, vocab, &mut cache, |cache| {
            src.candidates(set, k, smi, cache)
        });
        match ex {
            Some(ex) => out.push(Labeled {
                ex,
                y: ((ds.target[i as usize] - ds.target_mean) / ds.target_std) as f32,
            }),
            None => skipped += 1,
        }
    }
    (out, skipped)
}
