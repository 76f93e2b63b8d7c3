//! The JT-VAE part of the dataset (`prepare` with `[jtvae]`): the cluster
//! vocabulary over the molecules of `jtvae.vocab_csv` (or the data CSV), the
//! JT-VAE's training molecules (the training split, or those of `jtvae.train_csv`)
//! and the junction trees of the training and held-out molecules.
use super::csv_table::{self, CsvError};
use super::listing::LIST_FIRST;
use crate::chem;
use crate::io::dataset::{Dataset, JtvaeData};
use crate::jtvae::tree::{decompose_smiles, JunctionTree, LabelCache, TreeRecord};
use crate::jtvae::vocab::Vocab;
use std::collections::HashMap;
use std::path::Path;

/// What the vocabulary pass over `source` found: the cluster vocabulary, the trees
/// it decomposed (by canonical SMILES), its label cache, the molecules it read and
/// how many of them could not be decomposed.
struct VocabPass {
    vocab: Vocab,
    decomposed: HashMap<String, JunctionTree>,
    cache: LabelCache,
    n_molecules: usize,
    failed: u64,
}

/// The vocabulary pass of `jtvae_data`: every molecule of `source` is decomposed;
/// those that cannot be are counted and the first listed.
fn vocabulary(
    source: &Path,
    smiles_column: &str,
    limits: &chem::Limits,
) -> Result<VocabPass, CsvError> {
    let rows = csv_table::read_smiles(source, smiles_column)?;
    let mut cache = LabelCache::default();
    let mut labels = Vec::new();
    let mut failed = 0u64;
    // Trees by canonical SMILES, so that the training and held-out molecules (most
    // often rows of this CSV) are not decomposed a second time.
    let mut decomposed: HashMap<String, JunctionTree> = HashMap::new();
    for (line, smi) in &rows {
        if let Err(e) = limits.check_size(smi) {
            failed += 1;
            if failed as usize <= LIST_FIRST {
                log::warn!("{}: line {line}: {e}", source.display());
            }
            continue;
        }
        // Canonical SMILES, as for the training molecules: the decomposition's tie
        // breaks follow atom order, so the same molecule must come in the same order.
        let canonical = chem::canonicalize(smi).unwrap_or_else(|_| smi.clone());
        match decompose_smiles(&canonical, &mut cache) {
            Ok((_, t)) => {
                labels.extend(t.labels.iter().cloned());
                decomposed.insert(canonical, t);
            }
            Err(e) => {
                failed += 1;
                if failed as usize <= LIST_FIRST {
                    log::warn!(
                        "{}: line {line}: {smi:?}: no junction tree: {e}",
                        source.display()
                    );
                }
            }
        }
    }
    if failed > 0 {
        log::warn!(
            "{}: {failed} molecules could not be decomposed and add nothing to the vocabulary",
            source.display()
        );
    }
    Ok(VocabPass {
        vocab: Vocab::new(labels),
        decomposed,
        cache,
        n_molecules: rows.len(),
        failed,
    })
}

