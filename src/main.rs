//! The `zo-hpc` command line: `prepare` a dataset file from a CSV, `train` the
//! pipeline's stages, `eval` them (the paper's Table 1), `export` the trained
//! Stage-1 models, `gradcheck` the zeroth-order estimators, `report` on finished
//! runs. Run it plainly, under `mpirun -n N`, or under Slurm's `srun`.
//!
//! `run` hands each subcommand's arguments to one function of the same name.
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use zo_hpc::config::{Config, Stage};
use zo_hpc::dist::Dist;
use zo_hpc::io::eval_file;
use zo_hpc::io::run_lock::{LockError, RunLock};
use zo_hpc::train::stop::{Outcome, Stop, EXIT_STOPPED};
use zo_hpc::train::RunOptions;

/// Train deep models end to end through gradient-free scientific software
/// (zeroth-order SciML). Every command but `report` takes a TOML config (see
/// README.md, "Config reference"); outputs go to the config's `run.out_dir`.
///
/// Run under MPI with `mpirun -n 4 zo-hpc train CONFIG` or `srun zo-hpc train CONFIG`.
/// Logging: RUST_LOG=debug|info|warn (default info).
#[derive(Parser)]
#[command(name = "zo-hpc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Override a config key for this invocation, as a dotted TOML key: `--set
    /// zo.q=16 --set train.zo.epochs=2 --set source.kind='"physics"'` (repeatable;
    /// a later one wins). Checked as the file is; the effective config is saved as
    /// `<out_dir>/config.effective.toml`.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Build the dataset file (molecules, split, features, junction trees) from the CSV
    ///
    /// Build the dataset HDF5 file from the CSV named in the config: canonicalize
    /// SMILES with RDKit, drop (and report) invalid rows and duplicates, split
    /// train/test with the config's seed, choose the non-constant feature columns.
    /// With [jtvae]: also the cluster vocabulary, the junction trees and the
    /// assembly candidates (minutes for large sets; under `mpirun -n N` they are
    /// computed over the N ranks, the file is the same).
    Prepare(PrepareArgs),
    /// Train Stage 1 (JT-VAE, MPNN) and Stage 2 (through the decoder and the black box)
    ///
    /// Train the stages of `train.stages` in order (the paper's pipeline: "jtvae",
    /// "mpnn" = Stage 1, then "zo" = Stage 2 through the decoder and the black box).
    /// Each stage writes metrics.h5 and checkpoint.h5 to `<out_dir>/<stage>/`; a stage
    /// whose checkpoint is complete and made with the same settings is skipped.
    /// Runs `prepare` first if the dataset file does not exist.
    ///
    /// Long runs in batch jobs: with `--time-limit`, or on SIGTERM / SIGUSR1 / SIGUSR2
    /// (Slurm: `#SBATCH --signal=USR1@300`), training stops between two steps, writes
    /// a checkpoint and exits with status 75; the same command with `--resume`
    /// continues along the identical trajectory (see jobs/hof.slurm).
    Train(TrainArgs),
    /// Table 1 on held-out molecules: reconstruction and RMSE through the pipeline
    ///
    /// The paper's Table 1 on the held-out split, for Stage 1 and (when trained)
    /// Stage 2: reconstruction accuracy (decode(encoder mean) == x as canonical
    /// SMILES without stereo), RMSE through the pipeline (x → encoder → decoder →
    /// RDKit → MPNN), the MPNN's RMSE on the true molecules, the predict-the-mean
    /// baseline, decode failures. Prints a Markdown table; writes <out_dir>/eval.h5.
    /// With a JT-VAE-only config: reconstruction of the JT-VAE alone.
    Eval(EvalArgs),
    /// Write the trained Stage-1 models as files to ship, with a PROVENANCE.md
    ///
    /// Write the run's trained Stage-1 models (complete `jtvae` and `mpnn`
    /// checkpoints) as files to ship: parameters without the optimizer state
    /// (float16 with --half: half the size), the stage metrics and, for the
    /// JT-VAE, its cluster vocabulary, plus a PROVENANCE.md (config, commit,
    /// steps, data, last-epoch metrics). A config with `zo.pretrained = "DIR"`
    /// starts Stage 2 from them (`zo-hpc train CONFIG --stage zo`).
    Export(ExportArgs),
    /// Check the zeroth-order estimators and the signal through the real pipeline
    ///
    /// Check the zeroth-order estimators before spending a long run on them:
    /// (1) on a smooth, differentiable stand-in for decode + featurize + embed,
    /// each estimator's cosine similarity and relative error against autograd over
    /// q and µ, next to the theory, and the chained encoder gradient against
    /// autograd; (2) on the real Stage-1 decoder, the flip rate and failed decodes
    /// against µ·σ, with the smallest µ·σ the data support; (3) the signal test on
    /// the real pipeline (trained Stage-1 JT-VAE and MPNN, held-out molecules, loss
    /// f_i(z) = (MPNN(blackbox(decode(z))) − y_i)²): the split-half agreement of
    /// two estimates from disjoint halves of q directions, noise-corrected into the
    /// cosine of an estimate with the smoothed gradient, per estimator, µσ and q;
    /// and a descent test (z moved along −ĝ vs random directions, a paired sign
    /// test). Prints Markdown tables; writes <out_dir>/gradcheck.h5.
    Gradcheck(GradcheckArgs),
    /// Plots, Table 1 and paired arm statistics of finished runs (no config needed)
    ///
    /// Plots and a summary of finished (or partly finished) runs, from their HDF5
    /// files alone: the training curves of every stage (`<run>/{jtvae,mpnn,zo}/metrics.h5`),
    /// Stage 2's per-step diagnostics (flip rate, failures, cache hits, queries/s,
    /// seconds per phase, imbalance), the estimator check (`gradcheck.h5`), overlays
    /// across runs, and Table 1 (Stage 1 vs Stage 2 from `eval.h5`, one column per
    /// run and stage, with mean ± sd over runs) with each run's seed, µ, q,
    /// estimator, λ, decoder mode, ranks and commit; with several runs, Stage 2 per
    /// arm and data set (mean ± sd, 95% t-interval) and each arm's paired difference
    /// to the control arm by seed (`--control`), with a forest plot per metric.
    /// Writes PNGs and report.md (also printed); missing files are skipped. Needs a TrueType font: $ZO_HPC_FONT
    /// or DejaVu Sans (Debian package fonts-dejavu-core).
    Report(ReportArgs),
}

