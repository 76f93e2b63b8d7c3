//! The JT-VAE tree decoder (Jin, Barzilay, Jaakkola 2018, §2.3; as in the
//! reference's fast_jtnn decoder): it generates a junction tree from the tree half
//! of the latent code by a depth-first walk. At every step the node under the walk
//! decides whether to expand a new child or to backtrack (topology), and a new
//! child's cluster label is predicted from the message sent to it (label). Messages
//! live on directed tree edges and are computed, in walk order, by the same gated
//! recurrence as the tree encoder's.
//!
//! `loss` trains it by teacher forcing on a batch of real trees, one batched network
//! call per walk step for all trees of the batch; `decode` (in `walk`) generates
//! trees greedily (labels and topology only: chemical assembly comes later).
use super::batch::TreeBatch;
use crate::config::JtvaeConfig;
use tch::nn::{self, Module};
use tch::{Device, Kind, Reduction, Tensor};

/// The tree GRU of the JT-VAE: a message `h_{x→y}` from the embedding `x` of its
/// source and the messages `h_{k→x}` (k ≠ y) into the source.
pub(super) struct TreeGru {
    pub(super) w_z: nn::Linear,
    pub(super) w_r: nn::Linear,
    pub(super) u_r: nn::Linear,
    pub(super) w_h: nn::Linear,
}

impl TreeGru {
    fn new(p: nn::Path, h: i64) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        TreeGru {
            w_z: nn::linear(&p / "w_z", 2 * h, h, Default::default()),
            w_r: nn::linear(&p / "w_r", h, h, no_bias),
            u_r: nn::linear(&p / "u_r", h, h, Default::default()),
            w_h: nn::linear(&p / "w_h", 2 * h, h, Default::default()),
        }
    }

    /// `x`: `[n, H]` source embeddings; `nei`: `[m, H]` incoming messages, `nei[j]`
    /// belonging to message `item[j]` (a flat list instead of padding to a maximum
    /// degree). Returns the `n` new messages.
    fn step(&self, x: &Tensor, nei: &Tensor, item: &Tensor) -> Tensor {
        let s = x.zeros_like().index_add(0, item, nei);
        let z = self.w_z.forward(&Tensor::cat(&[x, &s], 1)).sigmoid();
        let r = (self.w_r.forward(x).index_select(0, item) + self.u_r.forward(nei)).sigmoid();
        let gated = x.zeros_like().index_add(0, item, &(r * nei));
        let m = self.w_h.forward(&Tensor::cat(&[x, &gated], 1)).tanh();
        (1.0 - &z) * s + z * m
    }
}

/// Summed losses of a batch (the caller normalises, e.g. by the global batch size)
/// with their counts and accuracies.
pub struct DecoderLoss {
    /// Σ cross-entropy of every predicted cluster label (roots included).
    pub word: Tensor,
    /// Σ binary cross-entropy of every expand/backtrack decision.
    pub topo: Tensor,
    pub n_word: i64,
    pub n_topo: i64,
    pub word_acc: f64,
    pub topo_acc: f64,
}

/// A decoded tree: node labels (vocabulary indices) and `(parent, child)` edges.
pub type DecodedTree = (Vec<usize>, Vec<(usize, usize)>);

pub struct TreeDecoder {
    pub(super) embedding: nn::Embedding,
    pub(super) gru: TreeGru,
    /// Label head: `relu(W [h; z])` then `W_o`.
    w: nn::Linear,
    w_o: nn::Linear,
    /// Topology head: `relu(U [x; Σ h_in; z])` then `U_o`.
    pub(super) u: nn::Linear,
    pub(super) u_o: nn::Linear,
    pub(super) hidden: i64,
}

/// `v` as an int64 tensor on `device`.
pub(super) fn long(v: &[usize], device: Device) -> Tensor {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_slice(&v).to_device(device)
}