/// The JT-VAE vocabulary over every molecule of `source`, and the junction trees of
/// the training molecules. Molecules that cannot be decomposed, and training
/// molecules with a cluster outside the vocabulary, are counted and the first listed.
/// With `defer_trees`, training molecules the vocabulary pass did not decompose get
/// `None` and their indices are returned, for the ranks to decompose.
pub fn jtvae_data(
    ds: &Dataset,
    source: &Path,
    train_csv: Option<&Path>,
    train_limit: Option<usize>,
    smiles_column: &str,
    limits: &chem::Limits,
    defer_trees: bool,
) -> Result<(JtvaeData, Vec<usize>), CsvError> {
    let VocabPass {
        vocab,
        decomposed,
        mut cache,
        n_molecules,
        failed,
    } = vocabulary(source, smiles_column, limits)?;
    let train_smiles = jtvae_training_smiles(ds, train_csv, train_limit, smiles_column, limits)?;
    let mut tree_of = |smi: &str| match decomposed.get(smi) {
        Some(t) => Ok(t.clone()),
        None => decompose_smiles(smi, &mut cache).map(|(_, t)| t),
    };
    let mut trees = Vec::with_capacity(train_smiles.len());
    let mut uncovered = 0u64;
    let mut pending = Vec::new();
    for (k, smi) in train_smiles.iter().enumerate() {
        if defer_trees && !decomposed.contains_key(smi.as_str()) {
            pending.push(k);
            trees.push(None);
            continue;
        }
        let tree = match tree_of(smi) {
            Err(e) => {
                log::warn!("training molecule {smi}: no junction tree: {e}");
                None
            }
            Ok(t) => {
                match t.record(&vocab) {
                    Ok(r) => Some(r),
                    Err(label) => {
                        uncovered += 1;
                        if uncovered as usize <= LIST_FIRST {
                            log::warn!("training molecule {smi}: cluster {label} is outside the vocabulary");
                        }
                        None
                    }
                }
            }
        };
        trees.push(tree);
    }
    if uncovered > 0 {
        log::warn!(
            "{uncovered} training molecules have clusters outside the vocabulary and get no tree"
        );
    }
    // The held-out molecules' trees (evaluation encodes them; a molecule without
    // one is left out there, as the JT-VAE cannot encode it).
    let test_trees: Vec<Option<TreeRecord>> = ds
        .test
        .iter()
        .map(|&i| tree_of(&ds.smiles[i as usize]).ok()?.record(&vocab).ok())
        .collect();
    let stored = |t: &[Option<TreeRecord>]| t.iter().filter(|t| t.is_some()).count();
    log::info!(
        "JT-VAE vocabulary: {} clusters over {} molecules of {}; {} of {} training{} and {} of {} held-out trees stored",
        vocab.len(),
        n_molecules,
        source.display(),
        stored(&trees),
        trees.len(),
        if pending.is_empty() {
            String::new()
        } else {
            format!(" ({} left to the ranks to decompose)", pending.len())
        },
        stored(&test_trees),
        test_trees.len()
    );
    let data = JtvaeData {
        vocab: vocab.labels().to_vec(),
        vocab_source: source.display().to_string(),
        n_vocab_molecules: n_molecules as u64,
        n_vocab_failed: failed,
        n_uncovered: uncovered,
        train_limit: train_limit.map(|n| n as u64),
        train_smiles,
        train_trees: trees,
        test_trees,
        candidates: None,
        graphs: None,
    };
    Ok((data, pending))
}

/// The JT-VAE's training molecules: the training split, or every valid molecule of
/// `train_csv` (canonical, unique) that is not in the held-out split, the first
/// `limit` of them with a limit.
fn jtvae_training_smiles(
    ds: &Dataset,
    train_csv: Option<&Path>,
    limit: Option<usize>,
    smiles_column: &str,
    limits: &chem::Limits,
) -> Result<Vec<String>, CsvError> {
    let Some(path) = train_csv else {
        return Ok(ds
            .train
            .iter()
            .map(|&i| ds.smiles[i as usize].clone())
            .collect());
    };
    let held_out: std::collections::HashSet<&str> = ds
        .test
        .iter()
        .map(|&i| ds.smiles[i as usize].as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let (mut out, mut invalid, mut excluded) = (Vec::new(), 0usize, 0usize);
    let limit = limit.unwrap_or(usize::MAX);
    for (line, smi) in csv_table::read_smiles(path, smiles_column)? {
        if out.len() >= limit {
            break;
        }
        if let Err(e) = limits.check_size(&smi) {
            invalid += 1;
            if invalid <= LIST_FIRST {
                log::warn!("{}: line {line}: skipped: {e}", path.display());
            }
            continue;
        }
        match chem::canonicalize(&smi) {
            Err(_) => {
                invalid += 1;
                if invalid <= LIST_FIRST {
                    log::warn!(
                        "{}: line {line}: invalid SMILES {smi:?} skipped",
                        path.display()
                    );
                }
            }
            Ok(c) if held_out.contains(c.as_str()) => excluded += 1,
            Ok(c) => {
                if seen.insert(c.clone()) {
                    out.push(c);
                }
            }
        }
    }
    log::info!(
        "JT-VAE training set: {} molecules of {}{} ({invalid} invalid, {excluded} in the held-out split left out)",
        out.len(),
        path.display(),
        if limit < usize::MAX {
            format!(" (jtvae.train_limit = {limit}: the first in file order)")
        } else {
            String::new()
        }
    );
    Ok(out)
}