#[derive(Args)]
struct PrepareArgs {
    /// The run config (TOML).
    config: PathBuf,
    /// Write outputs here instead of the config's `run.out_dir`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Store no JT-VAE assembly candidates (nor molecule records): a quick
    /// prepare; `train` then builds them in memory on every rank (slow).
    #[arg(long)]
    no_candidates: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// The run config (TOML).
    config: PathBuf,
    /// Run only this stage (jtvae, mpnn or zo), whatever `train.stages` says.
    #[arg(long, value_name = "NAME", value_parser = ["jtvae", "mpnn", "zo"])]
    stage: Option<String>,
    /// Continue the first stage that is not complete from its checkpoint, along
    /// the identical trajectory (completed stages are skipped as always; a stage
    /// after complete ones that has no checkpoint yet is started).
    #[arg(long)]
    resume: bool,
    /// Wall time for this invocation, counted from its start, e.g. 5400, 90m,
    /// 2h30m or Slurm's 01:30:00: no step starts that would not end (with its
    /// checkpoint) before it; then a checkpoint is written and the process
    /// exits with status 75. Give a job a few minutes more than this.
    #[arg(long, value_name = "DURATION", value_parser = zo_hpc::train::stop::parse_time_limit)]
    time_limit: Option<std::time::Duration>,
    /// Write outputs here instead of the config's `run.out_dir`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Stop each stage at this global step for this invocation, with a checkpoint
    /// that is not complete (unlike the setting `train.max_steps`, which ends the
    /// stage): `--resume` continues it; without --resume, a stage already at the
    /// limit is left as it is.
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Exit abruptly after this global step (no final checkpoint): for testing
    /// crash recovery with --resume.
    #[arg(long, value_name = "STEP", hide = true)]
    abort_after_step: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// The run config (TOML).
    config: PathBuf,
    /// JT-VAE-only configs: checkpoint or exported model (`jtvae.h5`) to evaluate
    /// (default `<out_dir>/jtvae/checkpoint.h5`).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Evaluate at most this many held-out molecules.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: usize,
    /// Read and write in this folder instead of the config's `run.out_dir`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Molecules encoded and decoded together (default `train.eval_batch_size`).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// JT-VAE-only configs: also reconstruct by the JT-VAE paper's protocol, with
    /// this many latents drawn from the posterior per molecule (e.g. 10)...
    #[arg(long, value_name = "E", requires = "decodings")]
    encodings: Option<usize>,
    /// ... and this many stochastic decodes of each (e.g. 10).
    #[arg(long, value_name = "D", requires = "encodings")]
    decodings: Option<usize>,
    /// Temperature of the stochastic decodes' decisions.
    #[arg(long, value_name = "T", default_value_t = 1.0)]
    temperature: f64,
}

