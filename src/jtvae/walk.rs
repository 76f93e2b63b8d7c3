//! Decoding with the tree decoder (`decoder`): a tree latent becomes a
//! junction tree (labels and topology; chemical assembly is `decode`'s), every
//! decision taken by a `policy::WalkPolicy` (greedy: argmax; the score
//! estimator's sampler and replay: `sample`). The walks
//! of a batch of latents advance together, depth first, one round at a time:
//! every unfinished walk decides at its current node whether to expand
//! (topology head), an expanding walk computes the message to its new child and
//! asks for one of its `top_k` most likely labels (the caller's `accept` answers
//! every round's requests at once), and a walk that does not expand sends the
//! message up to its parent and backtracks. The decoder's layers are split by
//! input so that the parts applied to a node's embedding are computed once per
//! label (`SplitWeights`, `LabelProducts`); messages live in one growing buffer
//! (`Rows`).
use super::decoder::{long, DecodedTree, TreeDecoder};
use super::policy::{Greedy, WalkPolicy};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

impl TreeDecoder {
    /// Greedy decoding of one latent `[latent/2]` (or `[1, latent/2]`): node labels
    /// and `(parent, child)` edges in creation order (node 0 is the root, nodes are
    /// numbered as created). `None` when the walk would create more than `max_nodes`
    /// nodes; since every backtrack leaves a node for good, the walk takes at most
    /// `2 · max_nodes` steps.
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
        self.walk_batch(z_tree, roots, max_nodes, top_k, &mut Greedy, accept)
    }

    /// `decode_batch_with` with the decisions of `policy` (greedy, sampled or
    /// replayed, see `policy`); runs in the caller's grad mode (a replay records
    /// the graph of its log-probabilities).
    pub(crate) fn walk_batch(
        &self,
        z_tree: &Tensor,
        roots: &[usize],
        max_nodes: usize,
        top_k: usize,
        policy: &mut dyn WalkPolicy,
        accept: &mut dyn FnMut(&[ChildRequest]) -> Vec<Option<usize>>,
    ) -> Vec<Option<DecodedTree>> {
        let z = z_tree.reshape([-1, z_tree.size().last().copied().unwrap_or(1)]);
        let b = z.size()[0] as usize;
        if max_nodes == 0 {
            return vec![None; b];
        }
        let mut bw = BatchWalk::new(self, z, roots, max_nodes, top_k);
        while let Some(rd) = bw.round() {
            let mut grow = bw.expanding(&rd, policy);
            let accepted = bw.children(&rd, &mut grow, policy, accept);
            bw.add_children(&rd, &grow, &accepted);
            bw.backtrack(&rd, &accepted);
        }
        bw.walks
            .into_iter()
            .map(|w| (!w.failed).then_some((w.labels, w.edges)))
            .collect()
    }
}

/// The state of a batched decode (`decode_batch_with`).
struct BatchWalk<'a> {
    d: &'a TreeDecoder,
    /// `[B, latent/2]` tree latents.
    z: Tensor,
    b: usize,
    dev: Device,
    walks: Vec<Walk>,
    split: SplitWeights,
    per_label: LabelProducts,
    /// Every message of every walk, one row each, addressed by row number.
    msgs: Rows,
    max_nodes: usize,
    top_k: usize,
}

/// One round: the unfinished walks (`active`, by walk index; "rows" below index
/// this list) and what every kind of step of the round uses.
struct Round {
    active: Vec<usize>,
    /// The node each active walk is at.
    xs: Vec<usize>,
    /// The products of the node embeddings, `[active, 4H]`.
    px: Tensor,
    /// The active walks' latents.
    za: Tensor,
    /// Message rows into each active walk's node.
    all_in: Vec<Vec<usize>>,
}

