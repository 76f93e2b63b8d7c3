//! The signal test of `zo-hpc gradcheck` (split-half agreement and the descent
//! test on the real pipeline) through the binary on the tiny pipeline's Stage 1:
//! it runs, prints its tables, writes `/signal` of `gradcheck.h5` with one row per
//! (estimator, µσ, q) and a descent test and placebo with a p-value in [0, 1], gives
//! the same numbers twice, is skipped with `--no-signal`, and refuses options it
//! cannot run with; the score estimator runs in it at its temperatures.
mod common;
use common::*;
use std::path::Path;
use zo_hpc::io::h5;
use zo_hpc::io::signal_file::{self, Signal};

const SMALL: [&str; 16] = [
    "--trials",
    "1",
    "--molecules",
    "2",
    "--directions",
    "1",
    "--signal-molecules",
    "6",
    "--signal-q",
    "2,4",
    "--signal-radii",
    "0.5,2",
    "--signal-descent-q",
    "4",
    "--signal-random",
    "4",
];

fn gradcheck(out: &Path, extra: &[&str]) -> std::process::Output {
    let out = out.display().to_string();
    let tiny = pipeline_tiny();
    let mut args = vec!["gradcheck", tiny.as_str(), "--out-dir", out.as_str()];
    args.extend_from_slice(extra);
    zo(&args)
}

fn read_signal(out: &Path) -> Option<Signal> {
    let f = h5::open(&out.join("gradcheck.h5")).unwrap();
    signal_file::read(&f).unwrap()
}

#[test]
fn the_signal_test_writes_its_rows_and_a_sign_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = with_tiny_stage1(dir.path(), "sig");
    let o = gradcheck(&out, &SMALL);
    assert_ok(&o);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("split-half agreement"), "{table}");
    assert!(
        table.contains("| placebo (a random direction) |"),
        "{table}"
    );
    let s = read_signal(&out).expect("no /signal group");
    assert_eq!(s.dim, 8.0, "the tiny latent");
    assert_eq!(s.molecules, 6.0);
    // Every (radius, estimator, q), the estimators in the default order.
    assert_eq!(s.rows.len(), 2 * 3 * 2);
    let names: Vec<&str> = s.rows.iter().map(|r| r.estimator.as_str()).collect();
    let once = [
        "forward", "forward", "central", "central", "sphere", "sphere",
    ];
    assert_eq!(names, [once, once].concat());
    assert!(s.rows[..6].iter().all(|r| r.radius == 0.5));
    let ok = s.molecules - s.base_failed;
    assert!(ok > 0.0, "no molecule decoded at its base");
    for r in &s.rows {
        assert_eq!(r.molecules, ok);
        assert!((-1.0..=1.0).contains(&r.cos_mean), "{r:?}");
        assert!((0.0..=1.0).contains(&r.full_cosine) && r.full_cosine >= r.half_cosine);
        let per_dir = if r.estimator == "central" { 2.0 } else { 1.0 };
        assert_eq!(r.queries, per_dir * r.q, "{r:?}");
    }
    // A radius of 2 on this barely trained JT-VAE changes the loss somewhere.
    assert!(s
        .rows
        .iter()
        .any(|r| r.radius == 2.0 && r.changed_share > 0.0));
    for d in [s.descent.as_ref().unwrap(), s.placebo.as_ref().unwrap()] {
        assert!((0.0..=1.0).contains(&d.p_value), "{d:?}");
        assert_eq!(d.wins + d.losses + d.ties + d.excluded, ok, "{d:?}");
        assert_eq!((d.q, d.random), (4.0, 4.0));
        assert!([0.5, 2.0].contains(&d.radius) && d.step > 0.0);
    }
    // Keyed directions: the same numbers again.
    let again = with_tiny_stage1(dir.path(), "again");
    assert_ok(&gradcheck(&again, &SMALL));
    let b = read_signal(&again).unwrap();
    assert_eq!(Signal { wall_s: 0.0, ..b }, Signal { wall_s: 0.0, ..s });
}

/// The score estimator: samples of the stochastic decoder at each τ instead of
/// directions at a radius; its rows carry τ, q samples each, and as the first
/// estimator it makes the descent test's ĝ (default step 1, the τ with the best c̄).
#[test]
fn score_runs_in_the_signal_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = with_tiny_stage1(dir.path(), "score");
    let mut args = SMALL.to_vec();
    args.extend_from_slice(&[
        "--signal-estimators",
        "score,forward",
        "--signal-temperatures",
        "0.5,1",
    ]);
    let o = gradcheck(&out, &args);
    assert_ok(&o);
    let s = read_signal(&out).expect("no /signal group");
    let ok = s.molecules - s.base_failed;
    assert!(ok > 0.0, "no molecule decoded at its base");
    let score: Vec<_> = s.rows.iter().filter(|r| r.estimator == "score").collect();
    let at: Vec<(f64, f64)> = score.iter().map(|r| (r.radius, r.q)).collect();
    assert_eq!(at, [(0.5, 2.0), (0.5, 4.0), (1.0, 2.0), (1.0, 4.0)]);
    for r in &score {
        assert_eq!((r.molecules, r.queries), (ok, r.q), "{r:?}");
        assert!((-1.0..=1.0).contains(&r.cos_mean), "{r:?}");
        assert!((0.0..=1.0).contains(&r.failed_share), "{r:?}");
    }
    // A sample at τ = 1 of this barely trained decoder is often another molecule,
    // and then the halves' estimates are not all zero.
    assert!(score
        .iter()
        .any(|r| r.radius == 1.0 && r.changed_share > 0.0));
    assert!(score.iter().any(|r| r.zero_share < 1.0), "{score:?}");
    // The forward rows are still there, per radius.
    assert_eq!(
        s.rows.iter().filter(|r| r.estimator == "forward").count(),
        4
    );
    let d = s.descent.as_ref().unwrap();
    assert_eq!(d.estimator, "score");
    assert_eq!((d.q, d.step), (4.0, 1.0));
    assert!([0.5, 1.0].contains(&d.radius), "{d:?}");
    assert_eq!(d.wins + d.losses + d.ties + d.excluded, ok, "{d:?}");
    assert!(d.ties < ok, "ĝ = 0 for every molecule: {d:?}");
    // Keyed samples: the same numbers again.
    let again = with_tiny_stage1(dir.path(), "score-again");
    assert_ok(&gradcheck(&again, &args));
    let b = read_signal(&again).unwrap();
    // Compared as text: score's smooth-theory column is NaN.
    let text = |s: Signal| format!("{:?}", Signal { wall_s: 0.0, ..s });
    assert_eq!(text(b), text(s));
}

#[test]
fn no_signal_skips_it_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = with_tiny_stage1(dir.path(), "none");
    let mut args = SMALL.to_vec();
    args.push("--no-signal");
    assert_ok(&gradcheck(&out, &args));
    assert!(read_signal(&out).is_none());
    for (bad, says) in [
        (["--signal-q", "3"], "even"),
        (
            ["--signal-estimators", "coordinate"],
            "draws no random directions",
        ),
        (["--signal-estimators", "nope"], "no estimator named"),
        (["--signal-radii", "0"], "positive"),
        (["--signal-temperatures", "0"], "positive"),
    ] {
        let o = gradcheck(&out, &bad);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{}",
            text(&o)
        );
    }
    let help = zo(&["gradcheck", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--no-signal",
        "--signal-molecules",
        "--signal-q",
        "--signal-radii",
        "--signal-step",
        "--signal-temperatures",
    ] {
        assert!(help.contains(opt), "{opt} not in --help:\n{help}");
    }
}
