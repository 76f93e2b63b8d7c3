//! What each rank counts and times in a Stage-2 step: the counters (`COUNTERS`,
//! summed over ranks), the phases (`PHASES`, `time_<phase>` in metrics.h5), and
//! the rates derived from the summed counters.
use crate::blackbox::SourceStats;
use std::time::Instant;

pub(super) const COUNTERS: [&str; 23] = [
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
    // the decoder-ZO queries' own failures, apart from the latent ones above
    "decoder_failed_decode",
    "decoder_failed_featurize",
    "source_failed",
    "source_timeouts",
    "source_restarts",
    // seconds this rank's source spent in a physics program this step
    "source_program_s",
    // zo.cache_check: cache hits the source answered differently when asked again
    "source_differ",
    // samples left out for a non-finite loss, queries for a non-finite difference δ
    "nonfinite",
    "nonfinite_queries",
    // estimator "score": sampled decodes, failed ones, answered ones unlike the greedy molecule
    "score_samples",
    "score_failed",
    "score_distinct",
];
pub use crate::io::zo_phases::PHASES;

fn count(name: &str) -> usize {
    COUNTERS
        .iter()
        .position(|c| *c == name)
        .expect("a known counter")
}

fn phase(name: &str) -> usize {
    PHASES
        .iter()
        .position(|p| *p == name)
        .expect("a known phase")
}

/// A step's counters, in `COUNTERS` order.
pub(super) struct Counts(Vec<f64>);

impl Counts {
    pub(super) fn new() -> Counts {
        Counts(vec![0f64; COUNTERS.len()])
    }

    pub(super) fn add(&mut self, name: &str, v: f64) {
        self.0[count(name)] += v;
    }

    pub(super) fn set(&mut self, name: &str, v: f64) {
        self.0[count(name)] = v;
    }

    /// What the knowledge source did between `before` and `after`.
    pub(super) fn set_source(&mut self, before: &SourceStats, after: &SourceStats) {
        self.set("source_failed", (after.failed - before.failed) as f64);
        self.set("source_timeouts", (after.timeouts - before.timeouts) as f64);
        self.set("source_restarts", (after.restarts - before.restarts) as f64);
        self.set("source_program_s", after.program_s - before.program_s);
    }

    pub(super) fn into_vec(self) -> Vec<f64> {
        self.0
    }
}

/// Steps over which a sustained share of samples with a non-finite loss stops
/// the run, and that share: a broken model or source, not an odd molecule.
const NONFINITE_WINDOW: usize = 10;
const NONFINITE_SHARE: f64 = 0.5;

/// The last steps' (samples left out for a non-finite loss, samples) (summed over
/// ranks, so every rank judges alike).
#[derive(Default)]
pub(super) struct NonFinite(std::collections::VecDeque<(f64, f64)>);

impl NonFinite {
    /// The window of a resumed run: the last steps' `nonfinite` and `samples` rows
    /// of its metrics, so that it stops where the uninterrupted run would.
    pub(super) fn restore(&mut self, nonfinite: &[f64], samples: &[f64]) {
        let n = nonfinite.len().min(samples.len());
        let from = n.saturating_sub(NONFINITE_WINDOW);
        self.0 = (from..n).map(|i| (nonfinite[i], samples[i])).collect();
    }

    /// Adds a step's summed counters; an error once more than `NONFINITE_SHARE` of
    /// the samples of the last (up to) `NONFINITE_WINDOW` steps were left out.
    pub(super) fn push(&mut self, counts: &[f64]) -> Result<(), String> {
        let (bad, n) = (counts[count("nonfinite")], counts[count("samples")]);
        self.0.push_back((bad, n));
        if self.0.len() > NONFINITE_WINDOW {
            self.0.pop_front();
        }
        let (bad, n) = self
            .0
            .iter()
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        if bad > NONFINITE_SHARE * n {
            return Err(format!(
                "{bad} of the {n} samples of the last {} steps had a non-finite \
                 loss (left out, `nonfinite` in metrics.h5): the model or the knowledge source \
                 is broken; stopping",
                self.0.len()
            ));
        }
        Ok(())
    }
}

