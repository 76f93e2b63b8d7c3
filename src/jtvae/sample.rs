//! The stochastic JT-VAE decoder of the score-function estimator
//! (`zo.estimator = "score"`): the greedy decoder's decisions, each drawn at a
//! temperature τ instead of taken as the argmax, recorded (`Trace`), and their
//! exact log-probability log p_τ(trajectory | z, v) recomputed with autograd by
//! replaying them through the same walk (`JtVae::trace_log_probs`).
//!
//! The decisions and their probabilities (x = logits/τ):
//! - root label: a draw from softmax(x) (Gumbel-max);
//! - expand or backtrack: expand with probability sigmoid(x);
//! - a new child's labels: the first `LABEL_TOP_K` of a Plackett–Luce ordering
//!   of the whole vocabulary by softmax(x) (Gumbel-top-k); the chemistry accepts
//!   the first that attaches (none: the walk backtracks). The probability is the
//!   ordering's prefix up to the accepted label (all k when none is): Π_i
//!   exp(x_{t_i}) / Σ_{a ∉ {t_1..t_{i-1}}} exp(x_a). The rejected labels are part
//!   of the recorded trajectory, which keeps the score exact without enumerating
//!   which labels of the vocabulary could attach;
//! - an attachment: a draw k from softmax(x) over the distinct attachments
//!   (assembly scores), then replaced by its tie class's representative (the
//!   smallest SMILES among the attachments tied with k, as the greedy decoder
//!   does); the probability is the class's softmax mass.
//!
//! As τ → 0 every draw becomes the greedy decision. Random numbers come from two
//! `zo::rng::Stream`s per decode, keyed (seed, purpose, ids…, 0) for the tree
//! and (…, 1) for the assembly, drawn in the walk's own order, so a decode does
//! not depend on the batch, the thread or the rank it runs on.
use super::candidates::{LabelGraphs, LocalGraph};
use super::decode::{DecodeError, DecodeTimes, Decoded, LABEL_TOP_K};
use super::decoder::long;
use super::model::JtVae;
use super::policy::{tie_class, AssemblyPolicy, WalkPolicy};
use super::shared::SharedGraphs;
use super::walk::ChildRequest;
use crate::zo::rng::Stream;
use tch::{Kind, Tensor};

/// What one sampled decode chose, enough to replay it.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub root: usize,
    /// Every expand (true) / backtrack decision, in walk order.
    pub topo: Vec<bool>,
    /// Per expansion: the labels tried, in order, and whether the last attached.
    pub tries: Vec<(Vec<usize>, bool)>,
    /// Every attachment drawn among several.
    pub assm: Vec<AssmChoice>,
    /// log p_τ of the trajectory as the sampler computed it (f64, no gradient).
    pub logp: f64,
}

/// One attachment decision: the options' local graphs and the options whose tie
/// class was applied.
#[derive(Debug, Clone)]
pub struct AssmChoice {
    pub graphs: Vec<LocalGraph>,
    pub chosen: Vec<usize>,
}

/// The keys of a batch's decodes: row r draws from (seed, purpose, ids[r]…).
#[derive(Debug, Clone, Copy)]
pub struct SampleKeys<'a> {
    pub seed: u64,
    pub purpose: &'a str,
    pub ids: &'a [Vec<u64>],
}

impl SampleKeys<'_> {
    fn stream(&self, row: usize, part: u64) -> Stream {
        let mut ids = self.ids[row].clone();
        ids.push(part);
        Stream::new(self.seed, self.purpose, &ids)
    }
}

