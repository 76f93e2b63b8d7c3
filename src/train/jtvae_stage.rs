//! Stage "jtvae": first-order (Stage 1) training of the JT-VAE through the shared
//! data-parallel loop. Samples are the training molecules with a junction tree in
//! the dataset file (`data::samples::Example`); each gets its feature graph at
//! start-up, and its assembly candidates as `prepare` stored them in the dataset
//! file (built here only when the file has none for the config's settings). The
//! VAE noise of sample `gid` at step `s` is drawn from the counter generator keyed
//! (seed, "vae", s, gid) (`zo::noise`), so it is the same on 1 rank or 64.
//! Evaluation each epoch: the losses and accuracies at the latent mean on the test
//! split (teacher forced); `zo-hpc eval`: reconstruction of held-out molecules.
mod sampled;
pub use crate::jtvae::recon::{Protocol, SampledRecon};

use super::params::Params;
use super::trainer::{backward_step, Objective, StepOut, Trainer};
use super::{device, RunOptions};
use crate::chem::{self, Featurizer};
use crate::config::{Config, JtvaeConfig};
use crate::data::samples::{flat, Example, MoleculeSet, Prepared};
use crate::dist::Dist;
use crate::io::checkpoint::Checkpoint;
use crate::jtvae::candidates::LabelGraphs;
use crate::jtvae::decode::{DecodeError, DecodeTimes};
use crate::jtvae::model::{JtVae, Sample};
pub use crate::jtvae::recon::Recon;
use crate::jtvae::tree::{LabelCache, TreeRecord};
use crate::jtvae::vocab::Vocab;
use crate::pipeline::decode_threads;
use crate::zo::noise::vae_noise;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Builds the examples of `smiles`, item k of `set` in the dataset file, with
/// their stored trees (a molecule stored without one is left out) or, without
/// `trees`, decomposing them. At most `limit`.
#[allow(clippy::too_many_arguments)]
fn examples(
    smiles: &[&str],
    trees: Option<&[Option<TreeRecord>]>,
    vocab: &Vocab,
    set: MoleculeSet,
    src: &mut Prepared,
    limit: usize,
    what: &str,
    root: bool,
) -> Vec<Example> {
    let mut cache = LabelCache::default();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    for (k, smi) in smiles.iter().enumerate() {
        if out.len() >= limit {
            break;
        }
        let tree = match trees {
            Some(stored) => match stored.get(k) {
                Some(Some(t)) => Some(t.clone()),
                // Stored without a tree: the JT-VAE cannot encode it.
                _ => {
                    skipped += 1;
                    continue;
                }
            },
            None => None,
        };
        let graph = src.graph(set, Some(k));
        let built = Example::build(smi, tree, graph, vocab, &mut cache, |cache| {
            src.candidates(set, Some(k), smi, cache)
        });
        match built {
            Some(e) => out.push(e),
            None => skipped += 1,
        }
    }
    if root && skipped > 0 {
        log::warn!("{skipped} {what} molecules have no usable junction tree (outside the vocabulary or not assemblable) and are left out");
    }
    out
}

pub struct JtvaeObjective {
    train: Vec<Example>,
    test: Vec<Example>,
    /// Canonical SMILES of the test examples, for reconstruction.
    test_smiles: Vec<String>,
    vocab: Vec<String>,
    model: JtVae,
    device: Device,
    seed: u64,
    cfg: JtvaeConfig,
    eval_batch: usize,
    /// Decode workers (see `pipeline::decode_threads`).
    decode_threads: usize,
}

impl JtvaeObjective {
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<JtvaeObjective> {
        Self::build(cfg, dist, vs, None)
    }

