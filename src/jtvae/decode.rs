//! Decoding latents into molecules, many at once. The tree decoders of all
//! molecules of a batch walk depth first together (one network call per kind of
//! step for all unfinished trees, `TreeDecoder::decode_batch_with` in `walk`); each new
//! cluster is attached to its molecule as soon as it is created: its valid,
//! distinct attachments to the parent's atoms are enumerated (RDKit), the
//! candidates of all molecules of the round are scored in one call of the
//! assembly scorer against the graph half of each latent (atoms with the same
//! neighbourhood computed once, `shared`), and the best one is applied.
//!
//! The networks of one decode step are small, so one libtorch thread runs them
//! best (waking more costs more than they save); a rank's cores instead decode
//! parts of the batch side by side (`threads` workers, each one thread). Scores equal up to
//! float rounding (attachments whose local graphs are the same up to atom order)
//! are ties, broken by the smaller canonical SMILES of the resulting molecule, so
//! that the choice does not depend on rounding (batch size, perturbation size).
//!
//! The decisions come from policies (`policy`): `decode_batch` is greedy,
//! `sample` draws them at a temperature through `decode_batch_by`. Greedily, a
//! new tree node takes the most likely of its `LABEL_TOP_K` labels that can be
//! attached at all; when none can, the walk backtracks instead of expanding. Every
//! intermediate molecule is valid (RDKit sanitizes it), so a decode ends either
//! with a molecule or with a counted failure (a tree larger than
//! `jtvae.max_tree_nodes`, by default `config::jtvae::DEFAULT_MAX_TREE_NODES`), never a hang. The result
//! of a latent does not depend on the batch it is decoded in.
use super::assemble::{attach, candidates, flat_smiles};
use super::candidates::{local_code, LabelGraphs, LocalGraph};
use super::graph::MolGraph;
use super::model::JtVae;
use super::policy::{AssemblyPolicy, Greedy, WalkPolicy};
use super::shared::SharedGraphs;
use super::walk::ChildRequest;
use crate::chem::mol::KAtom;
use std::time::Instant;
use tch::Tensor;

/// A new tree node takes the most likely of this many labels that can be attached.
pub const LABEL_TOP_K: usize = 5;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the tree decoder exceeded its node limit (jtvae.max_tree_nodes)")]
    TreeTooLarge,
    #[error("cluster label {0:?} cannot be parsed")]
    Label(String),
    /// Cannot happen while every step is sanitized; kept as a value, not a panic.
    #[error("the assembled molecule is not valid: {0}")]
    Invalid(String),
}

/// Where decoding time goes, for the benchmark.
#[derive(Debug, Default, Clone)]
pub struct DecodeTimes {
    /// Tree decoder networks (topology and labels) and bookkeeping.
    pub tree_s: f64,
    /// Candidate enumeration and validity checks (RDKit).
    pub enumerate_s: f64,
    /// Assembly scorer network.
    pub score_s: f64,
}

/// A decoded molecule: its canonical non-isomeric SMILES (what the black box is
/// queried with; see `train::zo_stage` for why not the RDKit molecule itself).
pub struct Decoded {
    pub smiles: String,
}

/// The molecule one walk is building.
struct Assembly {
    partial: MolGraph,
    /// Atoms (in `partial`) of every tree node, in creation order.
    node_atoms: Vec<Vec<usize>>,
}

/// The distinct valid attachments of one request's first attachable label.
struct Options {
    label: usize,
    /// (next molecule, child atom index, SMILES) of each distinct attachment.
    built: Vec<(MolGraph, Vec<usize>, String)>,
    /// Local graphs to score (empty when there is only one option).
    graphs: Vec<LocalGraph>,
}

/// The options of the first label of `req` that can be attached to `a`.
fn options(
    a: &Assembly,
    req: &ChildRequest,
    vocab: &[String],
    labels: &LabelGraphs,
) -> Option<Options> {
    let parent = &a.node_atoms[req.parent];
    for &label in &req.labels {
        let Some(child) = labels.parsed(&vocab[label]) else {
            continue;
        };
        let mut built: Vec<(MolGraph, Vec<usize>, String)> = Vec::new();
        for cand in candidates(&a.partial, parent, child) {
            let (next, index) = attach(&a.partial, child, &cand);
            let Ok(smi) = flat_smiles(&next) else {
                continue;
            };
            if !built.iter().any(|(_, _, s)| *s == smi) {
                built.push((next, index, smi));
            }
        }
        if built.is_empty() {
            continue;
        }
        let graphs = if built.len() > 1 {
            built
                .iter()
                .map(|(g, idx, _)| local_code(g, parent, idx))
                .collect()
        } else {
            Vec::new()
        };
        return Some(Options {
            label,
            built,
            graphs,
        });
    }
    None
}