/// A step's seconds per phase, in `PHASES` order.
pub(super) struct Phases(Vec<f64>);

impl Phases {
    pub(super) fn new() -> Phases {
        Phases(vec![0f64; PHASES.len()])
    }

    /// Adds the seconds since `t0` to phase `name`.
    pub(super) fn add(&mut self, name: &str, t0: Instant) {
        self.0[phase(name)] += t0.elapsed().as_secs_f64();
    }

    pub(super) fn into_vec(self) -> Vec<f64> {
        self.0
    }
}

/// Rates of the counters summed over ranks (`c`), in a step of `step_s` seconds.
pub(super) fn derived(c: &[f64], step_s: f64) -> Vec<(&'static str, f64)> {
    let at = |n: &str| c[count(n)];
    let answered = at("queries") - at("failed_decode");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let all = at("samples") + at("queries") + at("decoder_queries");
    let dec_answered = at("decoder_queries") - at("decoder_failed_decode");
    vec![
        ("flip_rate", ratio(at("changed"), answered)),
        (
            "failure_rate",
            ratio(at("failed_decode") + at("failed_featurize"), at("queries")),
        ),
        (
            "decoder_flip_rate",
            ratio(at("decoder_changed"), dec_answered),
        ),
        (
            "decoder_failure_rate",
            ratio(
                at("decoder_failed_decode") + at("decoder_failed_featurize"),
                at("decoder_queries"),
            ),
        ),
        ("queries_per_s", ratio(all, step_s)),
        ("samples_per_s", ratio(at("samples"), step_s)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(bad: f64, n: f64) -> Vec<f64> {
        let mut c = Counts::new();
        c.set("nonfinite", bad);
        c.set("samples", n);
        c.into_vec()
    }

    #[test]
    fn a_sustained_share_of_non_finite_samples_stops_an_odd_one_does_not() {
        let mut w = NonFinite::default();
        for _ in 0..30 {
            assert!(w.push(&step(1.0, 8.0)).is_ok(), "one odd sample per step");
        }
        // A first step whose every sample is non-finite: stopped at once.
        let mut w = NonFinite::default();
        let e = w.push(&step(8.0, 8.0)).unwrap_err();
        assert!(e.contains("8 of the 8 samples of the last 1 steps"), "{e}");
        // After 10 clean steps: stopped once more than half the window is lost.
        let mut w = NonFinite::default();
        for _ in 0..10 {
            assert!(w.push(&step(0.0, 8.0)).is_ok());
        }
        for _ in 0..5 {
            assert!(w.push(&step(8.0, 8.0)).is_ok(), "at most half");
        }
        assert!(w.push(&step(8.0, 8.0)).is_err());
    }

    /// A resumed window judges each later step as the uninterrupted one does.
    #[test]
    fn a_restored_window_stops_where_the_uninterrupted_run_does() {
        let rows: Vec<(f64, f64)> = (0..16)
            .map(|i| (if i >= 6 { 6.0 } else { 0.0 }, 8.0))
            .collect();
        let mut whole = NonFinite::default();
        let verdicts: Vec<bool> = rows
            .iter()
            .map(|r| whole.push(&step(r.0, r.1)).is_ok())
            .collect();
        assert!(verdicts.contains(&false), "the rows stop the run somewhere");
        for cut in 1..rows.len() {
            let mut resumed = NonFinite::default();
            let (bad, n): (Vec<f64>, Vec<f64>) = rows[..cut].iter().copied().unzip();
            resumed.restore(&bad, &n);
            for (i, r) in rows.iter().enumerate().skip(cut) {
                assert_eq!(
                    resumed.push(&step(r.0, r.1)).is_ok(),
                    verdicts[i],
                    "cut {cut}, step {i}"
                );
            }
        }
    }
}