    /// `eval_limit`: for evaluation, only the first this many usable held-out
    /// molecules, without training examples and assembly candidates (decoding
    /// needs neither); `None` for training.
    fn build(
        cfg: &Config,
        dist: &Dist,
        vs: &VarStore,
        eval_limit: Option<usize>,
    ) -> anyhow::Result<JtvaeObjective> {
        let root = dist.is_root();
        let with_train = eval_limit.is_none();
        let jc = cfg.jtvae.clone().unwrap_or_default();
        let path = cfg.dataset_path();
        let ds = crate::data::provenance::open(cfg)?;
        let Some(j) = &ds.jtvae else {
            anyhow::bail!(
                "{}: no JT-VAE vocabulary in this dataset file; it was prepared without a [jtvae] section (delete it and run `zo-hpc prepare` again)",
                path.display()
            );
        };
        let limit = jc.train_limit.map(|n| n as u64);
        if with_train && j.train_limit != limit {
            let show = |n: Option<u64>| n.map_or("none".to_string(), |n| n.to_string());
            anyhow::bail!(
                "{}: its JT-VAE training molecules were taken with jtvae.train_limit = {}, {} has {} (delete the file and run `zo-hpc prepare` again)",
                path.display(),
                show(j.train_limit),
                cfg.path.display(),
                show(limit)
            );
        }
        let vocab = Vocab::new(j.vocab.iter().cloned());
        let t0 = Instant::now();
        let train_smiles: Vec<&str> = j.train_smiles.iter().map(String::as_str).collect();
        let test_smiles: Vec<&str> = ds
            .test
            .iter()
            .map(|&i| ds.smiles[i as usize].as_str())
            .collect();
        // Evaluation decodes held-out molecules: it needs no assembly candidates.
        let mut src = Prepared::open(&ds, &path, with_train.then_some(jc.max_candidates), root)?;
        let train = if with_train {
            examples(
                &train_smiles,
                Some(&j.train_trees),
                &vocab,
                MoleculeSet::Train,
                &mut src,
                usize::MAX,
                "training",
                root,
            )
        } else {
            Vec::new()
        };
        // Files from before the held-out trees were stored: decompose them here.
        let test_trees = (!j.test_trees.is_empty()).then_some(j.test_trees.as_slice());
        let test = examples(
            &test_smiles,
            test_trees,
            &vocab,
            MoleculeSet::Test,
            &mut src,
            eval_limit.unwrap_or(usize::MAX),
            "test",
            root,
        );
        if with_train && train.is_empty() {
            anyhow::bail!(
                "{}: no training molecule has a usable junction tree",
                path.display()
            );
        }
        if root {
            let groups: usize = train.iter().map(Example::n_groups).sum();
            let expanded: usize = train.iter().chain(&test).map(Example::expanded_bytes).sum();
            log::info!(
                "JT-VAE data: {} training / {} test molecules, vocabulary {}, {} candidate groups ({}), {:.1} MB of expanded feature rows kept (the rest expanded per batch), built in {:.1} s",
                train.len(),
                test.len(),
                vocab.len(),
                groups,
                src.summary(),
                expanded as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
        }
        let f = Featurizer::full();
        let model = JtVae::new(
            &(vs.root() / "jtvae"),
            vocab.len() as i64,
            f.atom_dim(),
            f.bond_dim(),
            &jc,
        );
        let test_smiles = test.iter().map(|e| e.smiles.clone()).collect();
        Ok(JtvaeObjective {
            train,
            test,
            test_smiles,
            vocab: j.vocab.clone(),
            model,
            device: vs.device(),
            seed: cfg.run.seed,
            cfg: jc,
            eval_batch: cfg.train.eval_batch_size,
            decode_threads: decode_threads(cfg, dist.cpus_per_rank()),
        })
    }

    fn samples<'e>(set: &'e [Example], idx: &[usize]) -> Vec<Sample<'e>> {
        idx.iter().map(|&i| set[i].sample()).collect()
    }

    /// Reconstructs the first `limit` test molecules (sharded over ranks, summed).
    pub fn reconstruct(&self, dist: &Dist, limit: usize) -> Recon {
        let n = limit.min(self.test.len());
        let idx: Vec<usize> = dist.shard(n).collect();
        let mut r = [0f64; 10];
        let mut labels = LabelGraphs::default();
        let mut times = DecodeTimes::default();
        let mut decoded_here: Vec<String> = Vec::with_capacity(idx.len());
        tch::no_grad(|| {
            for chunk in idx.chunks(self.eval_batch) {
                let samples = Self::samples(&self.test, chunk);
                let graphs: Vec<&chem::MolGraph> = samples.iter().map(|s| &*s.graph).collect();
                let trees: Vec<&TreeRecord> = samples.iter().map(|s| s.tree).collect();
                let f = Featurizer::full();
                let g = crate::models::batch::GraphBatch::new(
                    &graphs,
                    f.atom_dim(),
                    f.bond_dim(),
                    self.device,
                );
                let t = crate::jtvae::batch::TreeBatch::new(&trees, self.device);
                let te = Instant::now();
                let (mean, _) = self.model.encode(&g, &t);
                let _ = mean.sum(Kind::Float).double_value(&[]);
                r[5] += te.elapsed().as_secs_f64();
                let td = Instant::now();
                let decoded = self.model.decode_batch(
                    &mean,
                    &self.vocab,
                    &mut labels,
                    &mut times,
                    self.decode_threads,
                );
                for (d, &i) in decoded.into_iter().zip(chunk) {
                    r[0] += 1.0;
                    match d {
                        Ok(d) => {
                            r[2] += 1.0;
                            if flat(&self.test_smiles[i]).as_deref() == Some(d.smiles.as_str()) {
                                r[1] += 1.0;
                            }
                            decoded_here.push(d.smiles);
                        }
                        Err(e) => {
                            r[if e == DecodeError::TreeTooLarge { 3 } else { 4 }] += 1.0;
                            decoded_here.push(String::new());
                        }
                    }
                }
                r[6] += td.elapsed().as_secs_f64();
            }
        });
        r[7] = times.tree_s;
        r[8] = times.enumerate_s;
        r[9] = times.score_s;
        dist.allreduce_sum_f64(&mut r);
        // Shards are contiguous, so rank order is input order.
        let decoded = gather_lines(dist, &decoded_here);
        let smiles = if dist.is_root() {
            self.test_smiles[..n].to_vec()
        } else {
            Vec::new()
        };
        Recon {
            molecules: r[0],
            exact: r[1],
            valid: r[2],
            tree_too_large: r[3],
            other_failed: r[4],
            encode_s: r[5],
            decode_s: r[6],
            tree_s: r[7],
            enumerate_s: r[8],
            score_s: r[9],
            smiles,
            decoded,
        }
    }

    /// Loads the parameters of a checkpoint, or of an exported model file
    /// (`zo-hpc export`, e.g. `inputs/models/zinc/jtvae.h5`, whose vocabulary must
    /// be this dataset's), into the model; the step it was saved at.
    pub fn load(&self, vs: &VarStore, path: &std::path::Path) -> anyhow::Result<u64> {
        let params = Params::of(vs);
        if let Some(vocab) = crate::io::model::stored_vocab(path) {
            anyhow::ensure!(
                vocab == self.vocab,
                "{}: a JT-VAE of another cluster vocabulary ({} clusters) than the dataset's ({})",
                path.display(),
                vocab.len(),
                self.vocab.len()
            );
            let (step, arrays) = Checkpoint::read_params(path, &params.names)?;
            params.load_arrays(&arrays, &params.tensors)?;
            return Ok(step);
        }
        let ck = Checkpoint::read(path, &params.names)?;
        params.load_arrays(&ck.params, &params.tensors)?;
        Ok(ck.step)
    }

    /// KL weight at a global step (`JtvaeConfig::beta_at`).
    fn beta(&self, step: usize) -> f64 {
        self.cfg.beta_at(step)
    }

    /// Reparameterization noise of each sample, keyed (seed, "vae", step, sample).
    fn noise(&self, samples: &[usize], step: usize) -> Tensor {
        vae_noise(self.seed, samples, step, self.model.latent(), self.device)
    }
}

