//! Issue 20, case 1: a dataset file that no longer matches its config is refused,
//! naming each key or file that differs, and the split can keep its own seed; a
//! Stage 2 whose Stage-1 checkpoints changed is neither taken as done nor resumed.
//! Through the binary.
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A folder with a copy of the tiny MPNN config's CSV (first 200 rows, so that
/// it can be edited) and `cfg.toml` (tiny.toml pointing at it, `edit` applied).
fn case(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let csv = std::fs::read_to_string(repo().join("inputs/data/hof_demo.csv")).unwrap();
    let head: Vec<&str> = csv.lines().take(201).collect();
    std::fs::write(dir.join("data.csv"), head.join("\n") + "\n").unwrap();
    let text = std::fs::read_to_string(repo().join("tests/configs/tiny.toml"))
        .unwrap()
        .replace("../../inputs/data/hof_demo.csv", "data.csv")
        .replace("epochs = 3", "epochs = 1");
    let cfg = dir.join("cfg.toml");
    std::fs::write(&cfg, edit(text)).unwrap();
    cfg
}

fn train(cfg: &Path, out: &Path) -> std::process::Output {
    train_config(cfg.to_str().unwrap(), out, &[])
}

/// Prepared with one config; `train` with an edited one (or edited CSV) is refused,
/// naming `want` and saying how to re-prepare; the folder's dataset is untouched.
fn refused_after(edit_cfg: impl Fn(String) -> String, edit_csv: Option<&str>, want: &str) {
    let d = tempfile::tempdir().unwrap();
    let cfg = case(d.path(), |t| t);
    let out = d.path().join("out");
    assert_ok(&zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]));
    let before = std::fs::read(out.join("dataset.h5")).unwrap();
    case(d.path(), edit_cfg);
    if let Some(rows) = edit_csv {
        std::fs::write(d.path().join("data.csv"), rows).unwrap();
    }
    let o = train(&cfg, &out);
    assert!(
        !o.status.success(),
        "{want}: trained on a stale dataset\n{}",
        text(&o)
    );
    let e = stderr_of(&o);
    assert!(e.contains(want), "{want} not named:\n{e}");
    assert!(
        e.contains("dataset.h5") && e.contains("zo-hpc prepare"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("dataset.h5")).unwrap(), before);
    assert!(!out.join("mpnn").join("checkpoint.h5").exists());
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_changed_seed_split_size_or_bound_is_refused_by_name() {
    refused_after(
        |t| t.replace("seed = 7", "seed = 9"),
        None,
        "data.split_seed: 7 when prepared, 9 now",
    );
    refused_after(
        |t| t.replace("n_train = 96", "n_train = 90"),
        None,
        "data.n_train: 96 when prepared, 90 now",
    );
    refused_after(
        |t| t.replace("[data]\n", "[data]\nmax_atoms = 60\n"),
        None,
        "data.max_atoms",
    );
}

#[test]
fn a_csv_whose_contents_changed_is_refused() {
    let csv = std::fs::read_to_string(repo().join("inputs/data/hof_demo.csv")).unwrap();
    let mut lines: Vec<String> = csv.lines().take(201).map(String::from).collect();
    // Targets rescaled (kcal → kJ) in every row: same molecules, other numbers.
    let col = lines[0]
        .split(',')
        .position(|c| c == "hof298_kcal_mol")
        .unwrap();
    for l in lines.iter_mut().skip(1) {
        let mut f: Vec<String> = l.split(',').map(String::from).collect();
        let v: f64 = f[col].parse().unwrap();
        f[col] = format!("{}", v * 4.184);
        *l = f.join(",");
    }
    refused_after(
        |t| t,
        Some(&(lines.join("\n") + "\n")),
        "data.csv: contents changed",
    );
}

/// One split for several training seeds is a stated choice: `data.split_seed`.
/// Re-preparing makes a changed config usable; the file records its provenance.
#[test]
fn split_seed_keeps_one_split_and_prepare_again_accepts_the_change() {
    let d = tempfile::tempdir().unwrap();
    let cfg = case(d.path(), |t| t);
    let out = d.path().join("out");
    assert_ok(&train(&cfg, &out));
    let split = |p: &Path| {
        let f = hdf5::File::open(p.join("dataset.h5")).unwrap();
        let keys: Vec<String> = f
            .dataset("provenance/keys")
            .unwrap()
            .read_raw::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(keys.iter().any(|k| k == "data.csv"), "{keys:?}");
        f.dataset("split/train").unwrap().read_raw::<u64>().unwrap()
    };
    let first = split(&out);
    // Seed 9 on the seed-7 split: same file, accepted.
    let second = d.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::copy(out.join("dataset.h5"), second.join("dataset.h5")).unwrap();
    case(d.path(), |t| {
        t.replace("seed = 7", "seed = 9")
            .replace("[data]\n", "[data]\nsplit_seed = 7\n")
    });
    let text9 = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text9.contains("split_seed = 7") && text9.contains("seed = 9"),
        "{text9}"
    );
    assert_ok(&train(&cfg, &second));
    assert_eq!(split(&second), first);
    // n_train changed, then `prepare` again: the new file is used.
    case(d.path(), |t| t.replace("n_train = 96", "n_train = 90"));
    assert!(!train(&cfg, &out).status.success());
    assert_ok(&zo(&[
        "prepare",
        cfg.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]));
    assert_ok(&train(&cfg, &out));
    assert_eq!(split(&out).len(), 90);
}

/// A Stage 2 made from one Stage 1 is trained again after the Stage-1 MPNN changes
/// (not skipped as done), and `--resume` of one stopped part-way is refused.
#[test]
fn stage2_notices_a_changed_stage1() {
    let d = tempfile::tempdir().unwrap();
    let out = with_tiny_stage1(d.path(), "run");
    let cfg = pipeline_tiny();
    assert_ok(&zo_on(1, &cfg, &out, &["--max-steps", "2"]));
    let again = zo_on(1, &cfg, &out, &["--max-steps", "2"]);
    assert_ok(&again);
    assert!(text(&again).contains("skipped"), "{}", text(&again));

    // Another Stage-1 MPNN (one more epoch of training) in its place.
    let other = d.path().join("other");
    copy_stage1(tiny_stage1(), &other);
    let more = variant(d.path(), "more.toml", |t| t);
    assert_ok(&train_config(
        &more,
        &other,
        &["--stage", "mpnn", "--max-steps", "1"],
    ));
    std::fs::copy(
        other.join("mpnn/checkpoint.h5"),
        out.join("mpnn/checkpoint.h5"),
    )
    .unwrap();
    let o = zo_on(1, &cfg, &out, &["--max-steps", "2"]);
    assert_ok(&o);
    let t = text(&o);
    assert!(
        !t.contains("skipped") && t.contains("Stage-1 checkpoints that have changed"),
        "{t}"
    );

    // Stopped part-way (a checkpoint at step 2, not complete), Stage 1 changed
    // again: --resume is refused, naming the change.
    let part = with_tiny_stage1(d.path(), "part");
    let o = zo_on(1, &cfg, &part, &["--abort-after-step", "2"]);
    assert_eq!(o.status.code(), Some(86), "{}", text(&o));
    std::fs::copy(
        other.join("mpnn/checkpoint.h5"),
        part.join("mpnn/checkpoint.h5"),
    )
    .unwrap();
    let o = zo_on(1, &cfg, &part, &["--resume"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("other Stage-1 checkpoints"),
        "{}",
        text(&o)
    );
}
