//! Stage "mpnn": first-order, data-parallel training of the MPNN on the RDKit
//! featurization of the dataset file. Every rank computes the same seeded global
//! batch order, takes its contiguous shard of each global batch, backpropagates,
//! and one allreduce of the flat gradient buffer (plus the loss) keeps all ranks'
//! parameters identical. Rank 0 writes checkpoints and metrics.
use super::adam::{clip_global_norm, Adam};
use super::params::{to_vec_f32, Params};
use super::{device, RunOptions};
use crate::blackbox::{KnowledgeSource, RdkitSource};
use crate::chem::MolGraph;
use crate::config::Config;
use crate::dist::Dist;
use crate::io::checkpoint::Checkpoint;
use crate::io::dataset::Dataset;
use crate::io::metrics::{self, Metrics, RunInfo};
use crate::models::batch::GraphBatch;
use crate::models::mpnn::{Mpnn, MpnnDims};
use crate::zo::rng::Stream;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::IsTerminal;
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
    for (r, &i) in source.query(&smiles).into_iter().zip(idx) {
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
        log::warn!(
            "{failed} {what} molecules failed in {} and are left out",
            source.name()
        );
    }
    Split { graphs, y }
}

/// Accumulates seconds per named phase.
#[derive(Default)]
struct Timer(BTreeMap<&'static str, f64>);

impl Timer {
    fn time<T>(&mut self, phase: &'static str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        *self.0.entry(phase).or_default() += t0.elapsed().as_secs_f64();
        out
    }
}

const PHASES: [&str; 6] = [
    "batch",
    "forward_backward",
    "allreduce",
    "optimizer",
    "eval",
    "checkpoint",
];

pub struct Trainer<'a> {
    cfg: &'a Config,
    dist: &'a Dist,
    ds: Dataset,
    train: Split,
    test: Split,
    device: Device,
    _vs: VarStore,
    model: Mpnn,
    params: Params,
    adam: Adam,
    metrics: Metrics,
    step: usize,
}

