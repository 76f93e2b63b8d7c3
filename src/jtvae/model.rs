//! The JT-VAE as one model: encoder (graph + tree) → mean and log-variance of the
//! latent (tree half, graph half) → reparameterized sample → tree decoder
//! (teacher-forced topology and label losses) and assembly scorer (candidate
//! losses against the graph half) → KL. Losses are SUMS over the batch, so the
//! data-parallel loop can divide by the global batch size.
use super::batch::TreeBatch;
use super::candidates::{NodeCandidates, CAND_ATOM_DIM, CAND_BOND_DIM};
use super::decoder::TreeDecoder;
use super::encoder::JtEncoder;
use super::scorer::{group_cross_entropy, AssemblyScorer};
use super::tree::TreeRecord;
use crate::chem;
use crate::config::JtvaeConfig;
use crate::models::batch::GraphBatch;
use std::borrow::Cow;
use std::time::Instant;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// One training molecule: its feature graph, junction tree and assembly candidates
/// (borrowed, or expanded for this batch from a compact store).
pub struct Sample<'a> {
    pub graph: Cow<'a, chem::MolGraph>,
    pub tree: &'a TreeRecord,
    pub candidates: Cow<'a, [NodeCandidates]>,
}

/// Loss terms of a batch (sums over its molecules) and counts for accuracies.
pub struct Losses {
    pub word: Tensor,
    pub topo: Tensor,
    pub assm: Tensor,
    pub kl: Tensor,
    pub word_acc: f64,
    pub topo_acc: f64,
    pub n_word: i64,
    pub n_topo: i64,
    /// (groups whose gold candidate scored highest, groups)
    pub assm_correct: (i64, i64),
    /// Seconds of the forward pass in the tree decoder, in batching the assembly
    /// candidates, and in scoring them (`losses_encoded`).
    pub tree_s: f64,
    pub assm_batch_s: f64,
    pub assm_score_s: f64,
}

pub struct JtVae {
    pub encoder: JtEncoder,
    pub decoder: TreeDecoder,
    pub scorer: AssemblyScorer,
    tree_mean: nn::Linear,
    tree_logvar: nn::Linear,
    graph_mean: nn::Linear,
    graph_logvar: nn::Linear,
    atom_dim: usize,
    bond_dim: usize,
    half: i64,
    /// Decoding stops (a counted failure) beyond this many tree nodes.
    pub max_tree_nodes: usize,
    /// VarStore paths of the decoder v (tree decoder, assembly scorer).
    decoder_paths: [String; 2],
}

impl JtVae {
    pub fn new(
        p: &nn::Path,
        vocab_size: i64,
        atom_dim: usize,
        bond_dim: usize,
        c: &JtvaeConfig,
    ) -> JtVae {
        let half = c.latent / 2;
        let lin = |name: &str| nn::linear(p / name, c.hidden, half, Default::default());
        let path_of = |q: nn::Path| q.components().collect::<Vec<_>>().join(".");
        JtVae {
            encoder: JtEncoder::new(
                p / "encoder",
                vocab_size,
                atom_dim as i64,
                bond_dim as i64,
                c,
            ),
            decoder: TreeDecoder::new(p / "decoder", vocab_size, c),
            scorer: AssemblyScorer::new(p / "assembly", c.hidden, half, c.depth_graph),
            tree_mean: lin("tree_mean"),
            tree_logvar: lin("tree_logvar"),
            graph_mean: lin("graph_mean"),
            graph_logvar: lin("graph_logvar"),
            atom_dim,
            bond_dim,
            half,
            max_tree_nodes: c.max_tree_nodes,
            decoder_paths: [path_of(p / "decoder"), path_of(p / "assembly")],
        }
    }

