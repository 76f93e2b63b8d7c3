//! Stage "mpnn": first-order training of the MPNN on the RDKit featurization of the
//! dataset file (the loss: squared error of the normalized target), through the
//! shared data-parallel loop of `trainer`. Evaluation: train and test RMSE in
//! target units each epoch, against the predict-the-mean baseline.
use super::params::to_vec_f32;
use super::trainer::{backward_step, Objective, StepOut, Trainer};
use super::{device, RunOptions};
use crate::blackbox::{KnowledgeSource, SourceContext};
use crate::chem::MolGraph;
use crate::config::Config;
use crate::dist::Dist;
use crate::io::dataset::Dataset;
use crate::models::batch::GraphBatch;
use crate::models::mpnn::{Mpnn, MpnnDims};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Featurized molecules with normalized targets.
struct Split {
    graphs: Vec<MolGraph>,
    /// Normalized targets.
    y: Vec<f32>,
}

fn featurize(
    source: &dyn KnowledgeSource,
    ds: &Dataset,
    idx: &[u64],
    what: &str,
    root: bool,
) -> Split {
    let smiles: Vec<String> = idx.iter().map(|&i| ds.smiles[i as usize].clone()).collect();
    let mut graphs = Vec::with_capacity(idx.len());
    let mut y = Vec::with_capacity(idx.len());
    let mut failed = 0usize;
    // In parts, so that a slow source (a physics program) shows its progress.
    let t0 = std::time::Instant::now();
    let mut answers = Vec::with_capacity(smiles.len());
    let mut last_log = t0;
    for part in smiles.chunks(256) {
        answers.extend(source.query(part));
        if root && last_log.elapsed().as_secs() >= 30 {
            last_log = std::time::Instant::now();
            log::info!(
                "{what} molecules through {}: {}/{} ({:.0} s)",
                source.name(),
                answers.len(),
                smiles.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    for (r, &i) in answers.into_iter().zip(idx) {
        match r {
            Ok(g) => {
                graphs.push(g);
                y.push(((ds.target[i as usize] - ds.target_mean) / ds.target_std) as f32);
            }
            Err(e) => {
                failed += 1;
                if root && failed <= 5 {
                    log::warn!(
                        "{what} molecule {} failed in the black box: {e}",
                        ds.smiles[i as usize]
                    );
                }
            }
        }
    }
    if root && failed > 0 {
        let s = source.stats();
        log::warn!(
            "{failed} {what} molecules failed in {} and are left out (source so far: {} failed to answer, {} timed out, {} restarts)",
            source.name(),
            s.failed,
            s.timeouts,
            s.restarts
        );
    }
    Split { graphs, y }
}

/// The MPNN objective: featurized splits, the model, and the target statistics.
pub struct MpnnObjective {
    ds: Dataset,
    train: Split,
    test: Split,
    device: Device,
    model: Mpnn,
    eval_batch: usize,
    /// Width of the atom rows: the dataset's RDKit columns plus the source's extra ones.
    atom_dim: usize,
}

impl MpnnObjective {
    /// Reads and featurizes the dataset and builds the model in `vs` (seeded, so every
    /// rank starts from the same parameters).
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<MpnnObjective> {
        let root = dist.is_root();
        let path = cfg.dataset_path();
        let ds = crate::data::provenance::open(cfg)?;
        let ctx = SourceContext::new(cfg, dist.rank, dist.cpus_per_rank());
        let source = crate::blackbox::build(cfg, &ds.featurizer, &ctx)?;
        let extra = source.extra_atom_columns();
        let atom_dim = ds.featurizer.atom_dim() + extra.len();
        let source = source.as_ref();
        let t0 = Instant::now();
        let labeled = &ds.train[..cfg.data.labeled().min(ds.train.len())];
        let train = featurize(source, &ds, labeled, "training", root);
        let test = featurize(source, &ds, &ds.test, "test", root);
        if root {
            log::info!(
                "featurized {} + {} molecules with {} in {:.2} s ({} atom features{}, {} bond features)",
                train.graphs.len(),
                test.graphs.len(),
                source.name(),
                t0.elapsed().as_secs_f64(),
                atom_dim,
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" incl. {}", extra.join(", "))
                },
                ds.featurizer.bond_dim()
            );
        }
        if train.graphs.is_empty() {
            anyhow::bail!(
                "{}: no training molecule could be featurized",
                path.display()
            );
        }
        let dims = MpnnDims {
            atom_dim: atom_dim as i64,
            edge_dim: ds.featurizer.bond_dim() as i64,
        };
        let model = Mpnn::new(&(vs.root() / "mpnn"), dims, &cfg.mpnn);
        Ok(MpnnObjective {
            ds,
            train,
            test,
            device: vs.device(),
            model,
            eval_batch: cfg.train.eval_batch_size,
            atom_dim,
        })
    }

    fn batch(&self, split: &Split, idx: &[usize]) -> GraphBatch {
        let graphs: Vec<&MolGraph> = idx.iter().map(|&i| &split.graphs[i]).collect();
        GraphBatch::new(
            &graphs,
            self.atom_dim,
            self.ds.featurizer.bond_dim(),
            self.device,
        )
    }

    /// RMSE in target units over a split, computed on shards and summed over ranks.
    fn rmse(&self, split: &Split, dist: &Dist) -> f64 {
        let idx: Vec<usize> = dist.shard(split.graphs.len()).collect();
        let mut sse = [0f64];
        tch::no_grad(|| {
            for chunk in idx.chunks(self.eval_batch) {
                let pred = to_vec_f32(&self.model.forward(&self.batch(split, chunk)));
                for (p, &i) in pred.iter().zip(chunk) {
                    sse[0] += (f64::from(*p) - f64::from(split.y[i])).powi(2);
                }
            }
        });
        dist.allreduce_sum_f64(&mut sse);
        (sse[0] / split.graphs.len().max(1) as f64).sqrt() * self.ds.target_std
    }

    /// Predict-the-training-mean RMSE on the test set, in target units.
    fn baseline(&self) -> f64 {
        if self.test.y.is_empty() {
            return f64::NAN;
        }
        let sse: f64 = self.test.y.iter().map(|&y| f64::from(y).powi(2)).sum();
        (sse / self.test.y.len() as f64).sqrt() * self.ds.target_std
    }
}

impl Objective for MpnnObjective {
    fn stage(&self) -> &'static str {
        "mpnn"
    }

    fn n_train(&self) -> usize {
        self.train.graphs.len()
    }

    fn terms(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn step(&mut self, samples: &[usize], _step: usize) -> StepOut {
        let y: Vec<f32> = samples.iter().map(|&i| self.train.y[i]).collect();
        let pred = self.model.forward(&self.batch(&self.train, samples));
        let loss = (pred - Tensor::from_slice(&y).to_device(self.device))
            .square()
            .sum(Kind::Float);
        backward_step(loss, Vec::new())
    }

    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)> {
        vec![
            ("train_rmse".into(), self.rmse(&self.train, dist)),
            ("test_rmse".into(), self.rmse(&self.test, dist)),
        ]
    }

    fn scalars(&self) -> Vec<(String, f64)> {
        vec![("baseline_test_rmse".into(), self.baseline())]
    }

    fn describe(&self) -> String {
        self.ds.meta.target_column.clone()
    }
}

/// `zo-hpc train` with `train.stage = "mpnn"`.
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<super::stop::Outcome> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    device::log_choice(dist, device);
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let obj = MpnnObjective::new(cfg, dist, &vs)?;
    if dist.is_root() {
        log::info!("predict-the-mean test RMSE {:.4}", obj.baseline());
    }
    let mut t = Trainer::new(cfg, dist, obj, &vs);
    if opts.resume {
        t.resume()?;
    }
    t.run(opts)
}