impl TreeDecoder {
    pub fn new(p: nn::Path, vocab_size: i64, c: &JtvaeConfig) -> Self {
        let h = c.hidden;
        let l = c.latent / 2;
        TreeDecoder {
            embedding: nn::embedding(&p / "embedding", vocab_size, h, Default::default()),
            gru: TreeGru::new(&p / "gru", h),
            w: nn::linear(&p / "w", h + l, h, Default::default()),
            w_o: nn::linear(&p / "w_o", h, vocab_size, Default::default()),
            u: nn::linear(&p / "u", 2 * h + l, h, Default::default()),
            u_o: nn::linear(&p / "u_o", h, 1, Default::default()),
            hidden: h,
        }
    }

    /// `[n, H]` messages, `[n, L]` latents → `[n, vocab]` label logits.
    pub(super) fn word_logits(&self, h: &Tensor, z: &Tensor) -> Tensor {
        self.w_o
            .forward(&self.w.forward(&Tensor::cat(&[h, z], 1)).relu())
    }

    /// `[n, H]` node embeddings, `[n, H]` sums of incoming messages, `[n, L]`
    /// latents → `[n]` expand logits.
    fn topo_logits(&self, x: &Tensor, o: &Tensor, z: &Tensor) -> Tensor {
        self.u_o
            .forward(&self.u.forward(&Tensor::cat(&[x, o, z], 1)).relu())
            .squeeze_dim(-1)
    }

    /// Teacher-forced losses of a batch of trees; `z_tree`: `[B, latent/2]`.
    ///
    /// Every directed edge's message is computed at exactly one walk step (down on
    /// expansion, up on backtracking), so messages are appended to one buffer in step
    /// order and addressed by row. The walk's host-side bookkeeping records which
    /// rows reach each node; the network calls are one GRU per step over all trees,
    /// and the two heads once over the whole batch at the end (their inputs only
    /// need messages that exist by then).
    pub fn loss(&self, t: &TreeBatch, z_tree: &Tensor) -> DecoderLoss {
        let dev = z_tree.device();
        let emb = self.embedding.forward(&t.labels);
        let tw = self.teacher_walk(t, &emb, dev);
        let (word, word_hits, n_word, n_ctx) = self.word_loss(t, z_tree, &emb, &tw);
        let n_topo = tw.topo_node.len();
        let (topo, topo_hits) = self.topo_loss(z_tree, &emb, &tw);
        let frac = |hits: i64, n: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
        DecoderLoss {
            word,
            topo,
            n_word,
            n_topo: n_topo as i64,
            word_acc: frac(word_hits, n_ctx),
            topo_acc: frac(topo_hits, n_topo),
        }
    }

    /// The teacher-forced walk over the batch's depth-first steps: every message
    /// (one GRU call per step index for all trees) and what the heads need.
    fn teacher_walk(&self, t: &TreeBatch, emb: &Tensor, dev: Device) -> TeacherWalk {
        let opts = (emb.kind(), dev);
        let mut tw = TeacherWalk {
            msgs: Tensor::zeros([0, self.hidden], opts),
            incoming: vec![Vec::new(); t.label_list.len()],
            topo_node: Vec::new(),
            topo_tree: Vec::new(),
            topo_target: Vec::new(),
            topo_pair_dec: Vec::new(),
            topo_pair_row: Vec::new(),
            word_row: Vec::new(),
            word_tree: Vec::new(),
            word_target: Vec::new(),
        };
        let mut n_msgs = 0usize;
        for step in &t.dfs {
            // Steps of one index belong to different trees, so their nodes are
            // disjoint and the bookkeeping below can run item by item.
            let (mut from, mut item, mut rows) = (Vec::new(), Vec::new(), Vec::new());
            for (i, s) in step.iter().enumerate() {
                tw.decide(s.from, s.tree, s.expand);
                from.push(s.from);
                for &(k, row) in &tw.incoming[s.from] {
                    if k != s.to {
                        item.push(i);
                        rows.push(row);
                    }
                }
            }
            let x = emb.index_select(0, &long(&from, dev));
            let nei = tw.msgs.index_select(0, &long(&rows, dev));
            let new = self.gru.step(&x, &nei, &long(&item, dev));
            for (i, s) in step.iter().enumerate() {
                tw.incoming[s.to].push((s.from, n_msgs + i));
                if s.expand {
                    tw.word_row.push(n_msgs + i);
                    tw.word_tree.push(s.tree);
                    tw.word_target.push(t.label_list[s.to]);
                }
            }
            // Re-concatenating copies the buffer each step (steps × messages × H in
            // all), cheap for trees of tens of nodes and simple for autograd.
            tw.msgs = Tensor::cat(&[&tw.msgs, &new], 0);
            n_msgs += step.len();
        }
        // The walk ends back at the root, which must then stop.
        for (b, &r) in t.root_list.iter().enumerate() {
            tw.decide(r, b, false);
        }
        tw
    }

