//! The JT-VAE tree decoder (Jin, Barzilay, Jaakkola 2018, §2.3; as in the
//! reference's fast_jtnn decoder): it generates a junction tree from the tree half
//! of the latent code by a depth-first walk. At every step the node under the walk
//! decides whether to expand a new child or to backtrack (topology), and a new
//! child's cluster label is predicted from the message sent to it (label). Messages
//! live on directed tree edges and are computed, in walk order, by the same gated
//! recurrence as the tree encoder's.
//!
//! `loss` trains it by teacher forcing on a batch of real trees, one batched network
//! call per walk step for all trees of the batch; `decode` generates one tree
//! greedily (labels and topology only: chemical assembly comes later).
use super::batch::TreeBatch;
use crate::config::JtvaeConfig;
use tch::nn::{self, Module};
use tch::{Device, Kind, Reduction, Tensor};

/// The tree GRU of the JT-VAE: a message `h_{x→y}` from the embedding `x` of its
/// source and the messages `h_{k→x}` (k ≠ y) into the source.
struct TreeGru {
    w_z: nn::Linear,
    w_r: nn::Linear,
    u_r: nn::Linear,
    w_h: nn::Linear,
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
    embedding: nn::Embedding,
    gru: TreeGru,
    /// Label head: `relu(W [h; z])` then `W_o`.
    w: nn::Linear,
    w_o: nn::Linear,
    /// Topology head: `relu(U [x; Σ h_in; z])` then `U_o`.
    u: nn::Linear,
    u_o: nn::Linear,
    hidden: i64,
}

