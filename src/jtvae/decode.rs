//! Decoding a latent into a molecule: the tree decoder proposes a junction tree
//! (greedy, at most `MAX_TREE_NODES` nodes), then the clusters are assembled in
//! depth-first order. At every node the valid, distinct candidate attachments are
//! scored by the assembly scorer against the graph half of the latent and tried
//! best first; a node without any valid candidate sends the search back to the
//! previous node's next choice. The search is bounded (`MAX_ATTEMPTS` attachments
//! tried in all), so a latent far from the data ends as a counted failure, never a
//! hang. Deterministic for a given latent.
use super::assemble::{attach, candidates, flat_smiles};
use super::candidates::{local_graph, LabelGraphs, CAND_ATOM_DIM, CAND_BOND_DIM};
use super::graph::MolGraph;
use super::model::JtVae;
use crate::chem::mol::KAtom;
use crate::models::batch::GraphBatch;
use tch::Tensor;

/// Largest junction tree the decoder may build (fast_jtnn: 100).
pub const MAX_TREE_NODES: usize = 100;
/// Attachments tried in all before a decode is given up.
pub const MAX_ATTEMPTS: usize = 2000;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the tree decoder exceeded {MAX_TREE_NODES} nodes")]
    TreeTooLarge,
    #[error(
        "no assembly of the decoded tree ({nodes} nodes) was found within {MAX_ATTEMPTS} attempts"
    )]
    NoAssembly { nodes: usize },
    #[error("cluster label {0:?} cannot be parsed")]
    Label(String),
}

/// Counts of where decoding time goes, for the benchmark.
#[derive(Debug, Default, Clone)]
pub struct DecodeTimes {
    pub tree_s: f64,
    pub enumerate_s: f64,
    pub score_s: f64,
}

/// One node's ranked candidates during the search.
struct Frame {
    /// (molecule after attaching, child atoms in it), best first
    options: Vec<(MolGraph, Vec<usize>)>,
    next: usize,
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
        let half = self.latent() / 2;
        let z = z.reshape([-1]);
        let (z_tree, z_graph) = (z.narrow(0, 0, half), z.narrow(0, half, half));
        let t0 = std::time::Instant::now();
        let tree = self.decoder.decode(&z_tree, MAX_TREE_NODES);
        times.tree_s += t0.elapsed().as_secs_f64();
        let (node_labels, edges) = tree.ok_or(DecodeError::TreeTooLarge)?;
        let graph_of = |labels: &mut LabelGraphs, k: usize| -> Result<MolGraph, DecodeError> {
            let name = &vocab[node_labels[k]];
            labels
                .get(name)
                .cloned()
                .map_err(|_| DecodeError::Label(name.clone()))
        };
        // Depth-first order of (node, parent); edges are (parent, child) in creation order.
        let n = node_labels.len();
        let mut children = vec![Vec::new(); n];
        for &(p, c) in &edges {
            children[p].push(c);
        }
        let mut order = Vec::with_capacity(n);
        let mut stack = vec![(0usize, usize::MAX)];
        while let Some((x, p)) = stack.pop() {
            order.push((x, p));
            for &c in children[x].iter().rev() {
                stack.push((c, x));
            }
        }
        let root = graph_of(labels, 0)?;
        let root = MolGraph::new(
            root.atoms
                .iter()
                .map(|a| KAtom {
                    explicit_hs: 0,
                    ..a.clone()
                })
                .collect(),
            root.bonds.clone(),
        );
        // partials[k]: the molecule after placing order[..=k]; node_atoms per node.
        let mut partials = vec![root];
        let mut node_atoms: Vec<Vec<usize>> = vec![Vec::new(); n];
        node_atoms[0] = (0..partials[0].n_atoms()).collect();
        let mut frames: Vec<Frame> = Vec::new();
        let mut attempts = 0usize;
        let mut pos = 1usize;
        while pos < order.len() {
            if frames.len() < pos {
                let (node, parent) = order[pos];
                let child = graph_of(labels, node)?;
                let partial = &partials[pos - 1];
                let t1 = std::time::Instant::now();
                let mut seen: Vec<String> = Vec::new();
                let mut options = Vec::new();
                for cand in candidates(partial, &node_atoms[parent], &child) {
                    let (next, index) = attach(partial, &child, &cand);
                    let Ok(smi) = flat_smiles(&next) else {
                        continue;
                    };
                    if !seen.contains(&smi) {
                        seen.push(smi);
                        options.push((next, index));
                    }
                }
                times.enumerate_s += t1.elapsed().as_secs_f64();
                let t2 = std::time::Instant::now();
                if options.len() > 1 {
                    let graphs: Vec<_> = options
                        .iter()
                        .map(|(g, idx)| local_graph(g, &node_atoms[parent], idx))
                        .collect();
                    let refs: Vec<&_> = graphs.iter().collect();
                    let batch = GraphBatch::new(&refs, CAND_ATOM_DIM, CAND_BOND_DIM, z.device());
                    let zs = z_graph
                        .unsqueeze(0)
                        .expand([options.len() as i64, half], false);
                    let scores = Vec::<f32>::try_from(
                        &self.scorer.score(&batch, &zs).to_device(tch::Device::Cpu),
                    )
                    .unwrap_or_default();
                    let mut ranked: Vec<usize> = (0..options.len()).collect();
                    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
                    let mut sorted: Vec<Option<(MolGraph, Vec<usize>)>> =
                        options.into_iter().map(Some).collect();
                    options = ranked.iter().filter_map(|&k| sorted[k].take()).collect();
                }
                times.score_s += t2.elapsed().as_secs_f64();
                frames.push(Frame { options, next: 0 });
            }
            let frame = &mut frames[pos - 1];
            if frame.next < frame.options.len() && attempts < MAX_ATTEMPTS {
                attempts += 1;
                let (next, index) = frame.options[frame.next].clone();
                frame.next += 1;
                partials.truncate(pos);
                partials.push(next);
                node_atoms[order[pos].0] = index;
                pos += 1;
            } else {
                // Exhausted here: undo this node and try the previous node's next choice.
                frames.pop();
                if pos == 1 || attempts >= MAX_ATTEMPTS {
                    return Err(DecodeError::NoAssembly { nodes: n });
                }
                pos -= 1;
            }
        }
        flat_smiles(partials.last().unwrap_or(&partials[0]))
            .map_err(|_| DecodeError::NoAssembly { nodes: n })
    }
}
