//! Assembly candidates cached in the dataset file (issue 7): `prepare` stores them
//! (and the molecules' parsed records), they read back bit for bit as
//! `training_candidates` builds them (and as featurizing gives the graphs), the
//! file is the same on 1 and 2 ranks, `train` reads them instead of building them (and builds
//! them, with a warning naming the key, when the config's `jtvae.max_candidates`
//! differs), and `eval` builds none. Training keeps stored graphs and candidates
//! compact and expands them per batch, to the same bits as candidates built in memory.
//! Training molecules outside the vocabulary file are decomposed over the ranks,
//! giving the trees rank 0 alone gives.
mod common;
use common::*;
use std::path::Path;
use zo_hpc::chem::Featurizer;
use zo_hpc::io::dataset::{Dataset, StoredCandidates};
use zo_hpc::jtvae::candidates::{training_candidates, LabelGraphs, NodeCandidates};
use zo_hpc::jtvae::tree::LabelCache;

/// The tiny JT-VAE config with `edit` applied, written into `dir` (data paths made absolute).
fn config(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> String {
    config_copy(dir, "tests/configs/jtvae_tiny.toml", name, edit)
}

fn prepare(ranks: usize, cfg: &str, out: &Path) -> std::process::Output {
    let out = out.display().to_string();
    let args = ["prepare", cfg, "--out-dir", &out];
    let o = if ranks == 1 {
        zo(&args)
    } else {
        mpirun(ranks, &args)
    };
    assert_ok(&o);
    o
}

fn read(out: &Path) -> (Dataset, StoredCandidates) {
    let path = out.join("dataset.h5");
    let ds = Dataset::read(&path).unwrap();
    let c = ds
        .read_candidates(&path)
        .unwrap()
        .expect("candidates stored");
    (ds, c)
}

fn log(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Equal graphs, f32 rows compared bit for bit.
fn assert_same(got: &[NodeCandidates], want: &[NodeCandidates], smi: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(got.len(), want.len(), "{smi}: node groups");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.gold, w.gold, "{smi}");
        assert_eq!(g.graphs.len(), w.graphs.len(), "{smi}");
        for (a, b) in g.graphs.iter().zip(&w.graphs) {
            assert_eq!(bits(&a.atom_x), bits(&b.atom_x), "{smi}: atom rows");
            assert_eq!(bits(&a.edge_x), bits(&b.edge_x), "{smi}: bond rows");
            assert_eq!((&a.src, &a.dst), (&b.src, &b.dst), "{smi}: edges");
            assert_eq!(a, b, "{smi}");
        }
    }
}

#[test]
fn prepared_candidates_read_back_as_built_and_the_same_on_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "cfg.toml", |t| t);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let o = prepare(1, &cfg, &one);
    assert!(
        log(&o).contains("assembly candidates (at most 10 per node)"),
        "{}",
        log(&o)
    );
    let (ds, c) = read(&one);
    let j = ds.jtvae.as_ref().unwrap();
    assert_eq!(c.max_candidates, 10);
    assert_eq!(c.train.len(), j.train_smiles.len());
    assert_eq!(c.test.len(), ds.test.len());
    assert_eq!(j.test_trees.len(), ds.test.len());
    assert!(j.test_trees.iter().filter(|t| t.is_some()).count() > 25);
    assert!(c.train.ok.iter().filter(|&&ok| ok == 1).count() > 50);

    // Read back bit for bit as `training_candidates` builds them.
    let (mut cache, mut labels) = (LabelCache::default(), LabelGraphs::default());
    let mut compared = 0;
    for k in 0..8 {
        let smi = &j.train_smiles[k];
        let want = training_candidates(smi, 10, &mut cache, &mut labels).ok();
        let got = c.train.nodes(k);
        assert_eq!(got.is_some(), want.is_some(), "{smi}");
        if let (Some(g), Some(w)) = (got, want) {
            assert!(!w.is_empty(), "{smi}");
            assert_same(&g, &w, smi);
            compared += 1;
        }
    }
    for k in 0..3 {
        let smi = &ds.smiles[ds.test[k] as usize];
        let want = training_candidates(smi, 10, &mut cache, &mut labels).unwrap();
        assert_same(&c.test.nodes(k).unwrap(), &want, smi);
    }
    assert!(compared >= 6, "{compared}");

    // The stored molecule records rebuild the encoder graphs featurizing gives.
    let path = one.join("dataset.h5");
    let g = ds.read_graphs(&path).unwrap().expect("records stored");
    let f = Featurizer::full();
    for k in 0..8 {
        let smi = &j.train_smiles[k];
        let got = f.graph(&g.train.record(k, smi).unwrap());
        assert_eq!(got, f.featurize(smi).unwrap(), "{smi}");
        let smi = &ds.smiles[ds.test[k] as usize];
        let got = f.graph(&g.test.record(k, smi).unwrap());
        assert_eq!(got, f.featurize(smi).unwrap(), "{smi}");
    }

    // 2 ranks (contiguous blocks gathered to rank 0) store the same arrays.
    let o = prepare(2, &cfg, &two);
    assert!(log(&o).contains("on 2 ranks"), "{}", log(&o));
    let (ds2, c2) = read(&two);
    assert_eq!(ds2, ds);
    assert_eq!(c2, c, "candidate datasets differ between 1 and 2 ranks");
    let g2 = ds2.read_graphs(&two.join("dataset.h5")).unwrap();
    assert_eq!(
        g2.as_ref(),
        Some(&g),
        "record datasets differ between 1 and 2 ranks"
    );
}