/// For every request, the index (into the returned list of representatives, which
/// are request indices) of the first request asking the same question: the same
/// molecule so far, the same parent atoms and the same label candidates.
fn group_requests(reqs: &[ChildRequest], asm: &[Option<Assembly>]) -> (Vec<usize>, Vec<usize>) {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    let question = |k: usize| {
        let r = &reqs[k];
        asm[r.mol].as_ref().map(|a| {
            (
                &a.partial.atoms,
                &a.partial.bonds,
                &a.node_atoms[r.parent],
                &r.labels,
            )
        })
    };
    let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
    let (mut rep, mut reps) = (Vec::with_capacity(reqs.len()), Vec::new());
    for k in 0..reqs.len() {
        let q = question(k);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        q.hash(&mut h);
        let bucket = buckets.entry(h.finish()).or_default();
        match bucket.iter().find(|&&g| question(reps[g]) == q) {
            Some(&g) => rep.push(g),
            None => {
                bucket.push(reps.len());
                rep.push(reps.len());
                reps.push(k);
            }
        }
    }
    (rep, reps)
}

/// One worker's part of a batch decode: its results and the policies that made
/// its decisions (walk `i` of the part is row `start + i` of the batch).
pub(crate) struct Part<T, A> {
    pub results: Vec<Result<Decoded, DecodeError>>,
    pub tree: T,
    pub assm: A,
}

/// A shared reference that may cross threads. The model's tensors are only read
/// while decoding (forward passes, no gradient: grad mode is per thread and every
/// worker turns it off), which libtorch allows from several threads at once; tch's
/// `Tensor` is not `Sync` only because it cannot know that.
struct AssertSync<'a, T>(&'a T);

// SAFETY: see the type's doc; the wrapped value is used read-only by the workers.
unsafe impl<T> Sync for AssertSync<'_, T> {}

