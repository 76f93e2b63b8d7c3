//! Acceptance 3 and "bad input gets a clear error": `zo-hpc prepare` on a CSV with
//! bad rows reports them by line and writes the rest, and h5py (the analysis
//! tools' library) reads the dataset file back; bad configs, CSVs and HDF5 files
//! stop the program with a message that names the key, column or file.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const CSV: &str = "\
smiles,y,other
CCO,1.5,x
C1CC,2.0,x
c1ccccc1,3.25,x
CCN,not-a-number,x
OCC,4.0,x
CC(=O)O,5.5,x
CCCC,-1.0,x
C(C)(C)(C)(C)C,1.0,x
";

fn config(dir: &Path, extra_data: &str, extra_train: &str) -> std::path::PathBuf {
    let body = format!(
        "[run]\nout_dir = \"out\"\nseed = 3\n[data]\ncsv = \"data.csv\"\ntarget_column = \"y\"\nn_train = 3\nn_test = 1\n{extra_data}\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n{extra_train}\n"
    );
    let p = dir.join("cfg.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn prepare_reports_bad_rows_by_line_and_h5py_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), CSV).unwrap();
    let cfg = config(dir.path(), "", "");
    let out = dir.path().join("out");
    let o = zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let log = stderr(&o);
    // line numbers count the header as line 1
    assert!(log.contains("2 rows skipped: invalid SMILES"), "{log}");
    assert!(log.contains("line 3: \"C1CC\""), "{log}");
    assert!(log.contains("line 9: \"C(C)(C)(C)(C)C\""), "{log}");
    assert!(log.contains("1 rows skipped: bad target"), "{log}");
    assert!(log.contains("line 5: \"CCN\""), "{log}");
    assert!(log.contains("1 duplicate molecules skipped"), "{log}");
    assert!(log.contains("line 6: CCO (same as line 2)"), "{log}");

    let py = Command::new(python())
        .arg(repo().join("tests/py/read_dataset.py"))
        .arg(out.join("dataset.h5"))
        .output()
        .expect("python");
    assert!(
        py.status.success(),
        "h5py could not read the dataset:\n{}",
        text(&py)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).expect("JSON from h5py script");
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let numbers = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(strings("smiles"), ["CCO", "c1ccccc1", "CC(=O)O", "CCCC"]);
    assert_eq!(numbers("target"), [1.5, 3.25, 5.5, -1.0]);
    assert_eq!(numbers("source_line"), [2.0, 4.0, 7.0, 8.0]);
    let mut split = numbers("train");
    assert_eq!(split.len(), 3);
    split.extend(numbers("test"));
    split.sort_by(f64::total_cmp);
    assert_eq!(
        split,
        [0.0, 1.0, 2.0, 3.0],
        "train and test are disjoint and cover the data"
    );
    assert_eq!(strings("atom_columns").len(), 78);
    let attrs = &v["attrs"];
    assert_eq!(attrs["target_column"], "y");
    assert_eq!(attrs["format"], "zo-hpc-dataset/1");
    assert!(attrs["rdkit_version"].as_str().unwrap().starts_with("20"));
    assert_eq!(attrs["n_invalid_smiles"], 2.0);
    assert_eq!(attrs["n_bad_target"], 1.0);
    assert_eq!(attrs["n_duplicates"], 1.0);
    assert_eq!(attrs["n_rows"], 8.0);
    // mean is over the training split only
    let targets = numbers("target");
    let mean = numbers("train")
        .iter()
        .map(|&i| targets[i as usize])
        .sum::<f64>()
        / 3.0;
    assert!((attrs["target_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
}

#[test]
fn the_same_seed_gives_the_same_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), CSV).unwrap();
    let cfg = config(dir.path(), "", "");
    let read = |name: &str| {
        let out = dir.path().join(name);
        assert_ok(&zo(&[
            "prepare",
            cfg.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ]));
        zo_hpc::io::dataset::Dataset::read(&out.join("dataset.h5")).unwrap()
    };
    let a = read("a");
    let b = read("b");
    assert_eq!(a, b);
}

fn fails_naming(o: &std::process::Output, needles: &[&str]) {
    assert!(!o.status.success(), "should have failed:\n{}", text(o));
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "error should name {n:?}:\n{err}");
    }
    assert!(
        !err.contains("panicked"),
        "a user error must not panic:\n{err}"
    );
}

