//! What each rank counts and times in a Stage-2 step: the counters (`COUNTERS`,
//! summed over ranks), the phases (`PHASES`, `time_<phase>` in metrics.h5), and
//! the rates derived from the summed counters.
use crate::blackbox::SourceStats;
use std::time::Instant;

pub(super) const COUNTERS: [&str; 21] = [
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
