//! The MPNN of the paper (Gilmer et al. 2017 as in DGL-LifeSci's MPNNPredictor):
//! an edge network turns each bond's features into a node_out × node_out matrix,
//! messages are summed at the destination atom, a GRU updates atom states for a
//! fixed number of steps, Set2Set reads the graph out, and an MLP head predicts
//! the property. It is split into `embed(graph; w1) → h` and `head(h; w2) → ŷ`,
//! the cut the zeroth-order stage needs.
use super::batch::GraphBatch;
use crate::config::MpnnConfig;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Input widths come from the featurizer (after dropping constant columns).
#[derive(Debug, Clone, Copy)]
pub struct MpnnDims {
    pub atom_dim: i64,
    pub edge_dim: i64,
}

/// A GRU cell written out (tch's GRU works on sequences; we need single steps on
/// a flat atom batch).
struct GruCell {
    ih: nn::Linear,
    hh: nn::Linear,
}

impl GruCell {
    fn new(p: nn::Path, input: i64, hidden: i64) -> Self {
        GruCell {
            ih: nn::linear(&p / "ih", input, 3 * hidden, Default::default()),
            hh: nn::linear(&p / "hh", hidden, 3 * hidden, Default::default()),
        }
    }

    fn step(&self, x: &Tensor, h: &Tensor) -> Tensor {
        let gi = self.ih.forward(x).chunk(3, 1);
        let gh = self.hh.forward(h).chunk(3, 1);
        let r = (&gi[0] + &gh[0]).sigmoid();
        let z = (&gi[1] + &gh[1]).sigmoid();
        let n = (&gi[2] + r * &gh[2]).tanh();
        (1.0 - &z) * n + z * h
    }
}

/// One LSTM layer cell, for Set2Set's query recurrence.
struct LstmCell {
    ih: nn::Linear,
    hh: nn::Linear,
}

impl LstmCell {
    fn new(p: nn::Path, input: i64, hidden: i64) -> Self {
        LstmCell {
            ih: nn::linear(&p / "ih", input, 4 * hidden, Default::default()),
            hh: nn::linear(&p / "hh", hidden, 4 * hidden, Default::default()),
        }
    }

    fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> (Tensor, Tensor) {
        let g = (self.ih.forward(x) + self.hh.forward(h)).chunk(4, 1);
        let i = g[0].sigmoid();
        let f = g[1].sigmoid();
        let cand = g[2].tanh();
        let o = g[3].sigmoid();
        let c2 = f * c + i * cand;
        let h2 = o * c2.tanh();
        (h2, c2)
    }
}

/// Edge-network messages `W(e_uv) h_u` for every directed edge.
enum Messenger {
    /// `m`: `[d, rows·d]`; `index`: per edge, `src · rows + row of its features`.
    Factored {
        m: Tensor,
        index: Tensor,
        n_rows: i64,
    },
    /// `w`: `[edges, d, d]`.
    PerEdge { w: Tensor },
}

impl Messenger {
    fn apply(&self, h: &Tensor, g: &GraphBatch) -> Tensor {
        match self {
            Messenger::Factored { m, index, n_rows } => {
                let d = h.size()[1];
                h.mm(m)
                    .view([g.n_atoms() * n_rows, d])
                    .index_select(0, index)
            }
            Messenger::PerEdge { w } => w
                .bmm(&h.index_select(0, &g.src).unsqueeze(-1))
                .squeeze_dim(-1),
        }
    }
}

/// The graph part `embed(graph; w1) → h` with `h` of width `2·node_out`.
pub struct MpnnEmbed {
    project: nn::Linear,
    edge1: nn::Linear,
    edge2: nn::Linear,
    conv_bias: Tensor,
    gru: GruCell,
    lstm: Vec<LstmCell>,
    node_out: i64,
    steps: i64,
    s2s_iters: i64,
}