impl<'a> Trainer<'a> {
    pub fn new(cfg: &'a Config, dist: &'a Dist) -> anyhow::Result<Trainer<'a>> {
        let root = dist.is_root();
        let path = cfg.dataset_path();
        let ds = Dataset::read(&path)?;
        let device = device::choose(cfg.train.device, dist.local_rank)?;
        log::info!(
            "rank {}/{} on {} (node-local rank {}/{}): device {}",
            dist.rank,
            dist.size,
            dist.host,
            dist.local_rank,
            dist.local_size,
            device::describe(device)
        );
        let source = RdkitSource::new(ds.featurizer.clone());
        let t0 = Instant::now();
        let train = featurize(&source, &ds, &ds.train, "training", root);
        let test = featurize(&source, &ds, &ds.test, "test", root);
        if root {
            log::info!(
                "featurized {} + {} molecules with {} in {:.2} s ({} atom, {} bond features)",
                train.graphs.len(),
                test.graphs.len(),
                source.name(),
                t0.elapsed().as_secs_f64(),
                ds.featurizer.atom_dim(),
                ds.featurizer.bond_dim()
            );
        }
        if train.graphs.is_empty() {
            anyhow::bail!(
                "{}: no training molecule could be featurized",
                path.display()
            );
        }
        tch::manual_seed(cfg.run.seed as i64);
        let vs = VarStore::new(device);
        let dims = MpnnDims {
            atom_dim: ds.featurizer.atom_dim() as i64,
            edge_dim: ds.featurizer.bond_dim() as i64,
        };
        let model = Mpnn::new(&(vs.root() / "mpnn"), dims, &cfg.mpnn);
        let params = Params::of(&vs);
        let adam = Adam::new(&params, cfg.train.lr);
        // Predict-the-training-mean baseline on the test set, in target units.
        let baseline = if test.y.is_empty() {
            f64::NAN
        } else {
            let sse: f64 = test.y.iter().map(|&y| f64::from(y).powi(2)).sum();
            (sse / test.y.len() as f64).sqrt() * ds.target_std
        };
        if root {
            log::info!(
                "MPNN with {} parameters; predict-the-mean test RMSE {:.4}",
                params.numel(),
                baseline
            );
        }
        let metrics = Metrics {
            baseline_test_rmse: baseline,
            ..Default::default()
        };
        Ok(Trainer {
            cfg,
            dist,
            ds,
            train,
            test,
            device,
            _vs: vs,
            model,
            params,
            adam,
            metrics,
            step: 0,
        })
    }

    fn checkpoint_path(&self) -> std::path::PathBuf {
        self.cfg.run.out_dir.join("checkpoint.h5")
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.graphs.len().div_ceil(self.cfg.train.batch_size)
    }

    /// Restores parameters, optimizer state, step and metrics from the checkpoint.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let path = self.checkpoint_path();
        if !path.is_file() {
            anyhow::bail!("--resume: no checkpoint at {}", path.display());
        }
        let ck = Checkpoint::read(&path, &self.params.names)?;
        if ck.seed != self.cfg.run.seed {
            anyhow::bail!(
                "--resume: checkpoint {} has seed {}, config run.seed is {}",
                path.display(),
                ck.seed,
                self.cfg.run.seed
            );
        }
        if ck.config_text != self.cfg.text && self.dist.is_root() {
            log::warn!("--resume: the config differs from the one stored in the checkpoint");
        }
        self.params.load_arrays(&ck.params, &self.params.tensors)?;
        self.params.load_arrays(&ck.adam_m, &self.adam.m)?;
        self.params.load_arrays(&ck.adam_v, &self.adam.v)?;
        self.adam.t = ck.adam_t;
        self.metrics = ck.metrics;
        self.step = ck.step as usize;
        if self.dist.is_root() {
            log::info!(
                "resumed from {} at step {} (epoch {})",
                path.display(),
                ck.step,
                ck.epoch
            );
        }
        Ok(())
    }

    fn write_checkpoint(&self) -> anyhow::Result<()> {
        let ck = Checkpoint {
            step: self.step as u64,
            epoch: (self.step / self.steps_per_epoch()) as u64,
            seed: self.cfg.run.seed,
            config_text: self.cfg.text.clone(),
            params: self.params.to_arrays(&self.params.tensors),
            adam_m: self.params.to_arrays(&self.adam.m),
            adam_v: self.params.to_arrays(&self.adam.v),
            adam_t: self.adam.t,
            metrics: self.metrics.clone(),
        };
        ck.write(&self.checkpoint_path())
    }

    fn write_metrics(&self, devices: &str) -> anyhow::Result<()> {
        let path = self.cfg.run.out_dir.join("metrics.h5");
        let info = RunInfo {
            ranks: self.dist.size as u64,
            stage: "mpnn",
            target_column: &self.ds.meta.target_column,
            devices,
            config_text: &self.cfg.text,
            config_path: &self.cfg.path.display().to_string(),
            rdkit_version: &self.ds.meta.rdkit_version,
        };
        metrics::write_file(&path, &self.metrics, &info)
    }

    /// RMSE in target units over a split, computed on shards and summed over ranks.
    fn rmse(&self, split: &Split) -> f64 {
        let range = self.dist.shard(split.graphs.len());
        let mut sse = 0f64;
        let idx: Vec<usize> = range.collect();
        tch::no_grad(|| {
            for chunk in idx.chunks(self.cfg.train.eval_batch_size) {
                let graphs: Vec<&MolGraph> = chunk.iter().map(|&i| &split.graphs[i]).collect();
                let b = GraphBatch::new(
                    &graphs,
                    self.ds.featurizer.atom_dim(),
                    self.ds.featurizer.bond_dim(),
                    self.device,
                );
                let pred = to_vec_f32(&self.model.forward(&b));
                for (p, &i) in pred.iter().zip(chunk) {
                    sse += (f64::from(*p) - f64::from(split.y[i])).powi(2);
                }
            }
        });
        let mut buf = [sse, split.graphs.len() as f64];
        self.dist.allreduce_sum_f64(&mut buf[..1]);
        (buf[0] / buf[1].max(1.0)).sqrt() * self.ds.target_std
    }

    /// Trains to the end (or to `opts.abort_after_step`).
    pub fn run(&mut self, opts: &RunOptions) -> anyhow::Result<()> {
        let root = self.dist.is_root();
        let tc = &self.cfg.train;
        let spe = self.steps_per_epoch();
        let total = (tc.epochs * spe).min(tc.max_steps.unwrap_or(usize::MAX));
        let n_train = self.train.graphs.len();
        let bar = (root && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(total as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(self.step as u64);
            pb
        });
        let mut device_names = vec![0f64; self.dist.size];
        device_names[self.dist.rank] = match self.device {
            Device::Cuda(i) => 1.0 + i as f64,
            _ => 0.0,
        };
        self.dist.allreduce_sum_f64(&mut device_names);
        let devices = device_names
            .iter()
            .map(|&d| {
                if d == 0.0 {
                    "cpu".to_string()
                } else {
                    format!("cuda:{}", d as usize - 1)
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        if root {
            log::info!(
                "training: {} ranks, {} molecules, global batch {}, {} steps/epoch, steps {}..{}",
                self.dist.size,
                n_train,
                tc.batch_size,
                spe,
                self.step,
                total
            );
        }
        let mut timer = Timer::default();
        let mut epoch_start = Instant::now();
        let mut rate_start = (Instant::now(), self.step);
        // This epoch's batch order, the same on every rank: (epoch, permutation).
        let mut perm: (usize, Vec<usize>) = (usize::MAX, Vec::new());
        while self.step < total {
            let epoch = self.step / spe;
            let bi = self.step % spe;
            if perm.0 != epoch {
                let order =
                    Stream::new(self.cfg.run.seed, "shuffle", &[epoch as u64]).permutation(n_train);
                perm = (epoch, order);
            }
            let global = &perm.1[bi * tc.batch_size..((bi + 1) * tc.batch_size).min(n_train)];
            let mine = &global[self.dist.shard(global.len())];

            self.params.zero_grad();
            let loss_sum = if mine.is_empty() {
                0.0
            } else {
                let batch = timer.time("batch", || {
                    let graphs: Vec<&MolGraph> =
                        mine.iter().map(|&i| &self.train.graphs[i]).collect();
                    let y: Vec<f32> = mine.iter().map(|&i| self.train.y[i]).collect();
                    let g = GraphBatch::new(
                        &graphs,
                        self.ds.featurizer.atom_dim(),
                        self.ds.featurizer.bond_dim(),
                        self.device,
                    );
                    (g, Tensor::from_slice(&y).to_device(self.device))
                });
                timer.time("forward_backward", || {
                    let pred = self.model.forward(&batch.0);
                    let loss = (pred - &batch.1).square().sum(Kind::Float);
                    loss.backward();
                    loss.double_value(&[])
                })
            };
            let mut flat = self.params.flat_grad();
            flat.push(loss_sum as f32);
            timer.time("allreduce", || self.dist.allreduce_sum_f32(&mut flat));
            let batch_loss = f64::from(flat.pop().unwrap_or(0.0)) / global.len() as f64;
            timer.time("optimizer", || {
                let inv = 1.0 / global.len() as f32;
                flat.iter_mut().for_each(|g| *g *= inv);
                clip_global_norm(&mut flat, tc.clip_norm);
                let grads = self.params.unflatten(&flat);
                self.adam.step(&self.params, &grads);
            });
            if !batch_loss.is_finite() {
                anyhow::bail!(
                    "training diverged at step {}: loss is {batch_loss}",
                    self.step + 1
                );
            }
            self.metrics.step_loss.push(batch_loss);
            self.step += 1;
            if let Some(pb) = &bar {
                pb.set_position(self.step as u64);
                pb.set_message(format!("epoch {} loss {batch_loss:.4}", epoch + 1));
            } else if root && self.step.is_multiple_of(tc.log_every) {
                let (t0, s0) = rate_start;
                let rate = (self.step - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                log::info!(
                    "step {}/{total} epoch {} loss {batch_loss:.4} ({rate:.2} steps/s)",
                    self.step,
                    epoch + 1
                );
                rate_start = (Instant::now(), self.step);
            }

            let epoch_done = self.step.is_multiple_of(spe);
            if epoch_done {
                let (tr, te) =
                    timer.time("eval", || (self.rmse(&self.train), self.rmse(&self.test)));
                self.finish_epoch(&mut timer, epoch_start, tr, te);
                if root {
                    let msg = format!(
                        "epoch {}/{}: train RMSE {tr:.4}, test RMSE {te:.4} (predict-the-mean {:.4}), {:.1} s",
                        epoch + 1,
                        tc.epochs,
                        self.metrics.baseline_test_rmse,
                        self.metrics.epoch_wall_s.last().copied().unwrap_or(0.0)
                    );
                    match &bar {
                        Some(pb) => pb.println(msg),
                        None => log::info!("{msg}"),
                    }
                }
                epoch_start = Instant::now();
            }
            if root && epoch_done {
                self.write_metrics(&devices)?;
            }
            if self.step.is_multiple_of(tc.checkpoint_every) || self.step == total {
                if root {
                    timer.time("checkpoint", || self.write_checkpoint())?;
                }
                self.dist.barrier();
            }
            if opts.abort_after_step == Some(self.step) {
                log::warn!("--abort-after-step {}: stopping abruptly", self.step);
                std::process::exit(86);
            }
        }
        if let Some(pb) = bar {
            pb.finish_and_clear();
        }
        if root {
            self.write_metrics(&devices).with_context(|| {
                format!("writing metrics in {}", self.cfg.run.out_dir.display())
            })?;
            log::info!(
                "done: {} steps; outputs in {}",
                self.step,
                self.cfg.run.out_dir.display()
            );
        }
        Ok(())
    }

    fn finish_epoch(&mut self, timer: &mut Timer, start: Instant, train_rmse: f64, test_rmse: f64) {
        let vals: Vec<f64> = PHASES
            .iter()
            .map(|p| timer.0.get(p).copied().unwrap_or(0.0))
            .collect();
        let mut max = vals.clone();
        let mut sum = vals;
        self.dist.allreduce_max_f64(&mut max);
        self.dist.allreduce_sum_f64(&mut sum);
        for (i, p) in PHASES.iter().enumerate() {
            self.metrics
                .timing_max
                .entry(p.to_string())
                .or_default()
                .push(max[i]);
            self.metrics
                .timing_mean
                .entry(p.to_string())
                .or_default()
                .push(sum[i] / self.dist.size as f64);
        }
        timer.0.clear();
        self.metrics.epoch_step.push(self.step as u64);
        self.metrics.train_rmse.push(train_rmse);
        self.metrics.test_rmse.push(test_rmse);
        self.metrics
            .epoch_wall_s
            .push(start.elapsed().as_secs_f64());
    }
}

/// `zo-hpc train` with `train.stage = "mpnn"`.
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<()> {
    let mut t = Trainer::new(cfg, dist)?;
    if opts.resume {
        t.resume()?;
    }
    t.run(opts)
}