#[test]
fn bad_configs_name_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), CSV).unwrap();
    let cfg = config(dir.path(), "", "learning_rate = 0.1");
    fails_naming(
        &zo(&["train", cfg.to_str().unwrap()]),
        &["learning_rate", "cfg.toml", "line 14"],
    );
    let cfg = config(dir.path(), "", "threads = \"four\"");
    fails_naming(
        &zo(&["train", cfg.to_str().unwrap()]),
        &["threads", "cfg.toml"],
    );
    let cfg = config(dir.path(), "", "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("data.csv", "nowhere.csv"),
    )
    .unwrap();
    fails_naming(
        &zo(&["prepare", cfg.to_str().unwrap()]),
        &["data.csv", "nowhere.csv"],
    );
    fails_naming(
        &zo(&["train", dir.path().join("absent.toml").to_str().unwrap()]),
        &["absent.toml"],
    );
    let cfg = config(dir.path(), "max_atoms = 0", "");
    fails_naming(
        &zo(&["prepare", cfg.to_str().unwrap()]),
        &["data.max_atoms", "cfg.toml"],
    );
    let cfg = config(dir.path(), "", "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("n_train = 3", "n_train = 30"),
    )
    .unwrap();
    let out = dir.path().join("o");
    fails_naming(
        &zo(&[
            "prepare",
            cfg.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ]),
        &["data.n_train", "data.n_test", "unique valid molecules"],
    );
}

#[test]
fn a_missing_csv_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.csv"),
        CSV.replace("smiles,y,other", "smi,y,other"),
    )
    .unwrap();
    let cfg = config(dir.path(), "", "");
    let o = zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        dir.path().join("o").to_str().unwrap(),
    ]);
    fails_naming(
        &o,
        &[
            "data.csv",
            "`smiles`",
            "data.smiles_column",
            "smi, y, other",
        ],
    );
    let cfg = config(dir.path(), "smiles_column = \"smi\"", "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("target_column = \"y\"", "target_column = \"logp\""),
    )
    .unwrap();
    let o = zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        dir.path().join("o").to_str().unwrap(),
    ]);
    fails_naming(&o, &["`logp`", "data.target_column"]);
}

#[test]
fn an_hdf5_file_of_the_wrong_layout_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), CSV).unwrap();
    // An HDF5 file that is not a dataset file (written by h5py), and a file that is not HDF5.
    let wrong = dir.path().join("wrong.h5");
    let py = Command::new(python())
        .args([
            "-c",
            "import h5py,sys; f=h5py.File(sys.argv[1],'w'); f['smiles']=[1,2,3]; f.close()",
        ])
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    let cfg = config(dir.path(), "dataset = \"wrong.h5\"", "");
    fails_naming(
        &zo(&["train", cfg.to_str().unwrap()]),
        &["wrong.h5", "not a zo-hpc dataset"],
    );
    std::fs::write(dir.path().join("text.h5"), "hello").unwrap();
    let cfg = config(dir.path(), "dataset = \"text.h5\"", "");
    fails_naming(&zo(&["train", cfg.to_str().unwrap()]), &["text.h5"]);
}

/// The shipped full configs work from a plain clone: their gzip CSVs are read,
/// every molecule parses, and the paper's split sizes are drawn.
#[test]
fn the_shipped_zinc_and_hof_configs_prepare_from_gzip() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, rows, train, test) in [
        ("inputs/zinc.toml", 29_445, 5_500, 5_000),
        ("inputs/hof.toml", 130_831, 5_600, 7_000),
    ] {
        let out = dir.path().join(cfg.replace('/', "_"));
        // The JT-VAE candidates of zinc.toml take minutes: tests/candidates.rs covers them.
        let out_s = out.to_str().unwrap();
        let o = zo(&["prepare", cfg, "--out-dir", out_s, "--no-candidates"]);
        assert_ok(&o);
        let ds = zo_hpc::io::dataset::Dataset::read(&out.join("dataset.h5")).unwrap();
        assert_eq!(ds.meta.n_rows, rows, "{cfg}");
        assert_eq!(ds.meta.n_invalid_smiles + ds.meta.n_bad_target, 0, "{cfg}");
        assert_eq!(
            ds.smiles.len() as u64 + ds.meta.n_duplicates,
            rows,
            "{cfg}: every row accounted for"
        );
        assert_eq!((ds.train.len(), ds.test.len()), (train, test), "{cfg}");
        assert!(
            ds.featurizer.atom_dim() > 10 && ds.featurizer.bond_dim() >= 3,
            "{cfg}"
        );
    }
}

