//! Stage 2 as the data-parallel loop sees it (`ZoObjective`): reading the
//! dataset and building the labeled molecules and the pipeline (Stage 1 loaded),
//! the parameters it trains (the decoder frozen, or trained zeroth-order), the
//! decoder's projections added to the reduced gradient, the per-epoch pipeline
//! evaluation; and `run`, `zo-hpc train` for the stage.
use super::counters::{derived, COUNTERS, PHASES};
use super::state::ZoStep;
use crate::config::{Config, DecoderMode};
use crate::data::samples::Prepared;
use crate::dist::Dist;
use crate::io::dataset::Dataset;
use crate::jtvae::vocab::Vocab;
use crate::pipeline::{labeled, Labeled, Pipeline};
use crate::train::evaluate::{load_stage1, reduce};
use crate::train::params::Params;
use crate::train::stop::Outcome;
use crate::train::trainer::{Objective, StepOut, Trainer};
use crate::train::{device, RunOptions};
use crate::zo::tensors::NamedTensors;
use std::time::Instant;
use tch::nn::VarStore;

pub struct ZoObjective {
    s: ZoStep,
    test: Vec<Labeled>,
    target_std: f64,
}

impl ZoObjective {
    /// Reads the dataset, builds the examples and the models (in `vs`), loads Stage 1.
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<ZoObjective> {
        let root = dist.is_root();
        let path = cfg.dataset_path();
        let ds = Dataset::read(&path)?;
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
            },
            test,
            target_std: ds.target_std,
        })
    }

    /// The parameters Stage 2 trains: all but the decoder when it is frozen (whose
    /// tensors then stop requiring gradients).
    pub fn params(&mut self, vs: &VarStore) -> Params {
        let frozen = self.s.zc.decoder == DecoderMode::Frozen;
        let pipe = &self.s.pipe;
        if frozen {
            for (name, t) in vs.variables() {
                if pipe.is_decoder_param(&name) {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        let params = Params::of_filtered(vs, |n| !(frozen && pipe.is_decoder_param(n)));
        if !frozen {
            self.s.decoder = NamedTensors::new(
                params
                    .names
                    .iter()
                    .zip(&params.tensors)
                    .filter(|(n, _)| pipe.is_decoder_param(n))
                    .map(|(n, t)| {
                        let slot = params.slot(n).expect("a listed parameter has a slot");
                        (n.clone(), t.shallow_clone(), slot)
                    })
                    .collect(),
            );
        }
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
        vec!["pred", "jtvae", "word", "topo", "assm", "kl"]
    }

    fn counters(&self) -> Vec<&'static str> {
        COUNTERS.to_vec()
    }

    fn phases(&self) -> Vec<&'static str> {
        PHASES.to_vec()
    }

    fn n_projections(&self) -> usize {
        let score = self.s.zc.estimator == crate::zo::estimator::Estimator::Score;
        if self.s.zc.decoder == DecoderMode::Zo && !score {
            self.s.zc.q_decoder
        } else {
            0
        }
    }

    fn derived(&self, c: &[f64], step_s: f64) -> Vec<(&'static str, f64)> {
        derived(c, step_s)
    }

    fn step(&mut self, samples: &[usize], step: usize) -> StepOut {
        self.s.step(samples, step)
    }

    fn apply_reduced(&self, step: usize, projections: &[f64], grad: &mut [f32]) {
        if projections.is_empty() {
            return;
        }
        let dir = |k: usize, name: &str, numel: usize| self.s.decoder_dir(step, k, name, numel);
        self.s.decoder.add_projections(projections, grad, dir);
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
