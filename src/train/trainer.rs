//! The data-parallel training loop shared by every stage. A stage supplies an
//! `Objective` (its model, data and loss); the loop does the rest identically for
//! all of them: the seeded global batch order, this rank's shard of each global
//! batch, one allreduce of the flat gradient buffer (with the loss and its terms
//! appended) or, with `train.micro_batch`, an exact fixed-point sum of fixed
//! micro-batches' gradients (`exact`: bitwise the same for any rank count),
//! division by the global batch size, clipping, Adam, per-epoch
//! evaluation, metrics, atomic checkpoints, `--resume`, progress and timings.
use super::adam::{clip_global_norm, Adam};
use super::params::Params;
use super::stop::Outcome;
use super::RunOptions;
use crate::config::Config;
use crate::dist::Dist;
use crate::io::checkpoint::Checkpoint;
use crate::io::metrics::{self, Metrics, RunInfo};
use crate::zo::rng::Stream;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device, Tensor};

/// What one rank computed for its shard in one step. The objective has already
/// put its gradients (sums over the shard) into the parameters' `.grad`.
#[derive(Debug, Default, Clone)]
pub struct StepOut {
    /// The loss summed over the shard.
    pub loss: f64,
    /// Sums of the terms, in `terms()` order.
    pub terms: Vec<f64>,
    /// `n_projections()` numbers summed over ranks in the step's one allreduce
    /// (Stage 2: the decoder directions' projection scalars), handed back to
    /// `apply_reduced`.
    pub projections: Vec<f64>,
    /// Counters summed over ranks, in `counters()` order (queries, failures…).
    pub counts: Vec<f64>,
    /// Seconds of this rank in each of `phases()`.
    pub phase_s: Vec<f64>,
}

impl StepOut {
    /// Adds another micro-batch's sums (element-wise; missing entries count as 0).
    fn add(&mut self, o: &StepOut) {
        fn add_into(dst: &mut Vec<f64>, src: &[f64]) {
            if dst.len() < src.len() {
                dst.resize(src.len(), 0.0);
            }
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        self.loss += o.loss;
        add_into(&mut self.terms, &o.terms);
        add_into(&mut self.projections, &o.projections);
        add_into(&mut self.counts, &o.counts);
        add_into(&mut self.phase_s, &o.phase_s);
    }
}

/// What a training stage provides to the loop.
pub trait Objective {
    /// Stage name, stored in the metrics.
    fn stage(&self) -> &'static str;
    /// Number of training samples (indices `0..n`).
    fn n_train(&self) -> usize;
    /// Names of the loss terms reported next to the total (may be empty).
    fn terms(&self) -> Vec<&'static str>;
    /// Gradients of the loss SUMMED over `samples` (training indices of this
    /// rank's shard) at global step `step`, accumulated into the parameters'
    /// `.grad` (first-order parts by backprop, zeroth-order estimates chained in
    /// by the objective). Never called with an empty shard.
    fn step(&mut self, samples: &[usize], step: usize) -> StepOut;
    /// Length of `StepOut::projections` (constant over a run).
    fn n_projections(&self) -> usize {
        0
    }
    /// Called on every rank after the allreduce with the projections summed over
    /// ranks: adds what they imply to the flat gradient sum `grad` (same layout as
    /// `Params::flat_grad`, not yet divided by the global batch size).
    fn apply_reduced(&self, _step: usize, _projections: &[f64], _grad: &mut [f32]) {}
    /// Names of the per-step counters (summed over ranks; stored per step).
    fn counters(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Names of the objective's own per-step phases (max and mean over ranks are
    /// stored per step, next to the loop's allreduce and optimizer).
    fn phases(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Values derived from one step's counters (summed over ranks) and its wall
    /// time (slowest rank), stored per step (e.g. flip rate, queries per second).
    fn derived(&self, _counts: &[f64], _step_s: f64) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// End-of-epoch evaluation as (name, value) pairs; every rank calls it (it may
    /// use collectives of `dist`).
    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)>;
    /// Constant facts for the metrics file (e.g. a baseline), as attributes.
    fn scalars(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// The target column or other description, for the metrics file.
    fn describe(&self) -> String {
        String::new()
    }
}

/// A first-order step: backward of the summed loss.
pub fn backward_step(loss: Tensor, terms: Vec<f64>) -> StepOut {
    loss.backward();
    StepOut {
        loss: loss.double_value(&[]),
        terms,
        ..Default::default()
    }
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

const PHASES: [&str; 5] = [
    "forward_backward",
    "allreduce",
    "optimizer",
    "eval",
    "checkpoint",
];

pub struct Trainer<'a, O: Objective> {
    cfg: &'a Config,
    dist: &'a Dist,
    obj: O,
    device: Device,
    params: Params,
    adam: Adam,
    metrics: Metrics,
    step: usize,
    rdkit_version: String,
    /// Floats in the last step's allreduce (recorded in the metrics).
    allreduce_len: usize,
}

impl<'a, O: Objective> Trainer<'a, O> {
    /// `vs` holds the objective's parameters (initialized identically on every rank).
    pub fn new(cfg: &'a Config, dist: &'a Dist, obj: O, vs: &VarStore) -> Trainer<'a, O> {
        Self::with_params(cfg, dist, obj, Params::of(vs), vs.device())
    }

    /// Trains only `params` (e.g. without a frozen decoder).
    pub fn with_params(
        cfg: &'a Config,
        dist: &'a Dist,
        obj: O,
        params: Params,
        device: Device,
    ) -> Trainer<'a, O> {
        let adam = Adam::new(&params, cfg.train.lr);
        let mut metrics = Metrics::default();
        metrics.scalars.extend(obj.scalars());
        if dist.is_root() {
            log::info!("{}: {} parameters", obj.stage(), params.numel());
        }
        Trainer {
            cfg,
            dist,
            obj,
            device,
            params,
            adam,
            metrics,
            step: 0,
            rdkit_version: crate::chem::rdkit_version(),
            allreduce_len: 0,
        }
    }