/// A standard Gumbel draw (from a uniform strictly inside (0, 1)).
fn gumbel(s: &mut Stream) -> f64 {
    let u = ((s.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -(-u.ln()).ln()
}

/// log Σ exp(x_i) over the indices `keep` accepts.
fn logsumexp(x: &[f64], keep: impl Fn(usize) -> bool) -> f64 {
    let m = (0..x.len())
        .filter(|&i| keep(i))
        .fold(f64::NEG_INFINITY, |m, i| m.max(x[i]));
    if m == f64::NEG_INFINITY {
        return m;
    }
    let s: f64 = (0..x.len())
        .filter(|&i| keep(i))
        .map(|i| (x[i] - m).exp())
        .sum();
    m + s.ln()
}

/// Rows of a `[n, V]` tensor divided by τ, as f64.
fn rows_over(logits: &Tensor, tau: f64) -> Vec<Vec<f64>> {
    let rows = Vec::<Vec<f32>>::try_from(&logits.to_kind(Kind::Float)).unwrap_or_default();
    rows.into_iter()
        .map(|r| r.into_iter().map(|v| f64::from(v) / tau).collect())
        .collect()
}

/// log-probability of the Plackett–Luce prefix `tried` of softmax(x).
pub fn prefix_log_prob(x: &[f64], tried: &[usize]) -> f64 {
    (0..tried.len())
        .map(|i| x[tried[i]] - logsumexp(x, |a| !tried[..i].contains(&a)))
        .sum()
}

/// The tree walk's decisions drawn at τ (see the module doc), recorded per walk.
struct TreeSampler {
    tau: f64,
    streams: Vec<Stream>,
    traces: Vec<Trace>,
    /// Per walk: the ordering and scaled logits of its open child request.
    pending: Vec<Option<(Vec<usize>, Vec<f64>)>>,
}

impl WalkPolicy for TreeSampler {
    fn roots(&mut self, logits: &Tensor) -> Vec<usize> {
        let rows = rows_over(logits, self.tau);
        let mut out = Vec::with_capacity(rows.len());
        for (w, x) in rows.iter().enumerate() {
            let s = &mut self.streams[w];
            let pick = (0..x.len())
                .map(|i| (i, x[i] + gumbel(s)))
                .fold((0, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b })
                .0;
            self.traces[w].root = pick;
            self.traces[w].logp += x[pick] - logsumexp(x, |_| true);
            out.push(pick);
        }
        out
    }

    fn expand(&mut self, walks: &[usize], logits: &Tensor) -> Vec<bool> {
        let t: Vec<f64> = Vec::try_from(logits.to_kind(Kind::Double)).unwrap_or_default();
        walks
            .iter()
            .zip(t)
            .map(|(&w, t)| {
                let x = t / self.tau;
                let p = 1.0 / (1.0 + (-x).exp());
                let e = self.streams[w].uniform() < p;
                // log sigmoid(±x) = −softplus(∓x), computed stably.
                let s = if e { -x } else { x };
                self.traces[w].logp -= s.max(0.0) + (-s.abs()).exp().ln_1p();
                self.traces[w].topo.push(e);
                e
            })
            .collect()
    }

    fn labels(&mut self, walks: &[usize], logits: &Tensor, top_k: usize) -> Vec<Vec<usize>> {
        let rows = rows_over(logits, self.tau);
        walks
            .iter()
            .zip(rows)
            .map(|(&w, x)| {
                let s = &mut self.streams[w];
                let keyed: Vec<f64> = x.iter().map(|&v| v + gumbel(s)).collect();
                let mut order: Vec<usize> = (0..x.len()).collect();
                order.sort_by(|&a, &b| keyed[b].total_cmp(&keyed[a]));
                order.truncate(top_k.max(1));
                self.pending[w] = Some((order.clone(), x));
                order
            })
            .collect()
    }

    fn accepted(&mut self, walk: usize, label: Option<usize>) {
        let Some((order, x)) = self.pending[walk].take() else {
            return;
        };
        let n = label
            .and_then(|l| order.iter().position(|&o| o == l))
            .map_or(order.len(), |p| p + 1);
        let tried = order[..n].to_vec();
        self.traces[walk].logp += prefix_log_prob(&x, &tried);
        self.traces[walk].tries.push((tried, label.is_some()));
    }
}

/// The assembly's decisions drawn at τ, recorded per molecule.
struct AssmSampler {
    tau: f64,
    streams: Vec<Stream>,
    choices: Vec<Vec<AssmChoice>>,
    logp: Vec<f64>,
}

impl AssemblyPolicy for AssmSampler {
    fn pick(
        &mut self,
        mol: usize,
        scores: &[f32],
        smiles: &[&str],
        graphs: &[LocalGraph],
    ) -> usize {
        let x: Vec<f64> = scores.iter().map(|&s| f64::from(s) / self.tau).collect();
        let s = &mut self.streams[mol];
        let k = (0..x.len())
            .map(|i| (i, x[i] + gumbel(s)))
            .fold((0, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b })
            .0;
        let c = tie_class(scores, smiles, k);
        let chosen: Vec<usize> = (0..x.len())
            .filter(|&j| tie_class(scores, smiles, j) == c)
            .collect();
        self.logp[mol] += logsumexp(&x, |j| chosen.contains(&j)) - logsumexp(&x, |_| true);
        self.choices[mol].push(AssmChoice {
            graphs: graphs.to_vec(),
            chosen,
        });
        c
    }
}

/// The recorded decisions, replayed through the walk with autograd: log p_τ of
/// every trace (`logp`, `[B]`) accumulates as the walk goes.
struct Replay<'t> {
    tau: f64,
    traces: &'t [&'t Trace],
    topo_at: Vec<usize>,
    tries_at: Vec<usize>,
    logp: Tensor,
}

