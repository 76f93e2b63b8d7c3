//! The JT-VAE encoder (Jin, Barzilay, Jaakkola 2018, as in the reference code's
//! `fast_jtnn`): a directed-bond message passing network over the molecular graph
//! gives the molecule vector, and a gated (GRU-like) message passing network over
//! the junction tree gives the tree vector (the root node's state). Both run on a
//! whole batch at once: molecules and trees are stacked, and every sum over
//! neighbours is an `index_add` over index tensors.
use crate::config::JtvaeConfig;
use crate::jtvae::batch::TreeBatch;
use crate::models::batch::GraphBatch;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

fn no_bias() -> nn::LinearConfig {
    nn::LinearConfig {
        bias: false,
        ..Default::default()
    }
}

/// The graph encoder: messages live on directed bonds u→v.
struct GraphMpn {
    /// `[x_u ; e_uv] → hidden` (no bias, as in the reference).
    w_i: nn::Linear,
    /// `hidden → hidden` on the summed neighbour messages (no bias).
    w_h: nn::Linear,
    /// `[x_u ; Σ m_wu] → hidden`, the atom state.
    w_o: nn::Linear,
    depth: i64,
}

impl GraphMpn {
    fn new(p: nn::Path, atom_dim: i64, bond_dim: i64, hidden: i64, depth: i64) -> Self {
        GraphMpn {
            w_i: nn::linear(&p / "w_i", atom_dim + bond_dim, hidden, no_bias()),
            w_h: nn::linear(&p / "w_h", hidden, hidden, no_bias()),
            w_o: nn::linear(&p / "w_o", atom_dim + hidden, hidden, Default::default()),
            depth,
        }
    }

    /// `[n_graphs, hidden]`: the mean of each molecule's atom states.
    fn forward(&self, g: &GraphBatch) -> Tensor {
        let n_atoms = g.n_atoms();
        let opts = (g.kind(), g.device());
        let n_edges = g.src.size()[0];
        let bond_in = Tensor::cat(
            &[g.atom_x.index_select(0, &g.src), g.edge_x.shallow_clone()],
            1,
        );
        let m0 = self.w_i.forward(&bond_in);
        let mut m = m0.relu();
        // Edges 2k and 2k+1 are the two directions of bond k, batch-wide.
        let rev = Tensor::arange(n_edges, (Kind::Int64, g.device())).bitwise_xor(1);
        // As in the reference, `depth` counts the initial message as the first layer.
        for _ in 1..self.depth {
            let hidden = m.size()[1];
            let into_atom = Tensor::zeros([n_atoms, hidden], opts).index_add(0, &g.dst, &m);
            // Σ over w ∈ N(u), w ≠ v of m_wu: everything into u minus the message v→u.
            let nei = into_atom.index_select(0, &g.src) - m.index_select(0, &rev);
            m = (&m0 + self.w_h.forward(&nei)).relu();
        }
        let hidden = m.size()[1];
        // An atom without bonds gets an all-zero message sum.
        let into_atom = Tensor::zeros([n_atoms, hidden], opts).index_add(0, &g.dst, &m);
        let h = self
            .w_o
            .forward(&Tensor::cat(&[g.atom_x.shallow_clone(), into_atom], 1))
            .relu();
        let sums = Tensor::zeros([g.n_graphs, hidden], opts).index_add(0, &g.graph_of_atom, &h);
        let counts = Tensor::zeros([g.n_graphs], opts)
            .index_add(0, &g.graph_of_atom, &Tensor::ones([n_atoms], opts))
            .clamp_min(1.0);
        sums / counts.unsqueeze(1)
    }
}

