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

/// Issue 22: `run.out_dir` is relative to the config file, as its data paths are,
/// whatever folder the run starts from; `--out-dir` is relative to the working
/// directory; the absolute run folder is logged.
#[test]
fn out_dir_is_relative_to_the_config_and_out_dir_flag_to_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, elsewhere) = (dir.path().join("conf"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = config_copy(&conf, "tests/configs/tiny.toml", "tiny.toml", |t| {
        t.replace("out_dir = \"../../runs/tiny\"", "out_dir = \"out\"")
    });
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("out_dir = \"out\""));
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .current_dir(&elsewhere)
            .output()
            .unwrap()
    };
    let c = config.as_str();
    let o = run(&["train", c, "--max-steps", "2"]);
    assert_ok(&o);
    let expected = conf.join("out");
    assert!(expected.join("mpnn/metrics.h5").is_file(), "{}", text(&o));
    assert!(!elsewhere.join("out").exists());
    assert!(
        text(&o).contains(&format!("run folder {}", expected.display())),
        "{}",
        text(&o)
    );
    let o = run(&["train", c, "--max-steps", "2", "--out-dir", "mine"]);
    assert_ok(&o);
    assert!(
        elsewhere.join("mine/mpnn/metrics.h5").is_file(),
        "{}",
        text(&o)
    );
}

/// Issue 22: `scripts/table1.sh` and `scripts/scarcity.sh` vary a config with
/// `--set` (kept per run in `set.args`, reused by the evaluation), never by
/// rewriting its TOML; `run.out_dir` is found relative to the config.
#[test]
fn the_table1_and_scarcity_scripts_vary_the_config_with_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_copy(
        dir.path(),
        "tests/configs/pipeline_tiny.toml",
        "p.toml",
        |t| {
            t.replace(
                "out_dir = \"../../runs/pipeline_tiny\"",
                "out_dir = \"run\"",
            )
        },
    );
    let script = |name: &str, env: &[(&str, &str)]| {
        let o = std::process::Command::new("bash")
            .arg(repo().join("scripts").join(name))
            .arg(&config)
            .envs(env.iter().copied())
            .env("ZO_HPC", bin())
            .env("EVAL_LIMIT", "4")
            .current_dir(repo())
            .output()
            .unwrap();
        assert_ok(&o);
    };
    script("table1.sh", &[("SEEDS", "5 8"), ("VARIANTS", "q2:q=2")]);
    let run = dir.path().join("run");
    for r in ["run", "run_seed8", "run_q2"] {
        let r = dir.path().join(r);
        assert!(r.join("eval.h5").is_file(), "{}", r.display());
        assert!(
            !r.join("config.toml").exists(),
            "no rewritten TOML in {}",
            r.display()
        );
    }
    let config_of = |r: &std::path::Path| {
        let f = hdf5::File::open(r.join("zo/metrics.h5")).unwrap();
        zo_hpc::io::h5::read_str_attr(&f, "config").unwrap()
    };
    let q2 = config_of(&dir.path().join("run_q2"));
    assert!(q2.contains("q = 2") && q2.contains("init_mpnn"), "{q2}");
    let args = std::fs::read_to_string(dir.path().join("run_seed8/set.args")).unwrap();
    assert!(
        args.contains("run.seed=8") && args.contains(&run.join("dataset.h5").display().to_string())
    );
    assert!(dir.path().join("run_seed8/config.effective.toml").is_file());
    script(
        "scarcity.sh",
        &[("SOURCES", "rdkit"), ("SIZES", "16"), ("SEEDS", "5 6")],
    );
    let n16 = dir.path().join("run_scarcity/rdkit_n16_seed6");
    assert!(n16.join("eval.h5").is_file());
    let c = config_of(&n16);
    assert!(
        c.contains("n_labeled = 16") && c.contains("seed = 6"),
        "{c}"
    );
    assert!(dir.path().join("run_scarcity/report/report.md").is_file());
}

/// Issue 22: `--max-steps` stops a stage without calling it complete, and
/// `--resume` continues it along the identical trajectory; the same limit again
/// leaves it as it is; `--resume` after a change of settings is an error naming
/// the setting, never a silent start from scratch.
#[test]
fn max_steps_then_resume_continues_and_a_changed_setting_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cut, full) = (dir.path().join("cut"), dir.path().join("full"));
    let o = train_config(&tiny(), &cut, &["--max-steps", "3"]);
    assert_ok(&o);
    assert!(text(&o).contains("stopped at step 3 of 18"), "{}", text(&o));
    let ck = cut.join("mpnn/checkpoint.h5");
    let mtime = || std::fs::metadata(&ck).unwrap().modified().unwrap();
    let at3 = mtime();
    // the same limit again: nothing to do
    let o = train_config(&tiny(), &cut, &["--max-steps", "3"]);
    assert_ok(&o);
    assert!(
        text(&o).contains("the --max-steps limit: skipped"),
        "{}",
        text(&o)
    );
    assert_eq!(mtime(), at3);
    // --resume with another learning rate: refused, naming it; nothing written
    let o = train_config(&tiny(), &cut, &["--resume", "--set", "train.lr=0.002"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("other settings") && t.contains("lr: 0.001 when trained, 0.002 now"),
        "{t}"
    );
    assert_eq!(mtime(), at3);
    // --resume continues to the end, as one uninterrupted run
    let o = train_config(&tiny(), &cut, &["--resume"]);
    assert_ok(&o);
    assert!(text(&o).contains("at step 3"), "{}", text(&o));
    assert_ok(&train_config(&tiny(), &full, &[]));
    assert_eq!(
        read_params(&ck),
        read_params(&full.join("mpnn/checkpoint.h5"))
    );
    let (a, b) = (
        read_metrics(&full.join("mpnn/metrics.h5")),
        read_metrics(&cut.join("mpnn/metrics.h5")),
    );
    assert_eq!(a.step_loss, b.step_loss);
    // now complete: skipped as done
    let o = train_config(&tiny(), &cut, &[]);
    assert!(text(&o).contains("complete at step 18"), "{}", text(&o));
}