fn long(v: &[usize], device: Device) -> Tensor {
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
    fn word_logits(&self, h: &Tensor, z: &Tensor) -> Tensor {
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
        let h = self.hidden;
        let n_nodes = t.label_list.len();
        let emb = self.embedding.forward(&t.labels);
        let opts = (emb.kind(), dev);

        let mut msgs = Tensor::zeros([0, h], opts);
        let mut n_msgs = 0usize;
        // incoming[v]: (source node, buffer row) of every message into v so far.
        let mut incoming: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_nodes];
        // Topology decisions: node, tree, target, and (decision, row) pairs of the
        // messages into the node at decision time.
        let (mut topo_node, mut topo_tree, mut topo_target) = (Vec::new(), Vec::new(), Vec::new());
        let (mut topo_pair_dec, mut topo_pair_row) = (Vec::new(), Vec::new());
        // Label predictions after the roots: message row, tree and true label.
        let (mut word_row, mut word_tree, mut word_target) = (Vec::new(), Vec::new(), Vec::new());

        let mut decide =
            |node: usize, tree: usize, expand: bool, incoming: &[Vec<(usize, usize)>]| {
                let d = topo_node.len();
                topo_node.push(node);
                topo_tree.push(tree);
                topo_target.push(if expand { 1.0f32 } else { 0.0 });
                for &(_, row) in &incoming[node] {
                    topo_pair_dec.push(d);
                    topo_pair_row.push(row);
                }
            };

        for step in &t.dfs {
            // Steps of one index belong to different trees, so their nodes are
            // disjoint and the bookkeeping below can run item by item.
            let (mut from, mut item, mut rows) = (Vec::new(), Vec::new(), Vec::new());
            for (i, s) in step.iter().enumerate() {
                decide(s.from, s.tree, s.expand, &incoming);
                from.push(s.from);
                for &(k, row) in &incoming[s.from] {
                    if k != s.to {
                        item.push(i);
                        rows.push(row);
                    }
                }
            }
            let x = emb.index_select(0, &long(&from, dev));
            let nei = msgs.index_select(0, &long(&rows, dev));
            let new = self.gru.step(&x, &nei, &long(&item, dev));
            for (i, s) in step.iter().enumerate() {
                incoming[s.to].push((s.from, n_msgs + i));
                if s.expand {
                    word_row.push(n_msgs + i);
                    word_tree.push(s.tree);
                    word_target.push(t.label_list[s.to]);
                }
            }
            // Re-concatenating copies the buffer each step (steps × messages × H in
            // all), cheap for trees of tens of nodes and simple for autograd.
            msgs = Tensor::cat(&[msgs, new], 0);
            n_msgs += step.len();
        }
        // The walk ends back at the root, which must then stop.
        for (b, &r) in t.root_list.iter().enumerate() {
            decide(r, b, false, &incoming);
        }

        // Labels: roots from a zero message, the other nodes from the message that
        // created them.
        let n_trees = t.root_list.len();
        let word_h = Tensor::cat(
            &[
                Tensor::zeros([n_trees as i64, h], opts),
                msgs.index_select(0, &long(&word_row, dev)),
            ],
            0,
        );
        let word_ctx: Vec<usize> = (0..n_trees).chain(word_tree).collect();
        let word_target: Vec<usize> = t
            .root_list
            .iter()
            .map(|&r| t.label_list[r])
            .chain(word_target)
            .collect();
        let word_target = long(&word_target, dev);
        let wl = self.word_logits(&word_h, &z_tree.index_select(0, &long(&word_ctx, dev)));
        let word = wl.cross_entropy_loss::<Tensor>(&word_target, None, Reduction::Sum, -100, 0.0);
        let word_hits = wl
            .argmax(-1, false)
            .eq_tensor(&word_target)
            .sum(Kind::Int64)
            .int64_value(&[]);

        let n_topo = topo_node.len();
        let o = Tensor::zeros([n_topo as i64, h], opts).index_add(
            0,
            &long(&topo_pair_dec, dev),
            &msgs.index_select(0, &long(&topo_pair_row, dev)),
        );
        let tl = self.topo_logits(
            &emb.index_select(0, &long(&topo_node, dev)),
            &o,
            &z_tree.index_select(0, &long(&topo_tree, dev)),
        );
        let topo_target = Tensor::from_slice(&topo_target)
            .to_device(dev)
            .to_kind(emb.kind());
        let topo =
            tl.binary_cross_entropy_with_logits::<Tensor>(&topo_target, None, None, Reduction::Sum);
        let topo_hits = tl
            .gt(0.0)
            .eq_tensor(&topo_target.gt(0.5))
            .sum(Kind::Int64)
            .int64_value(&[]);

        let frac = |hits: i64, n: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
        DecoderLoss {
            word,
            topo,
            n_word: word_target.size()[0],
            n_topo: n_topo as i64,
            word_acc: frac(word_hits, word_ctx.len()),
            topo_acc: frac(topo_hits, n_topo),
        }
    }

    /// Greedy decoding of one latent `[latent/2]` (or `[1, latent/2]`): node labels
    /// and `(parent, child)` edges in creation order (node 0 is the root, nodes are
    /// numbered as created). `None` when the walk would create more than `max_nodes`
    /// nodes; since every backtrack leaves a node for good, the walk takes at most
    /// `2 · max_nodes` steps.
    /// The most likely root label for a tree latent.
    pub fn root_label(&self, z_tree: &Tensor) -> usize {
        self.root_labels(&z_tree.reshape([1, -1]))
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// The most likely root label of each row of `z_tree [B, latent/2]`.
    pub fn root_labels(&self, z_tree: &Tensor) -> Vec<usize> {
        let _guard = tch::no_grad_guard();
        let b = z_tree.size()[0];
        let logits = self.word_logits(
            &Tensor::zeros([b, self.hidden], (z_tree.kind(), z_tree.device())),
            z_tree,
        );
        Vec::<i64>::try_from(logits.argmax(-1, false))
            .unwrap_or_default()
            .into_iter()
            .map(|l| l as usize)
            .collect()
    }

    pub fn decode(&self, z_tree: &Tensor, max_nodes: usize) -> Option<DecodedTree> {
        self.decode_with(z_tree, max_nodes, 1, &mut |_, _| true)
    }

    /// Like `decode`, but a new child's label is the most likely of the `top_k`
    /// labels that `accept(parent node, child label)` accepts (e.g. that can be
    /// attached to the molecule built so far, which the callback may then do); when
    /// none is, the walk backtracks instead of expanding (as fast_jtnn's decoder does
    /// with its assembly checks). Nodes are numbered in creation order.
    pub fn decode_with(
        &self,
        z_tree: &Tensor,
        max_nodes: usize,
        top_k: usize,
        accept: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Option<DecodedTree> {
        let z = z_tree.reshape([1, -1]);
        let roots = self.root_labels(&z);
        let mut one = |reqs: &[ChildRequest]| -> Vec<Option<usize>> {
            reqs.iter()
                .map(|r| r.labels.iter().copied().find(|&l| accept(r.parent, l)))
                .collect()
        };
        self.decode_batch_with(&z, &roots, max_nodes, top_k, &mut one)
            .pop()
            .flatten()
    }
}

/// A request of the batched walk to the chemistry: molecule `mol` wants a child of
/// its node `parent`, with these label candidates, most likely first.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    pub mol: usize,
    pub parent: usize,
    pub labels: Vec<usize>,
}

