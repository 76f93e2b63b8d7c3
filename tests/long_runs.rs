//! Runs longer than a job: the whole tiny pipeline (JT-VAE, MPNN, Stage 2) cut
//! into pieces by `--time-limit`, by a signal (SIGUSR1, as Slurm's `--signal`
//! sends, also through `mpirun`) and by a crash, each continued with `--resume`,
//! ends with the bits of the uninterrupted run: every stage's parameters, Adam
//! moments and per-step losses.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STOPPED: i32 = 75;

fn tiny() -> String {
    repo()
        .join("tests/configs/pipeline_tiny.toml")
        .display()
        .to_string()
}

/// A run folder holding the prepared dataset of `base` (prepared once per test).
fn fresh(base: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(base.join("dataset.h5"), out.join("dataset.h5")).unwrap();
    out
}

fn prepared(dir: &Path) -> PathBuf {
    let base = dir.join("base");
    let b = base.display().to_string();
    assert_ok(&zo(&["prepare", &tiny(), "--out-dir", &b]));
    base
}

/// Every stage of `b` has the parameters, Adam moments and step losses of `a`.
fn assert_same_run(a: &Path, b: &Path) {
    for stage in ["jtvae", "mpnn", "zo"] {
        let (ca, cb) = (
            a.join(stage).join("checkpoint.h5"),
            b.join(stage).join("checkpoint.h5"),
        );
        for group in ["params", "adam/m", "adam/v"] {
            let (x, y) = (read_group(&ca, group), read_group(&cb, group));
            assert!(!x.is_empty(), "{stage}: no {group}");
            assert_eq!(x, y, "{stage}: {group} differ");
        }
        let (ma, mb) = (
            read_metrics(&a.join(stage).join("metrics.h5")),
            read_metrics(&b.join(stage).join("metrics.h5")),
        );
        assert!(!ma.step_loss.is_empty(), "{stage}: no steps");
        assert_eq!(ma.step_loss, mb.step_loss, "{stage}: step losses differ");
        assert_eq!(ma.epoch_step, mb.epoch_step, "{stage}: epochs differ");
    }
}

#[test]
fn a_time_limited_chain_of_runs_ends_like_one_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = prepared(dir.path());
    let full = fresh(&base, dir.path(), "full");
    let t0 = Instant::now();
    assert_ok(&train_config(&tiny(), &full, &[]));
    // Each invocation gets 40% of the uninterrupted run's time (start-up included),
    // like a job hitting the end of its slot.
    let limit = format!("{:.2}", (t0.elapsed().as_secs_f64() * 0.4).max(0.5));

    let cut = fresh(&base, dir.path(), "cut");
    let (mut stops, mut resumed) = (0, 0);
    for i in 0.. {
        assert!(i < 200, "the chain does not advance");
        let mut extra = vec!["--time-limit", limit.as_str()];
        if i > 0 {
            extra.push("--resume");
        }
        let o = train_config(&tiny(), &cut, &extra);
        let log = String::from_utf8_lossy(&o.stderr);
        resumed += log.matches("resumed from").count();
        match o.status.code() {
            Some(0) => break,
            Some(STOPPED) => {
                assert!(
                    log.contains("the time limit is near") && log.contains("--resume"),
                    "{log}"
                );
                stops += 1;
            }
            _ => panic!("invocation {i}:\n{}", text(&o)),
        }
    }
    assert!(stops >= 1, "the time limit never stopped the run");
    assert!(resumed >= 1, "no invocation resumed from a checkpoint");
    assert_same_run(&full, &cut);
}

#[test]
fn sigusr1_through_mpirun_stops_with_a_checkpoint_and_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let base = prepared(dir.path());
    let full = fresh(&base, dir.path(), "full");
    let full_s = full.display().to_string();
    assert_ok(&mpirun(2, &["train", &tiny(), "--out-dir", &full_s]));

    let sig = fresh(&base, dir.path(), "sig");
    let sig_s = sig.display().to_string();
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe");
    if is_root() {
        c.arg("--allow-run-as-root");
    }
    let child = c
        .args(["-n", "2"])
        .arg(bin())
        .args(["train", &tiny(), "--out-dir", &sig_s])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start mpirun");
    // The first JT-VAE checkpoint (step 2): the handlers are in place.
    let t0 = Instant::now();
    while !sig.join("jtvae/checkpoint.h5").is_file() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(rc, 0);
    let o = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(STOPPED), "{log}");
    assert!(log.contains("a stop signal arrived"), "{log}");
    assert!(
        !sig.join("zo/checkpoint.h5").exists(),
        "ran to the end: {log}"
    );

    assert_ok(&mpirun(
        2,
        &["train", &tiny(), "--out-dir", &sig_s, "--resume"],
    ));
    assert_same_run(&full, &sig);
}

#[test]
fn a_pipeline_killed_in_stage_one_resumes_through_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let base = prepared(dir.path());
    let full = fresh(&base, dir.path(), "full");
    assert_ok(&train_config(&tiny(), &full, &[]));
    let cut = fresh(&base, dir.path(), "cut");
    // A crash after step 5 of the JT-VAE (last checkpoint: step 4).
    let o = train_config(&tiny(), &cut, &["--abort-after-step", "5"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let o = train_config(&tiny(), &cut, &["--resume"]);
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("at step 4"), "{log}");
    assert_same_run(&full, &cut);
}

#[test]
fn resume_starts_the_next_stage_after_complete_ones_but_not_from_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = prepared(dir.path());
    let out = fresh(&base, dir.path(), "out");
    // Nothing to resume at all: an error (as before).
    let o = train_config(&tiny(), &out, &["--resume"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no checkpoint at"), "{}", text(&o));
    // Stage 1 complete, Stage 2 not begun (a job that stopped between stages).
    assert_ok(&train_config(&tiny(), &out, &["--stage", "jtvae"]));
    assert_ok(&train_config(&tiny(), &out, &["--stage", "mpnn"]));
    let o = train_config(&tiny(), &out, &["--resume"]);
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("--resume starts it"), "{log}");
    assert!(out.join("zo/checkpoint.h5").is_file());
}