/// Every rank's lines (no line may hold a newline), in rank order, on rank 0.
fn gather_lines(dist: &Dist, lines: &[String]) -> Vec<String> {
    let bytes: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.bytes().chain([b'\n']))
        .collect();
    match dist.gather(&bytes) {
        Ok(parts) => parts
            .iter()
            .flat_map(|p| {
                String::from_utf8_lossy(p)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect(),
        Err(e) => {
            log::warn!("decoded molecules not gathered: {e}");
            Vec::new()
        }
    }
}

impl Objective for JtvaeObjective {
    fn stage(&self) -> &'static str {
        "jtvae"
    }

    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn terms(&self) -> Vec<&'static str> {
        vec!["word", "topo", "assm", "kl"]
    }

    fn step(&mut self, samples: &[usize], step: usize) -> StepOut {
        let eps = self.noise(samples, step);
        let batch = Self::samples(&self.train, samples);
        let t0 = Instant::now();
        let (g, t) = self.model.batches(&batch, self.device);
        let batch_s = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let (mean, logvar) = self.model.encode(&g, &t);
        let encode_s = t0.elapsed().as_secs_f64();
        let l = self
            .model
            .losses_encoded(&batch, &t, &mean, &logvar, &eps, self.device);
        let total = &l.word + &l.topo + &l.assm + &l.kl * self.beta(step);
        let terms = [&l.word, &l.topo, &l.assm, &l.kl]
            .iter()
            .map(|t| t.double_value(&[]))
            .collect();
        let t0 = Instant::now();
        let mut out = backward_step(total, terms);
        // In `STEP_PHASES` order (CPU: each part's forward pass as it ran).
        out.phase_s = vec![
            batch_s,
            encode_s,
            l.tree_s,
            l.assm_batch_s,
            l.assm_score_s,
            t0.elapsed().as_secs_f64(),
        ];
        // Accuracies as counts, so that they sum over micro-batches and ranks.
        out.counts = vec![
            (l.word_acc * l.n_word as f64).round(),
            l.n_word as f64,
            (l.topo_acc * l.n_topo as f64).round(),
            l.n_topo as f64,
            l.assm_correct.0 as f64,
            l.assm_correct.1 as f64,
        ];
        out
    }

    fn counters(&self) -> Vec<&'static str> {
        STEP_COUNTERS.to_vec()
    }

    fn phases(&self) -> Vec<&'static str> {
        STEP_PHASES.to_vec()
    }

    /// The teacher-forced training accuracies of the step (label, topology,
    /// assembly: the reference's per-step log) and the KL weight β it used.
    fn derived(&self, step: usize, c: &[f64], _step_s: f64) -> Vec<(&'static str, f64)> {
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { f64::NAN };
        vec![
            ("word_acc", per(c[0], c[1])),
            ("topo_acc", per(c[2], c[3])),
            ("assm_acc", per(c[4], c[5])),
            ("beta", self.beta(step)),
        ]
    }

    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)> {
        let idx: Vec<usize> = dist.shard(self.test.len()).collect();
        // word, topo, assm sums; word/topo/assm correct and counts; molecules
        let mut acc = [0f64; 10];
        tch::no_grad(|| {
            for chunk in idx.chunks(self.eval_batch) {
                let eps = Tensor::zeros(
                    [chunk.len() as i64, self.model.latent()],
                    (Kind::Float, self.device),
                );
                let l = self
                    .model
                    .losses(&Self::samples(&self.test, chunk), &eps, self.device);
                acc[0] += l.word.double_value(&[]);
                acc[1] += l.topo.double_value(&[]);
                acc[2] += l.assm.double_value(&[]);
                acc[3] += l.word_acc * l.n_word as f64;
                acc[4] += l.n_word as f64;
                acc[5] += l.topo_acc * l.n_topo as f64;
                acc[6] += l.n_topo as f64;
                acc[7] += l.assm_correct.0 as f64;
                acc[8] += l.assm_correct.1 as f64;
                acc[9] += chunk.len() as f64;
            }
        });
        dist.allreduce_sum_f64(&mut acc);
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { f64::NAN };
        let mut out = Vec::new();
        if self.cfg.recon_samples > 0 {
            let r = self.reconstruct(dist, self.cfg.recon_samples);
            out.push(("recon_acc".into(), per(r.exact, r.molecules)));
            out.push(("recon_valid".into(), per(r.valid, r.molecules)));
            out.push((
                "recon_failed".into(),
                per(r.tree_too_large + r.other_failed, r.molecules),
            ));
        }
        out.extend([
            ("test_word".into(), per(acc[0], acc[9])),
            ("test_topo".into(), per(acc[1], acc[9])),
            ("test_assm".into(), per(acc[2], acc[9])),
            ("test_word_acc".into(), per(acc[3], acc[4])),
            ("test_topo_acc".into(), per(acc[5], acc[6])),
            ("test_assm_acc".into(), per(acc[7], acc[8])),
        ]);
        out
    }

    fn describe(&self) -> String {
        "junction-tree VAE (no target)".into()
    }
}

