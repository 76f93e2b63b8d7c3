//! The data-parallel training loop shared by every stage. A stage supplies an
//! `Objective` (its model, data and loss); the loop does the rest identically for
//! all of them: the seeded global batch order, this rank's shard of each global
//! batch, one allreduce of the flat gradient buffer (with the loss and its terms
//! appended) or, with `train.micro_batch`, an exact fixed-point sum of fixed
//! micro-batches' gradients (`exact`: bitwise the same for any rank count),
//! division by the global batch size, clipping, Adam, per-epoch
//! evaluation, metrics, atomic checkpoints, `--resume`, progress and timings.
//!
//! `run` is a list of named phases: the stop check (`stop_wanted`, `stop_early`),
//! `train_step` (`forward_backward`, the allreduce laid out by `reduce`,
//! `record_step`, `optimize`), `end_epoch`, `checkpoint_if_due` and
//! `finish_run`; the objective's side is in `objective`, the display in
//! `progress`.
use super::adam::{clip_global_norm, Adam};
mod evals;

pub use super::objective::{backward_step, Objective, StepOut};
use super::params::Params;
use super::progress::Progress;
use super::reduce::{self, Layout, Reduced};
use super::stop::Outcome;
use super::RunOptions;
use crate::config::Config;
use crate::dist::Dist;
use crate::io::checkpoint::Checkpoint;
use crate::io::metrics::{self, Metrics, RunInfo};
use crate::zo::rng::Stream;
use anyhow::Context;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device};

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

/// What `run` carries from one step to the next.
struct RunState {
    /// Steps per epoch, steps of the stage, training samples.
    spe: usize,
    total: usize,
    n_train: usize,
    layout: Layout,
    progress: Progress,
    /// Every rank's device, for the metrics file.
    devices: String,
    timer: Timer,
    epoch_start: Instant,
    order: BatchOrder,
    /// What evaluation gives (known from the metrics when resuming), so epochs
    /// between evaluations (`eval_every`) record NaN for each.
    eval_names: Option<Vec<String>>,
    /// The step and values of the last epoch evaluation, reused by the evaluation
    /// every `eval_every_steps` when both fall on one step.
    last_eval: Option<(usize, Vec<(String, f64)>)>,
    /// For `opts.stop`: the longest step so far (epoch evaluation included) and
    /// checkpoint write, the margin kept before a deadline; the step whose
    /// checkpoint is on disk (a resumed run starts from one). At least one step
    /// is taken per invocation (from `first`), so that a chain of jobs always
    /// advances.
    longest: Duration,
    ck_s: Duration,
    first: usize,
    ck_step: Option<usize>,
}

/// This epoch's batch order, the same on every rank.
struct BatchOrder {
    epoch: usize,
    order: Vec<usize>,
}

