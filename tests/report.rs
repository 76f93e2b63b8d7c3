//! `zo-hpc report` through the real binary on the tiny pipeline (a few steps per
//! stage, `eval` and `gradcheck` on a handful of molecules): every expected PNG is
//! written and decodes at the expected size, Table 1's cells are eval.h5's values,
//! two runs are overlaid and summarized as mean ± sd, the `commit` attribute is
//! shown when a file has one, and a folder without HDF5 files is an error naming it.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TINY: &str = "tests/configs/pipeline_tiny.toml";

struct Runs {
    _dir: tempfile::TempDir,
    /// The whole tiny pipeline, eval.h5 and gradcheck.h5.
    first: PathBuf,
    /// Stage 2 only (Stage 1 copied from `first`) with another seed, and eval.h5
    /// carrying a `commit` attribute.
    second: PathBuf,
}

fn run_ok(args: &[&str]) {
    assert_ok(&zo(args));
}

/// Both runs, made once per test binary.
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tiny = repo().join(TINY).display().to_string();
        let first = dir.path().join("zinc");
        let f = first.to_str().unwrap();
        run_ok(&["train", &tiny, "--out-dir", f, "--max-steps", "6"]);
        run_ok(&["eval", &tiny, "--out-dir", f, "--limit", "8"]);
        run_ok(&[
            "gradcheck",
            &tiny,
            "--out-dir",
            f,
            "--trials",
            "2",
            "--molecules",
            "2",
            "--directions",
            "1",
            "--signal-molecules",
            "3",
            "--signal-q",
            "2",
            "--signal-radii",
            "1",
            "--signal-descent-q",
            "2",
        ]);

        let second = dir.path().join("zinc_seed43");
        for sub in ["jtvae", "mpnn"] {
            std::fs::create_dir_all(second.join(sub)).unwrap();
            let ck = |d: &Path| d.join(sub).join("checkpoint.h5");
            std::fs::copy(ck(&first), ck(&second)).unwrap();
        }
        std::fs::copy(first.join("dataset.h5"), second.join("dataset.h5")).unwrap();
        let seed43 = config_copy(dir.path(), TINY, "seed43.toml", |t| {
            assert!(t.contains("\nseed = 5\n"), "{TINY} changed its seed line");
            t.replace("\nseed = 5\n", "\nseed = 43\n")
        });
        let s = second.to_str().unwrap();
        run_ok(&[
            "train",
            &seed43,
            "--out-dir",
            s,
            "--stage",
            "zo",
            "--max-steps",
            "6",
        ]);
        run_ok(&["eval", &seed43, "--out-dir", s, "--limit", "8"]);
        let f = hdf5::File::open_rw(second.join("eval.h5")).unwrap();
        // Another commit than this binary's (the one the first run shows).
        f.delete_attr("commit").unwrap();
        zo_hpc::io::h5::write_str_attr(&f, "commit", "0123abcd").unwrap();
        Runs {
            _dir: dir,
            first,
            second,
        }
    })
}

/// Decodes a PNG completely; its size, and whether it shows more than a blank page.
fn decode_png(path: &Path) -> (u32, u32, bool) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(file)
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let drawn = buf[..info.buffer_size()].iter().any(|&b| b != 255);
    (info.width, info.height, drawn)
}

/// Checks that `out` holds exactly the PNGs `expected`, each a full-size picture
/// linked from report.md.
fn assert_pngs(out: &Path, expected: &[String], markdown: &str) {
    let mut found: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    found.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(found, want);
    let (w, h) = zo_hpc::report::SIZE;
    for name in expected {
        assert_eq!(decode_png(&out.join(name)), (w, h, true), "{name}");
        assert!(
            markdown.contains(&format!("]({name})")),
            "{name} not linked"
        );
    }
}

/// The value a printed cell stands for, and how far from it the value it was
/// printed from may be ("12.50%", "2.1544", "8").
fn parse_cell(cell: &str) -> (f64, f64) {
    let (num, scale) = match cell.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (cell, 1.0),
    };
    let v: f64 = num
        .parse()
        .unwrap_or_else(|_| panic!("cell {cell:?} is not a number"));
    // A whole number is printed without decimals only when it is one.
    let tol = match num.split_once('.') {
        Some((_, d)) => 0.5 * 10f64.powi(-(d.len() as i32)) * scale,
        None if scale == 1.0 => 0.0,
        None => 0.5 * scale,
    };
    (v * scale, tol + 1e-12)
}

fn assert_cell(cell: &str, want: f64, what: &str) {
    let (got, tol) = parse_cell(cell);
    assert!(
        (got - want).abs() <= tol,
        "{what}: printed {cell}, eval.h5 has {want}"
    );
}

/// The Markdown table whose header starts with `| metric |` after `from`:
/// column headers and rows (metric → cells).
fn table(markdown: &str, from: usize) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let split = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = markdown[from..]
        .lines()
        .skip_while(|l| !l.starts_with("| metric |"));
    let header = split(lines.next().expect("no table"));
    let rows = lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let mut c = split(l);
            (c.remove(0), c)
        })
        .collect();
    (header[1..].to_vec(), rows)
}

fn eval_value(run: &Path, label: &str, name: &str) -> f64 {
    let f = hdf5::File::open(run.join("eval.h5")).unwrap();
    zo_hpc::io::h5::read_attr::<f64>(&f.group(label).unwrap(), name).unwrap()
}

const ROWS: [&str; 8] = [
    "recon_acc",
    "pipeline_rmse",
    "pipeline_rmse_mean_fill",
    "true_rmse",
    "baseline_rmse",
    "decode_failed",
    "featurize_failed",
    "evaluated",
];