/// Writes `files` (name, contents) and `cfg.toml` into a fresh folder and runs
/// `zo-hpc prepare` there; returns the folder, the output and the out dir.
fn prepare_case(
    files: &[(&str, &str)],
    config: &str,
) -> (tempfile::TempDir, std::process::Output, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = dir.path().join("out");
    let o = zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    (dir, o, out)
}

/// With a `[jtvae]` section, `prepare` builds the cluster vocabulary over the whole
/// vocabulary file and stores the junction trees of the training molecules; a
/// training molecule with a cluster outside the vocabulary is reported by name.
#[test]
fn prepare_builds_the_jtvae_vocabulary_and_trees() {
    let (_dir, o, out) = prepare_case(
        &[("data.csv", "smiles,y\nCCO,1\nOc1ccccc1,2\nCc1ccsc1,3\nCCN,4\nCC(C)C,5\n"), ("vocab.csv", "smiles\nCCO\nc1ccccc1\nCCN\nCC(C)C\nOc1ccccc1\nnot-a-smiles\n")],
        "[run]\nout_dir = \"out\"\n[data]\ncsv = \"data.csv\"\ntarget_column = \"y\"\nn_train = 5\nn_test = 0\n[jtvae]\nvocab_csv = \"vocab.csv\"\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n",
    );
    assert_ok(&o);
    let log = stderr(&o);
    assert!(
        log.contains("training molecule Cc1ccsc1: cluster C1=CSC=C1 is outside the vocabulary"),
        "{log}"
    );
    assert!(
        log.contains("line 7: \"not-a-smiles\": no junction tree"),
        "{log}"
    );
    let ds = zo_hpc::io::dataset::Dataset::read(&out.join("dataset.h5")).unwrap();
    let j = ds.jtvae.expect("jtvae data");
    assert_eq!(j.vocab, ["C", "C1=CC=CC=C1", "CC", "CN", "CO"]);
    assert_eq!(
        (j.n_vocab_molecules, j.n_vocab_failed, j.n_uncovered),
        (6, 1, 1)
    );
    assert_eq!(j.train_trees.len(), 5);
    let split: Vec<String> = ds
        .train
        .iter()
        .map(|&i| ds.smiles[i as usize].clone())
        .collect();
    assert_eq!(
        j.train_smiles, split,
        "by default the JT-VAE trains on the training split"
    );
    for (k, &i) in ds.train.iter().enumerate() {
        let smi = &ds.smiles[i as usize];
        let tree = &j.train_trees[k];
        match smi.as_str() {
            "Cc1ccsc1" => assert!(tree.is_none()),
            "Oc1ccccc1" => {
                let t = tree.as_ref().unwrap();
                let names: Vec<&str> = t
                    .labels
                    .iter()
                    .map(|&l| j.vocab[l as usize].as_str())
                    .collect();
                assert_eq!(names, ["CO", "C1=CC=CC=C1"]);
                assert_eq!(t.clusters, vec![vec![0, 1], vec![1, 2, 3, 4, 5, 6]]);
                assert_eq!(t.edges, vec![(0, 1)]);
            }
            "CC(C)C" => assert_eq!(
                tree.as_ref().unwrap().labels.len(),
                4,
                "three bonds and a singleton"
            ),
            _ => assert!(tree.is_some(), "{smi}"),
        }
    }
    // h5py reads the vocabulary.
    let py = Command::new(python())
        .args(["-c", "import h5py,sys; f=h5py.File(sys.argv[1]); print(len(f['jtvae/vocab']), f['jtvae/trees/edges'].shape[1])"])
        .arg(out.join("dataset.h5"))
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "5 2");
}

