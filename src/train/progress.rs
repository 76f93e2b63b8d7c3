//! What a person watching a training run sees, on rank 0: a progress bar when
//! stderr is a terminal, otherwise a log line every `train.log_every` steps (loss,
//! the last values of the loss terms, steps per second); and the end-of-epoch
//! line with the evaluation (through the bar when there is one).
use crate::io::metrics::Metrics;
use std::io::IsTerminal;
use std::time::Instant;

/// The progress display of one run (inert on ranks other than 0).
pub(super) struct Progress {
    root: bool,
    bar: Option<indicatif::ProgressBar>,
    /// Start of the window the step rate is measured over: (time, step).
    rate_start: (Instant, usize),
}

impl Progress {
    /// A display for steps `step..total`; a bar only on rank 0 with a terminal.
    pub fn new(root: bool, total: usize, step: usize) -> Progress {
        let bar = (root && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(total as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(step as u64);
            pb
        });
        Progress {
            root,
            bar,
            rate_start: (Instant::now(), step),
        }
    }

    /// After a step: `step` steps of `total` done, in (0-based) `epoch`, with the
    /// global batch's loss; the terms' last values are read from `metrics`.
    pub fn step(
        &mut self,
        (step, total, epoch): (usize, usize, usize),
        batch_loss: f64,
        log_every: usize,
        terms: &[&'static str],
        metrics: &Metrics,
    ) {
        if let Some(pb) = &self.bar {
            pb.set_position(step as u64);
            pb.set_message(format!("epoch {} loss {batch_loss:.4}", epoch + 1));
        } else if self.root && step.is_multiple_of(log_every) {
            let (t0, s0) = self.rate_start;
            let rate = (step - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let detail: Vec<String> = terms
                .iter()
                .map(|t| {
                    format!(
                        "{t} {:.4}",
                        metrics
                            .step_terms
                            .get(*t)
                            .and_then(|v| v.last())
                            .copied()
                            .unwrap_or(0.0)
                    )
                })
                .collect();
            log::info!(
                "step {step}/{total} epoch {} loss {batch_loss:.4} {}({rate:.2} steps/s)",
                epoch + 1,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!("[{}] ", detail.join(", "))
                }
            );
            self.rate_start = (Instant::now(), step);
        }
    }

    /// The end-of-epoch line (rank 0): the evaluated values (NaN ones, not
    /// evaluated this epoch, left out) and the epoch's wall time.
    pub fn epoch(&self, epoch: usize, epochs: usize, values: &[(String, f64)], wall_s: f64) {
        if !self.root {
            return;
        }
        let shown: Vec<String> = values
            .iter()
            .filter(|(_, v)| !v.is_nan())
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let msg = format!(
            "epoch {}/{}: {} ({:.1} s)",
            epoch + 1,
            epochs,
            if shown.is_empty() {
                "not evaluated (eval_every)".to_string()
            } else {
                shown.join(", ")
            },
            wall_s
        );
        self.note(&msg);
    }

    /// A line of its own above the bar (rank 0).
    pub fn note(&self, msg: &str) {
        if !self.root {
            return;
        }
        match &self.bar {
            Some(pb) => pb.println(msg),
            None => log::info!("{msg}"),
        }
    }

    /// Removes the bar (at the end of the run or when it stops early).
    pub fn finish(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
}
