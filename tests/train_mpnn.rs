//! The MPNN stage end to end through the real binary: the demo config learns
//! (acceptance 1 and 4), two MPI ranks give the parameters of one rank with the same
//! global batch (acceptance 5), and a run killed after a checkpoint and resumed
//! gives the metrics of an uninterrupted run (acceptance 6).
mod common;
use common::*;
use std::path::Path;

fn tiny() -> String {
    repo().join("tests/configs/tiny.toml").display().to_string()
}

fn train(out: &Path, extra: &[&str]) -> std::process::Output {
    train_config(&tiny(), out, extra)
}

#[test]
fn the_demo_runs_to_completion_and_beats_the_mean_baseline_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = zo(&[
        "train",
        "inputs/demo.toml",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let m = read_metrics(&out.join("mpnn/metrics.h5"));
    let cfg = zo_hpc::config::Config::load(&repo().join("inputs/demo.toml")).unwrap();
    assert_eq!(
        m.epoch["test_rmse"].len(),
        cfg.train.epochs,
        "one test RMSE per epoch"
    );
    let last = *m.epoch["test_rmse"].last().unwrap();
    let base = m.scalars["baseline_test_rmse"];
    assert!(base > 0.0);
    assert!(
        last < 0.6 * base,
        "test RMSE {last:.3} is not clearly below the predict-the-mean baseline {base:.3}"
    );
    assert!(m.step_loss.iter().all(|l| l.is_finite()));
    // timings per phase, one value per epoch
    for phase in [
        "forward_backward",
        "allreduce",
        "optimizer",
        "eval",
        "checkpoint",
    ] {
        assert_eq!(m.timing_max[phase].len(), cfg.train.epochs, "{phase}");
    }
    // h5py, the users' analysis tool, reads metrics and checkpoint.
    let py = std::process::Command::new(python())
        .arg(repo().join("tests/py/read_run.py"))
        .arg(out.join("mpnn"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "h5py could not read the run:\n{}",
        text(&py)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(v["test_rmse"].as_array().unwrap().len(), cfg.train.epochs);
    assert_eq!(
        v["test_rmse"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_f64()
            .unwrap(),
        last
    );
    assert_eq!(v["n_steps"], m.step_loss.len());
    assert_eq!(v["ranks"], 1);
    assert_eq!(v["config_has_seed"], true);
    assert_eq!(v["ckpt_step"], m.step_loss.len());
    assert_eq!(v["adam_m"], true);
    let params: Vec<&str> = v["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(params.contains(&"mpnn/embed/gru/ih/weight"), "{params:?}");
    assert!(params.contains(&"mpnn/head/l2/bias"), "{params:?}");
    assert!(v["timing"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "allreduce_mean"));
}

/// One epoch (6 steps of 16 molecules). Summation order differs between one
/// shard and two shards + allreduce, and Adam amplifies that float32 noise as
/// training goes on (max relative difference ~6e-7 after 2 steps, ~2e-6 after 6,
/// ~1e-5 after 12), so the comparison is made after one epoch.
const K: usize = 6;

#[test]
fn two_ranks_give_the_parameters_of_one_rank() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    let k = K.to_string();
    assert_ok(&train(&one, &["--max-steps", &k]));
    let o = mpirun(
        2,
        &[
            "train",
            &tiny(),
            "--out-dir",
            two.to_str().unwrap(),
            "--max-steps",
            &k,
        ],
    );
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    for r in 0..2 {
        let needle = format!("[zo-hpc {r}/2] info: rank {r}/2 on");
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no device line for rank {r}:\n{log}"));
        assert!(line.contains("device cpu"), "{line}");
    }
    let f = hdf5::File::open(one.join("mpnn/checkpoint.h5")).unwrap();
    assert_eq!(
        zo_hpc::io::h5::read_attr::<u64>(&f, "step").unwrap(),
        K as u64
    );
    let a = read_params(&one.join("mpnn/checkpoint.h5"));
    let b = read_params(&two.join("mpnn/checkpoint.h5"));
    assert!(a.len() > 10, "parameters found: {}", a.len());
    // tiny.toml sums fixed micro-batches exactly: the same bits on any rank count.
    let d = max_rel_diff(&a, &b);
    assert_eq!(
        d, 0.0,
        "1 rank vs 2 ranks differ by {d:e} (relative to each tensor's largest entry)"
    );
    let m1 = read_metrics(&one.join("mpnn/metrics.h5"));
    let m2 = read_metrics(&two.join("mpnn/metrics.h5"));
    assert_eq!(m1.step_loss.len(), K);
    for (x, y) in m1.step_loss.iter().zip(&m2.step_loss) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step losses {x} vs {y}");
    }
    assert!(
        (m1.epoch["test_rmse"][0] - m2.epoch["test_rmse"][0]).abs()
            <= 1e-5 * m1.epoch["test_rmse"][0]
    );
    let f2 = hdf5::File::open(two.join("mpnn/metrics.h5")).unwrap();
    assert_eq!(zo_hpc::io::h5::read_attr::<u64>(&f2, "ranks").unwrap(), 2);
    // The comparison is not vacuous: training moved the parameters far more than 1e-5.
    let init = dir.path().join("init");
    assert_ok(&train(&init, &["--max-steps", "1"]));
    let moved = max_rel_diff(&a, &read_params(&init.join("mpnn/checkpoint.h5")));
    assert!(
        moved > 1e-3,
        "parameters barely moved between step 1 and {K}: {moved:e}"
    );
}

#[test]
fn a_killed_run_resumes_along_the_identical_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let cut = dir.path().join("cut");
    assert_ok(&train(&full, &[]));
    // Checkpoints every 4 steps: the crash after step 10 loses steps 9 and 10.
    let o = train(&cut, &["--abort-after-step", "10"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let f = hdf5::File::open(cut.join("mpnn/checkpoint.h5")).unwrap();
    assert_eq!(zo_hpc::io::h5::read_attr::<u64>(&f, "step").unwrap(), 8);
    drop(f);
    let leftovers: Vec<_> = std::fs::read_dir(&cut)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    let o = train(&cut, &["--resume"]);
    assert_ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resumed from"),
        "{}",
        text(&o)
    );

    let a = read_metrics(&full.join("mpnn/metrics.h5"));
    let b = read_metrics(&cut.join("mpnn/metrics.h5"));
    assert_eq!(a.step_loss.len(), 18);
    assert_eq!(a.step_loss, b.step_loss, "per-step losses");
    assert_eq!(a.epoch["train_rmse"], b.epoch["train_rmse"]);
    assert_eq!(a.epoch["test_rmse"], b.epoch["test_rmse"]);
    assert_eq!(a.epoch_step, b.epoch_step);
    let d = max_rel_diff(
        &read_params(&full.join("mpnn/checkpoint.h5")),
        &read_params(&cut.join("mpnn/checkpoint.h5")),
    );
    assert_eq!(d, 0.0, "final parameters differ");
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = train(&dir.path().join("none"), &["--resume"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no checkpoint at") && err.contains("checkpoint.h5"),
        "{err}"
    );
}

#[test]
fn fewer_labels_train_on_the_first_of_the_split_and_eval_every_skips_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let edit = |labels: &'static str| {
        move |t: String| {
            t.replace("n_test = 48", &format!("n_test = 48\n{labels}"))
                .replace("epochs = 3", "epochs = 5\neval_every = 2")
        }
    };
    let cfg = config_copy(
        dir.path(),
        "tests/configs/tiny.toml",
        "l.toml",
        edit("n_labeled = 32"),
    );
    let out = dir.path().join("l");
    assert_ok(&train_config(&cfg, &out, &[]));
    let m = read_metrics(&out.join("mpnn/metrics.h5"));
    // 32 labeled molecules in batches of 16: two steps an epoch.
    assert_eq!(m.step_loss.len(), 10);
    assert_eq!(m.epoch_step, vec![2, 4, 6, 8, 10]);
    // Evaluated after epochs 1, 2, 4 and 5 (the last); epoch 3 holds NaN.
    let t = &m.epoch["test_rmse"];
    let evaluated: Vec<bool> = t.iter().map(|v| v.is_finite()).collect();
    assert_eq!(evaluated, vec![true, true, false, true, true], "{t:?}");
    assert!(m.epoch["train_rmse"][2].is_nan());
    assert_eq!(m.epoch["wall_s"].len(), 5);
    // The held-out split is that of the run with every label: same baseline.
    let all = config_copy(dir.path(), "tests/configs/tiny.toml", "a.toml", edit(""));
    let out_all = dir.path().join("a");
    assert_ok(&train_config(&all, &out_all, &["--max-steps", "1"]));
    let a = read_metrics(&out_all.join("mpnn/metrics.h5"));
    assert_eq!(
        a.scalars["baseline_test_rmse"],
        m.scalars["baseline_test_rmse"]
    );
    // n_labeled beyond the split is an error naming the key.
    let bad = config_copy(
        dir.path(),
        "tests/configs/tiny.toml",
        "b.toml",
        edit("n_labeled = 97"),
    );
    let o = train_config(&bad, &dir.path().join("b"), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("data.n_labeled"), "{}", text(&o));
}