impl BatchOrder {
    /// Global batch `bi` of `epoch` (whose permutation is drawn when it begins).
    fn batch(&mut self, cfg: &Config, epoch: usize, bi: usize, n_train: usize) -> &[usize] {
        if self.epoch != epoch {
            let order = Stream::new(cfg.run.seed, "shuffle", &[epoch as u64]).permutation(n_train);
            *self = BatchOrder { epoch, order };
        }
        let bs = cfg.train.batch_size;
        &self.order[bi * bs..((bi + 1) * bs).min(n_train)]
    }
}

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
        self.obj.restore(&self.metrics);
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
        let mut st = self.start_run(opts.max_steps);
        while self.step < st.total {
            if self.stop_wanted(opts, &st) {
                return self.stop_early(opts, &mut st);
            }
            let step_start = Instant::now();
            let epoch = self.step / st.spe;
            let bi = self.step % st.spe;
            let global = st.order.batch(self.cfg, epoch, bi, st.n_train);
            let batch_loss = match self.train_step(global, &st.layout, &mut st.timer) {
                Ok(loss) => loss,
                Err(e) => return Err(self.metrics_then(e, &st)),
            };
            let at = (self.step, st.total, epoch);
            let terms = &st.layout.terms;
            let log_every = self.cfg.train.log_every;
            st.progress
                .step(at, batch_loss, log_every, terms, &self.metrics);
            if self.step.is_multiple_of(st.spe) {
                self.end_epoch(epoch, &mut st)?;
            }
            if self
                .cfg
                .train
                .eval_every_steps
                .is_some_and(|n| self.step.is_multiple_of(n))
            {
                self.eval_at_step(&mut st)?;
            }
            self.checkpoint_if_due(&mut st)?;
            st.longest = st.longest.max(step_start.elapsed());
            if opts.abort_after_step == Some(self.step) {
                log::warn!("--abort-after-step {}: stopping abruptly", self.step);
                std::process::exit(86);
            }
        }
        self.finish_run(&mut st)
    }

    /// Before the first step: the run's fixed facts, the progress display, every
    /// rank's device (collective) and the opening log line.
    fn start_run(&mut self, max_steps: Option<usize>) -> RunState {
        let root = self.dist.is_root();
        let spe = self.steps_per_epoch();
        // This invocation's last step: the stage's, or `--max-steps`'s.
        let total = self.total_steps().min(max_steps.unwrap_or(usize::MAX));
        let n_train = self.obj.n_train();
        let layout = Layout {
            terms: self.obj.terms(),
            counters: self.obj.counters(),
            phases: self.obj.phases(),
            n_proj: self.obj.n_projections(),
            ranks: self.dist.size,
            rank: self.dist.rank,
        };
        let eval_names = self.known_eval_names();
        let progress = Progress::new(root, total, self.step);
        let devices = self.devices();
        if root {
            log::info!(
                "training {}: {} ranks, {} samples, global batch {}, {} steps/epoch, steps {}..{}",
                self.obj.stage(),
                self.dist.size,
                n_train,
                self.cfg.train.batch_size,
                spe,
                self.step,
                total
            );
        }
        RunState {
            spe,
            total,
            n_train,
            layout,
            progress,
            devices,
            timer: Timer::default(),
            epoch_start: Instant::now(),
            order: BatchOrder {
                epoch: usize::MAX,
                order: Vec::new(),
            },
            eval_names,
            last_eval: None,
            longest: Duration::ZERO,
            ck_s: Duration::ZERO,
            first: self.step,
            ck_step: (self.step > 0).then_some(self.step),
        }
    }

    /// Whether to stop before this step: asked only when something can ask for a
    /// stop (then collective) and never before this invocation's first step.
    fn stop_wanted(&self, opts: &RunOptions, st: &RunState) -> bool {
        self.step > st.first
            && opts.stop.active()
            && opts.stop.wanted_by_any(self.dist, st.longest + st.ck_s)
    }

    /// Stops before this step: rank 0 writes the checkpoint (unless this step's is
    /// on disk) and the metrics, then every rank leaves together.
    fn stop_early(&mut self, opts: &RunOptions, st: &mut RunState) -> anyhow::Result<Outcome> {
        if self.dist.is_root() {
            if st.ck_step != Some(self.step) {
                st.timer.time("checkpoint", || self.write_checkpoint())?;
            }
            self.write_metrics(&st.devices)?;
            log::warn!(
                "stopping at step {}/{}: {}; checkpoint written, run the same command with --resume to continue",
                self.step,
                st.total,
                opts.stop.reason()
            );
        }
        self.dist.barrier();
        st.progress.finish();
        Ok(Outcome::Stopped)
    }

    /// One step on the global batch `global`: this rank's forward and backward,
    /// the step's one allreduce (and with micro-batches the exact sum), the step's
    /// metrics and the optimizer. Returns the global batch's mean loss.
    fn train_step(
        &mut self,
        global: &[usize],
        layout: &Layout,
        timer: &mut Timer,
    ) -> anyhow::Result<f64> {
        let micro: Option<Vec<&[usize]>> = self
            .cfg
            .train
            .micro_batch
            .map(|m| global.chunks(m).collect());
        let (out, parts) = self.forward_backward(global, micro.as_deref(), layout, timer);
        let grad = if micro.is_some() {
            Vec::new()
        } else {
            self.params.flat_grad()
        };
        let n_grad = grad.len();
        let mut flat = layout.pack(grad, &out);
        self.note_allreduce_len(flat.len(), layout.n_proj, micro.is_some());
        let t_ar = Instant::now();
        self.dist.allreduce_sum_f32(&mut flat);
        let tail = flat.split_off(n_grad);
        // The exact sum of the micro-batches' [gradient | projections].
        let exact = micro.as_ref().map(|mbs| {
            let (numels, n_params) = (self.params.numels(), self.params.numel());
            reduce::exact_sum(
                self.dist,
                numels,
                n_params,
                layout.n_proj,
                &parts,
                mbs.len(),
            )
        });
        drop(parts);
        let ar_s = t_ar.elapsed().as_secs_f64();
        *timer.0.entry("allreduce").or_default() += ar_s;
        let scale = 1.0 / global.len() as f64;
        let reduced = layout.unpack(&tail);
        let batch_loss = f64::from(reduced.loss) * scale;
        self.record_step(layout, &reduced, scale, ar_s);
        self.obj
            .observe(&reduced.counts)
            .map_err(anyhow::Error::msg)?;
        let (mut grad, projections) = exact.unwrap_or((flat, reduced.projections));
        self.optimize(&projections, &mut grad, scale, layout, timer);
        if !batch_loss.is_finite() {
            anyhow::bail!(
                "training diverged at step {}: loss is {batch_loss}",
                self.step + 1
            );
        }
        self.metrics.step_loss.push(batch_loss);
        self.step += 1;
        Ok(batch_loss)
    }

    /// This rank's part of the global batch through the objective: without
    /// micro-batches its shard (the gradients stay in the parameters' `.grad`);
    /// with `micro` its whole micro-batches, each one's [gradient | projections]
    /// kept apart (returned) for the exact sum (`exact`). Returns the summed
    /// outputs and those parts.
    fn forward_backward(
        &mut self,
        global: &[usize],
        micro: Option<&[&[usize]]>,
        layout: &Layout,
        timer: &mut Timer,
    ) -> (StepOut, Vec<Vec<f64>>) {
        let mut parts: Vec<Vec<f64>> = Vec::new();
        let out = match micro {
            None => {
                let mine = &global[self.dist.shard(global.len())];
                self.params.zero_grad();
                if mine.is_empty() {
                    StepOut::default()
                } else {
                    self.timed_step(mine, &layout.phases, timer)
                }
            }
            Some(mbs) => {
                let mut acc = StepOut::default();
                for mb in &mbs[self.dist.shard(mbs.len())] {
                    self.params.zero_grad();
                    let o = self.timed_step(mb, &layout.phases, timer);
                    let grad = self.params.flat_grad();
                    parts.push(reduce::micro_part(grad, &o.projections, layout.n_proj));
                    acc.add(&o);
                }
                acc
            }
        };
        (out, parts)
    }

    /// Records the allreduce's size (and what it is made of) in the metrics when
    /// it changes, i.e. at the first step.
    fn note_allreduce_len(&mut self, len: usize, n_proj: usize, exact: bool) {
        if self.allreduce_len == len {
            return;
        }
        self.allreduce_len = len;
        let n_params = self.params.numel();
        let m = &mut self.metrics.scalars;
        m.insert("allreduce_floats_per_step".into(), len as f64);
        m.insert("trained_parameters".into(), n_params as f64);
        m.insert("projection_scalars_per_step".into(), n_proj as f64);
        if exact {
            m.insert(
                "exact_allreduce_i64_per_step".into(),
                (n_params + n_proj) as f64,
            );
        }
    }

    /// The step's metrics from the reduced sums: the terms' means and the
    /// counters; with the objective's own phases also their times (slowest rank
    /// and mean), the allreduce's, the step's, the imbalance and derived values.
    fn record_step(&mut self, layout: &Layout, r: &Reduced, scale: f64, ar_s: f64) {
        for (name, v) in layout.terms.iter().zip(&r.terms) {
            self.metrics.push_step(name, v * scale);
        }
        for (name, v) in layout.counters.iter().zip(&r.counts) {
            self.metrics.push_step(name, *v);
        }
        for (i, p) in layout.phases.iter().enumerate() {
            let (max, mean) = r.phase_time(layout, i);
            self.metrics.push_step(&format!("time_{p}"), max);
            self.metrics.push_step(&format!("time_{p}_mean"), mean);
        }
        let (step_max, step_mean) = r.phase_time(layout, layout.phases.len());
        if !layout.phases.is_empty() {
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
        }
        for (name, v) in self.obj.derived(self.step, &r.counts, step_max) {
            self.metrics.push_step(name, v);
        }
    }

    /// The update from the summed gradient `grad`: the objective's share from the
    /// summed projections, division by the global batch size (`scale`), clipping
    /// and Adam.
    fn optimize(
        &mut self,
        projections: &[f64],
        grad: &mut [f32],
        scale: f64,
        layout: &Layout,
        timer: &mut Timer,
    ) {
        let t_opt = Instant::now();
        let parts = self.obj.apply_reduced(self.step, projections, grad, scale);
        let inv = scale as f32;
        grad.iter_mut().for_each(|g| *g *= inv);
        let norm = clip_global_norm(grad, self.cfg.train.clip_norm);
        if !layout.phases.is_empty() {
            self.metrics.push_step("grad_norm", norm);
            for (name, v) in parts {
                self.metrics.push_step(name, v);
            }
        }
        let grads = self.params.unflatten(grad);
        if let Some(d) = &self.cfg.train.lr_decay {
            self.adam.lr = d.rate(self.cfg.train.lr, self.step);
            self.metrics.push_step("lr", self.adam.lr);
        }
        self.adam.step(&self.params, &grads);
        let opt_s = t_opt.elapsed().as_secs_f64();
        *timer.0.entry("optimizer").or_default() += opt_s;
        if !layout.phases.is_empty() {
            self.metrics.push_step("time_optimizer", opt_s);
        }
    }

    /// Every `checkpoint_every` steps and after the last: rank 0 writes the
    /// checkpoint (its time kept for `opts.stop`'s margin), all ranks wait for it.
    fn checkpoint_if_due(&mut self, st: &mut RunState) -> anyhow::Result<()> {
        if self.step.is_multiple_of(self.cfg.train.checkpoint_every) || self.step == st.total {
            if self.dist.is_root() {
                let t = Instant::now();
                st.timer.time("checkpoint", || self.write_checkpoint())?;
                st.ck_s = st.ck_s.max(t.elapsed());
            }
            self.dist.barrier();
            st.ck_step = Some(self.step);
        }
        Ok(())
    }

    /// After the last step: the bar removed, the metrics file and the closing line
    /// (rank 0).
    /// A step's error, after the metrics so far are written (rank 0): every way a
    /// run stops leaves its `metrics.h5` (a failure to write it is logged).
    fn metrics_then(&self, e: anyhow::Error, st: &RunState) -> anyhow::Error {
        if self.dist.is_root() {
            match self.write_metrics(&st.devices) {
                Ok(()) => log::info!(
                    "metrics up to the failed step written in {}",
                    self.cfg.run.out_dir.display()
                ),
                Err(w) => log::warn!("could not write the metrics after the failure: {w:#}"),
            }
        }
        e
    }

    fn finish_run(&mut self, st: &mut RunState) -> anyhow::Result<Outcome> {
        st.progress.finish();
        if self.dist.is_root() {
            self.write_metrics(&st.devices).with_context(|| {
                format!("writing metrics in {}", self.cfg.run.out_dir.display())
            })?;
            log::info!(
                "done: {} steps; outputs in {}",
                self.step,
                self.cfg.run.out_dir.display()
            );
            if self.step < self.total_steps() {
                log::info!(
                    "stopped at step {} of {} (--max-steps): the stage is not complete; `--resume` continues it",
                    self.step,
                    self.total_steps()
                );
            }
        }
        Ok(Outcome::Done)
    }
}
