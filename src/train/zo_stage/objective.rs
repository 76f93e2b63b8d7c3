//! Stage 2 as the data-parallel loop sees it (`ZoObjective`): reading the
//! dataset and building the labeled molecules and the pipeline (Stage 1 loaded),
//! the parameters it trains (the decoder frozen, or trained zeroth-order), the
//! decoder's projections added to the reduced gradient, the per-epoch pipeline
//! evaluation; and `run`, `zo-hpc train` for the stage.
use super::counters::{derived, COUNTERS, PHASES};
use super::state::ZoStep;
use crate::config::{Config, DecoderMode, Group, LatentMode};
use crate::data::samples::Prepared;
use crate::dist::Dist;
use crate::io::metrics::Metrics;
use crate::jtvae::vocab::Vocab;
use crate::pipeline::{labeled, Labeled, Pipeline};
use crate::train::evaluate::{load_stage1, reduce};
use crate::train::params::Params;
use crate::train::stop::Outcome;
use crate::train::trainer::{Objective, StepOut, Trainer};
use crate::train::{device, RunOptions};
use crate::zo::control::ControlVariate;
use crate::zo::estimator::Estimator;
use crate::zo::tensors::NamedTensors;
use std::time::Instant;
use tch::nn::VarStore;

pub struct ZoObjective {
    s: ZoStep,
    test: Vec<Labeled>,
    target_std: f64,
    /// Slots of the flat gradient per part ("jtvae", "mpnn", "cv") for the norms.
    groups: Vec<(&'static str, Vec<std::ops::Range<usize>>)>,
    /// The last steps' samples left out for a non-finite loss.
    nonfinite: super::counters::NonFinite,
}

impl ZoObjective {
    /// Reads the dataset, builds the examples and the models (in `vs`), loads Stage 1.
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<ZoObjective> {
        let root = dist.is_root();
        let path = cfg.dataset_path();
        let ds = crate::data::provenance::open(cfg)?;
        let pipe = Pipeline::new(cfg, &ds, vs, dist.rank, dist.cpus_per_rank())?;
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
        let cv = (cfg.zo.estimator == Estimator::Cv).then(|| {
            let out = pipe.mpnn.embed.out_dim();
            ControlVariate::new(vs.root() / "zo_cv", jc.latent, out, cfg.zo.cv_hidden as i64)
        });
        Ok(ZoObjective {
            s: ZoStep {
                pipe,
                train,
                zc: cfg.zo.clone(),
                seed: cfg.run.seed,
                lambda: cfg.zo.lambda,
                beta: jc.beta,
                eval_batch: cfg.train.eval_batch_size,
                decoder: NamedTensors::default(),
                radius: cfg.zo.mu * cfg.zo.sigma,
                zo_part: NamedTensors::default(),
                cv,
            },
            test,
            target_std: ds.target_std,
            groups: Vec::new(),
            nonfinite: Default::default(),
        })
    }

    /// The parameters Stage 2 trains: all but the decoder when it is frozen and the
    /// groups of `zo.freeze` (whose tensors then stop requiring gradients); notes
    /// the decoder's tensors (decoder = "zo"), those the latent estimate reaches
    /// and each part's slots.
    pub fn params(&mut self, vs: &VarStore) -> Params {
        let dec_frozen = self.s.zc.decoder == DecoderMode::Frozen;
        let pipe = &self.s.pipe;
        let freeze = &self.s.zc.freeze;
        let frozen = |n: &str| !pipe.trained_in_stage2(n, &self.s.zc);
        for (name, t) in vs.variables() {
            if frozen(&name) {
                let _ = t.set_requires_grad(false);
            }
        }
        let params = Params::of_filtered(vs, |n| !frozen(n));
        let named = |keep: &dyn Fn(&str) -> bool| {
            NamedTensors::new(
                params
                    .names
                    .iter()
                    .zip(&params.tensors)
                    .filter(|(n, _)| keep(n))
                    .map(|(n, t)| {
                        let slot = params.slot(n).expect("a listed parameter has a slot");
                        (n.clone(), t.shallow_clone(), slot)
                    })
                    .collect(),
            )
        };
        if !dec_frozen {
            self.s.decoder = named(&|n| pipe.is_decoder_param(n));
        }
        // z·ĝ reaches the encoder only: the decoder's tensors stay out of the part
        // (with decoder = "zo" they cost q scalars of communication, not their size).
        if self.s.zc.latent != LatentMode::Off && !freeze.contains(&Group::Encoder) {
            self.s.zo_part = named(&|n| pipe.is_jtvae_param(n) && !pipe.is_decoder_param(n));
        }
        let slots = |keep: &dyn Fn(&str) -> bool| -> Vec<std::ops::Range<usize>> {
            params
                .names
                .iter()
                .filter(|n| keep(n))
                .filter_map(|n| params.slot(n))
                .collect()
        };
        self.groups = vec![
            ("gnorm_jtvae", slots(&|n| pipe.is_jtvae_param(n))),
            ("gnorm_mpnn", slots(&|n| pipe.is_mpnn_param(n))),
            ("gnorm_cv", slots(&|n| n.starts_with("zo_cv."))),
        ];
        params
    }
}

impl Objective for ZoObjective {
    fn stage(&self) -> &'static str {
        "zo"
    }

    fn n_train(&self) -> usize {
        self.s.train.len()
    }