impl<'a, T> AssertSync<'a, T> {
    fn get(&self) -> &'a T {
        self.0
    }
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
        let z = z.reshape([1, -1]);
        self.decode_batch(&z, vocab, labels, times, 1)
            .pop()
            .unwrap_or(Err(DecodeError::TreeTooLarge))
            .map(|d| d.smiles)
    }

    /// Decodes latents `[B, latent]`, one result per row (see the module doc), on
    /// `threads` workers that each decode a contiguous part of the batch with one
    /// libtorch thread (one worker: the calling thread; the caller's libtorch thread
    /// count is restored after). The
    /// result of a latent does not depend on the batch or the thread count.
    pub fn decode_batch(
        &self,
        z: &Tensor,
        vocab: &[String],
        labels: &mut LabelGraphs,
        times: &mut DecodeTimes,
        threads: usize,
    ) -> Vec<Result<Decoded, DecodeError>> {
        let greedy = |_: usize, _: usize| (Greedy, Greedy);
        self.decode_batch_by(z, vocab, labels, times, threads, &greedy)
            .into_iter()
            .flat_map(|p| p.results)
            .collect()
    }

    /// `decode_batch` with the decisions of the policies `make(start, len)` builds
    /// for each worker's rows `start..start + len` (see `policy`); one `Part` per
    /// worker, in row order.
    pub(crate) fn decode_batch_by<T, A>(
        &self,
        z: &Tensor,
        vocab: &[String],
        labels: &mut LabelGraphs,
        times: &mut DecodeTimes,
        threads: usize,
        make: &(dyn Fn(usize, usize) -> (T, A) + Sync),
    ) -> Vec<Part<T, A>>
    where
        T: WalkPolicy + Send,
        A: AssemblyPolicy + Send,
    {
        labels.parse_all(vocab);
        let labels: &LabelGraphs = labels;
        let z = z.reshape([-1, self.latent()]);
        let b = z.size()[0] as usize;
        let threads = threads.clamp(1, b.max(1));
        let before = tch::get_num_threads();
        let run = |zk: &Tensor, start: usize, t: &mut DecodeTimes| {
            let (mut tree, mut assm) = make(start, zk.size()[0] as usize);
            let results = self.decode_part(zk, vocab, labels, t, &mut tree, &mut assm);
            Part {
                results,
                tree,
                assm,
            }
        };
        if threads == 1 {
            tch::set_num_threads(1);
            let r = run(&z, 0, times);
            tch::set_num_threads(before);
            return vec![r];
        }
        let per = b.div_ceil(threads);
        let model = AssertSync(self);
        let parts: Vec<(Part<T, A>, DecodeTimes)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..b)
                .step_by(per)
                .map(|start| {
                    let zk = z.narrow(0, start as i64, per.min(b - start) as i64).copy();
                    let model = &model;
                    s.spawn(move || {
                        tch::set_num_threads(1);
                        let mut t = DecodeTimes::default();
                        let (mut tree, mut assm) = make(start, zk.size()[0] as usize);
                        let results = model
                            .get()
                            .decode_part(&zk, vocab, labels, &mut t, &mut tree, &mut assm);
                        let part = Part {
                            results,
                            tree,
                            assm,
                        };
                        (part, t)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        tch::set_num_threads(before);
        let mut out = Vec::with_capacity(parts.len());
        for (p, t) in parts {
            out.push(p);
            times.tree_s += t.tree_s;
            times.enumerate_s += t.enumerate_s;
            times.score_s += t.score_s;
        }
        out
    }

    /// `decode_batch` on the calling thread; `labels` holds the parsed vocabulary.
    fn decode_part(
        &self,
        z: &Tensor,
        vocab: &[String],
        labels: &LabelGraphs,
        times: &mut DecodeTimes,
        tree: &mut dyn WalkPolicy,
        assm: &mut dyn AssemblyPolicy,
    ) -> Vec<Result<Decoded, DecodeError>> {
        let _guard = tch::no_grad_guard();
        let t_all = Instant::now();
        let half = self.latent() / 2;
        let z = z.reshape([-1, self.latent()]);
        let b = z.size()[0] as usize;
        let (z_tree, z_graph) = (z.narrow(1, 0, half), z.narrow(1, half, half));
        let roots = tree.roots(&self.decoder.root_logits(&z_tree));
        let (mut asm, label_error) = start_assemblies(&roots, b, vocab, labels);
        let mut secs = (0.0, 0.0);
        let mut accept = |reqs: &[ChildRequest]| -> Vec<Option<usize>> {
            self.attach_children(reqs, &mut asm, &z_graph, (vocab, labels), assm, &mut secs)
        };
        let trees = self.decoder.walk_batch(
            &z_tree,
            &roots,
            self.max_tree_nodes,
            LABEL_TOP_K,
            tree,
            &mut accept,
        );
        let (enumerate_s, score_s) = secs;
        times.enumerate_s += enumerate_s;
        times.score_s += score_s;
        let results = trees
            .into_iter()
            .zip(asm)
            .zip(label_error)
            .map(|((tree, a), bad_label)| {
                if let Some(l) = bad_label {
                    return Err(DecodeError::Label(l));
                }
                tree.ok_or(DecodeError::TreeTooLarge)?;
                let a = a.ok_or(DecodeError::TreeTooLarge)?;
                let smiles =
                    flat_smiles(&a.partial).map_err(|e| DecodeError::Invalid(e.message))?;
                Ok(Decoded { smiles })
            })
            .collect();
        times.tree_s += t_all.elapsed().as_secs_f64() - enumerate_s - score_s;
        results
    }

    /// The tree walks' answer to one round's child requests: each request's first
    /// attachable label, with its best attachment applied to the molecule `asm`
    /// of the request (`None`: no label attaches, the walk backtracks). Seconds of
    /// enumeration and of scoring are added to `secs`.
    fn attach_children(
        &self,
        reqs: &[ChildRequest],
        asm: &mut [Option<Assembly>],
        z_graph: &Tensor,
        (vocab, labels): (&[String], &LabelGraphs),
        policy: &mut dyn AssemblyPolicy,
        secs: &mut (f64, f64),
    ) -> Vec<Option<usize>> {
        let t1 = Instant::now();
        // Requests that ask the same question (same molecule so far, parent and
        // labels: in Stage 2 most perturbed latents of a sample walk like its
        // base) are enumerated, and their candidates run through the scorer
        // network, once; only the product with each latent differs.
        let (rep, reps) = group_requests(reqs, asm);
        let asm_ref = &*asm;
        let one = |&k: &usize| -> Option<Options> {
            let r = &reqs[k];
            options(asm_ref[r.mol].as_ref()?, r, vocab, labels)
        };
        let found: Vec<Option<Options>> = reps.iter().map(one).collect();
        secs.0 += t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let picks = self.pick_attachments(reqs, &rep, &found, z_graph, policy);
        secs.1 += t2.elapsed().as_secs_f64();
        reqs.iter()
            .enumerate()
            .map(|(k, r)| {
                let o = found[rep[k]].as_ref()?;
                let (next, index, _) = &o.built[picks[k]];
                let a = asm[r.mol].as_mut()?;
                a.partial = next.clone();
                a.node_atoms.push(index.clone());
                Some(o.label)
            })
            .collect()
    }

    /// For every request, the index of its chosen option in the options `found`
    /// for its question (`rep[k]`): the candidates of every distinct question
    /// scored in one network call against the request's graph latent.
    fn pick_attachments(
        &self,
        reqs: &[ChildRequest],
        rep: &[usize],
        found: &[Option<Options>],
        z_graph: &Tensor,
        policy: &mut dyn AssemblyPolicy,
    ) -> Vec<usize> {
        let mut picks = vec![0usize; reqs.len()];
        // Candidate vectors of every distinct question in one network call.
        let mut first = vec![0usize; found.len()];
        let mut refs: Vec<&LocalGraph> = Vec::new();
        for (g, o) in found.iter().enumerate() {
            first[g] = refs.len();
            if let Some(o) = o {
                refs.extend(o.graphs.iter());
            }
        }
        if !refs.is_empty() {
            let dev = z_graph.device();
            let shared = SharedGraphs::new(&refs, self.scorer.steps());
            let v = self.scorer.forward_shared(&shared, dev);
            let (mut cand, mut mol) = (Vec::<i64>::new(), Vec::<i64>::new());
            for (k, r) in reqs.iter().enumerate() {
                if let Some(o) = &found[rep[k]] {
                    let n = o.graphs.len();
                    cand.extend((first[rep[k]]..first[rep[k]] + n).map(|c| c as i64));
                    mol.extend(std::iter::repeat_n(r.mol as i64, n));
                }
            }
            let vs = v.index_select(0, &Tensor::from_slice(&cand).to_device(dev));
            let zs = z_graph.index_select(0, &Tensor::from_slice(&mol).to_device(dev));
            let scores =
                Vec::<f32>::try_from(self.scorer.score_vectors(&vs, &zs)).unwrap_or_default();
            let mut at = 0;
            for (k, pick) in picks.iter_mut().enumerate() {
                if let Some(o) = &found[rep[k]] {
                    let n = o.graphs.len();
                    if n > 0 && scores.len() >= at + n {
                        let smiles: Vec<&str> = o.built.iter().map(|b| b.2.as_str()).collect();
                        *pick = policy.pick(reqs[k].mol, &scores[at..at + n], &smiles, &o.graphs);
                    }
                    at += n;
                }
            }
        }
        picks
    }
}

/// The molecule of each of the `b` walks starts as its root cluster (`None`:
/// the root label cannot be parsed; it is then listed in the second vector).
fn start_assemblies(
    roots: &[usize],
    b: usize,
    vocab: &[String],
    labels: &LabelGraphs,
) -> (Vec<Option<Assembly>>, Vec<Option<String>>) {
    let mut label_error: Vec<Option<String>> = vec![None; b];
    let asm: Vec<Option<Assembly>> = roots
        .iter()
        .enumerate()
        .map(|(i, &r)| match labels.parsed(&vocab[r]) {
            Some(root) => Some(Assembly {
                partial: MolGraph::new(
                    root.atoms
                        .iter()
                        .map(|a| KAtom {
                            explicit_hs: 0,
                            ..a.clone()
                        })
                        .collect(),
                    root.bonds.clone(),
                ),
                node_atoms: vec![(0..root.n_atoms()).collect()],
            }),
            None => {
                label_error[i] = Some(vocab[r].clone());
                None
            }
        })
        .collect();
    (asm, label_error)
}