    /// Whether VarStore variable `name` is a parameter of the decoder v (tree
    /// decoder + assembly scorer): the part Stage 2 freezes or trains zeroth-order.
    pub fn is_decoder_var(&self, name: &str) -> bool {
        self.decoder_paths.iter().any(|p| {
            name.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Latent size (tree half + graph half).
    pub fn latent(&self) -> i64 {
        2 * self.half
    }

    /// Mean and log-variance `[B, latent]` (tree half first).
    pub fn encode(&self, g: &GraphBatch, t: &TreeBatch) -> (Tensor, Tensor) {
        let (tree_vec, mol_vec) = self.encoder.forward(g, t);
        let mean = Tensor::cat(
            &[
                self.tree_mean.forward(&tree_vec),
                self.graph_mean.forward(&mol_vec),
            ],
            1,
        );
        // fast_jtnn keeps the log-variance non-positive (−|·|) for stability.
        let logvar = -Tensor::cat(
            &[
                self.tree_logvar.forward(&tree_vec),
                self.graph_logvar.forward(&mol_vec),
            ],
            1,
        )
        .abs();
        (mean, logvar)
    }

    /// Losses of a batch; `eps [B, latent]` is the reparameterization noise (zeros
    /// for the deterministic mean).
    pub fn losses(&self, samples: &[Sample], eps: &Tensor, device: Device) -> Losses {
        let (g, t) = self.batches(samples, device);
        let (mean, logvar) = self.encode(&g, &t);
        self.losses_encoded(samples, &t, &mean, &logvar, eps, device)
    }

    /// The encoder's input batches (feature graphs, junction trees) of `samples`.
    pub fn batches(&self, samples: &[Sample], device: Device) -> (GraphBatch, TreeBatch) {
        let graphs: Vec<&chem::MolGraph> = samples.iter().map(|s| &*s.graph).collect();
        let trees: Vec<&TreeRecord> = samples.iter().map(|s| s.tree).collect();
        (
            GraphBatch::new(&graphs, self.atom_dim, self.bond_dim, device),
            TreeBatch::new(&trees, device),
        )
    }

    /// `losses` for a batch already encoded (`t` from `batches`, `mean`/`logvar` from
    /// `encode`), so a caller that needs the latent too encodes once.
    pub fn losses_encoded(
        &self,
        samples: &[Sample],
        t: &TreeBatch,
        mean: &Tensor,
        logvar: &Tensor,
        eps: &Tensor,
        device: Device,
    ) -> Losses {
        let z = mean + (logvar * 0.5).exp() * eps;
        let kl = ((logvar + 1.0) - mean.square() - logvar.exp()).sum(Kind::Float) * -0.5;
        let z_tree = z.narrow(1, 0, self.half);
        let z_graph = z.narrow(1, self.half, self.half);
        let t0 = Instant::now();
        let dec = self.decoder.loss(t, &z_tree);
        let tree_s = t0.elapsed().as_secs_f64();
        let (assm, assm_correct, (assm_batch_s, assm_score_s)) =
            self.assembly_loss(samples, &z_graph, device);
        Losses {
            word: dec.word,
            topo: dec.topo,
            assm,
            kl,
            word_acc: dec.word_acc,
            topo_acc: dec.topo_acc,
            n_word: dec.n_word,
            n_topo: dec.n_topo,
            assm_correct,
            tree_s,
            assm_batch_s,
            assm_score_s,
        }
    }

    fn assembly_loss(
        &self,
        samples: &[Sample],
        z_graph: &Tensor,
        device: Device,
    ) -> (Tensor, (i64, i64), (f64, f64)) {
        let t0 = Instant::now();
        let mut graphs: Vec<&chem::MolGraph> = Vec::new();
        let (mut group, mut owner, mut gold) = (Vec::new(), Vec::new(), Vec::new());
        let mut n_groups = 0i64;
        for (b, s) in samples.iter().enumerate() {
            for node in s.candidates.iter() {
                gold.push((graphs.len() + node.gold) as i64);
                for cg in &node.graphs {
                    graphs.push(cg);
                    group.push(n_groups);
                    owner.push(b as i64);
                }
                n_groups += 1;
            }
        }
        if graphs.is_empty() {
            let none = Tensor::zeros([], (Kind::Float, device));
            return (none, (0, 0), (t0.elapsed().as_secs_f64(), 0.0));
        }
        let cb = GraphBatch::new(&graphs, CAND_ATOM_DIM, CAND_BOND_DIM, device);
        let batch_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let zsel = z_graph.index_select(0, &Tensor::from_slice(&owner).to_device(device));
        let scores = self.scorer.score(&cb, &zsel);
        let group = Tensor::from_slice(&group).to_device(device);
        let gold = Tensor::from_slice(&gold).to_device(device);
        let (loss, correct) = group_cross_entropy(&scores, &group, n_groups, &gold);
        (
            loss,
            (correct, n_groups),
            (batch_s, t1.elapsed().as_secs_f64()),
        )
    }
}