/// For every directed tree edge e = i→j, the directed edges k→i with k ≠ j, as
/// flat pairs `(out[p], inc[p])` (e = `out[p]` receives the message `inc[p]`).
/// Built from the edges sorted by target node and prefix sums of in-degrees, so
/// it needs no host loop.
fn incoming_pairs(t: &TreeBatch) -> (Tensor, Tensor) {
    let device = t.edge_src.device();
    let n_edges = t.edge_src.size()[0];
    if n_edges == 0 {
        let empty = Tensor::zeros([0], (Kind::Int64, device));
        return (empty.shallow_clone(), empty);
    }
    // Edges sorted by target node; `start[i]` is where node i's incoming edges begin.
    let by_dst = t.edge_dst.argsort(0, false);
    let in_deg = t.edge_dst.bincount(None::<Tensor>, t.n_nodes);
    let start = in_deg.cumsum(0, Kind::Int64) - &in_deg;
    // Edge i→j takes all edges into i, then drops j→i.
    let n_in = in_deg.index_select(0, &t.edge_src);
    let out = Tensor::repeat_interleave(&n_in, None);
    let first = n_in.cumsum(0, Kind::Int64) - &n_in;
    let rank = Tensor::arange(out.size()[0], (Kind::Int64, device)) - first.index_select(0, &out);
    let slot = start.index_select(0, &t.edge_src).index_select(0, &out) + rank;
    let inc = by_dst.index_select(0, &slot);
    let keep = inc.ne_tensor(&t.edge_rev.index_select(0, &out));
    (out.masked_select(&keep), inc.masked_select(&keep))
}

/// The tree encoder: GRU-gated messages on directed tree edges.
struct TreeGru {
    embedding: nn::Embedding,
    /// Update gate on `[x_i ; s_ij]`.
    w_z: nn::Linear,
    /// Reset gate `σ(W_r x_i + U_r m_ki)`; W_r has no bias, as in the reference.
    w_r: nn::Linear,
    u_r: nn::Linear,
    /// Candidate on `[x_i ; Σ r ⊙ m]`.
    w_h: nn::Linear,
    /// Node state on `[x_i ; Σ m_ki]`.
    w_o: nn::Linear,
    hidden: i64,
    depth: i64,
}

/// `W [a ; b]` for a linear layer over a concatenation, as the `a` part (with the
/// bias) and the `b` part, so the part of an input that does not change across
/// iterations is computed once.
fn split_linear(l: &nn::Linear, a_dim: i64) -> (Tensor, Tensor) {
    let b_dim = l.ws.size()[1] - a_dim;
    (l.ws.narrow(1, 0, a_dim), l.ws.narrow(1, a_dim, b_dim))
}

impl TreeGru {
    fn new(p: nn::Path, vocab_size: i64, hidden: i64, depth: i64) -> Self {
        TreeGru {
            embedding: nn::embedding(&p / "embedding", vocab_size, hidden, Default::default()),
            w_z: nn::linear(&p / "w_z", 2 * hidden, hidden, Default::default()),
            w_r: nn::linear(&p / "w_r", hidden, hidden, no_bias()),
            u_r: nn::linear(&p / "u_r", hidden, hidden, Default::default()),
            w_h: nn::linear(&p / "w_h", 2 * hidden, hidden, Default::default()),
            w_o: nn::linear(&p / "w_o", 2 * hidden, hidden, Default::default()),
            hidden,
            depth,
        }
    }

    /// `[n_trees, hidden]`: the state of each tree's root.
    fn forward(&self, t: &TreeBatch) -> Tensor {
        let hd = self.hidden;
        let x = self.embedding.forward(&t.labels);
        let opts = (x.kind(), x.device());
        let n_edges = t.edge_src.size()[0];
        let (out, inc) = incoming_pairs(t);
        // Input of edge i→j is x_i; its gate contributions are fixed over iterations.
        let x_e = x.index_select(0, &t.edge_src);
        let (wz_x, wz_s) = split_linear(&self.w_z, hd);
        let (wh_x, wh_g) = split_linear(&self.w_h, hd);
        let z_x = x_e.linear(&wz_x, self.w_z.bs.as_ref());
        let h_x = x_e.linear(&wh_x, self.w_h.bs.as_ref());
        let r_x = self.w_r.forward(&x_e).index_select(0, &out);
        let mut m = Tensor::zeros([n_edges, hd], opts);
        for _ in 0..self.depth {
            let m_in = m.index_select(0, &inc);
            let s = Tensor::zeros([n_edges, hd], opts).index_add(0, &out, &m_in);
            let z = (&z_x + s.linear(&wz_s, None::<Tensor>)).sigmoid();
            let r = (&r_x + self.u_r.forward(&m_in)).sigmoid();
            let gated = Tensor::zeros([n_edges, hd], opts).index_add(0, &out, &(r * &m_in));
            let cand = (&h_x + gated.linear(&wh_g, None::<Tensor>)).tanh();
            m = (1.0 - &z) * s + z * cand;
        }
        // A one-node tree has no messages: its state sees a zero sum.
        let into_node = Tensor::zeros([t.n_nodes, hd], opts).index_add(0, &t.edge_dst, &m);
        let h = self.w_o.forward(&Tensor::cat(&[x, into_node], 1)).relu();
        h.index_select(0, &t.roots)
    }
}

