//! Stage "zo" (the paper's Stage 2): end-to-end training through the JT-VAE
//! decoder and the black box. Per sample i of the rank's shard (global id `gid`):
//!
//! - encode x_i → mean z_i (first-order in the encoder u);
//! - decode z_i → base molecule → black box → graph → MPNN embed h_i (w1) → head ŷ_i (w2);
//!   backprop of Σ(ŷ − y)² gives w2's gradient and a_i = ∂L/∂h_i, then `h·a` gives w1's;
//! - latent ZO: the estimator's queries z_i + µσ·u_j (directions keyed
//!   (seed, "latent", step, gid, k)) are decoded, featurized and embedded without
//!   gradient; δ_j = a_i·(h_ij − h_i); a query that decodes to the base molecule has
//!   δ = 0 exactly and is neither featurized nor embedded; a failed query drops its
//!   direction. The estimate ĝ_i enters the encoder through the surrogate z_i·ĝ_i;
//! - decoder ZO (decoder = "zo"): q directions over the decoder's parameters, one
//!   independent stream per named tensor keyed (seed, "decoder", step, k, name);
//!   the rank's scalars c_k = Σ_i a_i·(h_ik − h_i)/(µ2σ) ride in the step's one
//!   allreduce and every rank adds Σ_k c_k D_k / q to the decoder's gradient slot;
//! - λ·∇ of the JT-VAE loss (teacher forced, VAE noise keyed (seed, "vae", step, gid)).
//!
//! Model code stays free of MPI: everything crossing ranks goes through the loop.
use super::jtvae_stage::{flat, vae_noise, Example, MoleculeSet, Prepared};
use super::params::{to_vec_f32, Params};
use super::trainer::{Objective, StepOut, Trainer};
use super::{device, RunOptions};
use crate::blackbox::{FeatureCache, KnowledgeSource, SourceContext, SourceStats};
use crate::chem::{Featurizer, MolGraph};
use crate::config::{Config, DecoderMode, JtvaeConfig, ZoConfig};
use crate::dist::Dist;
use crate::io::dataset::Dataset;
use crate::io::zo_phases::PHASES;
use crate::jtvae::candidates::LabelGraphs;
use crate::jtvae::decode::{DecodeTimes, Decoded};
use crate::jtvae::model::JtVae;
use crate::jtvae::tree::{LabelCache, TreeRecord};
use crate::jtvae::vocab::Vocab;
use crate::models::batch::GraphBatch;
use crate::models::mpnn::{Mpnn, MpnnDims};
use crate::zo::directions::{decoder_direction, latent_direction};
use anyhow::Context;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Is this parameter part of the decoder v (tree decoder + assembly scorer)?
pub fn is_decoder_param(name: &str) -> bool {
    name.starts_with("jtvae.decoder.") || name.starts_with("jtvae.assembly.")
}

/// A labeled molecule the JT-VAE can encode.
pub(crate) struct Labeled {
    pub ex: Example,
    /// Normalized target.
    pub y: f32,
}

