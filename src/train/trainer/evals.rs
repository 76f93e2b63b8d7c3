//! The trainer's evaluations: at the end of an epoch (when due, `train.eval_every`)
//! and every `train.eval_every_steps` steps, with the epoch's timings and values
//! recorded in the metrics and the epoch's line.
use super::Objective;
use super::{RunState, Timer, Trainer, PHASES};
use std::time::Instant;

impl<O: Objective> Trainer<'_, O> {
    /// What evaluation gives, as far as the metrics (of a resumed run) know.
    pub(super) fn known_eval_names(&self) -> Option<Vec<String>> {
        let known: Vec<String> = self
            .metrics
            .epoch
            .keys()
            .filter(|k| *k != "wall_s")
            .cloned()
            .collect();
        (!known.is_empty()).then_some(known)
    }

    /// After an epoch's last step: the evaluation when due (otherwise NaN for each
    /// value it gives), the epoch's timings and values, its line, and on rank 0
    /// the metrics file.
    pub(super) fn end_epoch(&mut self, epoch: usize, st: &mut RunState) -> anyhow::Result<()> {
        let tc = &self.cfg.train;
        let n = self.step / st.spe;
        let due = n == 1 || n.is_multiple_of(tc.eval_every.max(1)) || self.step == st.total;
        let values = match (&st.eval_names, due) {
            (Some(names), false) => names.iter().map(|k| (k.clone(), f64::NAN)).collect(),
            _ => {
                let v = st.timer.time("eval", || self.obj.evaluate(self.dist));
                st.last_eval = Some((self.step, v.clone()));
                v
            }
        };
        st.eval_names = Some(values.iter().map(|(k, _)| k.clone()).collect());
        self.finish_epoch(&mut st.timer, st.epoch_start, &values);
        let wall_s = self
            .metrics
            .epoch
            .get("wall_s")
            .and_then(|v| v.last())
            .copied()
            .unwrap_or(0.0);
        st.progress.epoch(epoch, tc.epochs, &values, wall_s);
        if self.dist.is_root() {
            self.write_metrics(&st.devices)?;
        }
        st.epoch_start = Instant::now();
        Ok(())
    }

    /// Every `eval_every_steps` steps: the stage's evaluation (the epoch's, when
    /// it ran at this step) as a row of `/eval` in the metrics, logged, and on rank
    /// 0 the metrics file written.
    pub(super) fn eval_at_step(&mut self, st: &mut RunState) -> anyhow::Result<()> {
        let values = match st.last_eval.take() {
            Some((step, v)) if step == self.step => v,
            _ => st.timer.time("eval", || self.obj.evaluate(self.dist)),
        };
        let m = &mut self.metrics;
        m.eval_step.push(self.step as u64);
        let row = m.eval_step.len();
        for (k, v) in &values {
            let col = m.evals.entry(k.clone()).or_default();
            // A value first given now: NaN for the earlier rows.
            col.resize(row - 1, f64::NAN);
            col.push(*v);
        }
        if self.dist.is_root() {
            let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            st.progress.note(&format!(
                "step {} evaluation: {}",
                self.step,
                shown.join(", ")
            ));
            self.write_metrics(&st.devices)?;
        }
        Ok(())
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