/// The walk state of one tree of a batched decode.
struct Walk {
    labels: Vec<usize>,
    edges: Vec<(usize, usize)>,
    /// For every node, the (sender node, message row) pairs it has received.
    incoming: Vec<Vec<(usize, usize)>>,
    stack: Vec<usize>,
    failed: bool,
}

impl TreeDecoder {
    /// `decode_with` for a batch of latents `z_tree [B, latent/2]`: all unfinished
    /// walks advance together, with one network call per kind of step for the whole
    /// batch; `accept` receives every round's child requests at once (so that the
    /// chemistry can enumerate and score them together) and answers, per request,
    /// the accepted label or `None` (then that walk backtracks). Each walk makes
    /// exactly the decisions it makes alone; `None` for walks over `max_nodes`.
    pub fn decode_batch_with(
        &self,
        z_tree: &Tensor,
        roots: &[usize],
        max_nodes: usize,
        top_k: usize,
        accept: &mut dyn FnMut(&[ChildRequest]) -> Vec<Option<usize>>,
    ) -> Vec<Option<DecodedTree>> {
        let _guard = tch::no_grad_guard();
        let z = z_tree.reshape([-1, z_tree.size().last().copied().unwrap_or(1)]);
        let b = z.size()[0] as usize;
        if max_nodes == 0 {
            return vec![None; b];
        }
        let dev = z.device();
        let mut walks: Vec<Walk> = roots
            .iter()
            .map(|&r| Walk {
                labels: vec![r],
                edges: Vec::new(),
                incoming: vec![Vec::new()],
                stack: vec![0],
                failed: false,
            })
            .collect();
        let split = SplitWeights::new(self);
        let mut per_label = LabelProducts::default();
        // Every message of every walk, one row each, addressed by row number.
        let mut msgs = Rows::new(self.hidden, (z.kind(), dev));
        loop {
            let active: Vec<usize> = (0..b)
                .filter(|&i| !walks[i].failed && !walks[i].stack.is_empty())
                .collect();
            if active.is_empty() {
                break;
            }
            let xs: Vec<usize> = active
                .iter()
                .map(|&i| *walks[i].stack.last().expect("active walks have a node"))
                .collect();
            let node_labels: Vec<usize> = active
                .iter()
                .zip(&xs)
                .map(|(&i, &x)| walks[i].labels[x])
                .collect();
            // The products of the node embeddings, `[active, 4H]`.
            let px = per_label.rows(self, &split, &node_labels, dev);
            let za = z.index_select(0, &long(&active, dev));
            let all_in: Vec<Vec<usize>> = active
                .iter()
                .zip(&xs)
                .map(|(&i, &x)| walks[i].incoming[x].iter().map(|&(_, m)| m).collect())
                .collect();
            let (nei, item) = msgs.gather(&all_in);
            let o = Tensor::zeros([active.len() as i64, self.hidden], (z.kind(), dev))
                .index_add(0, &item, &nei);
            let expand: Vec<f64> =
                Vec::try_from(split.topo_logits(self, &px, &o, &za)).unwrap_or_default();
            let mut grow: Vec<usize> = (0..active.len()).filter(|&r| expand[r] > 0.0).collect();
            // Expanding rows: the message to the new child and its label candidates.
            let mut accepted: Vec<Option<(usize, usize)>> = vec![None; active.len()];
            if !grow.is_empty() {
                let sel = long(&grow, dev);
                let parts: Vec<Vec<usize>> = grow.iter().map(|&r| all_in[r].clone()).collect();
                let (nei, item) = msgs.gather(&parts);
                let m = split.gru_step(self, &px.index_select(0, &sel), &nei, &item);
                let logits = self.word_logits(&m, &za.index_select(0, &sel));
                let k = (top_k.max(1) as i64).min(logits.size()[1]);
                let (_, best) = logits.topk(k, -1, true, true);
                let best = Vec::<Vec<i64>>::try_from(&best).unwrap_or_default();
                let mut requests = Vec::new();
                let mut req_rows = Vec::new();
                for (g, &r) in grow.iter().enumerate() {
                    let i = active[r];
                    if walks[i].labels.len() >= max_nodes {
                        walks[i].failed = true;
                        continue;
                    }
                    requests.push(ChildRequest {
                        mol: i,
                        parent: xs[r],
                        labels: best[g].iter().map(|&l| l as usize).collect(),
                    });
                    req_rows.push((r, g));
                }
                let answers = if requests.is_empty() {
                    Vec::new()
                } else {
                    accept(&requests)
                };
                let first = msgs.push(&m);
                for ((r, g), label) in req_rows.into_iter().zip(answers) {
                    if let Some(label) = label {
                        accepted[r] = Some((label, first + g));
                    }
                }
                grow.retain(|&r| accepted[r].is_some());
            }
            for &r in &grow {
                let (label, row) = accepted[r].expect("kept only accepted rows");
                let (i, x) = (active[r], xs[r]);
                let w = &mut walks[i];
                let y = w.labels.len();
                w.labels.push(label);
                w.edges.push((x, y));
                w.incoming.push(vec![(x, row)]);
                w.stack.push(y);
            }
            // Backtracking rows (no expansion, or no acceptable label): the message
            // up to the parent, from everything the node received except the parent's.
            let back: Vec<usize> = (0..active.len())
                .filter(|&r| accepted[r].is_none() && !walks[active[r]].failed)
                .collect();
            let mut up = Vec::new();
            let mut parts = Vec::new();
            for &r in &back {
                let (i, x) = (active[r], xs[r]);
                let w = &mut walks[i];
                w.stack.pop();
                if let Some(&p) = w.stack.last() {
                    parts.push(
                        w.incoming[x]
                            .iter()
                            .filter(|&&(k, _)| k != p)
                            .map(|&(_, m)| m)
                            .collect::<Vec<_>>(),
                    );
                    up.push((r, p));
                }
            }
            if !up.is_empty() {
                let sel = long(&up.iter().map(|&(r, _)| r).collect::<Vec<_>>(), dev);
                let (nei, item) = msgs.gather(&parts);
                let m = split.gru_step(self, &px.index_select(0, &sel), &nei, &item);
                let first = msgs.push(&m);
                for (n, &(r, p)) in up.iter().enumerate() {
                    walks[active[r]].incoming[p].push((xs[r], first + n));
                }
            }
        }
        walks
            .into_iter()
            .map(|w| (!w.failed).then_some((w.labels, w.edges)))
            .collect()
    }
}

