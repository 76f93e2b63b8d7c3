//! Decoding a latent into a molecule. The tree decoder walks depth first; each
//! new cluster is attached to the molecule built so far as soon as it is created:
//! its valid, distinct attachments to the parent's atoms are enumerated, scored by
//! the assembly scorer against the graph half of the latent, and the best one is
//! applied. The tree decoder takes the most likely of its `LABEL_TOP_K` labels that
//! can be attached at all; when none can, it backtracks instead of expanding. Every
//! intermediate molecule is valid (RDKit sanitizes it), so a decode ends either with
//! a molecule or with a counted failure (a tree larger than `jtvae.max_tree_nodes`,
//! by default `MAX_TREE_NODES`),
//! never a hang. Deterministic for a given latent.
use super::assemble::{attach, candidates, flat_smiles};
use super::candidates::{local_graph, LabelGraphs, CAND_ATOM_DIM, CAND_BOND_DIM};
use super::graph::MolGraph;
use super::model::JtVae;
use crate::chem::mol::KAtom;
use crate::models::batch::GraphBatch;
use std::time::Instant;
use tch::Tensor;

/// Default largest junction tree the decoder may build (fast_jtnn: 100).
pub const MAX_TREE_NODES: usize = 100;
/// A new tree node takes the most likely of this many labels that can be attached.
pub const LABEL_TOP_K: usize = 5;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the tree decoder exceeded its node limit (jtvae.max_tree_nodes)")]
    TreeTooLarge,
    #[error("cluster label {0:?} cannot be parsed")]
    Label(String),
    /// Cannot happen while every step is sanitized; kept as a value, not a panic.
    #[error("the assembled molecule is not valid: {0}")]
    Invalid(String),
}

/// Where decoding time goes, for the benchmark.
#[derive(Debug, Default, Clone)]
pub struct DecodeTimes {
    /// Tree decoder networks (topology and labels).
    pub tree_s: f64,
    /// Candidate enumeration and validity checks (RDKit).
    pub enumerate_s: f64,
    /// Assembly scorer network.
    pub score_s: f64,
}

impl JtVae {
    /// Decodes one latent `[latent]` into a canonical (non-isomeric) SMILES.
    pub fn decode(
        &self,
        z: &Tensor,
        vocab: &[String],
        labels: &mut LabelGraphs,
        times: &mut DecodeTimes,
    ) -> Result<String, DecodeError> {
        let _guard = tch::no_grad_guard();
        let t_all = Instant::now();
        let half = self.latent() / 2;
        let z = z.reshape([-1]);
        let (z_tree, z_graph) = (z.narrow(0, 0, half), z.narrow(0, half, half));
        let root_name = &vocab[self.decoder.root_label(&z_tree)];
        let root = labels
            .get(root_name)
            .map_err(|_| DecodeError::Label(root_name.clone()))?;
        let mut partial = MolGraph::new(
            root.atoms
                .iter()
                .map(|a| KAtom {
                    explicit_hs: 0,
                    ..a.clone()
                })
                .collect(),
            root.bonds.clone(),
        );
        let mut node_atoms: Vec<Vec<usize>> = vec![(0..partial.n_atoms()).collect()];
        let (mut enumerate_s, mut score_s) = (0.0, 0.0);
        let mut accept = |parent: usize, label: usize| -> bool {
            let t1 = Instant::now();
            let Ok(child) = labels.get(&vocab[label]).cloned() else {
                return false;
            };
            let mut seen: Vec<String> = Vec::new();
            let mut options = Vec::new();
            for cand in candidates(&partial, &node_atoms[parent], &child) {
                let (next, index) = attach(&partial, &child, &cand);
                let Ok(smi) = flat_smiles(&next) else {
                    continue;
                };
                if !seen.contains(&smi) {
                    seen.push(smi);
                    options.push((next, index));
                }
            }
            enumerate_s += t1.elapsed().as_secs_f64();
            if options.is_empty() {
                return false;
            }
            let t2 = Instant::now();
            let best = if options.len() == 1 {
                0
            } else {
                let graphs: Vec<_> = options
                    .iter()
                    .map(|(g, idx)| local_graph(g, &node_atoms[parent], idx))
                    .collect();
                let refs: Vec<&_> = graphs.iter().collect();
                let batch = GraphBatch::new(&refs, CAND_ATOM_DIM, CAND_BOND_DIM, z.device());
                let zs = z_graph
                    .unsqueeze(0)
                    .expand([options.len() as i64, half], false);
                // Ties go to the first candidate: argmax returns the first maximum.
                self.scorer
                    .score(&batch, &zs)
                    .argmax(0, false)
                    .int64_value(&[]) as usize
            };
            score_s += t2.elapsed().as_secs_f64();
            let (next, index) = options.swap_remove(best);
            partial = next;
            node_atoms.push(index);
            true
        };
        let tree = self
            .decoder
            .decode_with(&z_tree, self.max_tree_nodes, LABEL_TOP_K, &mut accept);
        times.enumerate_s += enumerate_s;
        times.score_s += score_s;
        times.tree_s += t_all.elapsed().as_secs_f64() - enumerate_s - score_s;
        tree.ok_or(DecodeError::TreeTooLarge)?;
        flat_smiles(&partial).map_err(|e| DecodeError::Invalid(e.message))
    }
}