/// Encodes a batch of molecules and their junction trees into
/// `(tree_vec [B, hidden], mol_vec [B, hidden])`.
pub struct JtEncoder {
    graph: GraphMpn,
    tree: TreeGru,
    vocab_size: i64,
}

impl JtEncoder {
    /// Parameters live under `p / "graph"` (`w_i`, `w_h`, `w_o`) and `p / "tree"`
    /// (`embedding`, `w_z`, `w_r`, `u_r`, `w_h`, `w_o`). `atom_dim`/`bond_dim` are the
    /// featurizer's widths, which every `GraphBatch` given to `forward` must have.
    pub fn new(
        p: nn::Path,
        vocab_size: i64,
        atom_dim: i64,
        bond_dim: i64,
        c: &JtvaeConfig,
    ) -> Self {
        JtEncoder {
            graph: GraphMpn::new(&p / "graph", atom_dim, bond_dim, c.hidden, c.depth_graph),
            tree: TreeGru::new(&p / "tree", vocab_size, c.hidden, c.depth_tree),
            vocab_size,
        }
    }

    /// The node-label embedding of the tree encoder (`[vocab_size, hidden]`), for a
    /// decoder that shares it as in the reference code.
    pub fn embedding(&self) -> &nn::Embedding {
        &self.tree.embedding
    }

