//! The assembly scorer: a small message-passing network over a candidate
//! attachment's local graph (parent and child atoms, with flags marking which is
//! which and where they join), read out to a vector that is scored against the
//! graph half of the latent. Training: softmax over each node's candidates.
use super::candidates::{CandBond, CAND_ATOM_DIM, CAND_BOND_DIM};
use super::shared::SharedGraphs;
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

    /// `forward` of the graphs of `s`, each product taken once per colour (see
    /// `shared`): the same vectors up to float rounding, for decoding (no gradient
    /// needed); `steps` of `s` must be this scorer's.
    pub fn forward_shared(&self, s: &SharedGraphs, device: tch::Device) -> Tensor {
        let long = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let rows: Vec<f32> = s.atoms.iter().flat_map(|a| a.row()).collect();
        let x = Tensor::from_slice(&rows)
            .view([s.atoms.len() as i64, CAND_ATOM_DIM as i64])
            .to_device(device);
        let mut h = self.w_in.forward(&x).relu();
        let hidden = h.size()[1];
        let w_h = self.w_msg.ws.narrow(1, 0, hidden);
        let w_e = self.w_msg.ws.narrow(1, hidden, CAND_BOND_DIM as i64);
        let bond_rows: Vec<f32> = s
            .bonds
            .iter()
            .flat_map(|&(order, in_child)| {
                CandBond {
                    begin: 0,
                    end: 0,
                    order,
                    in_child,
                }
                .row()
            })
            .collect();
        let e = Tensor::from_slice(&bond_rows)
            .view([s.bonds.len() as i64, CAND_BOND_DIM as i64])
            .to_device(device);
        let from_bond = match &self.w_msg.bs {
            Some(b) => e.matmul(&w_e.tr()) + b,
            None => e.matmul(&w_e.tr()),
        };
        for level in s.levels.iter().take(self.steps as usize) {
            let n = level.prev.len() as i64;
            let m = (h.matmul(&w_h.tr()).index_select(0, &long(&level.nbr))
                + from_bond.index_select(0, &long(&level.bond)))
            .relu();
            let agg =
                Tensor::zeros([n, hidden], (h.kind(), device)).index_add(0, &long(&level.into), &m);
            let own = h.index_select(0, &long(&level.prev));
            h = self.w_upd.forward(&Tensor::cat(&[own, agg], 1)).relu();
        }
        let opts = (h.kind(), device);
        let g = long(&s.atom_graph);
        let n_graphs = s.n_graphs as i64;
        let sum = Tensor::zeros([n_graphs, hidden], opts).index_add(
            0,
            &g,
            &h.index_select(0, &long(&s.atom_color)),
        );
        let count = Tensor::zeros([n_graphs], opts)
            .index_add(0, &g, &Tensor::ones([s.n_atoms() as i64], opts))
            .clamp_min(1.0);
        self.out.forward(&(sum / count.unsqueeze(-1)))
    }

    pub fn steps(&self) -> usize {
        self.steps as usize
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
    fn shared_states_give_the_per_atom_vectors() {
        use crate::jtvae::candidates::{CandAtom, LocalGraph};
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let scorer = AssemblyScorer::new(vs.root(), 24, 6, 3);
        let atom = |element: u8, degree: u8, c: bool, p: bool| CandAtom {
            element,
            charge: 0,
            degree,
            in_child: c,
            in_parent: p,
        };
        let bond = |begin: u32, end: u32, order: u8, in_child: bool| CandBond {
            begin,
            end,
            order,
            in_child,
        };
        // A ring with a substituent, attached at two places, plus a repeat of one.
        let ring = |at: u32| LocalGraph {
            atoms: (0..6)
                .map(|i| atom(5, if i == at { 3 } else { 2 }, i > 0, i == 0 || i == at))
                .chain([atom(7, 1, false, true)])
                .collect(),
            bonds: (0..6)
                .map(|i| bond(i, (i + 1) % 6, 1 + (i % 2) as u8, i > 0))
                .chain([bond(at, 6, 1, false)])
                .collect(),
        };
        let graphs = [ring(1), ring(2), ring(1), ring(3)];
        let refs: Vec<&LocalGraph> = graphs.iter().collect();
        let featurized: Vec<_> = graphs.iter().map(|g| g.to_graph()).collect();
        let frefs: Vec<_> = featurized.iter().collect();
        let batch = GraphBatch::new(&frefs, CAND_ATOM_DIM, CAND_BOND_DIM, Device::Cpu);
        let plain = scorer.forward(&batch);
        let shared = SharedGraphs::new(&refs, scorer.steps());
        assert!(shared.n_colors() < shared.n_atoms());
        let fast = scorer.forward_shared(&shared, Device::Cpu);
        let diff = (&plain - &fast).abs().max().double_value(&[]);
        let scale = plain.abs().max().double_value(&[]);
        assert!(scale > 0.0 && diff <= 1e-5 * scale, "{diff} vs {scale}");
        // Different attachments give different vectors; a repeat gives the same.
        let row = |k: i64| Vec::<f32>::try_from(fast.get(k)).unwrap();
        assert_eq!(row(0), row(2));
        assert_ne!(row(0), row(1));
    }

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