impl Replay<'_> {
    fn add(&mut self, walks: &[usize], term: &Tensor) {
        let idx = long(walks, term.device());
        self.logp = self.logp.index_add(0, &idx, term);
    }
}

impl WalkPolicy for Replay<'_> {
    fn roots(&mut self, logits: &Tensor) -> Vec<usize> {
        let roots: Vec<usize> = self.traces.iter().map(|t| t.root).collect();
        let idx = long(&roots, logits.device()).unsqueeze(1);
        let term = (logits / self.tau)
            .log_softmax(-1, Kind::Float)
            .gather(1, &idx, false)
            .squeeze_dim(1);
        let all: Vec<usize> = (0..roots.len()).collect();
        self.add(&all, &term);
        roots
    }

    fn expand(&mut self, walks: &[usize], logits: &Tensor) -> Vec<bool> {
        let decided: Vec<bool> = walks
            .iter()
            .map(|&w| {
                let d = self.traces[w].topo.get(self.topo_at[w]).copied();
                self.topo_at[w] += 1;
                d.unwrap_or(false)
            })
            .collect();
        let sign: Vec<f32> = decided
            .iter()
            .map(|&d| if d { 1.0 } else { -1.0 })
            .collect();
        let sign = Tensor::from_slice(&sign).to_device(logits.device());
        let term = (logits * sign / self.tau).log_sigmoid();
        self.add(walks, &term);
        decided
    }

    fn labels(&mut self, walks: &[usize], logits: &Tensor, _top_k: usize) -> Vec<Vec<usize>> {
        let dev = logits.device();
        let tries: Vec<(Vec<usize>, bool)> = walks
            .iter()
            .map(|&w| {
                let t = self.traces[w].tries.get(self.tries_at[w]).cloned();
                self.tries_at[w] += 1;
                t.unwrap_or_default()
            })
            .collect();
        let (n, v) = (logits.size()[0], logits.size()[1]);
        let x = logits / self.tau;
        let mut term = Tensor::zeros([n], (x.kind(), dev));
        let longest = tries.iter().map(|t| t.0.len()).max().unwrap_or(0);
        for i in 0..longest {
            let mut removed = vec![false; (n * v) as usize];
            let mut pick = vec![0usize; n as usize];
            let mut valid = vec![0f32; n as usize];
            for (r, (t, _)) in tries.iter().enumerate() {
                if t.len() > i {
                    t[..i]
                        .iter()
                        .for_each(|&a| removed[r * v as usize + a] = true);
                    pick[r] = t[i];
                    valid[r] = 1.0;
                }
            }
            let mask = Tensor::from_slice(&removed).view([n, v]).to_device(dev);
            let lse = x
                .masked_fill(&mask, f64::NEG_INFINITY)
                .logsumexp([-1].as_slice(), false);
            let at = x
                .gather(1, &long(&pick, dev).unsqueeze(1), false)
                .squeeze_dim(1);
            term += (at - lse) * Tensor::from_slice(&valid).to_device(dev);
        }
        self.add(walks, &term);
        tries
            .into_iter()
            .map(|(t, ok)| {
                if ok {
                    t.last().copied().into_iter().collect()
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
}

impl JtVae {
    /// Decodes latents `[B, latent]` with every decision drawn at temperature
    /// `tau` (see the module doc), row r keyed by `keys.ids[r]`; each result with
    /// the trace that replays it. `threads` as in `decode_batch`.
    pub fn decode_sampled(
        &self,
        z: &Tensor,
        keys: SampleKeys,
        tau: f64,
        (vocab, labels): (&[String], &mut LabelGraphs),
        times: &mut DecodeTimes,
        threads: usize,
    ) -> Vec<(Result<Decoded, DecodeError>, Trace)> {
        let make = |start: usize, len: usize| {
            let tree = TreeSampler {
                tau,
                streams: (start..start + len).map(|r| keys.stream(r, 0)).collect(),
                traces: vec![Trace::default(); len],
                pending: vec![None; len],
            };
            let assm = AssmSampler {
                tau,
                streams: (start..start + len).map(|r| keys.stream(r, 1)).collect(),
                choices: vec![Vec::new(); len],
                logp: vec![0.0; len],
            };
            (tree, assm)
        };
        let parts = self.decode_batch_by(z, vocab, labels, times, threads, &make);
        let mut out = Vec::new();
        for p in parts {
            let assm = p.assm.choices.into_iter().zip(p.assm.logp);
            for ((r, mut t), (choices, lp)) in p.results.into_iter().zip(p.tree.traces).zip(assm) {
                t.assm = choices;
                t.logp += lp;
                out.push((r, t));
            }
        }
        out
    }

    /// log p_τ of each trace (`[B]`) given latents `z [B, latent]`, with autograd
    /// to `z` and to the decoder's parameters: the trace's decisions replayed
    /// through the tree walk, and its attachments rescored.
    pub fn trace_log_probs(&self, z: &Tensor, traces: &[&Trace], tau: f64) -> Tensor {
        let half = self.latent() / 2;
        let z = z.reshape([-1, self.latent()]);
        let (z_tree, z_graph) = (z.narrow(1, 0, half), z.narrow(1, half, half));
        let mut replay = Replay {
            tau,
            traces,
            topo_at: vec![0; traces.len()],
            tries_at: vec![0; traces.len()],
            logp: Tensor::zeros([traces.len() as i64], (z.kind(), z.device())),
        };
        let roots = replay.roots(&self.decoder.root_logits(&z_tree));
        let mut accept = |reqs: &[ChildRequest]| -> Vec<Option<usize>> {
            reqs.iter().map(|r| r.labels.first().copied()).collect()
        };
        self.decoder.walk_batch(
            &z_tree,
            &roots,
            usize::MAX,
            LABEL_TOP_K,
            &mut replay,
            &mut accept,
        );
        replay.logp + self.assembly_log_probs(&z_graph, traces, tau)
    }

    /// The attachments' part of `trace_log_probs`: every recorded choice rescored
    /// in one scorer call; log of the chosen class's softmax mass.
    fn assembly_log_probs(&self, z_graph: &Tensor, traces: &[&Trace], tau: f64) -> Tensor {
        let dev = z_graph.device();
        let mut out = Tensor::zeros([traces.len() as i64], (z_graph.kind(), dev));
        let (mut refs, mut event, mut walk, mut chosen) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut event_walk = Vec::new();
        for (w, t) in traces.iter().enumerate() {
            for c in &t.assm {
                for (j, g) in c.graphs.iter().enumerate() {
                    refs.push(g);
                    event.push(event_walk.len());
                    walk.push(w);
                    chosen.push(if c.chosen.contains(&j) { 1f32 } else { 0.0 });
                }
                event_walk.push(w);
            }
        }
        if refs.is_empty() {
            return out;
        }
        let shared = SharedGraphs::new(&refs, self.scorer.steps());
        let v = self.scorer.forward_shared(&shared, dev);
        let zs = z_graph.index_select(0, &long(&walk, dev));
        let s = self.scorer.score_vectors(&v, &zs) / tau;
        let (ev, ne) = (long(&event, dev), event_walk.len() as i64);
        let m = crate::models::batch::segment_max(&s.detach(), &ev, ne);
        let e = (s - m.index_select(0, &ev)).exp();
        let opts = (e.kind(), dev);
        let all = Tensor::zeros([ne], opts).index_add(0, &ev, &e);
        let mask = Tensor::from_slice(&chosen).to_device(dev);
        let grp = Tensor::zeros([ne], opts).index_add(0, &ev, &(e * mask));
        let term = grp.log() - all.log();
        out = out.index_add(0, &long(&event_walk, dev), &term);
        out
    }
}
