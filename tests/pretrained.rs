//! Shipped Stage-1 models: `zo-hpc export` writes a complete run's JT-VAE and MPNN
//! (float32 exactly, or float16) with their vocabulary and a PROVENANCE.md, and a
//! config with `zo.pretrained` starts Stage 2 from them in a run folder without
//! Stage 1 — the same bits as starting from the run's own checkpoints.
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The tiny config with `zo.pretrained = models` (absolute), written into `dir`.
fn with_pretrained(dir: &Path, models: &Path) -> String {
    let data = format!("{}/", repo().join("inputs/data").display());
    let text = std::fs::read_to_string(pipeline_tiny())
        .unwrap()
        .replace("../../inputs/data/", &data)
        .replacen(
            "[zo]\n",
            &format!("[zo]\npretrained = \"{}\"\n", models.display()),
            1,
        );
    let p = dir.join("pretrained.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `zo-hpc export` of the run in `run` to `to` (float16 with `half`).
fn export(run: &Path, to: &Path, half: bool) -> std::process::Output {
    let (cfg, run, to) = (pipeline_tiny(), s(run), s(to));
    let mut args = vec!["export", &cfg, "--out-dir", &run, "--to", &to];
    if half {
        args.push("--half");
    }
    zo(&args)
}

/// A run folder `name` in `dir` holding only the prepared dataset of Stage 1 (and,
/// with `with_stage1`, its two checkpoints).
fn folder(dir: &Path, name: &str, with_stage1: bool) -> PathBuf {
    let out = dir.join(name);
    let mut files = vec!["dataset.h5".to_string()];
    if with_stage1 {
        files.extend(["jtvae/checkpoint.h5".into(), "mpnn/checkpoint.h5".into()]);
    }
    for f in files {
        let to = out.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(tiny_stage1().join(&f), to).unwrap();
    }
    out
}

#[test]
fn exported_models_start_stage_two_like_the_runs_own_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = folder(d, "run", true);
    let (m32, m16) = (d.join("m32"), d.join("m16"));
    assert_ok(&export(&run, &m32, false));
    assert_ok(&export(&run, &m16, true));
    for stage in ["jtvae", "mpnn"] {
        let ck = read_params(&run.join(stage).join("checkpoint.h5"));
        let f32s = read_params(&m32.join(format!("{stage}.h5")));
        assert_eq!(ck, f32s, "{stage}: float32 export is not exact");
        let f16s = read_params(&m16.join(format!("{stage}.h5")));
        assert_eq!(
            ck.keys().collect::<Vec<_>>(),
            f16s.keys().collect::<Vec<_>>()
        );
        for (k, v) in &ck {
            for (a, b) in v.iter().zip(&f16s[k]) {
                assert!(
                    (a - b).abs() <= a.abs() * 1e-3 + 1e-7,
                    "{stage} {k}: {a} vs {b}"
                );
            }
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let name = format!("{stage}.h5");
        assert!(size(&m16.join(&name)) < size(&m32.join(&name)));
    }
    let prov = std::fs::read_to_string(m16.join("PROVENANCE.md")).unwrap();
    for needle in [
        "zo-hpc export",
        "--half",
        "| `jtvae.h5` | jtvae | 60 |",
        "[train.zo]",
    ] {
        assert!(prov.contains(needle), "{needle} not in:\n{prov}");
    }
    let f = hdf5::File::open(m16.join("jtvae.h5")).unwrap();
    assert!(
        f.dataset("vocab").is_ok(),
        "no vocabulary in the JT-VAE file"
    );
    let f = hdf5::File::open(m16.join("mpnn.h5")).unwrap();
    assert!(
        f.dataset("featurizer/atom_keep").is_ok(),
        "no feature columns in the MPNN file"
    );

    // Stage 2 from the run's own Stage 1, and in a fresh folder from the export.
    assert_ok(&train_config(&pipeline_tiny(), &run, &["--stage", "zo"]));
    let fresh = folder(d, "fresh", false);
    let cfg = with_pretrained(d, &m32);
    let o = train_config(&cfg, &fresh, &["--stage", "zo"]);
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains(&format!("starts from {}", m32.join("jtvae.h5").display())),
        "{log}"
    );
    assert_eq!(
        read_params(&run.join("zo/checkpoint.h5")),
        read_params(&fresh.join("zo/checkpoint.h5")),
        "Stage 2 from the exported models differs from Stage 2 from the checkpoints"
    );
    // The Table-1 evaluation finds Stage 1 in the exported models too.
    assert_ok(&zo(&[
        "eval",
        &cfg,
        "--out-dir",
        &s(&fresh),
        "--limit",
        "4",
    ]));
    let e = hdf5::File::open(fresh.join("eval.h5")).unwrap();
    let cks = zo_hpc::io::h5::read_str_attr(&e.group("stage1").unwrap(), "checkpoints").unwrap();
    assert!(cks.contains("m32/jtvae.h5"), "{cks}");
}

#[test]
fn a_model_of_another_vocabulary_or_an_unfinished_stage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = tiny_stage1();
    let models = d.join("models");
    assert_ok(&export(run, &models, false));
    // Another vocabulary (as after a change of the data or the decomposition).
    {
        let f = hdf5::File::open_rw(models.join("jtvae.h5")).unwrap();
        let mut v = zo_hpc::io::h5::read_strings(&f, "vocab").unwrap();
        v.swap(0, 1);
        f.unlink("vocab").unwrap();
        zo_hpc::io::h5::write_strings(&f, "vocab", &v).unwrap();
    }
    let fresh = folder(d, "fresh", false);
    let o = train_config(&with_pretrained(d, &models), &fresh, &["--stage", "zo"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("vocabulary"), "{}", text(&o));
    // Other feature columns (a dataset whose training split made other columns constant).
    assert_ok(&export(run, &models, false));
    {
        let f = hdf5::File::open_rw(models.join("mpnn.h5")).unwrap();
        let g = f.group("featurizer").unwrap();
        let mut keep: Vec<u64> = zo_hpc::io::h5::read_vec(&g, "atom_keep").unwrap();
        keep.pop();
        g.unlink("atom_keep").unwrap();
        zo_hpc::io::h5::write_vec(&g, "atom_keep", &keep).unwrap();
    }
    let o = train_config(&with_pretrained(d, &models), &fresh, &["--stage", "zo"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("feature columns"), "{}", text(&o));

    // A stage killed before its end cannot be exported.
    let cut = d.join("cut");
    let o = train_config(
        &pipeline_tiny(),
        &cut,
        &["--stage", "jtvae", "--abort-after-step", "3"],
    );
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    let o = export(&cut, &d.join("x"), false);
    assert!(!o.status.success());
    assert!(text(&o).contains("not complete"), "{}", text(&o));
}