    /// The label loss: roots from a zero message, the other nodes from the message
    /// that created them. Returns the summed cross-entropy, the hits, the number
    /// of targets and of predictions.
    fn word_loss(
        &self,
        t: &TreeBatch,
        z_tree: &Tensor,
        emb: &Tensor,
        tw: &TeacherWalk,
    ) -> (Tensor, i64, i64, usize) {
        let dev = z_tree.device();
        let (h, opts) = (self.hidden, (emb.kind(), dev));
        let n_trees = t.root_list.len();
        let word_h = Tensor::cat(
            &[
                Tensor::zeros([n_trees as i64, h], opts),
                tw.msgs.index_select(0, &long(&tw.word_row, dev)),
            ],
            0,
        );
        let word_ctx: Vec<usize> = (0..n_trees).chain(tw.word_tree.iter().copied()).collect();
        let word_target: Vec<usize> = t
            .root_list
            .iter()
            .map(|&r| t.label_list[r])
            .chain(tw.word_target.iter().copied())
            .collect();
        let word_target = long(&word_target, dev);
        let wl = self.word_logits(&word_h, &z_tree.index_select(0, &long(&word_ctx, dev)));
        let word = wl.cross_entropy_loss::<Tensor>(&word_target, None, Reduction::Sum, -100, 0.0);
        let word_hits = wl
            .argmax(-1, false)
            .eq_tensor(&word_target)
            .sum(Kind::Int64)
            .int64_value(&[]);
        (word, word_hits, word_target.size()[0], word_ctx.len())
    }

    /// The topology loss over every decision: the summed binary cross-entropy and
    /// the hits.
    fn topo_loss(&self, z_tree: &Tensor, emb: &Tensor, tw: &TeacherWalk) -> (Tensor, i64) {
        let dev = z_tree.device();
        let (h, opts) = (self.hidden, (emb.kind(), dev));
        let n_topo = tw.topo_node.len();
        let o = Tensor::zeros([n_topo as i64, h], opts).index_add(
            0,
            &long(&tw.topo_pair_dec, dev),
            &tw.msgs.index_select(0, &long(&tw.topo_pair_row, dev)),
        );
        let tl = self.topo_logits(
            &emb.index_select(0, &long(&tw.topo_node, dev)),
            &o,
            &z_tree.index_select(0, &long(&tw.topo_tree, dev)),
        );
        let topo_target = Tensor::from_slice(&tw.topo_target)
            .to_device(dev)
            .to_kind(emb.kind());
        let topo =
            tl.binary_cross_entropy_with_logits::<Tensor>(&topo_target, None, None, Reduction::Sum);
        let topo_hits = tl
            .gt(0.0)
            .eq_tensor(&topo_target.gt(0.5))
            .sum(Kind::Int64)
            .int64_value(&[]);
        (topo, topo_hits)
    }