/// Every Table-1 cell of `columns` ((header, run folder, eval.h5 group)) is the
/// value in that run's eval.h5.
fn assert_table1(markdown: &str, columns: &[(&str, &Path, &str)]) {
    let (header, rows) = table(markdown, 0);
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    assert_eq!(header, names);
    for row in ROWS {
        let cells = &rows[row];
        for (i, (head, run, label)) in columns.iter().enumerate() {
            assert_cell(
                &cells[i],
                eval_value(run, label, row),
                &format!("{head} {row}"),
            );
        }
    }
}

fn report(args: &[&str]) -> (String, String) {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    let o = zo(&all);
    assert_ok(&o);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn names(run: &str, what: &[&str]) -> Vec<String> {
    what.iter().map(|w| format!("{run}_{w}.png")).collect()
}

const ZO: [&str; 4] = ["zo_loss", "zo_eval", "zo_diagnostics", "zo_phases"];

/// The plots of the first run: every stage and the estimator check.
fn first_run_pngs() -> Vec<String> {
    let mut all = names(
        "zinc",
        &[
            "jtvae_loss",
            "jtvae_accuracy",
            "mpnn_loss",
            "mpnn_rmse",
            "gradcheck_cosine",
            "gradcheck_flip",
            "gradcheck_signal",
        ],
    );
    all.extend(names("zinc", &ZO));
    all
}

#[test]
fn one_run_gives_every_plot_and_table_1_from_eval_h5() {
    let r = runs();
    let out = tempfile::tempdir().unwrap();
    let (stdout, _) = report(&[
        r.first.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert_eq!(stdout, md, "report.md is what was printed");
    assert_pngs(out.path(), &first_run_pngs(), &md);
    assert_table1(
        &md,
        &[
            ("zinc stage1", &r.first, "stage1"),
            ("zinc stage2", &r.first, "stage2"),
        ],
    );
    assert!(!md.contains("mean ± sd"), "one run has no spread:\n{md}");
    let commit = format!("- commit: {}", zo_hpc::COMMIT);
    assert!(
        md.contains("## Signal test on the real pipeline")
            && md.contains("| placebo (a random direction) |"),
        "no signal test section:\n{md}"
    );
    for line in [
        "`run.seed` = 5, `zo.mu` = 0.5, `zo.q` = 2, `zo.estimator` = forward, `zo.lambda` = 1.0",
        "- ranks: jtvae 1, mpnn 1, zo 1",
        commit.as_str(),
    ] {
        assert!(md.contains(line), "{line:?} missing:\n{md}");
    }
    // A font file named by ZO_HPC_FONT is used or refused, never skipped silently.
    let o = std::process::Command::new(bin())
        .args(["report", r.first.to_str().unwrap(), "--out"])
        .arg(out.path().join("bad_font"))
        .env("ZO_HPC_FONT", repo().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Cargo.toml: not a font"),
        "{}",
        text(&o)
    );
}

#[test]
fn two_runs_are_overlaid_and_summarized_as_mean_and_sd() {
    let r = runs();
    let (md, log) = report(&[r.first.to_str().unwrap(), r.second.to_str().unwrap()]);
    // default output folder: <first run>/report
    let out = r.first.join("report");
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), md);
    // the second run has no Stage-1 metrics (only checkpoints): skipped, said so
    assert!(
        log.contains(&format!(
            "{}: not there",
            r.second.join("jtvae/metrics.h5").display()
        )),
        "{log}"
    );
    let mut expected = first_run_pngs();
    expected.extend(names("zinc_seed43", &ZO));
    expected.extend(names("compare", &["zo_eval", "zo_steps"]));
    assert_pngs(&out, &expected, &md);
    assert_table1(
        &md,
        &[
            ("zinc stage1", &r.first, "stage1"),
            ("zinc stage2", &r.first, "stage2"),
            ("zinc_seed43 stage1", &r.second, "stage1"),
            ("zinc_seed43 stage2", &r.second, "stage2"),
        ],
    );
    // Stage 1 is shared, so only Stage 2 gets a spread.
    let at = md.find("Mean ± sample standard deviation").expect(&md);
    let (header, rows) = table(&md, at);
    assert_eq!(header, ["stage2 mean ± sd"]);
    for row in ROWS {
        let v = [
            eval_value(&r.first, "stage2", row),
            eval_value(&r.second, "stage2", row),
        ];
        let mean = (v[0] + v[1]) / 2.0;
        let sd = ((v[0] - mean).powi(2) + (v[1] - mean).powi(2)).sqrt();
        let (m, s) = rows[row][0].split_once(" ± ").expect(&rows[row][0]);
        assert_cell(m, mean, &format!("mean {row}"));
        assert_cell(s, sd, &format!("sd {row}"));
    }
    assert!(md.contains("`run.seed` = 43"), "{md}");
    // The files of one run made by different commits are each named.
    assert!(md.contains("; 0123abcd (eval)"), "{md}");
}

#[test]
fn a_folder_without_hdf5_files_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not_a_run");
    std::fs::create_dir_all(empty.join("zo")).unwrap();
    std::fs::write(empty.join("notes.txt"), "no HDF5 here").unwrap();
    let o = zo(&["report", empty.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: nothing readable", empty.display())),
        "{err}"
    );
    assert!(!empty.join("report").exists(), "nothing written");
    // and a folder that does not exist
    let o = zo(&["report", dir.path().join("missing").to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing is not a folder"),
        "{}",
        text(&o)
    );
}
