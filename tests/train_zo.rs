//! Stage 2 and the pipeline end to end through the real binary, on the tiny
//! pipeline config: all three stages run and a second call skips them; Stage 2
//! gives the same parameters on 1 and 2 ranks and bitwise the same on a repeat;
//! a killed Stage 2 resumes along the identical trajectory; with the decoder
//! trained by ZO only q scalars per step are communicated for it; `eval` writes
//! Table 1.
mod common;
use common::*;

#[test]
fn the_pipeline_runs_three_stages_and_skips_completed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = train_config(&pipeline_tiny(), &out, &[]);
    assert_ok(&o);
    for stage in ["jtvae", "mpnn", "zo"] {
        let ck = out.join(stage).join("checkpoint.h5");
        let f = hdf5::File::open(&ck).unwrap();
        assert_eq!(
            zo_hpc::io::h5::read_attr::<u8>(&f, "complete").unwrap(),
            1,
            "{stage}"
        );
        assert!(out.join(stage).join("metrics.h5").is_file(), "{stage}");
    }
    // Stage-2 diagnostics, one value per step.
    let m = read_metrics(&out.join("zo/metrics.h5"));
    let steps = m.step_loss.len();
    assert_eq!(steps, 6, "48 molecules, batch 8, one epoch");
    for name in [
        "pred",
        "jtvae",
        "queries",
        "unchanged",
        "changed",
        "failed_decode",
        "cache_hits",
        "flip_rate",
        "queries_per_s",
        "imbalance",
        "time_encode",
        "time_decode",
        "time_featurize",
        "time_embed",
        "time_backward",
        "time_allreduce",
        "time_optimizer",
    ] {
        assert_eq!(m.step_terms[name].len(), steps, "{name}");
    }
    // q = 2 forward queries per sample with a base molecule
    let queries: f64 = m.step_terms["queries"].iter().sum();
    let bases: f64 = 8.0 * steps as f64 - m.step_terms["base_failed"].iter().sum::<f64>();
    assert_eq!(queries, 2.0 * bases);
    let changed: f64 = m.step_terms["changed"].iter().sum();
    assert!(
        changed > 0.0,
        "no perturbed query changed the molecule: the test would not exercise ZO"
    );
    for name in ["pipeline_rmse", "true_rmse", "recon_acc", "decode_failed"] {
        assert_eq!(m.epoch[name].len(), 1, "{name}");
    }
    let mtimes: Vec<_> = ["jtvae", "mpnn", "zo"]
        .iter()
        .map(|s| {
            std::fs::metadata(out.join(s).join("checkpoint.h5"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let o = train_config(&pipeline_tiny(), &out, &[]);
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(log.matches("skipped").count(), 3, "{log}");
    for (s, t) in ["jtvae", "mpnn", "zo"].iter().zip(&mtimes) {
        let now = std::fs::metadata(out.join(s).join("checkpoint.h5"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(&now, t, "{s} was trained again");
    }
    // Table 1 from the run.
    let o = zo(&["eval", &pipeline_tiny(), "--out-dir", out.to_str().unwrap()]);
    assert_ok(&o);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("| pipeline_rmse |") && table.contains("stage2"),
        "{table}"
    );
    let f = hdf5::File::open(out.join("eval.h5")).unwrap();
    for g in ["stage1", "stage2"] {
        let g = f.group(g).unwrap();
        let n: f64 = zo_hpc::io::h5::read_attr(&g, "evaluated").unwrap();
        assert_eq!(n, 16.0);
        let rmse: f64 = zo_hpc::io::h5::read_attr(&g, "pipeline_rmse").unwrap();
        let base: f64 = zo_hpc::io::h5::read_attr(&g, "baseline_rmse").unwrap();
        assert!(rmse.is_finite() && base > 0.0);
    }
}

#[test]
fn stage_two_is_the_same_on_one_and_two_ranks_and_bitwise_on_a_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let one = with_tiny_stage1(dir.path(), "one");
    let two = with_tiny_stage1(dir.path(), "two");
    let again = with_tiny_stage1(dir.path(), "again");
    // K = 3 steps; pipeline_tiny.toml sums fixed micro-batches exactly, so the
    // parameters are bitwise those of one rank, and so are the queries.
    let k = ["--max-steps", "3"];
    assert_ok(&zo_on(1, &pipeline_tiny(), &one, &k));
    assert_ok(&zo_on(2, &pipeline_tiny(), &two, &k));
    assert_ok(&zo_on(1, &pipeline_tiny(), &again, &k));
    let a = read_params(&one.join("zo/checkpoint.h5"));
    let b = read_params(&two.join("zo/checkpoint.h5"));
    let c = read_params(&again.join("zo/checkpoint.h5"));
    assert_eq!(max_rel_diff(&a, &c), 0.0, "a repeat is not bitwise equal");
    let d = max_rel_diff(&a, &b);
    eprintln!("1 vs 2 ranks after 3 Stage-2 steps: max relative difference {d:e}");
    assert_eq!(d, 0.0, "1 vs 2 ranks: max relative difference {d:e}");
    // the same queries were made (directions keyed by sample, not by rank)
    let ma = read_metrics(&one.join("zo/metrics.h5"));
    let mb = read_metrics(&two.join("zo/metrics.h5"));
    for name in ["queries", "changed", "unchanged", "failed_decode"] {
        assert_eq!(ma.step_terms[name], mb.step_terms[name], "{name}");
    }
    // Stage 2 moved the encoder away from Stage 1.
    let s1 = read_params(&tiny_stage1().join("jtvae/checkpoint.h5"));
    let enc = "/jtvae/encoder/graph/w_i/weight";
    let moved = s1[enc]
        .iter()
        .zip(&a[enc])
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(moved > 0.0, "the encoder did not move");
    // the frozen decoder is not in the Stage-2 checkpoint
    assert!(!a.keys().any(|k| k.starts_with("/jtvae/decoder/")));
}

#[test]
fn a_killed_stage_two_resumes_along_the_identical_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let full = with_tiny_stage1(dir.path(), "full");
    let cut = with_tiny_stage1(dir.path(), "cut");
    assert_ok(&zo_on(1, &pipeline_tiny(), &full, &[]));
    let o = zo_on(1, &pipeline_tiny(), &cut, &["--abort-after-step", "3"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    // the whole pipeline with --resume: Stage 1 is skipped, Stage 2 continues at step 2
    let o = train_config(&pipeline_tiny(), &cut, &["--resume"]);
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("resumed from") && log.contains("at step 2"),
        "{log}"
    );
    assert_eq!(log.matches("skipped").count(), 2, "{log}");
    let a = read_metrics(&full.join("zo/metrics.h5"));
    let b = read_metrics(&cut.join("zo/metrics.h5"));
    assert_eq!(a.step_loss, b.step_loss);
    assert_eq!(a.step_terms["changed"], b.step_terms["changed"]);
    let d = max_rel_diff(
        &read_params(&full.join("zo/checkpoint.h5")),
        &read_params(&cut.join("zo/checkpoint.h5")),
    );
    assert_eq!(d, 0.0, "final parameters differ");
}

#[test]
fn a_zo_trained_decoder_costs_only_q_scalars_of_communication() {
    let dir = tempfile::tempdir().unwrap();
    // λ = 0: the decoder gets no first-order gradient, so whatever moves it is ZO.
    let cfg = variant(dir.path(), "dec.toml", |t| {
        t.replace(
            "lambda = 1.0",
            "lambda = 0.0\ndecoder = \"zo\"\nq_decoder = 3\nmu_decoder = 0.05",
        )
    });
    let out = with_tiny_stage1(dir.path(), "dec");
    let o = zo_on(2, &cfg, &out, &["--max-steps", "2"]);
    assert_ok(&o);
    let f = hdf5::File::open(out.join("zo/metrics.h5")).unwrap();
    let attr = |n: &str| zo_hpc::io::h5::read_attr::<f64>(&f, n).unwrap();
    let proj = attr("projection_scalars_per_step");
    let floats = attr("allreduce_floats_per_step");
    let params = attr("trained_parameters");
    // q = 3 scalars for the decoder, then the latent estimate's own part (the
    // gradient it gives the encoder, clipped apart: issue 19).
    let s2 = read_params(&out.join("zo/checkpoint.h5"));
    let jtvae = encoder_numel(&s2);
    assert_eq!(proj, 3.0 + jtvae as f64);
    // loss + 6 terms + projections + 23 counters + per-rank seconds of 8 phases
    // and the step (2 ranks); the gradients and projections go through the exact
    // integer sum with micro-batches (the test configs), else through this one.
    let rest = 1.0 + 6.0 + proj + 23.0 + 2.0 * 9.0;
    match zo_hpc::io::h5::read_attr::<f64>(&f, "exact_allreduce_i64_per_step") {
        Ok(exact) => {
            assert_eq!(floats, rest);
            assert_eq!(exact, params + proj);
        }
        Err(_) => assert_eq!(floats, params + rest),
    }
    // decoder-ZO queries are counted apart from the latent ones: every latent
    // query is unchanged, changed or failed
    let m = read_metrics(&out.join("zo/metrics.h5"));
    let at = |n: &str| m.step_terms[n].iter().sum::<f64>();
    assert_eq!(
        at("queries"),
        at("unchanged") + at("changed") + at("failed_decode")
    );
    assert!(at("decoder_queries") >= at("decoder_changed") + at("decoder_failed_decode"));
    // (this run has decoder-ZO decodes that fail: counted in the latent counter
    // as before, they would break the identity above)
    assert!(at("decoder_failed_decode") > 0.0);
    // The decoder is among the trained parameters, and it moved.
    let s1 = read_params(&tiny_stage1().join("jtvae/checkpoint.h5"));
    let dec: Vec<&String> = s2
        .keys()
        .filter(|k| k.starts_with("/jtvae/decoder/"))
        .collect();
    assert!(!dec.is_empty());
    let moved = dec.iter().any(|k| s1[*k] != s2[*k]);
    assert!(moved, "ZO did not move the decoder");
    let changed: f64 = m.step_terms["decoder_changed"].iter().sum();
    assert!(changed > 0.0, "no decoder perturbation changed a molecule");
}

#[test]
fn stage_two_without_stage_one_names_the_missing_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let o = zo_on(1, &pipeline_tiny(), &dir.path().join("none"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("jtvae/checkpoint.h5") && err.contains("zo.init_jtvae"),
        "{err}"
    );
}

#[test]
fn gradcheck_reports_estimators_and_flip_rates() {
    let dir = tempfile::tempdir().unwrap();
    let out = with_tiny_stage1(dir.path(), "gc");
    let o = zo(&[
        "gradcheck",
        &pipeline_tiny(),
        "--out-dir",
        out.to_str().unwrap(),
        "--trials",
        "40",
        "--molecules",
        "8",
        "--directions",
        "2",
        "--no-signal",
    ]);
    assert_ok(&o);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| forward | 64 |"), "{table}");
    assert!(table.contains("flip rate"), "{table}");
    let f = hdf5::File::open(out.join("gradcheck.h5")).unwrap();
    let g = f.group("standin").unwrap();
    let est = zo_hpc::io::h5::read_strings(&g, "estimator").unwrap();
    let q: Vec<f64> = zo_hpc::io::h5::read_vec(&g, "q").unwrap();
    let r: Vec<f64> = zo_hpc::io::h5::read_vec(&g, "radius").unwrap();
    let cos: Vec<f64> = zo_hpc::io::h5::read_vec(&g, "cosine_mean").unwrap();
    let fwd = |qq: f64| {
        (0..est.len())
            .find(|&i| est[i] == "forward" && q[i] == qq && r[i] < 1e-3)
            .map(|i| cos[i])
            .unwrap()
    };
    assert!(fwd(1.0) < fwd(4.0) && fwd(4.0) < fwd(16.0) && fwd(16.0) < fwd(64.0));
    let c = f.group("chained").unwrap();
    let err: Vec<f64> = zo_hpc::io::h5::read_vec(&c, "rel_err").unwrap();
    let pred: Vec<f64> = zo_hpc::io::h5::read_vec(&c, "predicted_rel_err").unwrap();
    for (e, p) in err.iter().zip(&pred) {
        assert!(*e <= 2.0 * p, "chained error {e} vs predicted {p}");
    }
    let p = f.group("pipeline").unwrap();
    let flip: Vec<f64> = zo_hpc::io::h5::read_vec(&p, "flip_rate").unwrap();
    assert_eq!(flip.len(), 9);
    assert_eq!(flip[0], 0.0, "a radius of 1e-4 flipped a molecule");
    assert!(
        flip.iter().any(|&x| x > 0.0),
        "no radius flipped a molecule"
    );
}

#[test]
fn every_estimator_runs_in_stage_two_with_its_query_count() {
    let dir = tempfile::tempdir().unwrap();
    // latent 8: coordinate makes 8 queries per sample, central 2 per direction
    for (est, per_sample) in [("central", 4.0), ("sphere", 2.0), ("coordinate", 8.0)] {
        let cfg = variant(dir.path(), &format!("{est}.toml"), |t| {
            t.replace("estimator = \"forward\"", &format!("estimator = \"{est}\""))
        });
        let out = with_tiny_stage1(dir.path(), est);
        assert_ok(&zo_on(1, &cfg, &out, &["--max-steps", "2"]));
        let m = read_metrics(&out.join("zo/metrics.h5"));
        let queries: f64 = m.step_terms["queries"].iter().sum();
        let bases: f64 = 16.0 - m.step_terms["base_failed"].iter().sum::<f64>();
        assert_eq!(queries, per_sample * bases, "{est}");
        assert!(m.step_loss.iter().all(|l| l.is_finite()), "{est}");
    }
}
