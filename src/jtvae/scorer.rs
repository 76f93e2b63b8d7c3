//! The assembly scorer: a small message-passing network over a candidate
//! attachment's local graph (parent and child atoms, with flags marking which is
//! which and where they join), read out to a vector that is scored against the
//! graph half of the latent. Training: softmax over each node's candidates.
use super::candidates::{CAND_ATOM_DIM, CAND_BOND_DIM};
use crate::models::batch::GraphBatch;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

fn no_bias() -> nn::LinearConfig {
    nn::LinearConfig {
        bias: false,
        ..Default::default()
    }
}

pub struct AssemblyScorer {
    w_in: nn::Linear,
    w_msg: nn::Linear,
    w_upd: nn::Linear,
    out: nn::Linear,
    prior: nn::Linear,
    steps: i64,
}

impl AssemblyScorer {
    pub fn new(p: nn::Path, hidden: i64, latent_graph: i64, steps: i64) -> Self {
        AssemblyScorer {
            w_in: nn::linear(
                &p / "w_in",
                CAND_ATOM_DIM as i64,
                hidden,
                Default::default(),
            ),
            w_msg: nn::linear(
                &p / "w_msg",
                hidden + CAND_BOND_DIM as i64,
                hidden,
                Default::default(),
            ),
            w_upd: nn::linear(&p / "w_upd", 2 * hidden, hidden, Default::default()),
            // No biases here: a shift common to all candidates of a node cancels in
            // the softmax, so its true gradient is zero and Adam would only amplify
            // rounding noise into it.
            out: nn::linear(&p / "out", hidden, latent_graph, no_bias()),
            prior: nn::linear(&p / "prior", latent_graph, 1, no_bias()),
            steps,
        }
    }

    /// Scores `[n_graphs]` of candidate graphs against the latent of their molecule
    /// (`z_graph [n_graphs, latent_graph]`, one row per candidate): the dot product
    /// with the latent, plus a latent-free plausibility term so that chemically
    /// typical attachments can be preferred even where the latent says little.
    pub fn score(&self, g: &GraphBatch, z_graph: &Tensor) -> Tensor {
        self.score_vectors(&self.forward(g), z_graph)
    }

    /// `score` from the candidate vectors `v` of `forward` (one row per candidate,
    /// so that a graph shared by several latents is run through the network once).
    pub fn score_vectors(&self, v: &Tensor, z_graph: &Tensor) -> Tensor {
        (v * z_graph).sum_dim_intlist(-1, false, Kind::Float)
            + self.prior.forward(v).squeeze_dim(-1)
    }

    /// One vector `[n_graphs, latent_graph]` per candidate graph.
    pub fn forward(&self, g: &GraphBatch) -> Tensor {
        let mut h = self.w_in.forward(&g.atom_x).relu();
        // w_msg [h_src; e] = W_h h_src + (W_e e + b): the large product is taken
        // once per atom and then gathered per edge (there are twice as many edges).
        let hidden = h.size()[1];
        let w_h = self.w_msg.ws.narrow(1, 0, hidden);
        let w_e = self.w_msg.ws.narrow(1, hidden, CAND_BOND_DIM as i64);
        let from_edge = match &self.w_msg.bs {
            Some(b) => g.edge_x.matmul(&w_e.tr()) + b,
            None => g.edge_x.matmul(&w_e.tr()),
        };
        for _ in 0..self.steps {
            let m = (h.matmul(&w_h.tr()).index_select(0, &g.src) + &from_edge).relu();
            let agg = h.zeros_like().index_add(0, &g.dst, &m);
            h = self.w_upd.forward(&Tensor::cat(&[h, agg], 1)).relu();
        }
        let opts = (g.kind(), g.device());
        let sum = Tensor::zeros([g.n_graphs, h.size()[1]], opts).index_add(0, &g.graph_of_atom, &h);
        let count = Tensor::zeros([g.n_graphs], opts)
            .index_add(0, &g.graph_of_atom, &Tensor::ones([g.n_atoms()], opts))
            .clamp_min(1.0);
        self.out.forward(&(sum / count.unsqueeze(-1)))
    }
}

/// Cross-entropy of each candidate group: `scores [C]`, `group [C]` (group index
/// per candidate, `n_groups` groups), `gold [n_groups]` (candidate index of each
/// group's gold). Returns (sum of the group losses, number of groups whose gold
/// scored highest).
pub fn group_cross_entropy(
    scores: &Tensor,
    group: &Tensor,
    n_groups: i64,
    gold: &Tensor,
) -> (Tensor, i64) {
    let opts = (scores.kind(), scores.device());
    let max = crate::models::batch::segment_max(scores, group, n_groups);
    let shifted = scores - max.index_select(0, group);
    let denom = Tensor::zeros([n_groups], opts).index_add(0, group, &shifted.exp());
    let lse = denom.log() + &max;
    let gold_scores = scores.index_select(0, gold);
    let loss = (lse - &gold_scores).sum(Kind::Float);
    let correct = gold_scores
        .detach()
        .ge_tensor(&max)
        .sum(Kind::Int64)
        .int64_value(&[]);
    (loss, correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn group_cross_entropy_matches_per_group_softmax() {
        let scores = Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 3.0]);
        let group = Tensor::from_slice(&[0i64, 0, 0, 1, 1]);
        let gold = Tensor::from_slice(&[1i64, 3]);
        let (loss, correct) = group_cross_entropy(&scores, &group, 2, &gold);
        let g0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln() - 2.0;
        let g1 = ((-1f64).exp() + 3f64.exp()).ln() + 1.0;
        assert!((loss.double_value(&[]) - (g0 + g1)).abs() < 1e-5);
        assert_eq!(correct, 1);
        let _ = Device::Cpu;
    }
}
