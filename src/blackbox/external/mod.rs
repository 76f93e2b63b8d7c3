//! External-process backend of `KnowledgeSource`: a user command, started once per
//! rank and kept running, answers batches of SMILES over the JSON-lines protocol
//! `zo-hpc-source` version 1 (`protocol`; README.md, "External knowledge sources").
//!
//! Nothing the source does stops the rank: a batch without answers in `timeout_s`,
//! a crash, or answers out of step fail the molecules concerned (counted in
//! `stats`), and the process is killed and started again for the next batch, at
//! most `max_restarts` times per rank and run; after that every query fails at once.
//! A handshake of another protocol or version, or without the dataset's columns, is
//! a hard start-up error (`ExternalError`: a wrong program, not a flaky one); a source that never
//! gets as far as a handshake only makes every query fail, so the run finishes
//! with its failures counted.
mod process;
pub use process::MAX_LOG;
pub mod protocol;

use crate::blackbox::source::{KnowledgeSource, QueryError, SourceContext, SourceStats};
use crate::chem::{Featurizer, Limits, MolGraph};
use crate::config::ExternalConfig;
use process::{NoLine, Process};
use protocol::{Answer, Layout};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default of `source.timeout_s`.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
/// Default of `source.max_restarts`.
pub const DEFAULT_MAX_RESTARTS: usize = 5;
/// Default of `source.batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// The handshake may take at least this long (loading a program's libraries or
/// model is slower than answering a batch).
const MIN_HANDSHAKE_S: f64 = 10.0;
/// Time a source gets to exit on its own once its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// Failures logged in full before warnings are rate-limited.
const WARN_FIRST: u64 = 5;
/// Afterwards, at most one warning (with a count) per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why `ExternalSource::start` gave no source.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// The log folder could not be made.
    #[error("cannot create {}", path.display())]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The per-rank stderr log could not be opened.
    #[error("cannot write {}", path.display())]
    StderrLog {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The program could not be run, or its handshake is unusable.
    #[error("external source {command} (run in {}): {why}", dir.display())]
    Start {
        command: String,
        dir: PathBuf,
        why: String,
    },
}

/// Why a start did not give a running source.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The program could not be run at all (not found, not executable).
    #[error("cannot run it: {0}")]
    Spawn(std::io::Error),
    /// It ran but sent no handshake.
    #[error("{0}")]
    NoHandshake(String),
    /// Its handshake is one zo-hpc cannot work with.
    #[error("its handshake is unusable: {0}")]
    Handshake(protocol::HandshakeError),
}

/// What stays fixed over a run.
struct Settings {
    command: Vec<String>,
    dir: PathBuf,
    timeout: Duration,
    max_restarts: u64,
    batch_size: usize,
    limits: Limits,
    /// `source.max_abs_feature`.
    max_abs: f64,
    featurizer: Featurizer,
    stderr_path: PathBuf,
    rank: usize,
}

impl Settings {
    /// The command as written in the config, for messages.
    fn shown(&self) -> String {
        format!("{:?}", self.command)
    }

    fn stderr_file(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
    }