impl MpnnEmbed {
    pub fn new(p: nn::Path, dims: MpnnDims, c: &MpnnConfig) -> Self {
        let d = c.node_out;
        let lstm = (0..c.set2set_layers)
            .map(|l| {
                LstmCell::new(
                    &p / "set2set" / format!("lstm{l}"),
                    if l == 0 { 2 * d } else { d },
                    d,
                )
            })
            .collect();
        MpnnEmbed {
            project: nn::linear(&p / "project", dims.atom_dim, d, Default::default()),
            edge1: nn::linear(
                &p / "edge_net1",
                dims.edge_dim,
                c.edge_hidden,
                Default::default(),
            ),
            edge2: nn::linear(&p / "edge_net2", c.edge_hidden, d * d, Default::default()),
            conv_bias: p.zeros("conv_bias", &[d]),
            gru: GruCell::new(&p / "gru", d, d),
            lstm,
            node_out: d,
            steps: c.message_steps,
            s2s_iters: c.set2set_iters,
        }
    }

    /// Width of the readout vector `h`.
    pub fn out_dim(&self) -> i64 {
        2 * self.node_out
    }

    pub fn forward(&self, g: &GraphBatch) -> Tensor {
        let mut h = self.project.forward(&g.atom_x).relu();
        let messages = self.messenger(g);
        for _ in 0..self.steps {
            let agg = h.zeros_like().index_add(0, &g.dst, &messages.apply(&h, g)) + &self.conv_bias;
            h = self.gru.step(&agg.relu(), &h);
        }
        self.set2set(&h, g)
    }

    /// Builds the per-edge d×d matrices of the edge network. The featurizer's bond
    /// features are categorical, so a batch has only a handful of distinct rows:
    /// the network then runs once per distinct row and messages are one matmul
    /// over atoms plus a gather, which is exactly the same function as one matrix
    /// per edge at a fraction of the memory traffic. With many distinct rows
    /// (continuous edge features) it falls back to one matrix per edge.
    fn messenger(&self, g: &GraphBatch) -> Messenger {
        let (rows, inverse, _) = g.edge_x.unique_dim(0, false, true, false);
        let factored = rows.size()[0] * g.n_atoms() <= g.edge_x.size()[0] * 8;
        self.messenger_of(g, factored, rows, inverse)
    }

    fn messenger_of(
        &self,
        g: &GraphBatch,
        factored: bool,
        rows: Tensor,
        inverse: Tensor,
    ) -> Messenger {
        let d = self.node_out;
        let n_edges = g.edge_x.size()[0];
        let n_rows = rows.size()[0];
        if factored {
            let w = self
                .edge2
                .forward(&self.edge1.forward(&rows).relu())
                .view([n_rows, d, d]);
            // m[n, u, i] = Σ_j W[u, i, j] h[n, j]  as  h · M  with  M[j, (u, i)] = W[u, i, j]
            let m = w.permute([2, 0, 1]).reshape([d, n_rows * d]);
            let index = &g.src * n_rows + inverse;
            Messenger::Factored { m, index, n_rows }
        } else {
            let w = self
                .edge2
                .forward(&self.edge1.forward(&g.edge_x).relu())
                .view([n_edges, d, d]);
            Messenger::PerEdge { w }
        }
    }