/// `jtvae.train_csv` points the JT-VAE at a larger (unlabeled) set than the labeled
/// split; molecules of the held-out split are left out of it.
#[test]
fn the_jtvae_can_train_on_a_larger_unlabeled_set_without_the_held_out_molecules() {
    let (_dir, o, out) = prepare_case(
        &[("data.csv", "smiles,y\nCCO,1\nOc1ccccc1,2\nCCN,4\nCC(C)C,5\n"), ("big.csv", "smiles\nCCO\nOCC\nc1ccccc1\nCCCN\nOc1ccccc1\nCC(C)C\nCCN\nnot-a-smiles\nCCCC\n")],
        "[run]\nout_dir = \"out\"\n[data]\ncsv = \"data.csv\"\ntarget_column = \"y\"\nn_train = 2\nn_test = 2\n[jtvae]\nvocab_csv = \"big.csv\"\ntrain_csv = \"big.csv\"\n[train]\nstage = \"jtvae\"\nepochs = 1\nbatch_size = 2\nlr = 0.001\n",
    );
    assert_ok(&o);
    assert!(
        stderr(&o).contains("invalid SMILES \"not-a-smiles\" skipped"),
        "{}",
        text(&o)
    );
    let ds = zo_hpc::io::dataset::Dataset::read(&out.join("dataset.h5")).unwrap();
    let j = ds.jtvae.unwrap();
    let held_out: Vec<&str> = ds
        .test
        .iter()
        .map(|&i| ds.smiles[i as usize].as_str())
        .collect();
    // 9 rows: one invalid, one duplicate (OCC = CCO), the two held-out molecules left out
    assert_eq!(
        j.train_smiles.len(),
        9 - 1 - 1 - 2,
        "{:?} (held out {held_out:?})",
        j.train_smiles
    );
    assert!(j
        .train_smiles
        .iter()
        .all(|s| !held_out.contains(&s.as_str())));
    assert!(
        j.train_smiles.contains(&"CCCC".to_string()),
        "unlabeled molecules are used"
    );
    assert_eq!(j.train_trees.len(), j.train_smiles.len());
    assert!(j.train_trees.iter().all(Option::is_some));
}