/// Per-step counters of Stage 1 (summed over micro-batches and ranks): correct
/// and scored label predictions, topology predictions and assembly groups.
const STEP_COUNTERS: [&str; 6] = [
    "word_correct",
    "word_n",
    "topo_correct",
    "topo_n",
    "assm_correct",
    "assm_n",
];

/// Phases of a Stage-1 step (seconds per rank, max and mean per step in the
/// metrics): the encoder's input batches, the encoder (tree and graph), the tree
/// decoder's loss, the assembly candidates' batch and their scoring, backward.
const STEP_PHASES: [&str; 6] = [
    "batch",
    "encode",
    "tree_decoder",
    "assembly_batch",
    "assembly_score",
    "backward",
];

/// `zo-hpc train` with `train.stage = "jtvae"`.
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<super::stop::Outcome> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    device::log_choice(dist, device);
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let obj = JtvaeObjective::new(cfg, dist, &vs)?;
    let mut t = Trainer::new(cfg, dist, obj, &vs);
    if opts.resume {
        t.resume()?;
    }
    t.run(opts)
}

/// `zo-hpc eval`: reconstruction of held-out molecules by a trained JT-VAE.
pub fn eval(
    cfg: &Config,
    dist: &Dist,
    checkpoint: &std::path::Path,
    limit: usize,
    sampled: Option<Protocol>,
) -> anyhow::Result<(Recon, Option<SampledRecon>)> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let obj = JtvaeObjective::build(cfg, dist, &vs, Some(limit))?;
    let step = obj.load(&vs, checkpoint)?;
    let r = obj.reconstruct(dist, limit);
    if dist.is_root() {
        log::info!(
            "{}: step {step}: reconstructed {} of {} held-out molecules exactly ({:.2}%, stereo not compared); valid {:.2}%; tree too large {}, other failures {}; decoding took {:.1} s (all ranks)",
            checkpoint.display(),
            r.exact,
            r.molecules,
            100.0 * r.exact / r.molecules.max(1.0),
            100.0 * r.valid / r.molecules.max(1.0),
            r.tree_too_large,
            r.other_failed,
            r.decode_s
        );
        let per_s = |secs: f64| r.molecules / secs.max(1e-9);
        // Shares of the decode workers' summed time (workers run side by side).
        let share = |x: f64| 100.0 * x / (r.tree_s + r.enumerate_s + r.score_s).max(1e-9);
        log::info!(
            "encode {:.1} molecules/s, decode {:.1} molecules/s per rank; decode workers' time: tree decoder {:.0}%, candidate enumeration {:.0}%, assembly scoring {:.0}%",
            per_s(r.encode_s),
            per_s(r.decode_s),
            share(r.tree_s),
            share(r.enumerate_s),
            share(r.score_s)
        );
    }
    let sampled = sampled.map(|p| {
        let t0 = Instant::now();
        let s = obj.reconstruct_sampled(dist, limit, p);
        if dist.is_root() {
            let pct = |x: f64| 100.0 * x / s.molecules.max(1.0);
            log::info!(
                "JT-VAE paper's protocol ({} posterior draws x {} decodes at temperature {} per molecule, {} molecules): {:.2}% of decodes exact; the most frequent decode exact for {:.2}% of molecules, any decode for {:.2}%; {:.2}% of decodes failed ({:.1} s)",
                p.encodings,
                p.decodings,
                p.temperature,
                s.molecules,
                100.0 * s.accuracy(),
                pct(s.majority_exact),
                pct(s.any_exact),
                100.0 * s.failed_decodes / s.decodes.max(1.0),
                t0.elapsed().as_secs_f64()
            );
        }
        s
    });
    Ok((r, sampled))
}