impl<'a> BatchWalk<'a> {
    /// Every walk at its root (`roots`: the root labels).
    fn new(
        d: &'a TreeDecoder,
        z: Tensor,
        roots: &[usize],
        max_nodes: usize,
        top_k: usize,
    ) -> BatchWalk<'a> {
        let b = z.size()[0] as usize;
        let dev = z.device();
        let walks: Vec<Walk> = roots
            .iter()
            .map(|&r| Walk {
                labels: vec![r],
                edges: Vec::new(),
                incoming: vec![Vec::new()],
                stack: vec![0],
                failed: false,
            })
            .collect();
        let split = SplitWeights::new(d);
        let per_label = LabelProducts::default();
        let msgs = Rows::new(d.hidden, (z.kind(), dev));
        BatchWalk {
            d,
            z,
            b,
            dev,
            walks,
            split,
            per_label,
            msgs,
            max_nodes,
            top_k,
        }
    }

    /// The next round, `None` when every walk has ended (or failed).
    fn round(&mut self) -> Option<Round> {
        let walks = &self.walks;
        let active: Vec<usize> = (0..self.b)
            .filter(|&i| !walks[i].failed && !walks[i].stack.is_empty())
            .collect();
        if active.is_empty() {
            return None;
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
        let px = self
            .per_label
            .rows(self.d, &self.split, &node_labels, self.dev);
        let za = self.z.index_select(0, &long(&active, self.dev));
        let walks = &self.walks;
        let all_in: Vec<Vec<usize>> = active
            .iter()
            .zip(&xs)
            .map(|(&i, &x)| walks[i].incoming[x].iter().map(|&(_, m)| m).collect())
            .collect();
        Some(Round {
            active,
            xs,
            px,
            za,
            all_in,
        })
    }

    /// The rows whose node expands (topology head on the messages it received).
    fn expanding(&self, rd: &Round, policy: &mut dyn WalkPolicy) -> Vec<usize> {
        let (nei, item) = self.msgs.gather(&rd.all_in);
        let o = Tensor::zeros(
            [rd.active.len() as i64, self.d.hidden],
            (self.z.kind(), self.dev),
        )
        .index_add(0, &item, &nei);
        let logits = self.split.topo_logits(self.d, &rd.px, &o, &rd.za);
        let expand = policy.expand(&rd.active, &logits);
        (0..rd.active.len()).filter(|&r| expand[r]).collect()
    }

    /// Expanding rows (`grow`): the message to the new child and its label
    /// candidates, asked of `accept` (a walk at `max_nodes` fails instead). Returns
    /// per row the accepted (label, message row); `grow` keeps the accepted rows.
    fn children(
        &mut self,
        rd: &Round,
        grow: &mut Vec<usize>,
        policy: &mut dyn WalkPolicy,
        accept: &mut dyn FnMut(&[ChildRequest]) -> Vec<Option<usize>>,
    ) -> Vec<Option<(usize, usize)>> {
        let mut accepted: Vec<Option<(usize, usize)>> = vec![None; rd.active.len()];
        if grow.is_empty() {
            return accepted;
        }
        let sel = long(grow, self.dev);
        let parts: Vec<Vec<usize>> = grow.iter().map(|&r| rd.all_in[r].clone()).collect();
        let (nei, item) = self.msgs.gather(&parts);
        let m = self
            .split
            .gru_step(self.d, &rd.px.index_select(0, &sel), &nei, &item);
        let logits = self.d.word_logits(&m, &rd.za.index_select(0, &sel));
        let walks: Vec<usize> = grow.iter().map(|&r| rd.active[r]).collect();
        let best = policy.labels(&walks, &logits, self.top_k);
        let mut requests = Vec::new();
        let mut req_rows = Vec::new();
        for (g, &r) in grow.iter().enumerate() {
            let i = rd.active[r];
            if self.walks[i].labels.len() >= self.max_nodes {
                self.walks[i].failed = true;
                continue;
            }
            requests.push(ChildRequest {
                mol: i,
                parent: rd.xs[r],
                labels: best[g].clone(),
            });
            req_rows.push((r, g));
        }
        let answers = if requests.is_empty() {
            Vec::new()
        } else {
            accept(&requests)
        };
        let first = self.msgs.push(&m);
        for ((r, g), label) in req_rows.into_iter().zip(answers) {
            policy.accepted(rd.active[r], label);
            if let Some(label) = label {
                accepted[r] = Some((label, first + g));
            }
        }
        grow.retain(|&r| accepted[r].is_some());
        accepted
    }

    /// The accepted children join their walks, which move down to them.
    fn add_children(&mut self, rd: &Round, grow: &[usize], accepted: &[Option<(usize, usize)>]) {
        for &r in grow {
            let (label, row) = accepted[r].expect("kept only accepted rows");
            let (i, x) = (rd.active[r], rd.xs[r]);
            let w = &mut self.walks[i];
            let y = w.labels.len();
            w.labels.push(label);
            w.edges.push((x, y));
            w.incoming.push(vec![(x, row)]);
            w.stack.push(y);
        }
    }

    /// Backtracking rows (no expansion, or no acceptable label): the message up to
    /// the parent, from everything the node received except the parent's.
    fn backtrack(&mut self, rd: &Round, accepted: &[Option<(usize, usize)>]) {
        let back: Vec<usize> = (0..rd.active.len())
            .filter(|&r| accepted[r].is_none() && !self.walks[rd.active[r]].failed)
            .collect();
        let mut up = Vec::new();
        let mut parts = Vec::new();
        for &r in &back {
            let (i, x) = (rd.active[r], rd.xs[r]);
            let w = &mut self.walks[i];
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
            let sel = long(&up.iter().map(|&(r, _)| r).collect::<Vec<_>>(), self.dev);
            let (nei, item) = self.msgs.gather(&parts);
            let m = self
                .split
                .gru_step(self.d, &rd.px.index_select(0, &sel), &nei, &item);
            let first = self.msgs.push(&m);
            for (n, &(r, p)) in up.iter().enumerate() {
                self.walks[rd.active[r]].incoming[p].push((rd.xs[r], first + n));
            }
        }
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