#[derive(Args)]
struct ExportArgs {
    /// The config of the run whose Stage 1 is exported.
    config: PathBuf,
    /// Folder to write `jtvae.h5`, `mpnn.h5` and `PROVENANCE.md` into.
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Store parameters as float16 (read back as float32).
    #[arg(long)]
    half: bool,
    /// Read the run in this folder instead of the config's `run.out_dir`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
struct GradcheckArgs {
    /// The run config (TOML); its Stage-1 JT-VAE (`<out_dir>/jtvae/`) is used when trained.
    config: PathBuf,
    /// Random points per estimator, q and µ on the stand-in.
    #[arg(long, value_name = "N", default_value_t = 200)]
    trials: usize,
    /// Held-out molecules perturbed per radius on the real decoder.
    #[arg(long, value_name = "N", default_value_t = 50)]
    molecules: usize,
    /// Random directions per molecule and radius.
    #[arg(long, value_name = "N", default_value_t = 4)]
    directions: usize,
    /// Skip the signal test (split-half agreement and descent test).
    #[arg(long)]
    no_signal: bool,
    /// Signal test: held-out molecules (the first of the test split).
    #[arg(long, value_name = "M", default_value_t = 64)]
    signal_molecules: usize,
    /// Signal test: directions q of a full estimate, comma-separated; each even (q/2
    /// per half; q up to 1024 is practical). Decoding is the cost: about
    /// M × max q × (1 + 1 + 2) queries per radius for forward, sphere and central.
    #[arg(long, value_name = "Q,…", value_delimiter = ',', default_values_t = [4, 16, 64])]
    signal_q: Vec<usize>,
    /// Signal test: radii µσ, comma-separated.
    #[arg(long, value_name = "R,…", value_delimiter = ',', default_values_t = [0.03, 0.1, 0.3, 1.0])]
    signal_radii: Vec<f64>,
    /// Signal test: estimators that draw random directions (forward, central,
    /// sphere, es) or samples (score), comma-separated; the first one also makes
    /// the descent test's estimate.
    #[arg(long, value_name = "NAME,…", value_delimiter = ',', default_values_t = ["forward".to_string(), "central".into(), "sphere".into()])]
    signal_estimators: Vec<String>,
    /// Signal test: decoder temperatures τ of the score estimator, comma-separated
    /// (its rows show τ in the µσ column).
    #[arg(long, value_name = "TAU,…", value_delimiter = ',', default_values_t = [1.0])]
    signal_temperatures: Vec<f64>,
    /// Signal test: q of the descent test's estimate.
    #[arg(long, value_name = "Q", default_value_t = 16)]
    signal_descent_q: usize,
    /// Signal test: µσ (τ for score) of the descent test [default: the one with the
    /// best split-half agreement].
    #[arg(long, value_name = "R")]
    signal_descent_radius: Option<f64>,
    /// Signal test: step length t of the descent test, along −ĝ/‖ĝ‖ and the random
    /// unit directions [default: the estimator's probe distance µσ·√(mean ‖u‖²),
    /// ≈ µσ·√d for Gaussian directions, µσ on the sphere; 1 for score].
    #[arg(long, value_name = "T")]
    signal_step: Option<f64>,
    /// Signal test: random unit directions per molecule in the descent test (a win:
    /// the loss change along −ĝ below their median; a placebo arm moves along one
    /// more random direction instead).
    #[arg(long, value_name = "N", default_value_t = 16)]
    signal_random: usize,
    /// Read and write in this folder instead of the config's `run.out_dir`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// Run folders (each a config's `run.out_dir`); several are compared.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// Write the PNGs and report.md here (default `<first RUN_DIR>/report`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The arm every other arm is paired with by seed (arms: `run.arm`, else the
    /// run folder's name without its trailing `_s<seed>`); an arm `A_X` is paired
    /// with `NAME_X` when that arm exists.
    #[arg(long, value_name = "NAME", default_value = zo_hpc::report::CONTROL)]
    control: String,
}

fn init_logging(rank: usize, size: usize) {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format(move |buf, rec| {
            let prefix = if size > 1 {
                format!("[zo-hpc {rank}/{size}]")
            } else {
                "[zo-hpc]".into()
            };
            writeln!(
                buf,
                "{prefix} {}: {}",
                rec.level().as_str().to_lowercase(),
                rec.args()
            )
        })
        .init();
}

fn load(path: &Path, out_dir: Option<PathBuf>, sets: &[String]) -> anyhow::Result<Config> {
    let mut cfg = Config::load_with(path, sets)?;
    if let Some(dir) = out_dir {
        cfg.run.out_dir = dir;
    }
    Ok(cfg)
}

/// Locks the run folder of `cfg` (`lock_run`) and, when `--set` changed the
/// config, saves the effective config there (rank 0), naming it in the log.
fn lock_and_record(cfg: &Config, dist: &Dist) -> anyhow::Result<Option<RunLock>> {
    let lock = lock_run(&cfg.run.out_dir, dist)?;
    if dist.is_root() {
        let abs = std::path::absolute(&cfg.run.out_dir).unwrap_or(cfg.run.out_dir.clone());
        log::info!("run folder {}", abs.display());
    }
    if dist.is_root() && !cfg.overrides.is_empty() {
        let path = cfg.run.out_dir.join("config.effective.toml");
        let header = format!(
            "# {} with --set {} (zo-hpc {}); relative paths are relative to {}\n",
            cfg.path.display(),
            cfg.overrides.join(" --set "),
            zo_hpc::COMMIT,
            cfg.path.parent().unwrap_or(Path::new(".")).display()
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, header + &cfg.text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        log::info!(
            "config {} with --set {}: the effective config is {}",
            cfg.path.display(),
            cfg.overrides.join(" --set "),
            path.display()
        );
    }
    Ok(lock)
}

/// Takes the lock on the run folder `dir` (rank 0 only; released when the guard
/// drops, before the process exits). Every rank learns whether rank 0 got it, so
/// that all fail together, without an abort (see `main`).
fn lock_run(dir: &Path, dist: &Dist) -> anyhow::Result<Option<RunLock>> {
    let command: Vec<String> = std::env::args().collect();
    let mine = dist
        .is_root()
        .then(|| RunLock::acquire(dir, &command.join(" ")));
    let ok = dist.broadcast_u64(u64::from(matches!(mine, Some(Ok(_))))) != 0;
    match mine {
        Some(r) => Ok(Some(r?)),
        None if ok => Ok(None),
        None => Err(LockError::OnRoot(dir.to_path_buf()).into()),
    }
}

/// Runs `prepare` (on every rank: it is collective) when the dataset file does not exist.
fn prepare_if_missing(cfg: &Config, dist: &Dist) -> anyhow::Result<()> {
    let path = cfg.dataset_path();
    // Rank 0 decides, so that all ranks take the same branch.
    let missing = dist.broadcast_u64(u64::from(dist.is_root() && !path.is_file())) != 0;
    if missing {
        if dist.is_root() {
            log::info!("{} does not exist yet: preparing it", path.display());
        }
        zo_hpc::data::prepare::run(cfg, dist, true)
            .with_context(|| format!("preparing {}", path.display()))?;
    }
    Ok(())
}

/// Exit status of a successful command: 0, or 75 for a run that stopped early
/// with a checkpoint.
fn run(cli: Cli, dist: &Dist, start: Instant) -> anyhow::Result<i32> {
    let sets = &cli.set;
    match cli.command {
        Command::Prepare(a) => prepare(a, sets, dist),
        Command::Train(a) => train(a, sets, dist, start),
        Command::Eval(a) => eval(a, sets, dist),
        Command::Export(a) => export(a, sets, dist),
        Command::Gradcheck(a) => gradcheck(a, sets, dist),
        Command::Report(a) => {
            anyhow::ensure!(
                sets.is_empty(),
                "--set: `report` reads run folders, not a config"
            );
            report(a, dist)
        }
    }
}

/// Sets libtorch's intra-op threads: `train.threads`, else the rank's share of the cores.
fn set_threads(cfg: &Config, dist: &Dist) -> usize {
    let threads = cfg.train.threads.unwrap_or_else(|| dist.cpus_per_rank());
    tch::set_num_threads(threads as i32);
    threads
}

/// `zo-hpc prepare`.
fn prepare(a: PrepareArgs, sets: &[String], dist: &Dist) -> anyhow::Result<i32> {
    let cfg = load(&a.config, a.out_dir, sets)?;
    let _lock = lock_and_record(&cfg, dist)?;
    zo_hpc::data::prepare::run(&cfg, dist, !a.no_candidates)?;
    Ok(0)
}

/// `zo-hpc train`: the stages in order, or the one of `--stage`.
fn train(a: TrainArgs, sets: &[String], dist: &Dist, start: Instant) -> anyhow::Result<i32> {
    let cfg = load(&a.config, a.out_dir, sets)?;
    let _lock = lock_and_record(&cfg, dist)?;
    let threads = set_threads(&cfg, dist);
    log::debug!("rank {}: {threads} intra-op threads", dist.rank);
    prepare_if_missing(&cfg, dist)?;
    let opts = RunOptions {
        resume: a.resume,
        abort_after_step: a.abort_after_step,
        stop: Stop::new(start, a.time_limit, true),
        max_steps: a.max_steps,
    };
    let only = a.stage.as_deref().and_then(Stage::parse);
    let outcome = zo_hpc::train::stages::run(&cfg, dist, only, &opts)
        .with_context(|| format!("training with {}", a.config.display()))?;
    Ok(match outcome {
        Outcome::Done => 0,
        Outcome::Stopped => EXIT_STOPPED,
    })
}

/// `zo-hpc eval`: Table 1 for a pipeline config, the JT-VAE's reconstruction for
/// a JT-VAE-only one.
fn eval(a: EvalArgs, sets: &[String], dist: &Dist) -> anyhow::Result<i32> {
    let mut cfg = load(&a.config, a.out_dir, sets)?;
    if let Some(b) = a.batch {
        anyhow::ensure!(b >= 1, "--batch {b}: need 1 or more");
        cfg.train.eval_batch_size = b;
    }
    let _lock = lock_and_record(&cfg, dist)?;
    set_threads(&cfg, dist);
    prepare_if_missing(&cfg, dist)?;
    if cfg.stages().contains(&Stage::Mpnn) && cfg.jtvae.is_some() {
        return eval_table1(&cfg, dist, a.limit);
    }
    if !cfg.stages().contains(&Stage::Jtvae) {
        anyhow::bail!(
            "{}: eval needs the JT-VAE (train.stages with \"jtvae\") and, for Table 1, the MPNN",
            a.config.display()
        );
    }
    let ck = a.checkpoint.unwrap_or_else(|| {
        cfg.for_stage(Stage::Jtvae)
            .run
            .out_dir
            .join("checkpoint.h5")
    });
    if !ck.is_file() {
        anyhow::bail!("no checkpoint at {}", ck.display());
    }
    let protocol = match (a.encodings, a.decodings) {
        (Some(e), Some(d)) => {
            anyhow::ensure!(
                e >= 1 && d >= 1,
                "--encodings {e} --decodings {d}: need 1 or more of each"
            );
            anyhow::ensure!(
                a.temperature > 0.0 && a.temperature.is_finite(),
                "--temperature {}: need a positive number",
                a.temperature
            );
            Some(zo_hpc::train::jtvae_stage::Protocol {
                encodings: e,
                decodings: d,
                temperature: a.temperature,
            })
        }
        _ => None,
    };
    eval_jtvae(&cfg, dist, &ck, a.limit, protocol)
}

/// Table 1 (Stage 1 and, when trained, Stage 2): printed and written to `<out_dir>/eval.h5`.
fn eval_table1(cfg: &Config, dist: &Dist, limit: usize) -> anyhow::Result<i32> {
    let cols = zo_hpc::train::evaluate::table1(cfg, dist, limit)?;
    if dist.is_root() {
        let out = cfg.run.out_dir.join("eval.h5");
        eval_file::write(&out, &cols, cfg)?;
        print!("{}", eval_file::markdown(&cols, &cfg.data.target_column));
        log::info!("wrote {}", out.display());
    }
    Ok(0)
}

/// The JT-VAE's reconstruction of the checkpoint `ck`, written to
/// `<out_dir>/jtvae/eval.h5`.
fn eval_jtvae(
    cfg: &Config,
    dist: &Dist,
    ck: &Path,
    limit: usize,
    protocol: Option<zo_hpc::train::jtvae_stage::Protocol>,
) -> anyhow::Result<i32> {
    let (r, sampled) = zo_hpc::train::jtvae_stage::eval(cfg, dist, ck, limit, protocol)?;
    if dist.is_root() {
        let out = cfg.for_stage(Stage::Jtvae).run.out_dir.join("eval.h5");
        eval_file::write_reconstruction(&out, ck, &r, sampled.as_ref())?;
        log::info!("wrote {}", out.display());
    }
    Ok(0)
}

/// `zo-hpc export`: the trained Stage-1 models and PROVENANCE.md (rank 0 only).
fn export(a: ExportArgs, sets: &[String], dist: &Dist) -> anyhow::Result<i32> {
    let cfg = load(&a.config, a.out_dir, sets)?;
    // It reads the run folder; it writes there (and locks it) only with --to inside.
    let inside = std::path::absolute(&a.to)
        .is_ok_and(|t| std::path::absolute(&cfg.run.out_dir).is_ok_and(|d| t.starts_with(d)));
    let _lock = match inside {
        true => lock_run(&cfg.run.out_dir, dist)?,
        false => None,
    };
    if !dist.is_root() {
        return Ok(0);
    }
    use zo_hpc::io::model::{self, Inputs};
    let path = cfg.dataset_path();
    let ds = zo_hpc::data::provenance::open(&cfg)?;
    let Some(j) = &ds.jtvae else {
        anyhow::bail!(
            "{}: no JT-VAE vocabulary (prepared without [jtvae])",
            path.display()
        );
    };
    let mut done = Vec::new();
    // The Stage-1 models the config trains (a JT-VAE-only config: the JT-VAE).
    let stages = cfg.stages();
    for (stage, inputs) in [
        (Stage::Jtvae, Inputs::Vocab(&j.vocab)),
        (Stage::Mpnn, Inputs::Features(&ds.featurizer)),
    ]
    .into_iter()
    .filter(|(s, _)| stages.contains(s))
    {
        let e = model::export(&cfg, stage, &a.to, a.half, inputs)?;
        log::info!(
            "wrote {} ({} parameters, {:.1} MB)",
            e.file.display(),
            e.parameters,
            e.bytes as f64 / 1e6
        );
        done.push(e);
    }
    let command: Vec<String> = std::env::args().skip(1).collect();
    let text = model::provenance(&cfg, &done, &format!("zo-hpc {}", command.join(" ")));
    let p = a.to.join("PROVENANCE.md");
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    log::info!("wrote {}", p.display());
    Ok(0)
}

/// `zo-hpc gradcheck`: the estimator check, printed and written to
/// `<out_dir>/gradcheck.h5` (rank 0 only, after a collective prepare).
fn gradcheck(a: GradcheckArgs, sets: &[String], dist: &Dist) -> anyhow::Result<i32> {
    let signal = signal_options(&a)?;
    let cfg = load(&a.config, a.out_dir, sets)?;
    if cfg.jtvae.is_none() {
        anyhow::bail!("{}: gradcheck needs a [jtvae] section", a.config.display());
    }
    let _lock = lock_and_record(&cfg, dist)?;
    set_threads(&cfg, dist);
    prepare_if_missing(&cfg, dist)?;
    if !dist.is_root() {
        return Ok(0);
    }
    use zo_hpc::train::gradcheck;
    let opts = gradcheck::Options {
        trials: a.trials.max(1),
        molecules: a.molecules,
        directions: a.directions.max(1),
        signal,
    };
    let r = gradcheck::run(&cfg, dist, &opts)?;
    print!("{}", gradcheck::markdown(&r, &cfg));
    let out = cfg.run.out_dir.join("gradcheck.h5");
    gradcheck::write(&out, &r, &cfg)?;
    log::info!("wrote {}", out.display());
    Ok(0)
}

/// The signal test's options (None with --no-signal), checked.
fn signal_options(a: &GradcheckArgs) -> anyhow::Result<Option<zo_hpc::train::signal::Options>> {
    if a.no_signal {
        return Ok(None);
    }
    let estimators = a
        .signal_estimators
        .iter()
        .map(|name| {
            use zo_hpc::zo::estimator::Estimator;
            Estimator::ALL
                .into_iter()
                .chain([Estimator::Score])
                .find(|e| e.name() == name.trim())
                .with_context(|| format!("--signal-estimators: no estimator named {name:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let o = zo_hpc::train::signal::Options {
        molecules: a.signal_molecules,
        qs: a.signal_q.clone(),
        radii: a.signal_radii.clone(),
        temperatures: a.signal_temperatures.clone(),
        estimators,
        descent_q: a.signal_descent_q,
        descent_radius: a.signal_descent_radius,
        step: a.signal_step,
        random: a.signal_random,
    };
    Ok(Some(o.checked()?))
}

/// `zo-hpc report`: plots and report.md from the runs' files.
fn report(a: ReportArgs, dist: &Dist) -> anyhow::Result<i32> {
    // Reading files needs no ranks: under MPI the others just finish. No lock: it
    // only reads the run folders (while training goes on, too) and writes its own
    // `report/` folder, which no other command writes.
    if !dist.is_root() {
        return Ok(0);
    }
    let w = zo_hpc::report::run(&a.runs, a.out.as_deref(), &a.control).context("zo-hpc report")?;
    print!("{}", w.markdown);
    log::info!("{} plots and {}", w.pngs.len(), w.report.display());
    Ok(0)
}

/// libtorch's OpenMP threads spin while they wait by default; next to other busy
/// processes (a shared node, oversubscribed ranks) that turns the many small tensor
/// operations of decoding into a crawl (a decode test: 1290 s spinning against
/// 50 s passive on a loaded 2-core machine). The policy is read when the OpenMP
/// library loads, before `main`, so it is set by running the program again with
/// it; a user's own `OMP_WAIT_POLICY` is respected.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // Only reached when exec failed: go on with the default policy.
    eprintln!("zo-hpc: could not set OMP_WAIT_POLICY=PASSIVE ({err}); continuing");
}

fn main() {
    passive_openmp();
    zo_hpc::chem::quiet_logs();
    let start = Instant::now();
    let cli = Cli::parse();
    let dist = match Dist::init() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("zo-hpc: error: {e:#}");
            std::process::exit(1);
        }
    };
    init_logging(dist.rank, dist.size);
    match run(cli, &dist, start) {
        Ok(0) => {}
        Ok(code) => {
            drop(dist);
            std::process::exit(code);
        }
        Err(e) => {
            log::error!("{e:#}");
            // A run folder that rank 0 could not lock fails every rank alike.
            let together = e.downcast_ref::<LockError>().is_some();
            if dist.size > 1 && !together {
                dist.abort(1);
            }
            drop(dist);
            std::process::exit(1);
        }
    }
}