/// The decoder's weights split by input, for decoding: the parts applied to a
/// node's embedding depend on its label only (`LabelProducts`), the rest are
/// applied per step. Sums of the parts equal the full layers up to rounding.
struct SplitWeights {
    /// `[4H, H]`: W_z, W_r, W_h (GRU) and U (topology) on the embedding, stacked.
    on_x: Tensor,
    /// `[4H]`: the biases that go with them (W_r has none).
    on_x_bias: Tensor,
    /// W_z on the message sum, W_h on the gated sum, U on the incoming sum and on z.
    z_s: Tensor,
    h_g: Tensor,
    u_o: Tensor,
    u_z: Tensor,
}

impl SplitWeights {
    fn new(d: &TreeDecoder) -> SplitWeights {
        let h = d.hidden;
        let g = &d.gru;
        let first = |l: &nn::Linear| l.ws.narrow(1, 0, h);
        let zero = || Tensor::zeros([h], (g.w_r.ws.kind(), g.w_r.ws.device()));
        let bias = |l: &nn::Linear| l.bs.as_ref().map_or_else(zero, |b| b.shallow_clone());
        SplitWeights {
            on_x: Tensor::cat(
                &[
                    first(&g.w_z),
                    g.w_r.ws.shallow_clone(),
                    first(&g.w_h),
                    first(&d.u),
                ],
                0,
            ),
            on_x_bias: Tensor::cat(&[bias(&g.w_z), zero(), bias(&g.w_h), bias(&d.u)], 0),
            z_s: g.w_z.ws.narrow(1, h, h).contiguous(),
            h_g: g.w_h.ws.narrow(1, h, h).contiguous(),
            u_o: d.u.ws.narrow(1, h, h).contiguous(),
            u_z: d
                .u
                .ws
                .narrow(1, 2 * h, d.u.ws.size()[1] - 2 * h)
                .contiguous(),
        }
    }