    fn checkpoint_path(&self) -> std::path::PathBuf {
        self.cfg.run.out_dir.join("checkpoint.h5")
    }

    fn steps_per_epoch(&self) -> usize {
        self.obj.n_train().div_ceil(self.cfg.train.batch_size)
    }

    /// Restores parameters, optimizer state, step and metrics from the checkpoint.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let path = self.checkpoint_path();
        let prev = crate::io::checkpoint::previous_path(&path);
        if !path.is_file() && !prev.is_file() {
            anyhow::bail!("--resume: no checkpoint at {}", path.display());
        }
        let (ck, used) = Checkpoint::read_or_previous(&path, &self.params.names)?;
        if used != path && path.is_file() && self.dist.is_root() {
            // Out of the rotation: the next checkpoint would make it the previous one.
            let aside = path.with_extension("damaged.h5");
            match std::fs::rename(&path, &aside) {
                Ok(()) => log::warn!("kept the damaged checkpoint as {}", aside.display()),
                Err(e) => log::warn!("could not move {} aside: {e}", path.display()),
            }
        }
        let path = used;
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

    /// Steps of the whole stage.
    pub fn total_steps(&self) -> usize {
        let tc = &self.cfg.train;
        (tc.epochs * self.steps_per_epoch()).min(tc.max_steps.unwrap_or(usize::MAX))
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
            stage_key: self.stage_key(),
            complete: self.step >= self.total_steps(),
        };
        Ok(ck.write(&self.checkpoint_path())?)
    }

    fn stage_key(&self) -> String {
        self.cfg
            .train
            .stage
            .map(|s| self.cfg.stage_key(s))
            .unwrap_or_default()
    }

    fn write_metrics(&self, devices: &str) -> anyhow::Result<()> {
        let path = self.cfg.run.out_dir.join("metrics.h5");
        let info = RunInfo {
            ranks: self.dist.size as u64,
            stage: self.obj.stage(),
            target_column: &self.obj.describe(),
            devices,
            config_text: &self.cfg.text,
            config_path: &self.cfg.path.display().to_string(),
            rdkit_version: &self.rdkit_version,
        };
        Ok(metrics::write_file(&path, &self.metrics, &info)?)
    }