    /// The most likely root label for a tree latent.
    pub fn root_label(&self, z_tree: &Tensor) -> usize {
        self.root_labels(&z_tree.reshape([1, -1]))
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// The most likely root label of each row of `z_tree [B, latent/2]`.
    pub fn root_labels(&self, z_tree: &Tensor) -> Vec<usize> {
        use super::policy::WalkPolicy;
        let _guard = tch::no_grad_guard();
        super::policy::Greedy.roots(&self.root_logits(z_tree))
    }

    /// The root label logits `[B, vocab]` of `z_tree [B, latent/2]` (label head on
    /// a zero message), in the caller's grad mode.
    pub(crate) fn root_logits(&self, z_tree: &Tensor) -> Tensor {
        let b = z_tree.size()[0];
        self.word_logits(
            &Tensor::zeros([b, self.hidden], (z_tree.kind(), z_tree.device())),
            z_tree,
        )
    }
}

/// The host-side bookkeeping of `TreeDecoder::loss`'s teacher-forced walk.
struct TeacherWalk {
    /// Every message so far, one row each, in walk order.
    msgs: Tensor,
    /// incoming[v]: (source node, buffer row) of every message into v so far.
    incoming: Vec<Vec<(usize, usize)>>,
    /// Topology decisions: node, tree, target, and (decision, row) pairs of the
    /// messages into the node at decision time.
    topo_node: Vec<usize>,
    topo_tree: Vec<usize>,
    topo_target: Vec<f32>,
    topo_pair_dec: Vec<usize>,
    topo_pair_row: Vec<usize>,
    /// Label predictions after the roots: message row, tree and true label.
    word_row: Vec<usize>,
    word_tree: Vec<usize>,
    word_target: Vec<usize>,
}

impl TeacherWalk {
    /// Records a topology decision at `node` of `tree` (expand or stop) with the
    /// messages the node has received.
    fn decide(&mut self, node: usize, tree: usize, expand: bool) {
        let d = self.topo_node.len();
        self.topo_node.push(node);
        self.topo_tree.push(tree);
        self.topo_target.push(if expand { 1.0f32 } else { 0.0 });
        for &(_, row) in &self.incoming[node] {
            self.topo_pair_dec.push(d);
            self.topo_pair_row.push(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jtvae::tree::TreeRecord;
    use crate::jtvae::tree::{decompose_smiles, LabelCache};
    use crate::jtvae::vocab::Vocab;
    use tch::nn::{OptimizerConfig, VarStore};

    const SMILES: [&str; 6] = [
        "CCO",
        "Oc1ccccc1",
        "CC(=O)Nc1ccc(O)cc1",
        "C",
        "c1ccc2ccccc2c1",
        "CC(C)C",
    ];

    fn trees() -> (Vocab, Vec<TreeRecord>) {
        let mut cache = LabelCache::default();
        let jts: Vec<_> = SMILES
            .iter()
            .map(|s| decompose_smiles(s, &mut cache).unwrap().1)
            .collect();
        let vocab = Vocab::new(jts.iter().flat_map(|t| t.labels.iter().cloned()));
        let recs = jts.iter().map(|t| t.record(&vocab).unwrap()).collect();
        (vocab, recs)
    }

    fn config() -> JtvaeConfig {
        JtvaeConfig {
            hidden: 32,
            latent: 8,
            ..Default::default()
        }
    }

    /// A tree renumbered in depth-first preorder (children by increasing index), the
    /// numbering `decode` produces: labels and (parent, child) edges.
    fn preorder(t: &TreeRecord) -> (Vec<usize>, Vec<(usize, usize)>) {
        let n = t.labels.len();
        let mut nb = vec![Vec::new(); n];
        for &(a, b) in &t.edges {
            nb[a as usize].push(b as usize);
            nb[b as usize].push(a as usize);
        }
        nb.iter_mut().for_each(|v| v.sort_unstable());
        let (mut labels, mut edges) = (Vec::new(), Vec::new());
        fn walk(
            x: usize,
            parent: usize,
            nb: &[Vec<usize>],
            t: &TreeRecord,
            labels: &mut Vec<usize>,
            edges: &mut Vec<(usize, usize)>,
        ) {
            let me = labels.len();
            labels.push(t.labels[x] as usize);
            for &y in &nb[x] {
                if y != parent {
                    edges.push((me, labels.len()));
                    walk(y, x, nb, t, labels, edges);
                }
            }
        }
        walk(0, usize::MAX, &nb, t, &mut labels, &mut edges);
        (labels, edges)
    }

    #[test]
    fn losses_are_finite_counted_and_batch_invariant() {
        let (vocab, recs) = trees();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let dec = TreeDecoder::new(vs.root(), vocab.len() as i64, &config());
        let refs: Vec<&TreeRecord> = recs.iter().collect();
        let tb = TreeBatch::new(&refs, Device::Cpu);
        let z = Tensor::randn([recs.len() as i64, 4], (Kind::Float, Device::Cpu))
            .set_requires_grad(true);
        let l = dec.loss(&tb, &z);
        let (w, tp) = (l.word.double_value(&[]), l.topo.double_value(&[]));
        assert!(w.is_finite() && tp.is_finite() && w > 0.0 && tp > 0.0);
        let n_steps: usize = tb.dfs.iter().map(Vec::len).sum();
        assert_eq!(l.n_word, tb.n_nodes);
        assert_eq!(l.n_topo as usize, n_steps + recs.len());
        assert!((0.0..=1.0).contains(&l.word_acc) && (0.0..=1.0).contains(&l.topo_acc));

        // The latent receives gradient from both losses.
        (&l.word + &l.topo).backward();
        let g = z.grad();
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);

        let (mut w1, mut t1) = (0.0, 0.0);
        for (i, r) in recs.iter().enumerate() {
            let one = TreeBatch::new(&[r], Device::Cpu);
            let li = dec.loss(&one, &z.detach().narrow(0, i as i64, 1));
            w1 += li.word.double_value(&[]);
            t1 += li.topo.double_value(&[]);
            assert_eq!(li.n_word, r.labels.len() as i64);
            assert_eq!(li.n_topo as usize, 2 * r.edges.len() + 1);
        }
        assert!((w - w1).abs() <= 1e-4 * w, "word {w} vs per tree {w1}");
        assert!((tp - t1).abs() <= 1e-4 * tp, "topo {tp} vs per tree {t1}");
    }

    #[test]
    fn training_fits_trees_and_greedy_decoding_reproduces_them() {
        let (vocab, recs) = trees();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let dec = TreeDecoder::new(vs.root(), vocab.len() as i64, &config());
        let refs: Vec<&TreeRecord> = recs.iter().collect();
        let tb = TreeBatch::new(&refs, Device::Cpu);
        let z = Tensor::randn([recs.len() as i64, 4], (Kind::Float, Device::Cpu));
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let l0 = dec.loss(&tb, &z);
        let (w0, t0) = (l0.word.double_value(&[]), l0.topo.double_value(&[]));
        let mut last = (w0, t0);
        for _ in 0..150 {
            let l = dec.loss(&tb, &z);
            last = (l.word.double_value(&[]), l.topo.double_value(&[]));
            opt.backward_step(&(l.word + l.topo));
        }
        assert!(last.0 < 0.3 * w0, "word loss {w0} → {}", last.0);
        assert!(last.1 < 0.3 * t0, "topo loss {t0} → {}", last.1);

        let mut exact = 0;
        for (i, r) in recs.iter().enumerate() {
            let want = preorder(r);
            let got = dec.decode(&z.get(i as i64), 50);
            if got.as_ref() == Some(&want) {
                exact += 1;
                // The same latent with too small a budget stops instead of looping.
                if want.0.len() > 1 {
                    assert!(dec.decode(&z.get(i as i64), want.0.len() - 1).is_none());
                }
            }
        }
        assert!(exact >= 1, "no training tree decoded exactly");
    }

    #[test]
    fn decoding_is_bounded() {
        let (vocab, _) = trees();
        let vs = VarStore::new(Device::Cpu);
        let dec = TreeDecoder::new(vs.root(), vocab.len() as i64, &config());
        // Make every topology decision "expand": the walk never ends by itself.
        tch::no_grad(|| {
            let _ = dec.u_o.ws.shallow_clone().fill_(0.0);
            let _ = dec.u_o.bs.as_ref().unwrap().shallow_clone().fill_(100.0);
        });
        let z = Tensor::randn([1, 4], (Kind::Float, Device::Cpu));
        assert!(dec.decode(&z, 2).is_none());
        assert!(dec.decode(&z.squeeze_dim(0), 200).is_none());
        // Every decision "stop": the root alone.
        tch::no_grad(|| {
            let _ = dec.u_o.bs.as_ref().unwrap().shallow_clone().fill_(-100.0);
        });
        let (labels, edges) = dec.decode(&z, 2).unwrap();
        assert_eq!(labels.len(), 1);
        assert!(edges.is_empty());
    }
}
