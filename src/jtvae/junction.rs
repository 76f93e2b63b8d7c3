//! The junction tree of a molecule: its clusters (atom sets), the tree edges
//! between them and each cluster's label, and the storage form the dataset file
//! holds (`TreeRecord`, vocabulary indices instead of labels). Made by `tree`
//! (decomposition), walked by `assemble` (attachment) and the networks.
use super::vocab::Vocab;

/// A junction tree in storage form: vocabulary index and atoms of each node, edges
/// (what the dataset file stores, and what the JT-VAE trains on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRecord {
    pub labels: Vec<u32>,
    pub clusters: Vec<Vec<u32>>,
    pub edges: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunctionTree {
    /// Atom indices (sorted) of each cluster; cluster 0 is the root and holds atom 0.
    pub clusters: Vec<Vec<usize>>,
    /// Tree edges `(i, j)` with `i < j`, sorted.
    pub edges: Vec<(usize, usize)>,
    /// Canonical Kekulé SMILES of each cluster.
    pub labels: Vec<String>,
}

impl JunctionTree {
    /// The storage form with vocabulary indices; Err(label) for the first label
    /// outside the vocabulary.
    pub fn record(&self, vocab: &Vocab) -> Result<TreeRecord, String> {
        let labels = self
            .labels
            .iter()
            .map(|l| vocab.get(l).map(|x| x as u32).ok_or_else(|| l.clone()))
            .collect::<Result<_, _>>()?;
        Ok(TreeRecord {
            labels,
            clusters: self
                .clusters
                .iter()
                .map(|c| c.iter().map(|&a| a as u32).collect())
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|&(a, b)| (a as u32, b as u32))
                .collect(),
        })
    }

    /// Neighbours of each node.
    pub fn neighbours(&self) -> Vec<Vec<usize>> {
        let mut nb = vec![Vec::new(); self.clusters.len()];
        for &(i, j) in &self.edges {
            nb[i].push(j);
            nb[j].push(i);
        }
        nb.iter_mut().for_each(|v| v.sort_unstable());
        nb
    }
}