    fn terms(&self) -> Vec<&'static str> {
        let mut t = vec!["pred", "jtvae", "word", "topo", "assm", "kl"];
        if self.s.cv.is_some() {
            t.push("cv");
        }
        t
    }

    fn counters(&self) -> Vec<&'static str> {
        COUNTERS.to_vec()
    }

    fn phases(&self) -> Vec<&'static str> {
        PHASES.to_vec()
    }

    fn n_projections(&self) -> usize {
        self.n_decoder_projections() + self.s.zo_part.numel()
    }

    fn derived(&self, _step: usize, c: &[f64], step_s: f64) -> Vec<(&'static str, f64)> {
        let mut d = derived(c, step_s);
        d.push(("radius", self.s.radius));
        d
    }

    fn observe(&mut self, counts: &[f64]) -> Result<(), String> {
        if let Some(target) = self.s.zc.target_flip {
            let flip = flip_rate(counts);
            self.s.radius = adapt_radius(self.s.radius, flip, target);
        }
        self.nonfinite.push(counts)
    }

    fn restore(&mut self, m: &Metrics) {
        let last = |n: &str| m.step_terms.get(n).and_then(|v| v.last().copied());
        if let (Some(target), Some(r), Some(flip)) =
            (self.s.zc.target_flip, last("radius"), last("flip_rate"))
        {
            self.s.radius = adapt_radius(r, flip, target);
        }
        let rows = |n: &str| m.step_terms.get(n).map_or(&[][..], |v| v.as_slice());
        self.nonfinite.restore(rows("nonfinite"), rows("samples"));
    }

    fn step(&mut self, samples: &[usize], step: usize) -> StepOut {
        self.s.step(samples, step)
    }

    fn apply_reduced(
        &self,
        step: usize,
        projections: &[f64],
        grad: &mut [f32],
        scale: f64,
    ) -> Vec<(&'static str, f64)> {
        let (dec, zo) = projections.split_at(self.n_decoder_projections());
        let mut norms: Vec<(&'static str, f64)> = self
            .groups
            .iter()
            .filter(|(_, slots)| !slots.is_empty())
            .map(|(name, slots)| (*name, scale * slots_norm(grad, slots)))
            .collect();
        if !dec.is_empty() {
            // Only the decoder's slots change: copy those, not the whole gradient.
            let slots: Vec<std::ops::Range<usize>> = self.s.decoder.slots().collect();
            let before: Vec<f32> = slots
                .iter()
                .flat_map(|r| grad[r.clone()].to_vec())
                .collect();
            let dir = |k: usize, name: &str, numel: usize| self.s.decoder_dir(step, k, name, numel);
            self.s.decoder.add_projections(dec, grad, dir);
            let d2: f64 = slots
                .iter()
                .flat_map(|r| grad[r.clone()].iter())
                .zip(&before)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            norms.push(("gnorm_zo_decoder", scale * d2.sqrt()));
        }
        if !zo.is_empty() {
            let n = scale * zo.iter().map(|x| x * x).sum::<f64>().sqrt();
            norms.push(("gnorm_zo_latent", n));
            let clip = self.s.zc.clip_zo;
            let k = if clip > 0.0 && n > clip {
                clip / n
            } else {
                1.0
            };
            let part: Vec<f32> = zo.iter().map(|&x| (x * k) as f32).collect();
            self.s.zo_part.add_flat(&part, grad);
        }
        norms
    }

    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)> {
        let idx: Vec<usize> = dist.shard(self.test.len()).collect();
        let e = reduce(
            self.s.pipe.evaluate(&self.test, &idx, self.s.eval_batch),
            dist,
        );
        e.table(self.target_std)
    }

    fn describe(&self) -> String {
        "Stage 2: zeroth-order through the JT-VAE decoder and the RDKit black box".into()
    }
}

impl ZoObjective {
    /// q_decoder with decoder = "zo", except under estimator "score", whose phase
    /// gives the decoder its gradient itself.
    fn n_decoder_projections(&self) -> usize {
        let score = self.s.zc.estimator == crate::zo::estimator::Estimator::Score;
        if self.s.zc.decoder == DecoderMode::Zo && !score {
            self.s.zc.q_decoder
        } else {
            0
        }
    }
}

/// L2 norm of `grad` over `slots`.
fn slots_norm(grad: &[f32], slots: &[std::ops::Range<usize>]) -> f64 {
    slots
        .iter()
        .flat_map(|s| grad[s.clone()].iter())
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The flip rate of a step's summed counters (as `derived` gives it).
fn flip_rate(counts: &[f64]) -> f64 {
    derived(counts, 1.0)
        .iter()
        .find(|(n, _)| *n == "flip_rate")
        .map_or(0.0, |(_, v)| *v)
}

/// The next step's radius for `zo.target_flip`: multiplied by
/// exp(ADAPT_RATE·(target − flip)/target), so a step without flips grows it by
/// e^0.5 and one at twice the target shrinks it by the same; within
/// [1e-6, 100].
pub(super) fn adapt_radius(r: f64, flip: f64, target: f64) -> f64 {
    const ADAPT_RATE: f64 = 0.5;
    (r * (ADAPT_RATE * (target - flip) / target).exp()).clamp(1e-6, 100.0)
}

/// `zo-hpc train` for stage "zo".
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<Outcome> {
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