/// Builds the labeled examples of dataset rows `idx`, with what `src` gives
/// (stored records and candidates; `Prepared::none` computes everything); returns
/// them and how many could not be encoded. Rows that are JT-VAE training or
/// held-out molecules take their tree (and stored record and candidates) from the
/// dataset file instead of decomposing them again.
pub(crate) fn labeled(
    ds: &Dataset,
    idx: &[u64],
    vocab: &Vocab,
    src: &mut Prepared,
) -> (Vec<Labeled>, usize) {
    let mut cache = LabelCache::default();
    // Stored trees by SMILES, with each molecule's place in the file's lists.
    let mut stored: HashMap<&str, (&Option<TreeRecord>, MoleculeSet, usize)> = HashMap::new();
    if let Some(j) = &ds.jtvae {
        let test_smiles = ds.test.iter().map(|&i| ds.smiles[i as usize].as_str());
        for (k, (smi, tree)) in test_smiles.zip(&j.test_trees).enumerate() {
            stored.insert(smi, (tree, MoleculeSet::Test, k));
        }
        for (k, (smi, tree)) in j.train_smiles.iter().zip(&j.train_trees).enumerate() {
            stored.insert(smi, (tree, MoleculeSet::Train, k));
        }
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    for &i in idx {
        let smi = &ds.smiles[i as usize];
        let (tree, set, k) = match stored.get(smi.as_str()) {
            Some((Some(t), set, k)) => (Some((*t).clone()), *set, Some(*k)),
            // Stored without a tree: outside the vocabulary.
            Some((None, _, _)) => {
                skipped += 1;
                continue;
            }
            None => (None, MoleculeSet::Train, None),
        };
        let graph = src.graph(set, k);
        let ex = Example::build(smi, tree, graph, vocab, &mut cache, |cache| {
            src.candidates(set, k, smi, cache)
        });
        match ex {
            Some(ex) => out.push(Labeled {
                ex,
                y: ((ds.target[i as usize] - ds.target_mean) / ds.target_std) as f32,
            }),
            None => skipped += 1,
        }
    }
    (out, skipped)
}

/// Decode workers on this rank (each decodes part of a batch with one libtorch
/// thread): `jtvae.decode_threads`, by default the rank's share of the node's cores.
pub(crate) fn decode_threads(cfg: &Config, dist: &Dist) -> usize {
    cfg.jtvae
        .as_ref()
        .and_then(|j| j.decode_threads)
        .unwrap_or_else(|| dist.cpus_per_rank())
        .max(1)
}

/// The models of the pipeline and what querying them needs.
pub struct Pipeline {
    pub jtvae: JtVae,
    pub mpnn: Mpnn,
    pub vocab: Vec<String>,
    /// The MPNN's featurizer (the dataset's kept columns).
    pub featurizer: Featurizer,
    /// Width of the MPNN's atom rows: the featurizer's plus the source's extra columns.
    pub atom_dim: usize,
    pub device: Device,
    pub jc: JtvaeConfig,
    source: Box<dyn KnowledgeSource>,
    cache: RefCell<FeatureCache>,
    labels: RefCell<LabelGraphs>,
    times: RefCell<DecodeTimes>,
    /// Threads for the decoder's chemistry (None: the calling thread).
    /// Decode workers (`decode_threads`).
    decode_threads: usize,
}

impl Pipeline {
    /// Builds the JT-VAE (`vs / "jtvae"`) and the MPNN (`vs / "mpnn"`) for `ds`, and
    /// this rank's knowledge source.
    pub fn new(cfg: &Config, ds: &Dataset, vs: &VarStore, dist: &Dist) -> anyhow::Result<Pipeline> {
        let decode_threads = decode_threads(cfg, dist);
        let path = cfg.dataset_path();
        let Some(j) = &ds.jtvae else {
            anyhow::bail!(
                "{}: no JT-VAE vocabulary in this dataset file; it was prepared without a [jtvae] section (delete it and run `zo-hpc prepare` again)",
                path.display()
            );
        };
        let jc = cfg.jtvae.clone().unwrap_or_default();
        let full = Featurizer::full();
        let jtvae = JtVae::new(
            &(vs.root() / "jtvae"),
            j.vocab.len() as i64,
            full.atom_dim(),
            full.bond_dim(),
            &jc,
        );
        let ctx = SourceContext::new(cfg, dist.rank, dist.cpus_per_rank());
        let source = crate::blackbox::build(cfg, &ds.featurizer, &ctx)?;
        let atom_dim = ds.featurizer.atom_dim() + source.extra_atom_columns().len();
        let dims = MpnnDims {
            atom_dim: atom_dim as i64,
            edge_dim: ds.featurizer.bond_dim() as i64,
        };
        let mpnn = Mpnn::new(&(vs.root() / "mpnn"), dims, &cfg.mpnn);
        Ok(Pipeline {
            jtvae,
            mpnn,
            vocab: j.vocab.clone(),
            featurizer: ds.featurizer.clone(),
            atom_dim,
            device: vs.device(),
            jc,
            source,
            cache: RefCell::new(FeatureCache::new(cfg.zo.cache_size)),
            labels: RefCell::new(LabelGraphs::default()),
            times: RefCell::new(DecodeTimes::default()),
            decode_threads,
        })
    }

    /// Decodes latents (`n × latent`, row-major) as one batch (no gradient).
    pub(crate) fn decode_many(&self, z: &[f32]) -> Vec<Option<Decoded>> {
        let l = self.jtvae.latent();
        if z.is_empty() {
            return Vec::new();
        }
        let t = Tensor::from_slice(z).view([-1, l]).to_device(self.device);
        self.jtvae
            .decode_batch(
                &t,
                &self.vocab,
                &mut self.labels.borrow_mut(),
                &mut self.times.borrow_mut(),
                self.decode_threads,
            )
            .into_iter()
            .map(Result::ok)
            .collect()
    }

    /// The knowledge source's running totals of failures and restarts.
    pub fn source_stats(&self) -> SourceStats {
        self.source.stats()
    }

    /// Black-box answers for SMILES through the cache; returns (answers, hits).
    fn featurize(&self, smiles: &[String]) -> (Vec<crate::blackbox::cache::Answer>, usize) {
        let (a, s) = self.cache.borrow_mut().query(self.source.as_ref(), smiles);
        (a, s.hits)
    }

    /// Black-box answers for decoded molecules through the cache, by their
    /// canonical SMILES. A miss is featurized from that SMILES, not from the
    /// RDKit molecule the decoder built: that one differs from the parsed molecule
    /// in atom and bond order and in how hydrogens are recorded (implicit, where
    /// parsing a bracket atom such as [nH] gives explicit), so its features would
    /// depend on how the molecule was reached and the MPNN would see hydrogen
    /// columns unlike those of its training molecules.
    fn featurize_decoded(
        &self,
        items: &[&Decoded],
    ) -> (Vec<crate::blackbox::cache::Answer>, usize) {
        let smiles: Vec<String> = items.iter().map(|d| d.smiles.clone()).collect();
        self.featurize(&smiles)
    }

    fn batch(&self, graphs: &[&MolGraph]) -> GraphBatch {
        GraphBatch::new(
            graphs,
            self.atom_dim,
            self.featurizer.bond_dim(),
            self.device,
        )
    }

    /// MPNN embeddings (no gradient) of graphs, in chunks of `chunk`.
    fn embed_nograd(&self, graphs: &[&MolGraph], chunk: usize) -> Tensor {
        tch::no_grad(|| {
            let parts: Vec<Tensor> = graphs
                .chunks(chunk.max(1))
                .map(|c| self.mpnn.embed.forward(&self.batch(c)))
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Means of the latent of `exs` (no gradient), one row each.
    fn encode_means(&self, exs: &[&Example]) -> Tensor {
        tch::no_grad(|| {
            let samples: Vec<_> = exs.iter().map(|e| e.sample()).collect();
            let (g, t) = self.jtvae.batches(&samples, self.device);
            self.jtvae.encode(&g, &t).0
        })
    }

    /// Table 1's numbers over `mols` (this rank's share `idx`), summed locally:
    /// see `PipelineEval`.
    pub(crate) fn evaluate(&self, mols: &[Labeled], idx: &[usize], chunk: usize) -> PipelineEval {
        let mut e = PipelineEval::default();
        for part in idx.chunks(chunk.max(1)) {
            let exs: Vec<&Example> = part.iter().map(|&i| &mols[i].ex).collect();
            let mean = to_vec_f32(&self.encode_means(&exs));
            let l = self.jtvae.latent() as usize;
            let mut pipe_graphs = Vec::new();
            let mut pipe_y = Vec::new();
            let decoded = self.decode_many(&mean[..part.len() * l]);
            let items: Vec<&Decoded> = decoded.iter().flatten().collect();
            let (answers, _) = self.featurize_decoded(&items);
            let mut answers = answers.into_iter();
            for (k, &i) in part.iter().enumerate() {
                let m = &mols[i];
                e.molecules += 1.0;
                e.sse_mean += f64::from(m.y).powi(2);
                match &decoded[k] {
                    None => {
                        e.decode_failed += 1.0;
                        e.sse_fill += f64::from(m.y).powi(2);
                    }
                    Some(d) => {
                        if flat(&m.ex.smiles).as_deref() == Some(d.smiles.as_str()) {
                            e.exact += 1.0;
                        }
                        let a = answers.next().expect("one answer per decoded molecule");
                        if a.is_ok() {
                            pipe_graphs.push(a);
                            pipe_y.push(m.y);
                        } else {
                            e.featurize_failed += 1.0;
                            e.sse_fill += f64::from(m.y).powi(2);
                        }
                    }
                }
            }
            let graphs: Vec<&MolGraph> = pipe_graphs
                .iter()
                .filter_map(|a| a.as_ref().as_ref().ok())
                .collect();
            if !graphs.is_empty() {
                let pred = tch::no_grad(|| self.mpnn.forward(&self.batch(&graphs)));
                for (p, y) in to_vec_f32(&pred).iter().zip(&pipe_y) {
                    let se = f64::from(p - y).powi(2);
                    e.sse_pipe += se;
                    e.sse_fill += se;
                    e.n_pipe += 1.0;
                }
            }
            // The MPNN on the true molecules.
            let true_smiles: Vec<String> = exs.iter().map(|x| x.smiles.clone()).collect();
            let (answers, _) = self.featurize(&true_smiles);
            let mut ys = Vec::new();
            let graphs: Vec<&MolGraph> = answers
                .iter()
                .zip(part)
                .filter_map(|(a, &i)| {
                    let g = a.as_ref().as_ref().ok()?;
                    ys.push(mols[i].y);
                    Some(g)
                })
                .collect();
            if !graphs.is_empty() {
                let pred = tch::no_grad(|| self.mpnn.forward(&self.batch(&graphs)));
                for (p, y) in to_vec_f32(&pred).iter().zip(&ys) {
                    e.sse_true += f64::from(p - y).powi(2);
                    e.n_true += 1.0;
                }
            }
        }
        e
    }
}

/// Sums over evaluated molecules (normalized target units) for Table 1.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PipelineEval {
    pub molecules: f64,
    /// decode(encoder mean) equals the molecule (canonical SMILES, no stereo).
    pub exact: f64,
    pub decode_failed: f64,
    pub featurize_failed: f64,
    /// Squared errors through the pipeline over molecules that decoded and featurized.
    pub sse_pipe: f64,
    pub n_pipe: f64,
    /// Same, with a failed molecule predicted as the training mean.
    pub sse_fill: f64,
    /// The MPNN on the true molecules.
    pub sse_true: f64,
    pub n_true: f64,
    /// Predict-the-training-mean.
    pub sse_mean: f64,
}

impl PipelineEval {
    pub const N: usize = 10;

    pub fn to_array(self) -> [f64; Self::N] {
        [
            self.molecules,
            self.exact,
            self.decode_failed,
            self.featurize_failed,
            self.sse_pipe,
            self.n_pipe,
            self.sse_fill,
            self.sse_true,
            self.n_true,
            self.sse_mean,
        ]
    }

    pub fn from_array(a: [f64; Self::N]) -> Self {
        PipelineEval {
            molecules: a[0],
            exact: a[1],
            decode_failed: a[2],
            featurize_failed: a[3],
            sse_pipe: a[4],
            n_pipe: a[5],
            sse_fill: a[6],
            sse_true: a[7],
            n_true: a[8],
            sse_mean: a[9],
        }
    }

    /// Sum over ranks.
    pub fn reduce(self, dist: &Dist) -> Self {
        let mut a = self.to_array();
        dist.allreduce_sum_f64(&mut a);
        Self::from_array(a)
    }

    /// (name, value) in target units (`std` = the target's standard deviation).
    pub fn table(&self, std: f64) -> Vec<(String, f64)> {
        let rmse = |sse: f64, n: f64| {
            if n > 0.0 {
                (sse / n).sqrt() * std
            } else {
                f64::NAN
            }
        };
        let share = |x: f64| {
            if self.molecules > 0.0 {
                x / self.molecules
            } else {
                f64::NAN
            }
        };
        vec![
            ("recon_acc".into(), share(self.exact)),
            ("pipeline_rmse".into(), rmse(self.sse_pipe, self.n_pipe)),
            (
                "pipeline_rmse_mean_fill".into(),
                rmse(self.sse_fill, self.molecules),
            ),
            ("true_rmse".into(), rmse(self.sse_true, self.n_true)),
            ("baseline_rmse".into(), rmse(self.sse_mean, self.molecules)),
            ("decode_failed".into(), self.decode_failed),
            ("featurize_failed".into(), self.featurize_failed),
            ("evaluated".into(), self.molecules),
        ]
    }
}

/// Loads the Stage-1 checkpoints (or exported models) into the pipeline's
/// parameters; model files made for another vocabulary or other feature columns
/// than `pipe`'s (of the dataset file `dataset`) are refused.
pub fn load_stage1(
    vs: &VarStore,
    jtvae_ck: &Path,
    mpnn_ck: &Path,
    (dataset, pipe): (&Path, &Pipeline),
) -> anyhow::Result<()> {
    crate::io::model::check_inputs(jtvae_ck, mpnn_ck, dataset, &pipe.vocab, &pipe.featurizer)?;
    for (prefix, ck) in [("jtvae.", jtvae_ck), ("mpnn.", mpnn_ck)] {
        Params::of_filtered(vs, |n| n.starts_with(prefix))
            .load_from(ck)
            .with_context(|| {
                format!(
                    "reading the Stage-1 model {} (train its stage first, or set zo.init_{})",
                    ck.display(),
                    prefix.trim_end_matches('.')
                )
            })?;
    }
    Ok(())
}

const COUNTERS: [&str; 15] = [
    "samples",
    "base_failed",
    "queries",
    "unchanged",
    "changed",
    "failed_decode",
    "failed_featurize",
    "cache_hits",
    "embedded",
    "decoder_queries",
    "decoder_changed",
    "source_failed",
    "source_timeouts",
    "source_restarts",
    // seconds this rank's source spent in a physics program this step
    "source_program_s",
];

fn count(name: &str) -> usize {
    COUNTERS
        .iter()
        .position(|c| *c == name)
        .expect("a known counter")
}

pub struct ZoObjective {
    pipe: Pipeline,
    train: Vec<Labeled>,
    test: Vec<Labeled>,
    zc: ZoConfig,
    seed: u64,
    lambda: f64,
    beta: f64,
    target_std: f64,
    eval_batch: usize,
    /// Decoder parameters (name, tensor, slot in the flat gradient) when decoder = "zo".
    decoder: Vec<(String, Tensor, std::ops::Range<usize>)>,
}

impl ZoObjective {
    /// Reads the dataset, builds the examples and the models (in `vs`), loads Stage 1.
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<ZoObjective> {
        let root = dist.is_root();
        let path = cfg.dataset_path();
        let ds = Dataset::read(&path)?;
        let pipe = Pipeline::new(cfg, &ds, vs, dist)?;
        let jc = pipe.jc.clone();
        let vocab = Vocab::new(pipe.vocab.iter().cloned());
        let t0 = Instant::now();
        let mut cands = Prepared::open(&ds, &path, Some(jc.max_candidates), root)?;
        let n_labeled = cfg.data.labeled().min(ds.train.len());
        let (train, skipped) = labeled(&ds, &ds.train[..n_labeled], &vocab, &mut cands);
        let test_idx: Vec<u64> = ds.test.iter().take(cfg.zo.eval_limit).copied().collect();
        let mut encode_only = Prepared::open(&ds, &path, None, false)?;
        let (test, test_skipped) = labeled(&ds, &test_idx, &vocab, &mut encode_only);
        if root {
            log::info!(
                "Stage-2 data: {} labeled training molecules ({} outside the JT-VAE vocabulary, left out; {}), {} test molecules for the per-epoch pipeline RMSE ({} left out), built in {:.1} s",
                train.len(),
                skipped,
                cands.summary(),
                test.len(),
                test_skipped,
                t0.elapsed().as_secs_f64()
            );
        }
        if train.is_empty() {
            anyhow::bail!(
                "{}: no labeled training molecule can be encoded by the JT-VAE",
                path.display()
            );
        }
        let init_j = cfg.stage_checkpoint(crate::config::Stage::Jtvae);
        let init_m = cfg.stage_checkpoint(crate::config::Stage::Mpnn);
        load_stage1(vs, &init_j, &init_m, (&path, &pipe))?;
        if root {
            log::info!(
                "Stage 2 starts from {} and {}; estimator {:?}, q {}, µ {}, σ {}, λ {}, decoder {:?}",
                init_j.display(),
                init_m.display(),
                cfg.zo.estimator,
                cfg.zo.q,
                cfg.zo.mu,
                cfg.zo.sigma,
                cfg.zo.lambda,
                cfg.zo.decoder
            );
        }
        Ok(ZoObjective {
            pipe,
            train,
            test,
            zc: cfg.zo.clone(),
            seed: cfg.run.seed,
            lambda: cfg.zo.lambda,
            beta: jc.beta,
            target_std: ds.target_std,
            eval_batch: cfg.train.eval_batch_size,
            decoder: Vec::new(),
        })
    }

    /// The parameters Stage 2 trains: all but the decoder when it is frozen (whose
    /// tensors then stop requiring gradients).
    pub fn params(&mut self, vs: &VarStore) -> Params {
        let frozen = self.zc.decoder == DecoderMode::Frozen;
        if frozen {
            for (name, t) in vs.variables() {
                if is_decoder_param(&name) {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        let params = Params::of_filtered(vs, |n| !(frozen && is_decoder_param(n)));
        if !frozen {
            self.decoder = params
                .names
                .iter()
                .zip(&params.tensors)
                .filter(|(n, _)| is_decoder_param(n))
                .map(|(n, t)| {
                    let slot = params.slot(n).expect("a listed parameter has a slot");
                    (n.clone(), t.shallow_clone(), slot)
                })
                .collect();
        }
        params
    }

    /// Decoder direction k of `step` for one named tensor.
    fn decoder_dir(&self, step: usize, k: usize, name: &str, numel: usize) -> Vec<f32> {
        decoder_direction(self.seed, step as u64, k as u64, name, numel)
    }
}

impl Objective for ZoObjective {
    fn stage(&self) -> &'static str {
        "zo"
    }

    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn terms(&self) -> Vec<&'static str> {
        vec!["pred", "jtvae", "word", "topo", "assm", "kl"]
    }

    fn counters(&self) -> Vec<&'static str> {
        COUNTERS.to_vec()
    }

    fn phases(&self) -> Vec<&'static str> {
        PHASES.to_vec()
    }

    fn n_projections(&self) -> usize {
        if self.zc.decoder == DecoderMode::Zo {
            self.zc.q_decoder
        } else {
            0
        }
    }

    fn derived(&self, c: &[f64], step_s: f64) -> Vec<(&'static str, f64)> {
        let at = |n: &str| c[count(n)];
        let answered = at("queries") - at("failed_decode");
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let all = at("samples") + at("queries") + at("decoder_queries");
        vec![
            ("flip_rate", ratio(at("changed"), answered)),
            (
                "failure_rate",
                ratio(at("failed_decode") + at("failed_featurize"), at("queries")),
            ),
            ("queries_per_s", ratio(all, step_s)),
            ("samples_per_s", ratio(at("samples"), step_s)),
        ]
    }

    fn step(&mut self, samples: &[usize], step: usize) -> StepOut {
        let mut c = vec![0f64; COUNTERS.len()];
        let mut ph = vec![0f64; PHASES.len()];
        let p = &self.pipe;
        let dev = p.device;
        let l = p.jtvae.latent() as usize;
        let r = self.zc.mu * self.zc.sigma;
        c[count("samples")] = samples.len() as f64;
        let source_before = p.source_stats();

        // Encode (with gradient).
        let t0 = Instant::now();
        let batch: Vec<_> = samples.iter().map(|&i| self.train[i].ex.sample()).collect();
        let (g, t) = p.jtvae.batches(&batch, dev);
        let (mean, logvar) = p.jtvae.encode(&g, &t);
        let z = to_vec_f32(&mean);
        ph[0] += t0.elapsed().as_secs_f64();

        // Decode every sample's base latent and its estimator's queries as one batch
        // (the directions depend only on the key, not on the base molecule).
        let est = self.zc.estimator;
        let t1 = Instant::now();
        let offsets: Vec<Vec<Vec<f32>>> = samples
            .iter()
            .map(|&gid| {
                est.offsets(self.zc.q, l, |kk| {
                    latent_direction(self.seed, step as u64, gid as u64, kk as u64, l)
                })
            })
            .collect();
        let mut zs: Vec<f32> = Vec::new();
        let mut first_row = Vec::with_capacity(samples.len());
        for (k, offs) in offsets.iter().enumerate() {
            let zi = &z[k * l..(k + 1) * l];
            first_row.push(zs.len() / l);
            zs.extend_from_slice(zi);
            for u in offs {
                zs.extend(zi.iter().zip(u).map(|(&a, &b)| a + (r as f32) * b));
            }
        }
        let decoded = p.decode_many(&zs);
        ph[1] += t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let base_items: Vec<&Decoded> = first_row
            .iter()
            .filter_map(|&row| decoded[row].as_ref())
            .collect();
        let (answers, hits) = p.featurize_decoded(&base_items);
        c[count("cache_hits")] += hits as f64;
        ph[2] += t2.elapsed().as_secs_f64();
        let mut answers = answers.into_iter();
        // (position in the shard, base SMILES, base answer) of samples with a base graph.
        let mut ok = Vec::new();
        for (k, &row) in first_row.iter().enumerate() {
            if let Some(d) = &decoded[row] {
                let a = answers.next().expect("one answer per decoded molecule");
                if a.is_ok() {
                    ok.push((k, d.smiles.clone(), a));
                    continue;
                }
            }
            c[count("base_failed")] += 1.0;
        }

        // Prediction loss on the base graphs: w2 and a = ∂L/∂h by backprop.
        let t3 = Instant::now();
        let mut pred_sum = 0.0;
        let mut h_base = Tensor::zeros([0], (Kind::Float, dev));
        let mut a_vec: Vec<f32> = Vec::new();
        let mut surrogate = Tensor::zeros([], (Kind::Float, dev));
        let hd_dim = p.mpnn.embed.out_dim() as usize;
        if !ok.is_empty() {
            let graphs: Vec<&MolGraph> = ok
                .iter()
                .map(|(_, _, a)| a.as_ref().as_ref().expect("kept only graphs"))
                .collect();
            let h = p.mpnn.embed.forward(&p.batch(&graphs));
            let hd = h.detach().set_requires_grad(true);
            let y: Vec<f32> = ok
                .iter()
                .map(|(k, _, _)| self.train[samples[*k]].y)
                .collect();
            let pred = p.mpnn.head.forward(&hd);
            let loss = (pred - Tensor::from_slice(&y).to_device(dev))
                .square()
                .sum(Kind::Float);
            loss.backward();
            pred_sum = loss.double_value(&[]);
            let a = hd.grad().detach();
            a_vec = to_vec_f32(&a);
            surrogate = (&h * &a).sum(Kind::Float);
            h_base = h.detach();
        }
        ph[3] += t3.elapsed().as_secs_f64();
        let h_base_v = to_vec_f32(&h_base);
        let dot = |row: usize, h: &[f32]| -> f64 {
            let a = &a_vec[row * hd_dim..(row + 1) * hd_dim];
            let hb = &h_base_v[row * hd_dim..(row + 1) * hd_dim];
            a.iter()
                .zip(h)
                .zip(hb)
                .map(|((&a, &h), &b)| f64::from(a) * (f64::from(h) - f64::from(b)))
                .sum()
        };

        // Latent ZO: the estimator's queries of every sample with a base graph.
        let mut deltas: Vec<Vec<Option<f64>>> = Vec::with_capacity(ok.len());
        // (row in ok, query index, graph) of changed molecules to embed.
        let mut pending: Vec<(usize, usize, crate::blackbox::cache::Answer)> = Vec::new();
        let tf = Instant::now();
        for (row, (k, base_smi, base_ans)) in ok.iter().enumerate() {
            let n = offsets[*k].len();
            let mut d = vec![None; n];
            for (j, dj) in d.iter_mut().enumerate() {
                c[count("queries")] += 1.0;
                let Some(q) = &decoded[first_row[*k] + 1 + j] else {
                    c[count("failed_decode")] += 1.0;
                    continue;
                };
                if &q.smiles == base_smi {
                    c[count("unchanged")] += 1.0;
                    if self.zc.skip_unchanged {
                        *dj = Some(0.0);
                        continue;
                    }
                    pending.push((row, j, std::sync::Arc::clone(base_ans)));
                    continue;
                }
                c[count("changed")] += 1.0;
                let (mut ans, hits) = p.featurize_decoded(&[q]);
                c[count("cache_hits")] += hits as f64;
                let a = ans.remove(0);
                if a.is_err() {
                    c[count("failed_featurize")] += 1.0;
                    continue;
                }
                pending.push((row, j, a));
            }
            deltas.push(d);
        }
        ph[2] += tf.elapsed().as_secs_f64();
        let offsets: Vec<&Vec<Vec<f32>>> = ok.iter().map(|(k, _, _)| &offsets[*k]).collect();
        let te = Instant::now();
        if !pending.is_empty() {
            let graphs: Vec<&MolGraph> = pending
                .iter()
                .map(|(_, _, a)| a.as_ref().as_ref().expect("kept only graphs"))
                .collect();
            c[count("embedded")] += graphs.len() as f64;
            let h = to_vec_f32(&p.embed_nograd(&graphs, self.eval_batch));
            for (n, (row, j, _)) in pending.iter().enumerate() {
                deltas[*row][*j] = Some(dot(*row, &h[n * hd_dim..(n + 1) * hd_dim]));
            }
        }
        ph[3] += te.elapsed().as_secs_f64();
        let mut ghat = vec![0f32; ok.len() * l];
        for (row, (&offs, d)) in offsets.iter().zip(&deltas).enumerate() {
            if let Some((g, _)) = est.combine(offs, d, r) {
                for (dst, v) in ghat[row * l..(row + 1) * l].iter_mut().zip(g) {
                    *dst = v as f32;
                }
            }
        }

        // Decoder ZO: q scalars per rank.
        let mut projections = Vec::new();
        if self.zc.decoder == DecoderMode::Zo {
            let tz = Instant::now();
            let r2 = self.zc.mu_decoder * self.zc.sigma;
            for k in 0..self.zc.q_decoder {
                let saved: Vec<Tensor> = self
                    .decoder
                    .iter()
                    .map(|(_, t, _)| t.detach().copy())
                    .collect();
                tch::no_grad(|| {
                    for (name, t, slot) in &self.decoder {
                        let d = self.decoder_dir(step, k, name, slot.len());
                        let d = Tensor::from_slice(&d)
                            .view(t.size().as_slice())
                            .to_device(dev);
                        let _ = t.shallow_clone().g_add_(&(d * r2));
                    }
                });
                let mut graphs = Vec::new();
                let mut rows = Vec::new();
                let zk: Vec<f32> = ok
                    .iter()
                    .flat_map(|(kk, _, _)| z[kk * l..(kk + 1) * l].iter().copied())
                    .collect();
                let dec = p.decode_many(&zk);
                for (row, ((_, base_smi, _), d)) in ok.iter().zip(&dec).enumerate() {
                    c[count("decoder_queries")] += 1.0;
                    let Some(d) = d else {
                        c[count("failed_decode")] += 1.0;
                        continue;
                    };
                    if &d.smiles == base_smi {
                        continue;
                    }
                    c[count("decoder_changed")] += 1.0;
                    let (mut ans, hits) = p.featurize_decoded(&[d]);
                    c[count("cache_hits")] += hits as f64;
                    let a = ans.remove(0);
                    if a.is_err() {
                        c[count("failed_featurize")] += 1.0;
                        continue;
                    }
                    graphs.push(a);
                    rows.push(row);
                }
                tch::no_grad(|| {
                    for ((_, t, _), s) in self.decoder.iter().zip(&saved) {
                        t.shallow_clone().copy_(s);
                    }
                });
                let mut ck = 0.0;
                if !graphs.is_empty() {
                    let refs: Vec<&MolGraph> = graphs
                        .iter()
                        .map(|a| a.as_ref().as_ref().expect("kept only graphs"))
                        .collect();
                    let h = to_vec_f32(&p.embed_nograd(&refs, self.eval_batch));
                    for (n, &row) in rows.iter().enumerate() {
                        ck += dot(row, &h[n * hd_dim..(n + 1) * hd_dim]);
                    }
                }
                projections.push(ck / r2);
            }
            ph[5] += tz.elapsed().as_secs_f64();
        }

        // One backward: w1 (h·a), the encoder's ZO part (z·ĝ), λ·JT-VAE loss.
        let tb = Instant::now();
        if !ok.is_empty() {
            let rows: Vec<i64> = ok.iter().map(|(k, _, _)| *k as i64).collect();
            let zsel = mean.index_select(0, &Tensor::from_slice(&rows).to_device(dev));
            let g = Tensor::from_slice(&ghat)
                .view([ok.len() as i64, l as i64])
                .to_device(dev);
            surrogate += (zsel * g).sum(Kind::Float);
        }
        let eps = vae_noise(self.seed, samples, step, p.jtvae.latent(), dev);
        let jl = p
            .jtvae
            .losses_encoded(&batch, &t, &mean, &logvar, &eps, dev);
        let jt = &jl.word + &jl.topo + &jl.assm + &jl.kl * self.beta;
        (surrogate + &jt * self.lambda).backward();
        let jt_sum = jt.double_value(&[]) * self.lambda;
        ph[4] += tb.elapsed().as_secs_f64();
        let terms = vec![
            pred_sum,
            jt_sum,
            jl.word.double_value(&[]),
            jl.topo.double_value(&[]),
            jl.assm.double_value(&[]),
            jl.kl.double_value(&[]),
        ];
        let source_after = p.source_stats();
        c[count("source_failed")] = (source_after.failed - source_before.failed) as f64;
        c[count("source_timeouts")] = (source_after.timeouts - source_before.timeouts) as f64;
        c[count("source_restarts")] = (source_after.restarts - source_before.restarts) as f64;
        c[count("source_program_s")] = source_after.program_s - source_before.program_s;
        StepOut {
            loss: pred_sum + jt_sum,
            terms,
            projections,
            counts: c,
            phase_s: ph,
        }
    }

    fn apply_reduced(&self, step: usize, projections: &[f64], grad: &mut [f32]) {
        if projections.is_empty() {
            return;
        }
        let q = projections.len() as f64;
        for (k, &ck) in projections.iter().enumerate() {
            let w = (ck / q) as f32;
            for (name, _, slot) in &self.decoder {
                let d = self.decoder_dir(step, k, name, slot.len());
                for (g, v) in grad[slot.clone()].iter_mut().zip(d) {
                    *g += w * v;
                }
            }
        }
    }

    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)> {
        let idx: Vec<usize> = dist.shard(self.test.len()).collect();
        let e = self
            .pipe
            .evaluate(&self.test, &idx, self.eval_batch)
            .reduce(dist);
        e.table(self.target_std)
    }

    fn describe(&self) -> String {
        "Stage 2: zeroth-order through the JT-VAE decoder and the RDKit black box".into()
    }
}

/// `zo-hpc train` for stage "zo".
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<super::stop::Outcome> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    device::log_choice(dist, device);
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let mut obj = ZoObjective::new(cfg, dist, &vs)?;
    let params = obj.params(&vs);
    let mut t = Trainer::with_params(cfg, dist, obj, params, device);
    if opts.resume {
        t.resume()?;
    }
    t.run(opts)
}
