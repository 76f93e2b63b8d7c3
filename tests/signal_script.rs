//! `scripts/signal.sh` (issue 19's paired experiment) without running an
//! experiment: it parses (`bash -n`), its dry run (`DRY_RUN=2`) prints the
//! prepare/train/eval/report commands of every data set × seed × arm with the
//! run folders `<out>/<dataset>/<arm>_s<seed>`, each run's config sets its seed,
//! arm, shared dataset, shipped models and the arm's [zo] keys (replaced, not
//! duplicated; added when the base config lacks them), a config this build knows
//! loads, and an unknown arm or data set stops it before anything runs.
mod common;
use common::*;
use std::process::{Command, Output};

const SCRIPT: &str = "scripts/signal.sh";

fn signal(env: &[(&str, &str)], out: &str) -> Output {
    let mut c = Command::new("bash");
    c.arg(SCRIPT).arg(out).current_dir(repo());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cannot start bash")
}

/// The config text the dry run printed for `file` (indented by 4).
fn printed_config(stdout: &str, file: &str) -> String {
    stdout
        .lines()
        .skip_while(|l| *l != format!("+ config {file}"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `[section]` in `text`.
fn section<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    text.lines()
        .skip_while(|l| l.trim() != format!("[{name}]"))
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn the_script_parses() {
    let o = Command::new("bash")
        .args(["-n", SCRIPT])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_dry_run_prints_every_run_and_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sig");
    let o = signal(
        &[
            ("DRY_RUN", "2"),
            ("ARMS", "paper es_frz"),
            ("SEEDS", "42 43"),
            ("DATASETS", "hof"),
            ("EPOCHS", "2"),
            ("STEPS", "5"),
            ("EVAL_LIMIT", "30"),
        ],
        out.to_str().unwrap(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!out.exists(), "a dry run writes nothing");
    let o = out.display();
    let mut want = vec![format!("+ target/release/zo-hpc prepare {o}/hof/base.toml")];
    for seed in [42, 43] {
        for arm in ["paper", "es_frz"] {
            let c = format!("{o}/hof/{arm}_s{seed}/config.toml");
            want.push(format!(
                "+ target/release/zo-hpc train {c} --stage zo --max-steps 5"
            ));
            want.push(format!("+ target/release/zo-hpc eval {c} --limit 30"));
        }
    }
    let runs = "paper_s42 es_frz_s42 paper_s43 es_frz_s43"
        .split(' ')
        .map(|r| format!("{o}/hof/{r}"))
        .collect::<Vec<_>>()
        .join(" ");
    want.push(format!(
        "+ target/release/zo-hpc report {runs} --out {o}/report --control off"
    ));
    let got: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("+ ") && !l.starts_with("+ config"))
        .collect();
    assert_eq!(got, want, "{stdout}");

    // es_frz, seed 43: keys replaced in place or added, once each.
    let frz = printed_config(&stdout, &format!("{o}/hof/es_frz_s43/config.toml"));
    let run = section(&frz, "run");
    assert!(
        run.contains(&"seed = 43") && run.contains(&"arm = \"es_frz\""),
        "{frz}"
    );
    let zo = section(&frz, "zo");
    for line in [
        "estimator = \"es\"",
        "q = 16",
        "mu = 0.1",
        "lambda = 0.0",
        "freeze = [\"mpnn_embed\", \"mpnn_head\"]",
    ] {
        assert_eq!(
            zo.iter().filter(|l| **l == line).count(),
            1,
            "{line}: {frz}"
        );
    }
    for key in ["estimator", "q", "mu", "lambda"] {
        let n = zo
            .iter()
            .filter(|l| l.split('=').next().unwrap().trim() == key)
            .count();
        assert_eq!(n, 1, "{key} once: {frz}");
    }
    assert!(section(&frz, "train.zo").contains(&"epochs = 2"), "{frz}");

    // paper, seed 42: a config of this build, so it loads as such.
    let paper = printed_config(&stdout, &format!("{o}/hof/paper_s42/config.toml"));
    let path = dir.path().join("paper.toml");
    let cfg =
        zo_hpc::config::Config::from_str(&paper, &path).unwrap_or_else(|e| panic!("{e}\n{paper}"));
    assert_eq!(cfg.run.seed, 42);
    assert_eq!(cfg.run.arm.as_deref(), Some("paper"));
    assert_eq!(cfg.run.out_dir, out.join("hof/paper_s42"));
    assert_eq!((cfg.zo.q, cfg.zo.mu), (1, 0.001));
    assert_eq!(cfg.data.dataset, Some(out.join("hof/dataset.h5")));
    assert_eq!(cfg.zo.pretrained, Some(repo().join("inputs/models/hof")));
    assert!(cfg.data.csv.is_file(), "{}", cfg.data.csv.display());
}

#[test]
fn an_unknown_arm_or_data_set_stops_it_first() {
    let o = signal(&[("DRY_RUN", "1"), ("ARMS", "off nonsense")], "/tmp/never");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown arm 'nonsense'"), "{}", text(&o));
    assert!(!text(&o).contains("+ "), "nothing ran: {}", text(&o));
    let o = signal(&[("DRY_RUN", "1"), ("DATASETS", "qm7")], "/tmp/never");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("qm7.toml"), "{}", text(&o));
}