/// `jtvae.train_limit` keeps the first N molecules of `train_csv` (after invalid,
/// duplicate and held-out ones are dropped), says so, and a dataset prepared with
/// one limit is refused by a JT-VAE config with another, naming both.
#[test]
fn train_limit_keeps_the_first_molecules_and_a_changed_limit_is_refused() {
    let files = [
        (
            "data.csv",
            "smiles,y\nCCO,1\nOc1ccccc1,2\nCCN,4\nCC(C)C,5\n",
        ),
        (
            "big.csv",
            "smiles\nCCO\nOCC\nc1ccccc1\nCCCN\nOc1ccccc1\nCC(C)C\nCCN\nnot-a-smiles\nCCCC\n",
        ),
    ];
    let config = |limit: &str| {
        format!("[run]\nout_dir = \"out\"\n[data]\ncsv = \"data.csv\"\ntarget_column = \"y\"\nn_train = 2\nn_test = 2\n[jtvae]\nvocab_csv = \"big.csv\"\ntrain_csv = \"big.csv\"\n{limit}hidden = 8\nlatent = 4\ndepth_tree = 2\ndepth_graph = 1\nrecon_samples = 0\n[train]\nstage = \"jtvae\"\nepochs = 1\nbatch_size = 2\nlr = 0.001\n")
    };
    let (_d, o, all) = prepare_case(&files, &config(""));
    assert_ok(&o);
    let (dir, o, out) = prepare_case(&files, &config("train_limit = 3\n"));
    assert_ok(&o);
    assert!(
        stderr(&o).contains("(jtvae.train_limit = 3: the first in file order)"),
        "{}",
        text(&o)
    );
    let read = |p: &std::path::Path| {
        zo_hpc::io::dataset::Dataset::read(&p.join("dataset.h5"))
            .unwrap()
            .jtvae
            .unwrap()
    };
    let (a, l) = (read(&all), read(&out));
    assert_eq!(a.train_limit, None);
    assert_eq!(l.train_limit, Some(3));
    assert_eq!(l.train_smiles, a.train_smiles[..3].to_vec());
    assert_eq!(l.train_trees.len(), 3);

    // The same file trained with a config that has no limit: refused, both named.
    let cfg = dir.path().join("nolimit.toml");
    std::fs::write(&cfg, config("")).unwrap();
    let o = zo(&[
        "train",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("jtvae.train_limit: 3 when prepared, (none) now"),
        "{e}"
    );
    // A limit without train_csv is a config error naming the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config("train_limit = 3\n").replace("train_csv = \"big.csv\"\n", ""),
    )
    .unwrap();
    let o = zo(&["prepare", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("jtvae.train_limit"), "{}", stderr(&o));
}

/// Issue 9, item 3: `prepare` reports the lines an editor shows and stores them as
/// `source_line`, for CRLF files (as shipped) and gzip files alike.
#[test]
fn prepare_reports_and_stores_the_files_line_numbers_for_crlf_and_gzip() {
    let rows = [
        "smiles,t", "C,1", "CC,2", "CCC,3", "C1CC,4", "xyz,5", "CC,6",
    ];
    let crlf = rows.join("\r\n") + "\r\n";
    for name in ["crlf.csv", "crlf.csv.gz"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if name.ends_with(".gz") {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(crlf.as_bytes()).unwrap();
            std::fs::write(&path, gz.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, &crlf).unwrap();
        }
        let cfg = dir.path().join("cfg.toml");
        std::fs::write(
            &cfg,
            format!(
                "[run]\nout_dir = \"out\"\n[data]\ncsv = \"{name}\"\ntarget_column = \"t\"\nn_train = 2\nn_test = 1\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n"
            ),
        )
        .unwrap();
        let out = dir.path().join("out");
        let o = zo(&[
            "prepare",
            cfg.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        assert_ok(&o);
        let log = stderr(&o);
        for needle in [
            "line 5: \"C1CC\"",
            "line 6: \"xyz\"",
            "line 7: CC (same as line 3)",
        ] {
            assert!(log.contains(needle), "{name}: no {needle:?} in\n{log}");
        }
        let py = Command::new(python())
            .arg(repo().join("tests/py/read_dataset.py"))
            .arg(out.join("dataset.h5"))
            .output()
            .expect("python");
        assert!(py.status.success(), "{}", text(&py));
        let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        let lines: Vec<f64> = v["source_line"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(lines, [2.0, 3.0, 4.0], "{name}");
    }
}

/// Issue 9, item 4: one pathological row (a 100 000-character alkane) is reported
/// by its line like any bad row, and a molecule over `data.max_atoms` too; the
/// rest of the file is prepared.
#[test]
fn a_huge_smiles_is_a_bad_row_not_a_stall() {
    let huge = "C".repeat(100_000);
    let big = "C".repeat(40);
    let csv = format!("smiles,t\nCCO,1\n{huge},2\nCCN,3\n{big},4\nCCCl,5\nc1ccccc1,6\n");
    let (_dir, o, _out) = prepare_case(
        &[("data.csv", &csv)],
        "[run]\nout_dir = \"out\"\n[data]\ncsv = \"data.csv\"\ntarget_column = \"t\"\nn_train = 3\nn_test = 1\nmax_atoms = 30\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n",
    );
    assert_ok(&o);
    let log = stderr(&o);
    assert!(log.contains("2 rows skipped: invalid SMILES"), "{log}");
    assert!(
        log.contains("line 3:")
            && log.contains("100000 bytes exceeds data.max_smiles_length = 1000"),
        "{log}"
    );
    assert!(
        log.contains("line 5:") && log.contains("40 atoms exceed data.max_atoms = 30"),
        "{log}"
    );
    // The long SMILES is shortened in the report.
    assert!(
        log.len() < 20_000,
        "the report repeats the 100 000-character SMILES"
    );
}
