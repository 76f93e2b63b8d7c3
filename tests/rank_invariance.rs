//! `train.micro_batch`: the trained parameters and Adam moments are bitwise the
//! same on 1, 2 and 3 ranks (CPU, one intra-op thread per rank) for every stage:
//! the whole demo MPNN run (`inputs/demo.toml`, all its steps), a few JT-VAE steps
//! and a few Stage-2 steps (decoder trained by ZO too, so the projection scalars go
//! through the exact sum). And without it the MPNN parameters of 1 and 2 ranks
//! differ (what the key fixes).
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// `config` with its own `micro_batch` line replaced by `micro_batch` (none: the
/// float path) and `extra` lines added to `[train]`, written into `dir` with its
/// data paths made absolute.
fn variant(dir: &Path, config: &str, micro_batch: Option<usize>, extra: &str) -> String {
    let data = format!("{}/", repo().join("inputs/data").display());
    let text: String = std::fs::read_to_string(repo().join(config))
        .unwrap()
        .replace("../../inputs/data/", &data)
        .replace("\"data/", &format!("\"{data}"))
        .lines()
        .filter(|l| !l.starts_with("micro_batch"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let mut add = String::new();
    if let Some(m) = micro_batch {
        add.push_str(&format!("micro_batch = {m}\n"));
    }
    add.push_str(extra);
    let text = text.replacen("[train]\n", &format!("[train]\n{add}"), 1);
    let name = format!(
        "{}_{}.toml",
        Path::new(config).file_stem().unwrap().to_string_lossy(),
        micro_batch.map_or("float".into(), |m| m.to_string())
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn train_on(ranks: usize, config: &str, out: &Path, extra: &[&str]) {
    let out = out.display().to_string();
    let mut args = vec!["train", config, "--out-dir", &out];
    args.extend_from_slice(extra);
    let o = if ranks == 1 {
        zo(&args)
    } else {
        mpirun(ranks, &args)
    };
    assert_ok(&o);
}

/// Parameters and both Adam moments of a checkpoint, as bits.
fn state(checkpoint: &Path) -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    for group in ["params", "adam/m", "adam/v"] {
        for (k, v) in read_group(checkpoint, group) {
            out.push((
                format!("{group}{k}"),
                v.iter().map(|x| x.to_bits()).collect(),
            ));
        }
    }
    assert!(!out.is_empty());
    out
}

fn assert_bitwise(a: &Path, b: &Path, what: &str) {
    let (sa, sb) = (state(a), state(b));
    assert_eq!(sa.len(), sb.len(), "{what}");
    for ((ka, va), (kb, vb)) in sa.iter().zip(&sb) {
        assert_eq!(ka, kb, "{what}");
        let differ = va.iter().zip(vb).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ,
            0,
            "{what}: {ka} differs in {differ} of {} values",
            va.len()
        );
    }
}

/// A copy of `dataset.h5` (and Stage-1 checkpoints under `subs`) of `from` in `to`.
fn seed_dir(from: &Path, to: &Path, subs: &[&str]) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("dataset.h5"), to.join("dataset.h5")).unwrap();
    for sub in subs {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        std::fs::copy(
            from.join(sub).join("checkpoint.h5"),
            to.join(sub).join("checkpoint.h5"),
        )
        .unwrap();
    }
    to.to_path_buf()
}

#[test]
fn demo_mpnn_all_steps_bitwise_on_1_2_3_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The demo as shipped (paper-sized MPNN, 30 epochs of 25 steps, micro-batches
    // of 8: two per global batch, 2 / 1+1 / 1+1+0 over the ranks).
    // One intra-op thread per rank (libtorch's reductions split by thread count).
    let demo = variant(d, "inputs/demo.toml", Some(8), "threads = 1\n");
    for n in [1, 2, 3] {
        train_on(n, &demo, &d.join(format!("demo{n}")), &[]);
    }
    let ck = |name: &str| d.join(name).join("mpnn/checkpoint.h5");
    let f = hdf5::File::open(ck("demo1")).unwrap();
    let step = zo_hpc::io::h5::read_attr::<u64>(&f, "step").unwrap();
    assert_eq!(step, 750, "the demo did not run all its steps");
    assert_bitwise(&ck("demo1"), &ck("demo2"), "demo MPNN 1 vs 2 ranks");
    assert_bitwise(&ck("demo1"), &ck("demo3"), "demo MPNN 1 vs 3 ranks");
}