    fn set2set(&self, x: &Tensor, g: &GraphBatch) -> Tensor {
        let d = self.node_out;
        let b = g.n_graphs;
        let opts = (g.kind(), g.device());
        let mut hs: Vec<Tensor> = (0..self.lstm.len())
            .map(|_| Tensor::zeros([b, d], opts))
            .collect();
        let mut cs: Vec<Tensor> = (0..self.lstm.len())
            .map(|_| Tensor::zeros([b, d], opts))
            .collect();
        let mut q_star = Tensor::zeros([b, 2 * d], opts);
        for _ in 0..self.s2s_iters {
            let mut inp = q_star;
            for (l, cell) in self.lstm.iter().enumerate() {
                let (h2, c2) = cell.step(&inp, &hs[l], &cs[l]);
                inp = h2.shallow_clone();
                hs[l] = h2;
                cs[l] = c2;
            }
            let q = inp;
            let e =
                (x * q.index_select(0, &g.graph_of_atom)).sum_dim_intlist(-1, false, Kind::Float);
            // Softmax over the atoms of each graph; the shift is constant per graph.
            let emax = super::batch::segment_max(&e, &g.graph_of_atom, b);
            let a = (e - emax.index_select(0, &g.graph_of_atom)).exp();
            let denom = Tensor::zeros([b], opts).index_add(0, &g.graph_of_atom, &a);
            let a = a / denom.index_select(0, &g.graph_of_atom);
            let r =
                Tensor::zeros([b, d], opts).index_add(0, &g.graph_of_atom, &(a.unsqueeze(-1) * x));
            q_star = Tensor::cat(&[q, r], 1);
        }
        q_star
    }
}

/// The head `head(h; w2) → ŷ`: a two-layer MLP.
pub struct MpnnHead {
    l1: nn::Linear,
    l2: nn::Linear,
}

impl MpnnHead {
    pub fn new(p: nn::Path, in_dim: i64, hidden: i64) -> Self {
        MpnnHead {
            l1: nn::linear(&p / "l1", in_dim, hidden, Default::default()),
            l2: nn::linear(&p / "l2", hidden, 1, Default::default()),
        }
    }

    /// `[B, in_dim] → [B]`
    pub fn forward(&self, h: &Tensor) -> Tensor {
        self.l2.forward(&self.l1.forward(h).relu()).squeeze_dim(-1)
    }
}

pub struct Mpnn {
    pub embed: MpnnEmbed,
    pub head: MpnnHead,
}

impl Mpnn {
    /// Parameters live under `p / "embed"` (w1) and `p / "head"` (w2).
    pub fn new(p: &nn::Path, dims: MpnnDims, c: &MpnnConfig) -> Self {
        let embed = MpnnEmbed::new(p / "embed", dims, c);
        let head = MpnnHead::new(p / "head", embed.out_dim(), c.head_hidden);
        Mpnn { embed, head }
    }

    pub fn forward(&self, g: &GraphBatch) -> Tensor {
        self.head.forward(&self.embed.forward(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chem::Featurizer;
    use tch::{nn::VarStore, Device};

    #[test]
    fn factored_messages_equal_one_matrix_per_edge() {
        let f = Featurizer::full();
        let graphs: Vec<_> = ["CC(=O)Nc1ccc(O)cc1", "C/C=C/C", "C[N+](C)(C)C", "O"]
            .iter()
            .map(|s| f.featurize(s).unwrap())
            .collect();
        let refs: Vec<&_> = graphs.iter().collect();
        let b = GraphBatch::new(&refs, f.atom_dim(), f.bond_dim(), Device::Cpu);
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let cfg = MpnnConfig {
            node_out: 16,
            edge_hidden: 8,
            ..Default::default()
        };
        let dims = MpnnDims {
            atom_dim: f.atom_dim() as i64,
            edge_dim: f.bond_dim() as i64,
        };
        let e = MpnnEmbed::new(vs.root(), dims, &cfg);
        let h = Tensor::randn([b.n_atoms(), 16], (Kind::Float, Device::Cpu));
        let (rows, inverse, _) = b.edge_x.unique_dim(0, false, true, false);
        assert!(
            rows.size()[0] < b.edge_x.size()[0],
            "the batch has repeated bond rows"
        );
        let fast = e
            .messenger_of(&b, true, rows.shallow_clone(), inverse.shallow_clone())
            .apply(&h, &b);
        let slow = e.messenger_of(&b, false, rows, inverse).apply(&h, &b);
        assert_eq!(fast.size(), slow.size());
        let diff = (&fast - &slow).abs().max().double_value(&[]);
        let scale = slow.abs().max().double_value(&[]);
        assert!(
            diff <= 1e-5 * scale,
            "messages differ by {diff} (scale {scale})"
        );
    }
}
