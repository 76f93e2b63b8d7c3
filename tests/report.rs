//! `zo-hpc report` through the real binary on the tiny pipeline (a few steps per
//! stage, `eval` and `gradcheck` on a handful of molecules): every expected PNG is
//! written and decodes at the expected size, Table 1's cells are eval.h5's values,
//! two runs are overlaid and summarized as mean ± sd, the `commit` attribute is
//! shown when a file has one, and a folder without HDF5 files is an error naming it.
//! Fake run folders (only `eval.h5`) of two arms × 3 seeds give the arm view:
//! per-arm summaries, paired differences by seed with their t-intervals, the run
//! without a partner listed, the forest plots, and `--control`.
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
            // Stage 2 of another seed on the first run's split (its dataset file).
            t.replace("\nseed = 5\n", "\nseed = 43\n")
                .replace("[data]\n", "[data]\nsplit_seed = 5\n")
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
    // One arm, named by the folders (`zinc`, `zinc_seed43`), seeds from the configs
    // Stage 2 recorded; no `off` run to pair with, said so.
    assert!(md.contains("| zinc | 2 | 5 43 |"), "{md}");
    assert!(
        md.contains("No paired differences: no run of the control arm `off`"),
        "{md}"
    );
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

/// A fake run folder with only an `eval.h5`: Stage 1 shared, Stage 2's
/// `pipeline_rmse` = `rmse` (`true_rmse` half of it) and `recon_acc` = `recon`.
fn fake_run(dir: &Path, config: &str, rmse: f64, recon: f64) {
    use zo_hpc::io::h5::{write_attr, write_str_attr};
    std::fs::create_dir_all(dir).unwrap();
    let f = hdf5::File::create(dir.join("eval.h5")).unwrap();
    write_str_attr(&f, "config", config).unwrap();
    write_str_attr(&f, "target_column", "hof298_kcal_mol").unwrap();
    for (label, rmse, recon) in [("stage1", 44.71, 0.255), ("stage2", rmse, recon)] {
        let g = f.create_group(label).unwrap();
        for row in ROWS {
            let v = match row {
                "recon_acc" => recon,
                "pipeline_rmse" | "pipeline_rmse_mean_fill" => rmse,
                "true_rmse" => rmse / 2.0,
                "baseline_rmse" => 58.87,
                "evaluated" => 8.0,
                _ => 0.0,
            };
            write_attr(&g, row, &v).unwrap();
        }
    }
}

/// The rows (first cell → the others) of the Markdown table after `from` whose
/// header starts with `head`.
fn rows_after(md: &str, from: usize, head: &str) -> BTreeMap<String, Vec<String>> {
    md[from..]
        .lines()
        .skip_while(|l| !l.starts_with(head))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let mut c: Vec<String> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            (c.remove(0), c)
        })
        .collect()
}

/// "m [lo, hi] (k/n)" or "m ± sd [lo, hi]": the numbers and the favouring pairs.
fn interval_cell(c: &str) -> (String, String, String, String) {
    let (m, rest) = c.split_once(" [").unwrap_or_else(|| panic!("{c:?}"));
    let (lo, rest) = rest.split_once(", ").unwrap();
    let (hi, rest) = rest.split_once(']').unwrap();
    let m = m.split(" ± ").next().unwrap();
    (m.into(), lo.into(), hi.into(), rest.trim().into())
}