#[test]
fn train_reads_candidates_eval_builds_none_and_a_changed_max_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "cfg.toml", |t| t);
    let out = dir.path().join("run");
    prepare(1, &cfg, &out);
    let o = train_config(&cfg, &out, &["--max-steps", "1"]);
    assert_ok(&o);
    let l = log(&o);
    assert!(l.contains("candidates: read from dataset"), "{l}");
    assert!(l.contains("read from the dataset, 0 built here"), "{l}");

    let outs = out.display().to_string();
    let o = zo(&["eval", &cfg, "--out-dir", &outs, "--limit", "2"]);
    assert_ok(&o);
    let l = log(&o);
    assert!(l.contains("no candidates: evaluation"), "{l}");
    assert!(!l.contains("candidates: read from dataset"), "{l}");

    // Another max_candidates on the same dataset file: detected, built in memory instead.
    let six = config(dir.path(), "six.toml", |t| {
        t.replace("max_candidates = 10", "max_candidates = 6")
            .replace(
                "[data]\n",
                &format!(
                    "[data]\ndataset = \"{}\"\n",
                    out.join("dataset.h5").display()
                ),
            )
    });
    let o = train_config(&six, &dir.path().join("six"), &["--max-steps", "1"]);
    assert_ok(&o);
    let l = log(&o);
    assert!(
        l.contains("made with jtvae.max_candidates = 10, the config has 6"),
        "{l}"
    );
    assert!(
        l.contains("candidates of 0 molecules read from the dataset"),
        "{l}"
    );
}

/// The MB of expanded feature rows the start-up log reports.
fn expanded_mb(log: &str) -> f64 {
    let (head, _) = log
        .split_once(" MB of expanded feature rows kept")
        .expect("no memory figure in the log");
    head.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn stored_candidates_stay_compact_and_train_to_the_same_bits_as_built_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "cfg.toml", |t| t);
    let stored = dir.path().join("stored");
    prepare(1, &cfg, &stored);
    // The same file without its candidates and records: both built in memory.
    let built = dir.path().join("built");
    std::fs::create_dir_all(&built).unwrap();
    std::fs::copy(stored.join("dataset.h5"), built.join("dataset.h5")).unwrap();
    let py = std::process::Command::new(python())
        .arg("-c")
        .arg("import h5py,sys; f=h5py.File(sys.argv[1],'r+'); del f['jtvae/candidates']; del f['jtvae/graphs']")
        .arg(built.join("dataset.h5"))
        .output()
        .unwrap();
    assert_ok(&py);

    let o = train_config(&cfg, &stored, &["--max-steps", "3"]);
    assert_ok(&o);
    let l = log(&o);
    assert!(l.contains("read from the dataset, 0 built here"), "{l}");
    assert_eq!(expanded_mb(&l), 0.0, "{l}");

    let o = train_config(&cfg, &built, &["--max-steps", "3"]);
    assert_ok(&o);
    let l = log(&o);
    assert!(
        l.contains("candidates of 0 molecules read from the dataset"),
        "{l}"
    );
    assert!(expanded_mb(&l) > 0.1, "{l}");

    let a = read_params(&stored.join("jtvae/checkpoint.h5"));
    let b = read_params(&built.join("jtvae/checkpoint.h5"));
    assert_eq!(
        a, b,
        "compact candidates expanded per batch train differently"
    );
    let (ma, mb) = (
        read_metrics(&stored.join("jtvae/metrics.h5")),
        read_metrics(&built.join("jtvae/metrics.h5")),
    );
    assert_eq!(ma.step_loss, mb.step_loss);
}

