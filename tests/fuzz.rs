//! Issue 9, item 5: bad input, generated. Configs and CSV files built from valid
//! ones by random damage (random bytes, truncation, wrong types, huge numbers,
//! unknown keys, odd encodings, truncated gzip) go through config loading and
//! `prepare`'s dataset build in-process. Every case must end either with a dataset
//! or with an error that names the file, the key or the line; a panic fails.
//! Cases: `ZO_FUZZ_CASES` (default 300; `ZO_FUZZ_CASES=10000 scripts/cargo.sh test
//! --release --test fuzz` for the long run).
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::io::Write;
use std::path::Path;

/// A runner of `cases` cases that stores no failure files in the repository.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// A valid config reading `csv_name` next to it.
fn config_for(csv_name: &str) -> String {
    format!("[run]\nout_dir = \"out\"\n[data]\ncsv = \"{csv_name}\"\ntarget_column = \"t\"\nn_train = 1\nn_test = 1\n[train]\nepochs = 1\nbatch_size = 2\nlr = 0.001\n")
}

fn cases() -> u32 {
    std::env::var("ZO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

const SMILES: [&str; 8] = [
    "CCO",
    "c1ccccc1",
    "CC(=O)O",
    "C1CC",
    "[Na+].[Cl-]",
    "N#N",
    "xyz",
    "C(C)(C)(C)(C)C",
];

/// A CSV row of `smiles,t`: valid or damaged.
fn row() -> impl Strategy<Value = String> {
    let smiles = prop_oneof![
        proptest::sample::select(SMILES.to_vec()).prop_map(str::to_string),
        "[ -~]{0,12}",
        proptest::collection::vec(any::<char>(), 0..6).prop_map(|v| v.into_iter().collect()),
        Just("C".repeat(3000)),
    ];
    let target = prop_oneof![
        any::<f64>().prop_map(|x| x.to_string()),
        Just("nan".to_string()),
        Just("1e400".to_string()),
        Just(String::new()),
        "[a-z]{1,5}",
        (-1000i64..1000).prop_map(|x| x.to_string()),
    ];
    let extra = prop_oneof![Just(""), Just(",extra"), Just(",\"quoted\nnewline\"")];
    (smiles, target, extra).prop_map(|(s, t, e)| {
        let s = if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        };
        format!("{s},{t}{e}")
    })
}

/// The bytes of a CSV file, with line endings, BOM and damage varied.
fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let rows = proptest::collection::vec(row(), 0..12);
    let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    let damage = prop_oneof![
        3 => Just(None),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(Some),
    ];
    (rows, ending, any::<bool>(), damage, any::<Option<usize>>()).prop_map(
        |(rows, end, bom, damage, cut)| {
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            text.push_str("smiles,t");
            text.push_str(end);
            for r in rows {
                text.push_str(&r);
                text.push_str(end);
            }
            let mut b = text.into_bytes();
            if let Some((at, bytes)) = damage {
                let at = at % (b.len() + 1);
                b.splice(at..at, bytes);
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            b
        },
    )
}

/// A config text built from a valid one with one key's value replaced, a key
/// added or dropped, or the text damaged.
fn config_text() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("\"text\"".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e308".to_string()),
        Just("18446744073709551616".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("true".to_string()),
        (0u64..100).prop_map(|x| x.to_string()),
    ];
    let keys = prop_oneof![
        Just("n_train"),
        Just("n_test"),
        Just("seed"),
        Just("epochs"),
        Just("batch_size"),
        Just("lr"),
        Just("target_column"),
        Just("csv"),
        Just("max_atoms"),
        Just("not_a_key"),
    ];
    let edit = prop_oneof![
        (keys.clone(), value).prop_map(|(k, v)| (Some((k, v)), None, None)),
        keys.prop_map(|k| (None, Some(k), None)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6)).prop_map(|d| (
            None,
            None,
            Some(d)
        )),
    ];
    edit.prop_map(|(set, drop, bytes)| {
        let mut lines: Vec<String> = [
            "[run]",
            "out_dir = \"out\"",
            "seed = 1",
            "[data]",
            "csv = \"data.csv\"",
            "target_column = \"t\"",
            "n_train = 2",
            "n_test = 1",
            "[train]",
            "epochs = 1",
            "batch_size = 2",
            "lr = 0.001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some((k, v)) = set {
            match lines.iter().position(|l| l.starts_with(&format!("{k} ="))) {
                Some(i) => lines[i] = format!("{k} = {v}"),
                None => lines.insert(4, format!("{k} = {v}")),
            }
        }
        if let Some(k) = drop {
            lines.retain(|l| !l.starts_with(&format!("{k} =")));
        }
        let mut b = (lines.join("\n") + "\n").into_bytes();
        if let Some((at, bytes)) = bytes {
            let at = at % (b.len() + 1);
            b.splice(at..at, bytes);
        }
        b
    })
}

