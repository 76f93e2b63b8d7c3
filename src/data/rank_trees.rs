//! Junction trees decomposed over the MPI ranks (`prepare` with candidates): each
//! rank encodes the outcome of every tree it decomposed as a stream of `u32`
//! (`encode_tree`), the streams are gathered, and rank 0 reads them back into the
//! training trees (`fill_trees`), counting and listing the molecules left without one.
use super::listing::LIST_FIRST;
use crate::io::dataset::JtvaeData;
use crate::jtvae::tree::{decompose_smiles, LabelCache, TreeRecord};
use crate::jtvae::vocab::Vocab;

/// The gathered tree outcomes do not match the molecules they were computed for.
#[derive(Debug, thiserror::Error)]
#[error("junction trees gathered from the ranks are inconsistent")]
pub struct TreesInconsistent;

/// Outcome codes of a tree decomposed by a rank (`encode_tree`).
pub const TREE_FAILED: u32 = 0;
pub const TREE_OK: u32 = 1;
pub const TREE_UNCOVERED: u32 = 2;

/// Appends a decomposition's outcome to `out`: the code, and for a tree its node
/// count, labels, each cluster (atom count, atoms), edge count and edges.
pub fn encode_tree(out: &mut Vec<u32>, tree: Result<TreeRecord, u32>) {
    match tree {
        Err(code) => out.push(code),
        Ok(t) => {
            out.extend([TREE_OK, t.labels.len() as u32]);
            out.extend(&t.labels);
            for c in &t.clusters {
                out.push(c.len() as u32);
                out.extend(c);
            }
            out.push(t.edges.len() as u32);
            for &(i, j) in &t.edges {
                out.extend([i, j]);
            }
        }
    }
}

/// Reads the outcomes `encode_tree` wrote, in order, into the training trees at
/// `pending`; counts and lists (the first few) the molecules left without one.
pub fn fill_trees(
    j: &mut JtvaeData,
    pending: &[usize],
    codes: &[u32],
) -> Result<(), TreesInconsistent> {
    let bad = || TreesInconsistent;
    let mut it = codes.iter().copied();
    let mut next = || it.next().ok_or_else(bad);
    let (mut uncovered, mut failed) = (0u64, 0u64);
    let vocab = Vocab::new(j.vocab.iter().cloned());
    let mut cache = LabelCache::default();
    for &k in pending {
        let code = next()?;
        let tree = match code {
            TREE_OK => {
                let n = next()? as usize;
                let labels = (0..n).map(|_| next()).collect::<Result<Vec<_>, _>>()?;
                let mut clusters = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = next()? as usize;
                    clusters.push((0..m).map(|_| next()).collect::<Result<Vec<_>, _>>()?);
                }
                let e = next()? as usize;
                let edges = (0..e)
                    .map(|_| Ok((next()?, next()?)))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(TreeRecord {
                    labels,
                    clusters,
                    edges,
                })
            }
            TREE_UNCOVERED | TREE_FAILED => {
                if code == TREE_UNCOVERED {
                    uncovered += 1;
                } else {
                    failed += 1;
                }
                if (uncovered + failed) as usize <= LIST_FIRST {
                    // Decomposed again here, for the same message as on rank 0 alone.
                    let smi = &j.train_smiles[k];
                    match decompose_smiles(smi, &mut cache) {
                        Err(e) => log::warn!("training molecule {smi}: no junction tree: {e}"),
                        Ok((_, t)) => {
                            if let Err(label) = t.record(&vocab) {
                                log::warn!("training molecule {smi}: cluster {label} is outside the vocabulary");
                            }
                        }
                    }
                }
                None
            }
            _ => return Err(bad()),
        };
        let slot = j.train_trees.get_mut(k).ok_or_else(bad)?;
        *slot = tree;
    }
    if next().is_ok() {
        return Err(bad());
    }
    j.n_uncovered += uncovered;
    if uncovered > 0 {
        log::warn!(
            "{uncovered} training molecules have clusters outside the vocabulary and get no tree"
        );
    }
    let stored = j.train_trees.iter().filter(|t| t.is_some()).count();
    log::info!(
        "{stored} of {} training trees stored ({} decomposed over the ranks)",
        j.train_trees.len(),
        pending.len()
    );
    Ok(())
}