    /// Starts the command and reads its handshake.
    fn launch(&self) -> Result<(Process, Layout), StartError> {
        let mut log = self.stderr_file().map_err(StartError::Spawn)?;
        // A marker per start, so restarts can be told apart in the log.
        let _ = writeln!(
            log,
            "--- zo-hpc: starting {} in {} (rank {}) at {}",
            self.shown(),
            self.dir.display(),
            self.rank,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let mut p = Process::spawn(&self.command, &self.dir, log).map_err(StartError::Spawn)?;
        let wait = self.timeout.max(Duration::from_secs_f64(MIN_HANDSHAKE_S));
        match p.line(Instant::now() + wait) {
            Ok(line) => protocol::parse_handshake(&line, &self.featurizer)
                .map(|mut l| {
                    // Work bounded by max_atoms while reading, not after parsing.
                    p.set_max_line(protocol::max_answer_bytes(self.limits.max_atoms, &l));
                    l.max_abs = self.max_abs;
                    (p, l)
                })
                .map_err(StartError::Handshake),
            Err(NoLine::Timeout) => {
                p.kill();
                Err(StartError::NoHandshake(format!(
                    "no handshake line within {:.1} s",
                    wait.as_secs_f64()
                )))
            }
            Err(NoLine::Closed) => Err(StartError::NoHandshake(format!(
                "it ended before its handshake ({})",
                status_text(p.kill())
            ))),
            Err(NoLine::Partial(n)) => Err(StartError::NoHandshake(format!(
                "it ended {n} bytes into its handshake line ({})",
                status_text(p.kill())
            ))),
        }
    }
}

fn status_text(s: Option<std::process::ExitStatus>) -> String {
    s.map_or_else(|| "exit status unknown".into(), |s| s.to_string())
}

/// Logs failures in full at first, then at most one line per `WARN_EVERY`.
struct Throttle {
    shown: u64,
    held: u64,
    last: Option<Instant>,
}

impl Throttle {
    fn warn(&mut self, message: impl FnOnce() -> String) {
        let due = self.last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if self.shown < WARN_FIRST || due {
            let held = std::mem::take(&mut self.held);
            let more = if held > 0 {
                format!(" ({held} similar warnings held back)")
            } else {
                String::new()
            };
            log::warn!("{}{more}", message());
            self.shown += 1;
            self.last = Some(Instant::now());
        } else {
            self.held += 1;
        }
    }
}

/// The mutable part: the process, counters, the log throttle.
struct State {
    set: Settings,
    /// The layout of the first handshake (later starts must agree with it).
    layout: Option<Layout>,
    process: Option<Process>,
    next_batch: u64,
    stats: SourceStats,
    gave_up: bool,
    warn: Throttle,
}

/// A user command answering black-box queries (one process per rank).
pub struct ExternalSource {
    name: String,
    extra: Vec<String>,
    state: Mutex<State>,
}

impl ExternalSource {
    /// Starts `cfg.command` in `ctx.config_dir` and checks its handshake against the
    /// dataset's kept columns (`featurizer`). Errors: the log folder cannot be made,
    /// the program cannot be run, or its handshake is of another protocol version or
    /// lacks columns. A program that runs but never sends a handshake (after
    /// `max_restarts` more tries) gives a source whose queries all fail.
    pub fn start(
        cfg: &ExternalConfig,
        featurizer: &Featurizer,
        limits: Limits,
        ctx: &SourceContext,
    ) -> Result<ExternalSource, ExternalError> {
        std::fs::create_dir_all(&ctx.log_dir).map_err(|source| ExternalError::LogDir {
            path: ctx.log_dir.clone(),
            source,
        })?;
        let set = Settings {
            command: cfg.command.clone(),
            dir: ctx.config_dir.clone(),
            timeout: Duration::from_secs_f64(cfg.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)),
            max_restarts: cfg.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS) as u64,
            batch_size: cfg.batch_size.unwrap_or(DEFAULT_BATCH_SIZE).max(1),
            limits,
            max_abs: cfg
                .max_abs_feature
                .unwrap_or(protocol::DEFAULT_MAX_ABS_FEATURE),
            featurizer: featurizer.clone(),
            stderr_path: ctx
                .log_dir
                .join(format!("source.rank{}.stderr.log", ctx.rank)),
            rank: ctx.rank,
        };
        set.stderr_file()
            .map_err(|source| ExternalError::StderrLog {
                path: set.stderr_path.clone(),
                source,
            })?;
        let mut st = State {
            set,
            layout: None,
            process: None,
            next_batch: 0,
            stats: SourceStats::default(),
            gave_up: false,
            warn: Throttle {
                shown: 0,
                held: 0,
                last: None,
            },
        };
        loop {
            match st.set.launch() {
                Ok((p, layout)) => {
                    if ctx.rank == 0 {
                        log_layout(&st.set, &layout);
                    }
                    st.layout = Some(layout);
                    st.process = Some(p);
                    break;
                }
                Err(StartError::NoHandshake(why)) if st.stats.restarts < st.set.max_restarts => {
                    st.stats.restarts += 1;
                    log::warn!(
                        "external source {} did not start: {why}; starting it again ({} of {} restarts; its stderr: {})",
                        st.set.shown(),
                        st.stats.restarts,
                        st.set.max_restarts,
                        st.set.stderr_path.display()
                    );
                }
                Err(StartError::NoHandshake(why)) => {
                    log::error!(
                        "external source {} did not start: {why}, {} restarts tried; every query of this rank fails (its stderr: {})",
                        st.set.shown(),
                        st.stats.restarts,
                        st.set.stderr_path.display()
                    );
                    st.gave_up = true;
                    break;
                }
                Err(e) => {
                    return Err(ExternalError::Start {
                        command: st.set.shown(),
                        dir: st.set.dir.clone(),
                        why: e.to_string(),
                    })
                }
            }
        }
        let layout = st.layout.as_ref();
        Ok(ExternalSource {
            name: layout.map_or_else(|| "external".into(), |l| format!("external:{}", l.name)),
            extra: layout.map(|l| l.extra_atoms.clone()).unwrap_or_default(),
            state: Mutex::new(st),
        })
    }

    /// The per-rank file the source's stderr goes to.
    pub fn stderr_log(&self) -> PathBuf {
        self.lock().set.stderr_path.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it leaves the counters usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log_layout(set: &Settings, l: &Layout) {
    log::info!(
        "external source {:?} ({}) started{}",
        l.name,
        set.shown(),
        if l.extra_atoms.is_empty() {
            String::new()
        } else {
            format!(" with extra atom columns {}", l.extra_atoms.join(", "))
        }
    );
    if !l.ignored_bonds.is_empty() {
        log::warn!(
            "external source {}: its bond columns {:?} are not RDKit bond columns and are ignored (extra columns are atom columns only)",
            set.shown(),
            l.ignored_bonds
        );
    }
}

impl State {
    /// A running process with the run's layout, starting one if needed and allowed.
    fn running(&mut self) -> bool {
        while self.process.is_none() && !self.gave_up {
            if self.stats.restarts >= self.set.max_restarts {
                self.gave_up = true;
                log::error!(
                    "external source {} gave up after {} restarts: every further query of this rank fails (its stderr: {})",
                    self.set.shown(),
                    self.stats.restarts,
                    self.set.stderr_path.display()
                );
                break;
            }
            self.stats.restarts += 1;
            let why = match self.set.launch() {
                Ok((p, l)) if Some(&l) == self.layout.as_ref() => {
                    self.process = Some(p);
                    // `batch` counts from 0 per process (README), restarts included.
                    self.next_batch = 0;
                    break;
                }
                Ok(_) => "its handshake declares other columns than at its first start".into(),
                Err(e) => e.to_string(),
            };
            let (shown, path) = (self.set.shown(), self.set.stderr_path.clone());
            self.warn.warn(|| {
                format!(
                    "external source {shown} did not start again: {why} (its stderr: {})",
                    path.display()
                )
            });
        }
        self.process.is_some()
    }

    /// Kills the process after `why`; the next batch starts a new one.
    fn drop_process(&mut self, why: &str) {
        let status = self.process.take().map(|mut p| p.kill());
        let (shown, path) = (self.set.shown(), self.set.stderr_path.clone());
        self.warn.warn(|| {
            format!(
                "external source {shown}: {why}; killed ({}), restarts for the next batch (its stderr: {})",
                status_text(status.flatten()),
                path.display()
            )
        });
    }

    fn fail(&mut self, out: &mut [Option<Result<MolGraph, QueryError>>], idx: &[usize], why: &str) {
        self.stats.failed += idx.len() as u64;
        for &i in idx {
            out[i] = Some(Err(QueryError::Failed(why.to_string())));
        }
    }

    /// Asks for `idx` (into `smiles`), answers into `out`. When the source dies or
    /// goes out of step while answering a molecule, that molecule fails and the
    /// ones after it are asked again of the restarted source: they are not to
    /// blame. After a time-out the rest of the batch fails (asking again would wait
    /// as long again).
    fn batch(
        &mut self,
        smiles: &[String],
        idx: &[usize],
        out: &mut [Option<Result<MolGraph, QueryError>>],
    ) {
        let mut rest = idx;
        while let Some(next) = self.ask(smiles, rest, out) {
            rest = &rest[next..];
            if rest.is_empty() {
                return;
            }
        }
    }

    /// One request for `idx`; `Some(n)`: the first `n` molecules are settled and
    /// the process was dropped, the rest is still to ask.
    fn ask(
        &mut self,
        smiles: &[String],
        idx: &[usize],
        out: &mut [Option<Result<MolGraph, QueryError>>],
    ) -> Option<usize> {
        if !self.running() {
            let why = format!(
                "the external source is not running (gave up after {} restarts)",
                self.stats.restarts
            );
            self.fail(out, idx, &why);
            return None;
        }
        if let Some(line) = self.process.as_ref().and_then(Process::stray_line) {
            let why = format!(
                "answered a line nobody asked for: {}",
                protocol::shorten(&line, 120)
            );
            self.drop_process(&why);
            if !self.running() {
                self.fail(out, idx, "the external source is not running");
                return None;
            }
        }
        let t0 = Instant::now();
        let (invalid, stop) = self.answers(smiles, idx, out);
        self.stats.program_s += t0.elapsed().as_secs_f64();
        self.stats.failed += invalid.len() as u64;
        let (shown, path) = (self.set.shown(), self.set.stderr_path.clone());
        for why in invalid {
            self.warn.warn(|| {
                format!(
                    "external source {shown}: {why} (its stderr: {})",
                    path.display()
                )
            });
        }
        let (k, why, lost) = stop?;
        if matches!(lost, Lost::NotRunning) {
            self.fail(out, idx, &why);
            return None;
        }
        self.drop_process(&why);
        match lost {
            Lost::NotRunning => None,
            Lost::TimedOut => {
                self.stats.timeouts += (idx.len() - k) as u64;
                self.fail(out, &idx[k..], &why);
                None
            }
            Lost::Died => {
                self.fail(out, &idx[k..=k], &why);
                Some(k + 1)
            }
        }
    }

    /// Sends `idx` as one batch and reads its answers into `out`: the invalid
    /// answers' messages, and where and why reading stopped early.
    fn answers(
        &mut self,
        smiles: &[String],
        idx: &[usize],
        out: &mut [Option<Result<MolGraph, QueryError>>],
    ) -> (Vec<String>, Option<(usize, String, Lost)>) {
        let mut invalid: Vec<String> = Vec::new();
        let (Some(p), Some(layout)) = (self.process.as_ref(), self.layout.as_ref()) else {
            let why = "the external source is not running".to_string();
            return (invalid, Some((0, why, Lost::NotRunning)));
        };
        let b = self.next_batch;
        self.next_batch += 1;
        let texts: Vec<&str> = idx.iter().map(|&i| smiles[i].as_str()).collect();
        let deadline = Instant::now() + self.set.timeout;
        p.send(protocol::request(b, &texts));
        let n = idx.len();
        for (k, &i) in idx.iter().enumerate() {
            let line = match p.line(deadline) {
                Ok(line) => line,
                Err(NoLine::Timeout) => {
                    let why = format!(
                        "no answer within timeout_s = {} s to batch {b} ({k} of {n} molecules answered)",
                        self.set.timeout.as_secs_f64()
                    );
                    return (invalid, Some((k, why, Lost::TimedOut)));
                }
                Err(NoLine::Closed) => {
                    let why = format!("it ended during batch {b} ({k} of {n} molecules answered)");
                    return (invalid, Some((k, why, Lost::Died)));
                }
                Err(NoLine::Partial(bytes)) => {
                    let why = format!(
                        "it ended {bytes} bytes into its answer to {:?} (batch {b}, {k} of {n} molecules answered)",
                        smiles[i]
                    );
                    return (invalid, Some((k, why, Lost::Died)));
                }
            };
            out[i] = Some(match protocol::parse_answer(&line, b, k, layout) {
                Ok(Answer::Graph(g)) => self
                    .set
                    .limits
                    .check_atoms(&smiles[i], g.n_atoms)
                    .map(|()| g)
                    .map_err(|e| QueryError::Rejected(e.to_string())),
                Ok(Answer::Rejected(why)) => Err(QueryError::Rejected(why)),
                Ok(Answer::Invalid(why)) => {
                    let why = format!("invalid answer for {:?}: {why}", smiles[i]);
                    invalid.push(why.clone());
                    Err(QueryError::Failed(why))
                }
                Err(e) => return (invalid, Some((k, format!("out of step: {e}"), Lost::Died))),
            });
        }
        (invalid, None)
    }
}

/// How a batch's answers were lost: after a time-out the rest of the batch fails;
/// after a death (or answers out of step) only the molecule being answered does.
#[derive(Debug, Clone, Copy)]
enum Lost {
    NotRunning,
    TimedOut,
    Died,
}

impl KnowledgeSource for ExternalSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>> {
        let mut out: Vec<Option<Result<MolGraph, QueryError>>> = vec![None; smiles.len()];
        let mut todo = Vec::with_capacity(smiles.len());
        let mut st = self.lock();
        for (i, s) in smiles.iter().enumerate() {
            // Refused before sending, as the in-process source refuses before parsing.
            match st.set.limits.check_smiles(s) {
                Ok(()) => todo.push(i),
                Err(e) => out[i] = Some(Err(QueryError::Rejected(e.to_string()))),
            }
        }
        let size = st.set.batch_size;
        for chunk in todo.chunks(size) {
            st.batch(smiles, chunk, &mut out);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueryError::Failed("no answer".into()))))
            .collect()
    }

    fn extra_atom_columns(&self) -> Vec<String> {
        self.extra.clone()
    }

    fn stats(&self) -> SourceStats {
        self.lock().stats
    }
}

impl Drop for ExternalSource {
    fn drop(&mut self) {
        if let Some(mut p) = self.lock().process.take() {
            p.stop(EXIT_GRACE);
        }
    }
}