    /// `TreeGru::step` from the label products `px [n, 4H]` of the sources.
    fn gru_step(&self, d: &TreeDecoder, px: &Tensor, nei: &Tensor, item: &Tensor) -> Tensor {
        let h = d.hidden;
        let s = Tensor::zeros([px.size()[0], h], (px.kind(), px.device())).index_add(0, item, nei);
        let z = (px.narrow(1, 0, h) + s.matmul(&self.z_s.tr())).sigmoid();
        let r = (px.narrow(1, h, h).index_select(0, item) + d.gru.u_r.forward(nei)).sigmoid();
        let gated = s.zeros_like().index_add(0, item, &(r * nei));
        let m = (px.narrow(1, 2 * h, h) + gated.matmul(&self.h_g.tr())).tanh();
        (1.0 - &z) * s + z * m
    }

    /// `TreeDecoder::topo_logits` from the label products `px`.
    fn topo_logits(&self, d: &TreeDecoder, px: &Tensor, o: &Tensor, z: &Tensor) -> Tensor {
        let h = d.hidden;
        let pre = px.narrow(1, 3 * h, h) + o.matmul(&self.u_o.tr()) + z.matmul(&self.u_z.tr());
        d.u_o.forward(&pre.relu()).squeeze_dim(-1)
    }
}

/// `SplitWeights::on_x` applied to the embeddings of the labels met so far,
/// computed once per label for a whole decode.
#[derive(Default)]
struct LabelProducts {
    row_of: std::collections::HashMap<usize, i64>,
    table: Vec<Tensor>,
}

impl LabelProducts {
    /// `[labels.len(), 4H]` products of these labels' embeddings.
    fn rows(&mut self, d: &TreeDecoder, w: &SplitWeights, labels: &[usize], dev: Device) -> Tensor {
        let mut new: Vec<usize> = Vec::new();
        for &l in labels {
            if !self.row_of.contains_key(&l) && !new.contains(&l) {
                new.push(l);
            }
        }
        if !new.is_empty() {
            let base: i64 = self.table.iter().map(|t| t.size()[0]).sum();
            let x = d.embedding.forward(&long(&new, dev));
            self.table.push(x.matmul(&w.on_x.tr()) + &w.on_x_bias);
            for (k, &l) in new.iter().enumerate() {
                self.row_of.insert(l, base + k as i64);
            }
            if self.table.len() > 1 {
                self.table = vec![Tensor::cat(&self.table, 0)];
            }
        }
        let idx: Vec<i64> = labels.iter().map(|l| self.row_of[l]).collect();
        self.table[0].index_select(0, &Tensor::from_slice(&idx).to_device(dev))
    }
}

/// Rows of a growing matrix (messages), stored with spare capacity.
struct Rows {
    store: Tensor,
    len: usize,
}

impl Rows {
    fn new(width: i64, opts: (Kind, Device)) -> Rows {
        Rows {
            store: Tensor::zeros([256, width], opts),
            len: 0,
        }
    }

    /// Appends `m [n, width]`; returns the row number of its first row.
    fn push(&mut self, m: &Tensor) -> usize {
        let n = m.size()[0] as usize;
        let cap = self.store.size()[0] as usize;
        if self.len + n > cap {
            let grown = Tensor::zeros(
                [(2 * cap).max(self.len + n) as i64, self.store.size()[1]],
                (self.store.kind(), self.store.device()),
            );
            grown
                .narrow(0, 0, self.len as i64)
                .copy_(&self.store.narrow(0, 0, self.len as i64));
            self.store = grown;
        }
        self.store.narrow(0, self.len as i64, n as i64).copy_(m);
        self.len += n;
        self.len - n
    }

    /// The rows of every part, stacked, with the part each row belongs to.
    fn gather(&self, parts: &[Vec<usize>]) -> (Tensor, Tensor) {
        let dev = self.store.device();
        let (mut rows, mut item) = (Vec::new(), Vec::new());
        for (r, part) in parts.iter().enumerate() {
            for &m in part {
                rows.push(m);
                item.push(r);
            }
        }
        (
            self.store.index_select(0, &long(&rows, dev)),
            long(&item, dev),
        )
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