#[test]
fn mpnn_bitwise_with_uneven_micro_batches_and_not_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 16 per global batch in micro-batches of 3: 6 micro-batches (the last of
    // one sample), spread 6 / 3+3 / 2+2+2 over the ranks.
    let exact = variant(d, "tests/configs/tiny.toml", Some(3), "");
    for n in [1, 2, 3] {
        train_on(n, &exact, &d.join(format!("exact{n}")), &[]);
    }
    let ck = |name: &str| d.join(name).join("mpnn/checkpoint.h5");
    assert_bitwise(&ck("exact1"), &ck("exact2"), "MPNN 1 vs 2 ranks");
    assert_bitwise(&ck("exact1"), &ck("exact3"), "MPNN 1 vs 3 ranks");

    // Without micro-batches the float sums differ with the rank count.
    let float = variant(d, "tests/configs/tiny.toml", None, "");
    for n in [1, 2] {
        train_on(n, &float, &d.join(format!("float{n}")), &[]);
    }
    let (a, b) = (read_params(&ck("float1")), read_params(&ck("float2")));
    assert_ne!(a, b, "float sums on 1 and 2 ranks gave the same bits");
    // ... and the exact run stays close to the float one (same trajectory).
    let rel = max_rel_diff(&read_params(&ck("exact1")), &a);
    assert!(rel < 1e-2, "exact vs float: relative difference {rel}");
}

#[test]
fn jtvae_steps_bitwise_on_1_2_3_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 16 per global batch in micro-batches of 8: on 3 ranks the third has none.
    let config = variant(d, "tests/configs/jtvae_tiny.toml", Some(8), "");
    let prep = d.join("prep");
    let prep_s = prep.display().to_string();
    assert_ok(&zo(&["prepare", &config, "--out-dir", &prep_s]));
    for n in [1, 2, 3] {
        let out = seed_dir(&prep, &d.join(format!("r{n}")), &[]);
        train_on(n, &config, &out, &["--max-steps", "3"]);
    }
    let ck = |n: usize| d.join(format!("r{n}/jtvae/checkpoint.h5"));
    assert_bitwise(&ck(1), &ck(2), "JT-VAE 1 vs 2 ranks");
    assert_bitwise(&ck(1), &ck(3), "JT-VAE 1 vs 3 ranks");
}

#[test]
fn stage2_steps_bitwise_on_1_2_3_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Decoder trained by ZO too: its projection scalars take the exact path.
    let config = variant(d, "tests/configs/pipeline_tiny.toml", Some(3), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[zo]\n", "[zo]\ndecoder = \"zo\"\nq_decoder = 2\n");
    std::fs::write(&config, text).unwrap();
    // A short Stage 1 (its quality does not matter here).
    let s1 = d.join("stage1");
    for stage in ["jtvae", "mpnn"] {
        train_on(1, &config, &s1, &["--stage", stage, "--max-steps", "2"]);
    }
    for n in [1, 2, 3] {
        let out = seed_dir(&s1, &d.join(format!("r{n}")), &["jtvae", "mpnn"]);
        train_on(n, &config, &out, &["--stage", "zo", "--max-steps", "2"]);
    }
    let ck = |n: usize| d.join(format!("r{n}/zo/checkpoint.h5"));
    assert_bitwise(&ck(1), &ck(2), "Stage 2 1 vs 2 ranks");
    assert_bitwise(&ck(1), &ck(3), "Stage 2 1 vs 3 ranks");
    let m = read_metrics(&d.join("r1/zo/metrics.h5"));
    let changed: f64 = m.step_terms["changed"].iter().sum();
    assert!(
        changed > 0.0,
        "no query changed a molecule: ZO not exercised"
    );
}
