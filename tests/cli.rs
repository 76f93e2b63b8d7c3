//! The command line itself (issue 22): `zo-hpc --help` lists each command in one
//! line, the long text stays in `zo-hpc CMD --help`.
mod common;
use common::*;

#[test]
fn help_lists_each_command_in_one_line_and_keeps_the_long_text_per_command() {
    let o = zo(&["--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let names: Vec<&str> = commands
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "prepare",
            "train",
            "eval",
            "export",
            "gradcheck",
            "report",
            "help"
        ],
        "{help}"
    );
    for line in &commands {
        assert!(line.len() <= 100, "a command's line is a summary: {line:?}");
    }
    let o = zo(&["train", "--help"]);
    let long = String::from_utf8_lossy(&o.stdout);
    assert!(
        long.contains("--time-limit") && long.contains("continues along the identical trajectory"),
        "{long}"
    );
}

fn tiny() -> String {
    repo().join("tests/configs/tiny.toml").display().to_string()
}

/// Issue 22: `--set KEY=VALUE` overrides the config for one invocation, nested
/// per-stage keys included; the effective config is saved in the run folder and
/// named in the log, and is the text the metrics record.
#[test]
fn set_overrides_the_config_and_saves_the_effective_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = train_config(
        &tiny(),
        &out,
        &[
            "--set",
            "train.epochs=1",
            "--set",
            "train.mpnn.batch_size=32",
            "--set",
            "mpnn.node_out=16",
        ],
    );
    assert_ok(&o);
    let effective = out.join("config.effective.toml");
    assert!(
        text(&o).contains(&format!("the effective config is {}", effective.display())),
        "{}",
        text(&o)
    );
    let saved = std::fs::read_to_string(&effective).unwrap();
    assert!(
        saved.starts_with("# ") && saved.contains("--set train.epochs=1"),
        "{saved}"
    );
    let m = read_metrics(&out.join("mpnn/metrics.h5"));
    // 96 molecules, one epoch of batches of 32 (the per-stage key), not 3 of 16
    assert_eq!(m.step_loss.len(), 3);
    let f = hdf5::File::open(out.join("mpnn/metrics.h5")).unwrap();
    let cfg = zo_hpc::io::h5::read_str_attr(&f, "config").unwrap();
    assert!(
        cfg.contains("node_out = 16") && cfg.contains("batch_size = 32"),
        "{cfg}"
    );
}

/// Issue 22: a `--set` the config refuses (misspelled key, wrong type, out of
/// range, no KEY=VALUE) is an error naming it, before anything runs.
#[test]
fn a_bad_set_is_named_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (set, says) in [
        ("mpnn.node_outt=16", "unknown field `node_outt`"),
        ("train.epochs=\"many\"", "invalid type: string \"many\""),
        ("train.epochs=0", "key `train.epochs`: must be at least 1"),
        ("train.epochs", "expected KEY=VALUE"),
    ] {
        let out = dir.path().join("run");
        let o = train_config(&tiny(), &out, &["--set", set]);
        let t = text(&o);
        assert!(!o.status.success(), "{set}: {t}");
        assert!(
            t.contains(&format!("--set {set}: ")) && t.contains(says),
            "{set}: {t}"
        );
        assert!(!out.exists(), "{set}: nothing written");
    }
}
