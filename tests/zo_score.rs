//! Stage 2 with the score-function estimator (`zo.estimator = "score"`) through
//! the real binary on the tiny pipeline, λ = 0 so that only the zeroth-order
//! part reaches the encoder: it runs with finite losses and q sampled decodes
//! per base molecule; it moves the encoder where the paper's forward estimate at
//! µ = 0.001 (no perturbed latent decodes to another molecule) leaves it in
//! place; it is the same on 1 and 2 ranks; with decoder = "zo" it moves the
//! decoder's parameters itself (no decoder projections are communicated).
mod common;
use common::*;

const TWO_STEPS: &[&str] = &["--max-steps", "2"];
use std::path::Path;

/// The tiny config with λ = 0 and `zo` lines replacing the estimator's.
fn variant(dir: &Path, name: &str, zo_lines: &str) -> String {
    let text = std::fs::read_to_string(pipeline_tiny())
        .unwrap()
        .replace(
            "../../inputs/data/",
            &format!("{}/", repo().join("inputs/data").display()),
        )
        .replace("lambda = 1.0", "lambda = 0.0")
        .replace("estimator = \"forward\"\nq = 2\n", zo_lines)
        .replace("mu = 0.5\n", "");
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const ENC: &str = "/jtvae/encoder/graph/w_i/weight";

fn moved(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn score_moves_the_encoder_where_forward_at_the_papers_mu_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = read_params(&tiny_stage1().join("jtvae/checkpoint.h5"));
    let score = variant(
        dir.path(),
        "score.toml",
        "estimator = \"score\"\nq = 3\ntemperature = 1.0\n",
    );
    let one = with_tiny_stage1(dir.path(), "one");
    assert_ok(&zo_on(1, &score, &one, TWO_STEPS));
    let m = read_metrics(&one.join("zo/metrics.h5"));
    assert!(m.step_loss.iter().all(|l| l.is_finite()));
    let samples: f64 = m.step_terms["score_samples"].iter().sum();
    let bases: f64 = 16.0 - m.step_terms["base_failed"].iter().sum::<f64>();
    assert_eq!(samples, 3.0 * bases);
    assert_eq!(m.step_terms["queries"].iter().sum::<f64>(), 0.0);
    let distinct: f64 = m.step_terms["score_distinct"].iter().sum();
    assert!(distinct > 0.0, "no sample differs from the greedy molecule");
    assert!(m.step_terms["time_score"].iter().sum::<f64>() > 0.0);
    let a = read_params(&one.join("zo/checkpoint.h5"));
    assert!(
        moved(&s1[ENC], &a[ENC]) > 0.0,
        "the score estimate did not move the encoder"
    );

    // The paper's forward estimate at µ = 0.001: no query flips, ĝ = 0, and with
    // λ = 0 the encoder stays where Stage 1 left it.
    let fwd = variant(
        dir.path(),
        "fwd.toml",
        "estimator = \"forward\"\nq = 3\nmu = 0.001\n",
    );
    let f = with_tiny_stage1(dir.path(), "fwd");
    assert_ok(&zo_on(1, &fwd, &f, TWO_STEPS));
    let mf = read_metrics(&f.join("zo/metrics.h5"));
    assert_eq!(mf.step_terms["changed"].iter().sum::<f64>(), 0.0);
    let b = read_params(&f.join("zo/checkpoint.h5"));
    assert_eq!(moved(&s1[ENC], &b[ENC]), 0.0);

    // Keyed by (seed, "score", step, gid, k): the same on 2 ranks.
    let two = with_tiny_stage1(dir.path(), "two");
    assert_ok(&zo_on(2, &score, &two, TWO_STEPS));
    let c = read_params(&two.join("zo/checkpoint.h5"));
    let d = max_rel_diff(&a, &c);
    assert_eq!(d, 0.0, "1 vs 2 ranks: max relative difference {d:e}");
    let m2 = read_metrics(&two.join("zo/metrics.h5"));
    assert_eq!(
        m.step_terms["score_distinct"],
        m2.step_terms["score_distinct"]
    );
}

#[test]
fn score_trains_the_decoder_without_projections() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = variant(
        dir.path(),
        "dec.toml",
        "estimator = \"score\"\nq = 2\ntemperature = 0.5\ndecoder = \"zo\"\nq_decoder = 3\n",
    );
    let out = with_tiny_stage1(dir.path(), "dec");
    assert_ok(&zo_on(1, &cfg, &out, TWO_STEPS));
    let f = hdf5::File::open(out.join("zo/metrics.h5")).unwrap();
    // No decoder directions: the projections are the encoder's zeroth-order part only.
    let proj: f64 = zo_hpc::io::h5::read_attr(&f, "projection_scalars_per_step").unwrap();
    let s2 = read_params(&out.join("zo/checkpoint.h5"));
    assert_eq!(proj, encoder_numel(&s2) as f64);
    let s1 = read_params(&tiny_stage1().join("jtvae/checkpoint.h5"));
    let dec: Vec<&String> = s2
        .keys()
        .filter(|k| k.starts_with("/jtvae/decoder/"))
        .collect();
    assert!(!dec.is_empty());
    assert!(
        dec.iter().any(|k| s1[*k] != s2[*k]),
        "the score estimate did not move the decoder"
    );
    let m = read_metrics(&out.join("zo/metrics.h5"));
    assert_eq!(m.step_terms["decoder_queries"].iter().sum::<f64>(), 0.0);
}