const VALID_CSV: &str = "smiles,t\nCCO,1\nc1ccccc1,2\nCC(=O)O,3\nCCN,4\n";

/// Loads the config and builds the dataset; an error must name the config file,
/// the CSV file, a `line` or a config key.
fn check(cfg_path: &Path, csv_name: &str) -> Result<(), TestCaseError> {
    let outcome = zo_hpc::config::Config::load(cfg_path)
        .map_err(anyhow::Error::from)
        .and_then(|cfg| zo_hpc::data::prepare::build(&cfg).map(|_| ()));
    if std::env::var("ZO_FUZZ_DEBUG").is_ok() {
        eprintln!(
            "OUTCOME {:?}",
            outcome.as_ref().map_err(|e| format!("{e:#}"))
        );
    }
    if let Err(e) = outcome {
        let msg = format!("{e:#}");
        let named = msg.contains("cfg.toml")
            || msg.contains(csv_name)
            || msg.contains("line")
            || msg.contains("data.")
            || msg.contains("train.");
        prop_assert!(named, "an error that names nothing: {msg}");
    }
    Ok(())
}

#[test]
fn generated_configs_load_or_fail_naming_the_file_or_key() {
    runner(cases())
        .run(&config_text(), |text| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("data.csv"), VALID_CSV).unwrap();
            let p = dir.path().join("cfg.toml");
            std::fs::write(&p, &text).unwrap();
            check(&p, "data.csv")
        })
        .unwrap();
}

#[test]
fn generated_csv_files_prepare_or_fail_naming_the_file_or_line() {
    runner(cases())
        .run(&(csv_bytes(), 0u8..3), |(bytes, kind)| {
            let dir = tempfile::tempdir().unwrap();
            // 0: plain; 1: gzip; 2: gzip cut short.
            let name = if kind == 0 { "data.csv" } else { "data.csv.gz" };
            let stored = if kind == 0 {
                bytes
            } else {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&bytes).unwrap();
                let mut z = gz.finish().unwrap();
                if kind == 2 {
                    z.truncate(z.len() / 2);
                }
                z
            };
            std::fs::write(dir.path().join(name), stored).unwrap();
            let p = dir.path().join("cfg.toml");
            std::fs::write(&p, config_for(name)).unwrap();
            check(&p, name)
        })
        .unwrap();
}

/// A sample of the generated CSV files through the real binary: `zo-hpc prepare`
/// exits 0 with a dataset written, or non-zero with an error line that names the
/// file or a line; it never panics.
#[test]
fn the_binary_prepares_or_fails_cleanly_on_generated_csv_files() {
    let bin = env!("CARGO_BIN_EXE_zo-hpc");
    runner((cases() / 10).max(10))
        .run(&csv_bytes(), |bytes| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("data.csv"), bytes).unwrap();
            let p = dir.path().join("cfg.toml");
            std::fs::write(&p, config_for("data.csv")).unwrap();
            let o = std::process::Command::new(bin)
                .args(["prepare", p.to_str().unwrap()])
                .env("OMP_WAIT_POLICY", "PASSIVE")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            prop_assert!(!err.contains("panicked"), "{err}");
            if o.status.success() {
                prop_assert!(dir.path().join("out/dataset.h5").is_file());
            } else {
                let line = err.lines().find(|l| l.contains("error")).unwrap_or("");
                prop_assert!(
                    line.contains("data.csv") || line.contains("line") || line.contains("data."),
                    "{err}"
                );
            }
            Ok(())
        })
        .unwrap();
}