    /// Molecule b of `g` must be the molecule of tree b of `t`.
    pub fn forward(&self, g: &GraphBatch, t: &TreeBatch) -> (Tensor, Tensor) {
        debug_assert_eq!(
            g.n_graphs, t.n_trees,
            "graph and tree batches differ in size"
        );
        debug_assert!(
            t.label_list.iter().all(|&l| (l as i64) < self.vocab_size),
            "a tree label is outside the vocabulary"
        );
        (self.tree.forward(t), self.graph.forward(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chem::{Featurizer, MolGraph};
    use crate::jtvae::tree::TreeRecord;
    use crate::jtvae::tree::{decompose_smiles, LabelCache};
    use crate::jtvae::vocab::Vocab;
    use tch::{nn::VarStore, Device};

    const SMILES: [&str; 5] = [
        "CCO",
        "Oc1ccccc1",
        "CC(=O)Nc1ccc(O)cc1",
        "C",
        "c1ccc2ccccc2c1",
    ];
    const HIDDEN: i64 = 16;

    struct Data {
        graphs: Vec<MolGraph>,
        trees: Vec<TreeRecord>,
        vocab: Vocab,
        f: Featurizer,
    }

    fn data() -> Data {
        let f = Featurizer::full();
        let mut cache = LabelCache::default();
        let jts: Vec<_> = SMILES
            .iter()
            .map(|s| decompose_smiles(s, &mut cache).expect("decomposes").1)
            .collect();
        let vocab = Vocab::new(jts.iter().flat_map(|t| t.labels.iter().cloned()));
        let trees = jts
            .iter()
            .map(|t| t.record(&vocab).expect("in vocab"))
            .collect();
        let graphs = SMILES
            .iter()
            .map(|s| f.featurize(s).expect("parses"))
            .collect();
        Data {
            graphs,
            trees,
            vocab,
            f,
        }
    }

    fn config() -> JtvaeConfig {
        JtvaeConfig {
            hidden: HIDDEN,
            depth_tree: 3,
            depth_graph: 3,
            ..Default::default()
        }
    }

    fn encoder(d: &Data, vs: &VarStore) -> JtEncoder {
        JtEncoder::new(
            vs.root() / "enc",
            d.vocab.len() as i64,
            d.f.atom_dim() as i64,
            d.f.bond_dim() as i64,
            &config(),
        )
    }

    fn encode(e: &JtEncoder, d: &Data, which: &[usize]) -> (Tensor, Tensor) {
        let gs: Vec<&MolGraph> = which.iter().map(|&i| &d.graphs[i]).collect();
        let ts: Vec<&TreeRecord> = which.iter().map(|&i| &d.trees[i]).collect();
        let g = GraphBatch::new(&gs, d.f.atom_dim(), d.f.bond_dim(), Device::Cpu);
        let t = TreeBatch::new(&ts, Device::Cpu);
        e.forward(&g, &t)
    }

    fn all() -> Vec<usize> {
        (0..SMILES.len()).collect()
    }

    #[test]
    fn pairs_list_every_other_incoming_edge() {
        // 0 - 1 - 2, 1 - 3; directed edges 0:0→1 1:1→0 2:1→2 3:2→1 4:1→3 5:3→1
        let r = TreeRecord {
            labels: vec![0, 0, 0, 0],
            clusters: vec![],
            edges: vec![(0, 1), (1, 2), (1, 3)],
        };
        let t = TreeBatch::new(&[&r], Device::Cpu);
        let (out, inc) = incoming_pairs(&t);
        let mut pairs: Vec<(i64, i64)> = Vec::<i64>::try_from(&out)
            .unwrap()
            .into_iter()
            .zip(Vec::<i64>::try_from(&inc).unwrap())
            .collect();
        pairs.sort_unstable();
        // 1→0 gets 2→1, 3→1; 1→2 gets 0→1, 3→1; 1→3 gets 0→1, 2→1; leaves get none.
        assert_eq!(pairs, vec![(1, 3), (1, 5), (2, 0), (2, 5), (4, 0), (4, 3)]);
    }

    #[test]
    fn outputs_have_batch_by_hidden_shape_and_are_finite() {
        let d = data();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let e = encoder(&d, &vs);
        let (tv, mv) = encode(&e, &d, &all());
        let b = SMILES.len() as i64;
        assert_eq!(tv.size(), vec![b, HIDDEN]);
        assert_eq!(mv.size(), vec![b, HIDDEN]);
        assert!(bool::try_from(tv.isfinite().all()).unwrap());
        assert!(bool::try_from(mv.isfinite().all()).unwrap());
    }

    #[test]
    fn single_atom_molecule_alone_is_finite() {
        let d = data();
        let methane = SMILES.iter().position(|&s| s == "C").unwrap();
        assert_eq!(d.graphs[methane].n_edges(), 0);
        assert!(d.trees[methane].edges.is_empty());
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let e = encoder(&d, &vs);
        let (tv, mv) = encode(&e, &d, &[methane]);
        assert_eq!(tv.size(), vec![1, HIDDEN]);
        assert_eq!(mv.size(), vec![1, HIDDEN]);
        assert!(bool::try_from(tv.isfinite().all()).unwrap());
        assert!(bool::try_from(mv.isfinite().all()).unwrap());
    }

    #[test]
    fn batch_encoding_equals_encoding_each_alone() {
        let d = data();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let e = encoder(&d, &vs);
        let (tv, mv) = encode(&e, &d, &all());
        for i in all() {
            let (t1, m1) = encode(&e, &d, &[i]);
            let i = i as i64;
            assert!(
                tv.narrow(0, i, 1).allclose(&t1, 1e-5, 1e-5, false),
                "tree vector of {} differs",
                SMILES[i as usize]
            );
            assert!(
                mv.narrow(0, i, 1).allclose(&m1, 1e-5, 1e-5, false),
                "molecule vector of {} differs",
                SMILES[i as usize]
            );
        }
        // The vectors do depend on the molecule.
        assert!(!tv
            .narrow(0, 0, 1)
            .allclose(&tv.narrow(0, 2, 1), 1e-5, 1e-5, false));
        assert!(!mv
            .narrow(0, 0, 1)
            .allclose(&mv.narrow(0, 2, 1), 1e-5, 1e-5, false));
    }

    /// The encoder written edge by edge from the formulas, with the same weights.
    fn naive(e: &JtEncoder, g: &MolGraph, r: &TreeRecord, f: &Featurizer) -> (Tensor, Tensor) {
        let lin = |l: &nn::Linear, parts: &[&Tensor]| l.forward(&Tensor::cat(parts, 0));
        let zero = || Tensor::zeros([HIDDEN], (Kind::Float, Device::Cpu));
        // Graph: directed bonds (src, dst) as listed.
        let x = Tensor::from_slice(&g.atom_x).view([g.n_atoms as i64, f.atom_dim() as i64]);
        let ex = Tensor::from_slice(&g.edge_x).view([g.n_edges() as i64, f.bond_dim() as i64]);
        let ne = g.n_edges();
        let m0: Vec<Tensor> = (0..ne)
            .map(|k| lin(&e.graph.w_i, &[&x.get(g.src[k]), &ex.get(k as i64)]))
            .collect();
        let mut m: Vec<Tensor> = m0.iter().map(|t| t.relu()).collect();
        for _ in 1..e.graph.depth {
            m = (0..ne)
                .map(|k| {
                    let mut s = zero();
                    for ((&a, &b), mw) in g.src.iter().zip(&g.dst).zip(&m) {
                        if b == g.src[k] && a != g.dst[k] {
                            s += mw;
                        }
                    }
                    (&m0[k] + e.graph.w_h.forward(&s)).relu()
                })
                .collect();
        }
        let mut mol = zero();
        for u in 0..g.n_atoms as i64 {
            let mut s = zero();
            for (&b, mw) in g.dst.iter().zip(&m) {
                if b == u {
                    s += mw;
                }
            }
            mol += lin(&e.graph.w_o, &[&x.get(u), &s]).relu();
        }
        let mol = mol / g.n_atoms as f64;
        // Tree: both directions of every edge.
        let tr = &e.tree;
        let labels: Vec<i64> = r.labels.iter().map(|&l| i64::from(l)).collect();
        let xt = tr.embedding.forward(&Tensor::from_slice(&labels));
        let dir: Vec<(i64, i64)> = r
            .edges
            .iter()
            .flat_map(|&(i, j)| [(i64::from(i), i64::from(j)), (i64::from(j), i64::from(i))])
            .collect();
        let mut mt: Vec<Tensor> = dir.iter().map(|_| zero()).collect();
        for _ in 0..tr.depth {
            mt = dir
                .iter()
                .map(|&(i, j)| {
                    let xi = xt.get(i);
                    let (mut s, mut gs) = (zero(), zero());
                    for (k, &(a, b)) in dir.iter().enumerate() {
                        if b == i && a != j {
                            s += &mt[k];
                            let rk = (tr.w_r.forward(&xi) + tr.u_r.forward(&mt[k])).sigmoid();
                            gs += rk * &mt[k];
                        }
                    }
                    let z = lin(&tr.w_z, &[&xi, &s]).sigmoid();
                    let cand = lin(&tr.w_h, &[&xi, &gs]).tanh();
                    (1.0 - &z) * s + z * cand
                })
                .collect();
        }
        let mut s = zero();
        for (k, &(_, b)) in dir.iter().enumerate() {
            if b == 0 {
                s += &mt[k];
            }
        }
        let root = lin(&tr.w_o, &[&xt.get(0), &s]).relu();
        (root, mol)
    }

    #[test]
    fn batched_encoder_matches_the_formulas_edge_by_edge() {
        let d = data();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let e = encoder(&d, &vs);
        let (tv, mv) = tch::no_grad(|| encode(&e, &d, &all()));
        for i in all() {
            let (t1, m1) = tch::no_grad(|| naive(&e, &d.graphs[i], &d.trees[i], &d.f));
            let i = i as i64;
            assert!(
                tv.get(i).allclose(&t1, 1e-5, 1e-5, false),
                "tree vector of {}",
                SMILES[i as usize]
            );
            assert!(
                mv.get(i).allclose(&m1, 1e-5, 1e-5, false),
                "molecule vector of {}",
                SMILES[i as usize]
            );
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let d = data();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let e = encoder(&d, &vs);
        let (tv, mv) = encode(&e, &d, &all());
        // Squares, so the gradient is not a constant that could hide a broken path.
        (tv.square().sum(Kind::Float) + mv.square().sum(Kind::Float)).backward();
        let vars = vs.variables();
        assert_eq!(vars.len(), 14, "{:?}", vars.keys());
        for (name, v) in vars {
            let g = v.grad();
            assert!(g.defined(), "{name} has no gradient");
            let total = g.abs().sum(Kind::Float).double_value(&[]);
            assert!(total > 0.0, "{name} has a zero gradient");
        }
    }
}