/// A JT-VAE training file other than the vocabulary's: its trees are decomposed by
/// the ranks (with the candidates), and equal those `prepare --no-candidates`
/// decomposes on rank 0 alone, on 1 and 2 ranks alike; molecules with a cluster
/// outside the vocabulary are counted the same.
#[test]
fn training_trees_decomposed_over_the_ranks_equal_rank_zeros() {
    let dir = tempfile::tempdir().unwrap();
    // 150 ZINC molecules the demo file (the vocabulary) does not hold.
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(repo().join("inputs/data/zinc_jtvae_29k.csv.gz")).unwrap(),
        )
        .read_to_string(&mut s)
        .unwrap();
        s
    };
    let demo = std::fs::read_to_string(repo().join("inputs/data/zinc_demo.csv")).unwrap();
    let extra: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .filter(|smi| !demo.contains(&format!("\n{smi},")))
        .skip(2000)
        .take(150)
        .collect();
    let train_csv = dir.path().join("extra.csv");
    std::fs::write(&train_csv, format!("smiles\n{}\n", extra.join("\n"))).unwrap();
    let cfg = config(dir.path(), "cfg.toml", |t| {
        t.replace(
            "[jtvae]\n",
            &format!(
                "[jtvae]\nvocab_csv = \"{}\"\ntrain_csv = \"{}\"\n",
                repo().join("inputs/data/zinc_demo.csv").display(),
                train_csv.display()
            ),
        )
    });
    let (one, two, serial) = (
        dir.path().join("one"),
        dir.path().join("two"),
        dir.path().join("serial"),
    );
    let o = prepare(1, &cfg, &one);
    assert!(
        log(&o).contains("(150 left to the ranks to decompose)")
            && log(&o).contains("(150 decomposed over the ranks)"),
        "{}",
        log(&o)
    );
    prepare(2, &cfg, &two);
    let outs = serial.display().to_string();
    assert_ok(&zo(&[
        "prepare",
        &cfg,
        "--out-dir",
        &outs,
        "--no-candidates",
    ]));

    let (ds1, c1) = read(&one);
    let (ds2, c2) = read(&two);
    let ds0 = Dataset::read(&serial.join("dataset.h5")).unwrap();
    let (j0, j1) = (ds0.jtvae.as_ref().unwrap(), ds1.jtvae.as_ref().unwrap());
    assert_eq!(j1.train_smiles.len(), 150);
    assert_eq!(
        j1.train_trees, j0.train_trees,
        "trees differ from rank 0's alone"
    );
    assert_eq!(j1.n_uncovered, j0.n_uncovered);
    let stored = j1.train_trees.iter().filter(|t| t.is_some()).count();
    assert!(stored > 75, "{stored} of 150 trees");
    assert!(
        j1.n_uncovered > 0,
        "some clusters are outside the demo vocabulary"
    );
    assert_eq!(ds2, ds1, "1 and 2 ranks");
    assert_eq!(c2, c1, "1 and 2 ranks");
    // Candidates exactly for the molecules with a tree (those that assemble).
    for (k, t) in j1.train_trees.iter().enumerate() {
        if t.is_none() {
            assert_eq!(c1.train.ok[k], 0, "{}", j1.train_smiles[k]);
        }
    }
    assert!(c1.train.ok.iter().filter(|&&ok| ok == 1).count() > 70);
}
