//! Stopping a long run early and cleanly, so that a batch job can end inside its
//! time slot and the next job continue with `--resume`: `train --time-limit` (no
//! step starts that would not end, with its checkpoint, before the limit) and the
//! signals a batch system sends before it kills a job (SIGTERM, SIGUSR1 — Slurm's
//! `#SBATCH --signal=USR1@300` — and SIGUSR2). A second SIGTERM ends the process
//! at once, as without the handler.
//!
//! The decision is taken between steps and is collective (any rank asking makes
//! every rank stop at the same step): the trainer writes a checkpoint, the process
//! exits with [`EXIT_STOPPED`].
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status of a run that stopped early with a checkpoint (EX_TEMPFAIL: "try
/// again"); a job script resubmits itself on it.
pub const EXIT_STOPPED: i32 = 75;

/// How a training stage (or the pipeline) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step done.
    Done,
    /// Stopped early with a checkpoint (time limit or signal).
    Stopped,
}

/// When to stop: a wall-clock deadline and/or a signal flag.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    deadline: Option<Instant>,
    signal: Option<Arc<AtomicBool>>,
}

/// A `--time-limit` value that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("--time-limit {0:?}: expected a duration such as 5400, 90m, 2h30m or Slurm's [D-]HH:MM:SS")]
pub struct BadTimeLimit(String);

/// Parses `--time-limit`: plain seconds, a duration with units (`90m`, `2h 30m`),
/// or Slurm's `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`.
pub fn parse_time_limit(s: &str) -> Result<Duration, BadTimeLimit> {
    let bad = || BadTimeLimit(s.to_string());
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(bad);
    }
    if t.contains(':') {
        let (days, clock) = match t.split_once('-') {
            Some((d, c)) => (d.parse::<u64>().map_err(|_| bad())?, c),
            None => (0, t),
        };
        let parts: Vec<u64> = clock
            .split(':')
            .map(|p| p.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let secs = match parts[..] {
            [m, s] => m * 60 + s,
            [h, m, s] => h * 3600 + m * 60 + s,
            _ => return Err(bad()),
        };
        let total = days * 86_400 + secs;
        return (total > 0)
            .then(|| Duration::from_secs(total))
            .ok_or_else(bad);
    }
    humantime::parse_duration(t)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(bad)
}

impl Stop {
    /// Stops at `start + limit` (if any) and on SIGTERM / SIGUSR1 / SIGUSR2 (if
    /// `signals`). Installing the handlers can fail only in odd environments: then
    /// the signals keep their default action (logged).
    pub fn new(start: Instant, limit: Option<Duration>, signals: bool) -> Stop {
        let signal = signals.then(|| {
            let flag = Arc::new(AtomicBool::new(false));
            use signal_hook::consts::{SIGTERM, SIGUSR1, SIGUSR2};
            use signal_hook::flag;
            // Registered first: a SIGTERM arriving when the flag is already set
            // (the second one) terminates at once.
            let r = flag::register_conditional_shutdown(SIGTERM, 1, Arc::clone(&flag))
                .and_then(|_| {
                    for sig in [SIGTERM, SIGUSR1, SIGUSR2] {
                        flag::register(sig, Arc::clone(&flag))?;
                    }
                    Ok(())
                });
            if let Err(e) = r {
                log::warn!("could not install the stop signal handlers ({e}): signals end the run without a checkpoint");
            }
            flag
        });
        Stop {
            deadline: limit.map(|l| start + l),
            signal,
        }
    }

    /// Whether this process wants to stop before work expected to take `next`:
    /// a signal arrived, or the deadline would pass before it ends.
    pub fn wanted(&self, next: Duration) -> bool {
        let signalled = self
            .signal
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed));
        let late = self.deadline.is_some_and(|d| Instant::now() + next >= d);
        signalled || late
    }

    /// Collective over the ranks: whether any of them wants to stop (so that all
    /// stop at the same step).
    pub fn wanted_by_any(&self, dist: &crate::dist::Dist, next: Duration) -> bool {
        let mut votes = [if self.wanted(next) { 1.0 } else { 0.0 }];
        dist.allreduce_sum_f64(&mut votes);
        votes[0] > 0.0
    }

    /// Why it stops, for the log.
    pub fn reason(&self) -> &'static str {
        if self
            .signal
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            "a stop signal arrived"
        } else {
            "the time limit is near"
        }
    }

    /// Whether anything can ask for a stop (no per-step collective otherwise).
    pub fn active(&self) -> bool {
        self.deadline.is_some() || self.signal.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_in_every_accepted_form() {
        let s = |x: &str| parse_time_limit(x).map(|d| d.as_secs());
        assert_eq!(s("5400").unwrap(), 5400);
        assert_eq!(s("90m").unwrap(), 5400);
        assert_eq!(s("2h 30m").unwrap(), 9000);
        assert_eq!(s("2h30m").unwrap(), 9000);
        assert_eq!(s("01:30:00").unwrap(), 5400);
        assert_eq!(s("45:00").unwrap(), 2700);
        assert_eq!(s("1-00:00:10").unwrap(), 86_410);
        assert_eq!(parse_time_limit("1.5").unwrap().as_millis(), 1500);
        for bad in ["", "0", "-5", "abc", "1:2:3:4", "x-01:00:00", "00:00"] {
            let e = parse_time_limit(bad).unwrap_err().to_string();
            assert!(
                e.contains("--time-limit") && e.contains("HH:MM:SS"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_deadline_counts_the_next_step() {
        let s = Stop::new(Instant::now(), Some(Duration::from_secs(60)), false);
        assert!(s.active());
        assert!(!s.wanted(Duration::from_secs(1)));
        assert!(s.wanted(Duration::from_secs(61)));
        assert!(!Stop::default().active());
        assert!(!Stop::default().wanted(Duration::from_secs(1_000_000)));
    }
}
