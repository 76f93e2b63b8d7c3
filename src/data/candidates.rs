//! The assembly candidates and parsed records of the JT-VAE's molecules, computed
//! by `prepare` in contiguous blocks over the MPI ranks (with the training trees
//! the vocabulary pass left to them) and gathered to rank 0. The result is the
//! same whatever the number of ranks.
use super::gather::{gather_store, GatherError};
use super::rank_trees::{encode_tree, fill_trees, TreesInconsistent, TREE_FAILED, TREE_UNCOVERED};
use crate::chem;
use crate::dist::{Dist, GatherTooLarge};
use crate::io::candidates::{CandidateStore, CANDIDATES_FORMAT};
use crate::io::dataset::{Dataset, StoredCandidates, StoredGraphs};
use crate::io::records::{RecordStore, RECORDS_FORMAT};
use crate::jtvae::candidates::{compact_training_candidates, LabelGraphs};
use crate::jtvae::tree::{decompose_smiles, LabelCache};
use crate::jtvae::vocab::Vocab;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CandidatesError {
    #[error(transparent)]
    Gather(#[from] GatherError),
    #[error("gathering junction trees")]
    TreesTooLarge(#[source] GatherTooLarge),
    #[error(transparent)]
    Trees(#[from] TreesInconsistent),
}

/// The assembly candidates and the parsed records of the JT-VAE's training
/// molecules and of the held-out split (those with a tree), computed in contiguous
/// blocks over the ranks (collective; `ds` is given on rank 0 only, with the
/// indices of the training molecules whose trees the ranks decompose here and
/// write into it). `Some` on rank 0.
pub fn candidates(
    dist: &Dist,
    max_candidates: usize,
    ds: Option<(&mut Dataset, &[usize])>,
) -> Result<Option<(StoredCandidates, StoredGraphs)>, CandidatesError> {
    let t0 = Instant::now();
    // Work lists from rank 0, one line per molecule: `+SMILES` (candidates),
    // `?SMILES` (decompose, then candidates if its tree is in the vocabulary), or
    // empty (no tree: it is not trained on). Neither `+` nor `?` starts a SMILES.
    let (mut train, mut test, mut vocab) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending: &[usize] = &[];
    if let Some((ds, p)) = ds.as_ref() {
        if let Some(j) = ds.jtvae.as_ref() {
            pending = p;
            let mut is_pending = vec![false; j.train_smiles.len()];
            for &k in pending {
                is_pending[k] = true;
            }
            let lines = |v: Vec<String>| v.join("\n").into_bytes();
            train = lines(
                j.train_smiles
                    .iter()
                    .zip(&j.train_trees)
                    .zip(&is_pending)
                    .map(|((s, t), &p)| match (t, p) {
                        (_, true) => format!("?{s}"),
                        (Some(_), false) => format!("+{s}"),
                        (None, false) => String::new(),
                    })
                    .collect(),
            );
            test = lines(
                ds.test
                    .iter()
                    .zip(&j.test_trees)
                    .map(|(&i, t)| match t {
                        Some(_) => format!("+{}", ds.smiles[i as usize]),
                        None => String::new(),
                    })
                    .collect(),
            );
            vocab = lines(j.vocab.clone());
        }
    }
    dist.broadcast_bytes(&mut train);
    dist.broadcast_bytes(&mut test);
    dist.broadcast_bytes(&mut vocab);
    let vocab = Vocab::new(String::from_utf8_lossy(&vocab).lines().map(str::to_string));
    type Stores = (CandidateStore, RecordStore, Vec<Vec<u32>>);
    let compute = |list: &[u8], what: &str| -> Result<Option<Stores>, CandidatesError> {
        let list = String::from_utf8_lossy(list);
        let items: Vec<&str> = if list.is_empty() {
            Vec::new()
        } else {
            list.split('\n').collect()
        };
        let block = dist.shard(items.len());
        let (cands, records, trees) =
            compute_block(&items[block], max_candidates, &vocab, what, dist.is_root());
        let all = gather_store(dist, &cands, "assembly candidates")?;
        let records = gather_store(dist, &records, "molecule records")?;
        let trees = dist
            .gather(&trees)
            .map_err(CandidatesError::TreesTooLarge)?;
        if let (Some(all), Some(records)) = (&all, &records) {
            // A molecule gets a record when it has a tree.
            let with_tree = records.ok.iter().filter(|&&ok| ok != 0).count();
            let built = all.ok.iter().filter(|&&ok| ok != 0).count();
            if built < with_tree {
                log::warn!(
                    "{} of {with_tree} {what} molecules get no assembly candidates (their gold path cannot be assembled); the JT-VAE stage leaves them out",
                    with_tree - built
                );
            }
        }
        Ok(all.zip(records).map(|(a, r)| (a, r, trees)))
    };
    let train = compute(&train, "training")?;
    let test = compute(&test, "held-out")?;
    let (Some((train, train_records, trees)), Some((test, test_records, _))) = (train, test) else {
        return Ok(None);
    };
    if let Some((ds, _)) = ds {
        if let Some(j) = ds.jtvae.as_mut() {
            fill_trees(j, pending, &trees.concat())?;
        }
    }
    log::info!(
        "assembly candidates (at most {max_candidates} per node): {} training and {} held-out molecules, {} candidate groups, on {} ranks in {:.1} s",
        train.len(),
        test.len(),
        train.gold.len() + test.gold.len(),
        dist.size,
        t0.elapsed().as_secs_f64()
    );
    let candidates = StoredCandidates {
        format: CANDIDATES_FORMAT.to_string(),
        max_candidates: max_candidates as u64,
        train,
        test,
    };
    let graphs = StoredGraphs {
        format: RECORDS_FORMAT.to_string(),
        train: train_records,
        test: test_records,
    };
    Ok(Some((candidates, graphs)))
}

/// The candidates and records of one block of work-list items (see `candidates`),
/// and the outcomes of the trees it decomposed (`encode_tree`).
fn compute_block(
    items: &[&str],
    max_candidates: usize,
    vocab: &Vocab,
    what: &str,
    log: bool,
) -> (CandidateStore, RecordStore, Vec<u32>) {
    let (mut cache, mut labels) = (LabelCache::default(), LabelGraphs::default());
    let (mut store, mut records) = (CandidateStore::default(), RecordStore::default());
    let mut trees = Vec::new();
    let t0 = Instant::now();
    // A line per tenth of the block, and at least one a minute (large blocks).
    let every = (items.len() / 10).max(1);
    let mut logged = Instant::now();
    for (k, item) in items.iter().enumerate() {
        let smi = match item.split_at_checked(1) {
            Some(("+", smi)) => smi,
            Some(("?", smi)) => {
                let tree = match decompose_smiles(smi, &mut cache) {
                    Err(_) => Err(TREE_FAILED),
                    Ok((_, t)) => t.record(vocab).map_err(|_| TREE_UNCOVERED),
                };
                let usable = tree.is_ok();
                encode_tree(&mut trees, tree);
                if usable {
                    smi
                } else {
                    ""
                }
            }
            _ => "",
        };
        let (nodes, record) = if smi.is_empty() {
            (None, None)
        } else {
            (
                compact_training_candidates(smi, max_candidates, &mut cache, &mut labels).ok(),
                chem::parse(smi).ok(),
            )
        };
        if let Err(e) = store.push(nodes.as_deref()) {
            log::warn!("{what} molecule {smi}: {e}; it gets no assembly candidates");
        }
        records.push(record.as_ref());
        if log && ((k + 1) % every == 0 || logged.elapsed().as_secs() >= 60) {
            logged = Instant::now();
            log::info!(
                "assembly candidates of {what} molecules: {}/{} of this rank's block ({:.0} s)",
                k + 1,
                items.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    (store, records, trees)
}