    /// Every rank's device, as "cpu,cuda:0,…".
    fn devices(&self) -> String {
        let mut code = vec![0f64; self.dist.size];
        code[self.dist.rank] = match self.device {
            Device::Cuda(i) => 1.0 + i as f64,
            _ => 0.0,
        };
        self.dist.allreduce_sum_f64(&mut code);
        code.iter()
            .map(|&d| {
                if d == 0.0 {
                    "cpu".to_string()
                } else {
                    format!("cuda:{}", d as usize - 1)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `obj.step` on `samples`, its seconds added to the timer and appended to
    /// `phase_s` (as the step's own total).
    fn timed_step(
        &mut self,
        samples: &[usize],
        phases: &[&'static str],
        timer: &mut Timer,
    ) -> StepOut {
        let t0 = Instant::now();
        let mut out = self.obj.step(samples, self.step);
        let secs = t0.elapsed().as_secs_f64();
        *timer.0.entry("forward_backward").or_default() += secs;
        for (p, s) in phases.iter().zip(&out.phase_s) {
            *timer.0.entry(p).or_default() += s;
        }
        out.phase_s.push(secs);
        out
    }

    /// Trains to the end, or stops early with a checkpoint when `opts.stop` asks
    /// (or abruptly at `opts.abort_after_step`).
    pub fn run(&mut self, opts: &RunOptions) -> anyhow::Result<Outcome> {
        let root = self.dist.is_root();
        let cfg: &'a Config = self.cfg;
        let tc = &cfg.train;
        let spe = self.steps_per_epoch();
        let total = self.total_steps();
        let n_train = self.obj.n_train();
        let terms = self.obj.terms();
        let counters = self.obj.counters();
        let phases = self.obj.phases();
        let n_proj = self.obj.n_projections();
        // What evaluation gives (known from the metrics when resuming), so epochs
        // between evaluations (`eval_every`) record NaN for each.
        let mut eval_names: Option<Vec<String>> = {
            let known: Vec<String> = self
                .metrics
                .epoch
                .keys()
                .filter(|k| *k != "wall_s")
                .cloned()
                .collect();
            (!known.is_empty()).then_some(known)
        };
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
        let devices = self.devices();
        if root {
            log::info!(
                "training {}: {} ranks, {} samples, global batch {}, {} steps/epoch, steps {}..{}",
                self.obj.stage(),
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
        // For `opts.stop`: the longest step so far (epoch evaluation included) and
        // checkpoint write, the margin kept before a deadline; the step whose
        // checkpoint is on disk (a resumed run starts from one). At least one step
        // is taken per invocation, so that a chain of jobs always advances.
        let (mut longest, mut ck_s) = (Duration::ZERO, Duration::ZERO);
        let first = self.step;
        let mut ck_step = (self.step > 0).then_some(self.step);
        while self.step < total {
            if self.step > first
                && opts.stop.active()
                && opts.stop.wanted_by_any(self.dist, longest + ck_s)
            {
                if root {
                    if ck_step != Some(self.step) {
                        timer.time("checkpoint", || self.write_checkpoint())?;
                    }
                    self.write_metrics(&devices)?;
                    log::warn!(
                        "stopping at step {}/{total}: {}; checkpoint written, run the same command with --resume to continue",
                        self.step,
                        opts.stop.reason()
                    );
                }
                self.dist.barrier();
                if let Some(pb) = bar {
                    pb.finish_and_clear();
                }
                return Ok(Outcome::Stopped);
            }
            let step_start = Instant::now();
            let epoch = self.step / spe;
            let bi = self.step % spe;
            if perm.0 != epoch {
                let order =
                    Stream::new(self.cfg.run.seed, "shuffle", &[epoch as u64]).permutation(n_train);
                perm = (epoch, order);
            }
            let global = &perm.1[bi * tc.batch_size..((bi + 1) * tc.batch_size).min(n_train)];

            // With `train.micro_batch`: this rank's whole micro-batches, each one's
            // [gradient | projections] kept apart for the exact sum (`exact`).
            let micro: Option<Vec<&[usize]>> = tc.micro_batch.map(|m| global.chunks(m).collect());
            let mut parts: Vec<Vec<f64>> = Vec::new();
            let out = match &micro {
                None => {
                    let mine = &global[self.dist.shard(global.len())];
                    self.params.zero_grad();
                    if mine.is_empty() {
                        StepOut::default()
                    } else {
                        self.timed_step(mine, &phases, &mut timer)
                    }
                }
                Some(mbs) => {
                    let mut acc = StepOut::default();
                    for mb in &mbs[self.dist.shard(mbs.len())] {
                        self.params.zero_grad();
                        let o = self.timed_step(mb, &phases, &mut timer);
                        let mut part: Vec<f64> =
                            self.params.flat_grad().into_iter().map(f64::from).collect();
                        part.extend(
                            (0..n_proj).map(|i| o.projections.get(i).copied().unwrap_or(0.0)),
                        );
                        parts.push(part);
                        acc.add(&o);
                    }
                    acc
                }
            };
            // One float allreduce per step: [gradients (not with micro-batches) |
            // loss | terms | projections | counters | per-rank phase seconds
            // (ranks × (phases + 1))].
            let mut flat = if micro.is_some() {
                Vec::new()
            } else {
                self.params.flat_grad()
            };
            let n_grad = flat.len();
            let n_params = self.params.numel();
            flat.push(out.loss as f32);
            fn pad(v: &[f64], n: usize) -> Vec<f32> {
                (0..n)
                    .map(|i| v.get(i).copied().unwrap_or(0.0) as f32)
                    .collect()
            }
            flat.extend(pad(&out.terms, terms.len()));
            flat.extend(pad(&out.projections, n_proj));
            flat.extend(pad(&out.counts, counters.len()));
            let per_rank = phases.len() + 1;
            let mut times = vec![0f32; self.dist.size * per_rank];
            for (i, v) in pad(&out.phase_s, per_rank).into_iter().enumerate() {
                times[self.dist.rank * per_rank + i] = v;
            }
            flat.extend(times);
            if self.allreduce_len != flat.len() {
                self.allreduce_len = flat.len();
                let m = &mut self.metrics.scalars;
                m.insert("allreduce_floats_per_step".into(), flat.len() as f64);
                m.insert("trained_parameters".into(), n_params as f64);
                m.insert("projection_scalars_per_step".into(), n_proj as f64);
                if micro.is_some() {
                    m.insert(
                        "exact_allreduce_i64_per_step".into(),
                        (n_params + n_proj) as f64,
                    );
                }
            }
            let t_ar = Instant::now();
            self.dist.allreduce_sum_f32(&mut flat);
            let tail = flat.split_off(n_grad);
            // The exact sum of the micro-batches' [gradient | projections].
            let exact = micro.as_ref().map(|mbs| {
                let mut blocks = self.params.numels().to_vec();
                blocks.push(n_proj);
                let mut sum = super::exact::sum_over_ranks(self.dist, &blocks, &parts, mbs.len());
                let projections = sum.split_off(n_params);
                let grad: Vec<f32> = sum.into_iter().map(|v| v as f32).collect();
                (grad, projections)
            });
            drop(parts);
            let ar_s = t_ar.elapsed().as_secs_f64();
            *timer.0.entry("allreduce").or_default() += ar_s;
            let scale = 1.0 / global.len() as f64;
            let batch_loss = f64::from(tail[0]) * scale;
            let mut at = 1;
            let mut take = |n: usize| {
                let v: Vec<f64> = tail[at..at + n].iter().map(|&x| f64::from(x)).collect();
                at += n;
                v
            };
            let term_sums = take(terms.len());
            let mut projections = take(n_proj);
            let counts = take(counters.len());
            let times = take(self.dist.size * per_rank);
            for (name, v) in terms.iter().zip(&term_sums) {
                self.metrics.push_step(name, v * scale);
            }
            for (name, v) in counters.iter().zip(&counts) {
                self.metrics.push_step(name, *v);
            }
            let ranks = self.dist.size as f64;
            let col = |i: usize| -> (f64, f64) {
                let v = (0..self.dist.size).map(|r| times[r * per_rank + i]);
                (v.clone().fold(0f64, f64::max), v.sum::<f64>() / ranks)
            };
            for (i, p) in phases.iter().enumerate() {
                let (max, mean) = col(i);
                self.metrics.push_step(&format!("time_{p}"), max);
                self.metrics.push_step(&format!("time_{p}_mean"), mean);
            }
            let (step_max, step_mean) = col(phases.len());
            if !phases.is_empty() {
                self.metrics.push_step("time_allreduce", ar_s);
                self.metrics.push_step("time_step", step_max);
                self.metrics.push_step(
                    "imbalance",
                    if step_mean > 0.0 {
                        step_max / step_mean
                    } else {
                        1.0
                    },
                );
                for (name, v) in self.obj.derived(&counts, step_max) {
                    self.metrics.push_step(name, v);
                }
            }
            if let Some((grad, proj)) = exact {
                flat = grad;
                projections = proj;
            }
            let t_opt = Instant::now();
            self.obj.apply_reduced(self.step, &projections, &mut flat);
            let inv = scale as f32;
            flat.iter_mut().for_each(|g| *g *= inv);
            clip_global_norm(&mut flat, tc.clip_norm);
            let grads = self.params.unflatten(&flat);
            self.adam.step(&self.params, &grads);
            let opt_s = t_opt.elapsed().as_secs_f64();
            *timer.0.entry("optimizer").or_default() += opt_s;
            if !phases.is_empty() {
                self.metrics.push_step("time_optimizer", opt_s);
            }
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
                let detail: Vec<String> = terms
                    .iter()
                    .map(|t| {
                        format!(
                            "{t} {:.4}",
                            self.metrics
                                .step_terms
                                .get(*t)
                                .and_then(|v| v.last())
                                .copied()
                                .unwrap_or(0.0)
                        )
                    })
                    .collect();
                log::info!(
                    "step {}/{total} epoch {} loss {batch_loss:.4} {}({rate:.2} steps/s)",
                    self.step,
                    epoch + 1,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!("[{}] ", detail.join(", "))
                    }
                );
                rate_start = (Instant::now(), self.step);
            }

            let epoch_done = self.step.is_multiple_of(spe);
            if epoch_done {
                let n = self.step / spe;
                let due = n == 1 || n.is_multiple_of(tc.eval_every.max(1)) || self.step == total;
                let values = match (&eval_names, due) {
                    (Some(names), false) => names.iter().map(|k| (k.clone(), f64::NAN)).collect(),
                    _ => timer.time("eval", || self.obj.evaluate(self.dist)),
                };
                eval_names = Some(values.iter().map(|(k, _)| k.clone()).collect());
                self.finish_epoch(&mut timer, epoch_start, &values);
                if root {
                    let shown: Vec<String> = values
                        .iter()
                        .filter(|(_, v)| !v.is_nan())
                        .map(|(k, v)| format!("{k} {v:.4}"))
                        .collect();
                    let msg = format!(
                        "epoch {}/{}: {} ({:.1} s)",
                        epoch + 1,
                        tc.epochs,
                        if shown.is_empty() {
                            "not evaluated (eval_every)".to_string()
                        } else {
                            shown.join(", ")
                        },
                        self.metrics
                            .epoch
                            .get("wall_s")
                            .and_then(|v| v.last())
                            .copied()
                            .unwrap_or(0.0)
                    );
                    match &bar {
                        Some(pb) => pb.println(msg),
                        None => log::info!("{msg}"),
                    }
                    self.write_metrics(&devices)?;
                }
                epoch_start = Instant::now();
            }
            if self.step.is_multiple_of(tc.checkpoint_every) || self.step == total {
                if root {
                    let t = Instant::now();
                    timer.time("checkpoint", || self.write_checkpoint())?;
                    ck_s = ck_s.max(t.elapsed());
                }
                self.dist.barrier();
                ck_step = Some(self.step);
            }
            longest = longest.max(step_start.elapsed());
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
        Ok(Outcome::Done)
    }

    fn finish_epoch(&mut self, timer: &mut Timer, start: Instant, values: &[(String, f64)]) {
        let mut names: Vec<&str> = PHASES.to_vec();
        names.extend(self.obj.phases());
        let vals: Vec<f64> = names
            .iter()
            .map(|p| timer.0.get(p).copied().unwrap_or(0.0))
            .collect();
        let mut max = vals.clone();
        let mut sum = vals;
        self.dist.allreduce_max_f64(&mut max);
        self.dist.allreduce_sum_f64(&mut sum);
        for (i, p) in names.iter().enumerate() {
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
        for (k, v) in values {
            self.metrics.epoch.entry(k.clone()).or_default().push(*v);
        }
        self.metrics
            .epoch
            .entry("wall_s".into())
            .or_default()
            .push(start.elapsed().as_secs_f64());
    }
}