#[test]
fn arms_are_summarized_and_paired_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    // `off` named by its folders; `es` by `run.arm` (folders named otherwise);
    // es seed 45 has no `off` partner.
    let off = [(42, 40.0, 0.25), (43, 50.0, 0.26), (44, 45.0, 0.27)];
    let es = [
        (42, 38.0, 0.28),
        (43, 47.0, 0.27),
        (44, 46.0, 0.29),
        (45, 30.0, 0.2),
    ];
    let mut folders = Vec::new();
    for (seed, rmse, recon) in off {
        let d = dir.path().join(format!("off_s{seed}"));
        fake_run(&d, &format!("[run]\nseed = {seed}\n"), rmse, recon);
        folders.push(d);
    }
    for (seed, rmse, recon) in es {
        let d = dir.path().join(format!("estimator-run-{}", seed - 40));
        let cfg = format!("[run]\nseed = {seed}\narm = \"es\"\n");
        fake_run(&d, &cfg, rmse, recon);
        folders.push(d);
    }
    let args: Vec<&str> = folders.iter().map(|d| d.to_str().unwrap()).collect();
    let out = dir.path().join("report");
    let mut with_out = args.clone();
    with_out.extend(["--out", out.to_str().unwrap()]);
    let (md, _) = report(&with_out);
    let at = md.find("### hof298_kcal_mol").expect(&md);
    // Per arm: n, seeds, mean ± sd [95% t-interval]; t(0.975, 2) = 4.302653.
    let arms = rows_after(&md, at, "| arm | runs |");
    assert_eq!(arms["off"][..2], ["3".to_string(), "42 43 44".to_string()]);
    assert_eq!(
        arms["es"][..2],
        ["4".to_string(), "42 43 44 45".to_string()]
    );
    assert_eq!(arms["Stage 1"][2], "44.7100", "Stage 1 shared: one value");
    let half = 4.302653 * 5.0 / 3f64.sqrt();
    let (m, lo, hi, _) = interval_cell(&arms["off"][2]);
    assert!(arms["off"][2].starts_with("45 ± 5 ["), "{}", arms["off"][2]);
    assert_cell(&m, 45.0, "off mean");
    assert_cell(&lo, 45.0 - half, "off lo");
    assert_cell(&hi, 45.0 + half, "off hi");
    // Paired: es − off over seeds 42–44: −2, −3, +1 (2 of 3 favour es), and
    // recon +3, +1, +2 points (all favour es: higher is better).
    let paired = rows_after(&md, at, "| arm | control | pairs |");
    let row = &paired["es"];
    assert_eq!(row[..2], ["off".to_string(), "3".to_string()]);
    let d = [-2.0, -3.0, 1.0];
    let mean = d.iter().sum::<f64>() / 3.0;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let half = 4.302653 * sd / 3f64.sqrt();
    let (m, lo, hi, favour) = interval_cell(&row[2]);
    assert_cell(&m, mean, "paired mean");
    assert_cell(&lo, mean - half, "paired lo");
    assert_cell(&hi, mean + half, "paired hi");
    assert_eq!(favour, "(2/3)");
    let (m, _, _, favour) = interval_cell(&row[4]);
    assert_cell(&m, 0.02, "paired recon");
    assert_eq!(favour, "(3/3)");
    assert!(
        !paired.contains_key("off"),
        "the control is not paired with itself"
    );
    assert!(
        md.contains("Not paired: `es` seed 45 (no `off` run with that seed)."),
        "{md}"
    );
    let pngs: Vec<String> = ["pipeline_rmse", "true_rmse", "recon_acc"]
        .iter()
        .map(|m| format!("paired_hof298_kcal_mol_{m}.png"))
        .collect();
    assert_pngs(&out, &pngs, &md);
    // Another control: off is then paired with es (the signs turn).
    let (r2, r3) = (dir.path().join("r2"), dir.path().join("r3"));
    let mut other = args.clone();
    other.extend(["--out", r2.to_str().unwrap()]);
    other.extend(["--control", "es"]);
    let (md, _) = report(&other);
    let paired = rows_after(&md, 0, "| arm | control | pairs |");
    assert_cell(&interval_cell(&paired["off"][2]).0, -mean, "reversed mean");
    assert_eq!(interval_cell(&paired["off"][2]).3, "(1/3)");
    // No run of the control: said so, no paired plot.
    let mut none = args;
    none.extend(["--out", r3.to_str().unwrap()]);
    none.extend(["--control", "nothing"]);
    let (md, _) = report(&none);
    assert!(
        md.contains("No paired differences: no run of the control arm `nothing`"),
        "{md}"
    );
    assert!(!md.contains("paired_hof298"), "{md}");
}
