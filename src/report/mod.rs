//! `zo-hpc report RUN_DIR…`: plots and a Markdown summary of finished (or partly
//! finished) runs, made from their HDF5 files alone (no config, no model, no
//! RDKit): the training curves of every stage, Stage 2's per-step diagnostics,
//! the estimator check of `gradcheck`, overlays across runs, and Table 1 (Stage 1
//! vs Stage 2 from `eval.h5`) with mean ± sd over runs, and with several runs the
//! arm view: Stage 2 per arm and data set, and each arm's paired difference to a
//! control arm by seed.
//!
//! `load` reads a run folder (its `eval.h5` through `io::eval_file`, the file's
//! owner), `figures` decides what to plot, `plots` draws it, `table` writes the
//! Markdown, `scarcity` adds the data-scarcity view when the runs span label
//! counts, `arms` labels runs by data set, arm and seed, `paired` writes the arm
//! view with `stats`' intervals, `signal` the signal test of `gradcheck.h5`,
//! `error` names what can fail.
mod arms;
mod error;
mod figures;
mod load;
mod paired;
mod plots;
mod scarcity;
mod signal;
pub mod stats;
mod table;

pub use error::ReportError;
pub use plots::SIZE;

use std::path::{Path, PathBuf};

/// What a report wrote.
pub struct Written {
    pub markdown: String,
    pub report: PathBuf,
    pub pngs: Vec<PathBuf>,
}

/// The arm every other arm is compared with unless `--control` names another.
pub const CONTROL: &str = "off";

/// Reads the runs in `dirs`, writes the PNGs and report.md into `out` (default
/// `<first dir>/report`); arms are paired with `control` (see `CONTROL`).
pub fn run(dirs: &[PathBuf], out: Option<&Path>, control: &str) -> Result<Written, ReportError> {
    let first = dirs.first().ok_or(ReportError::NoRuns)?;
    let out = out.map_or_else(|| first.join("report"), Path::to_path_buf);
    let mut runs = Vec::new();
    let mut names = Vec::new();
    for dir in dirs {
        let name = unique_name(dir, &names);
        names.push(name.clone());
        runs.push(load::Run::read(dir, name)?);
    }
    let font = plots::register_font()?;
    log::debug!("font {}", font.display());
    std::fs::create_dir_all(&out).map_err(|source| ReportError::Io {
        path: out.clone(),
        source,
    })?;
    let figs: Vec<figures::Figure> = runs
        .iter()
        .flat_map(figures::for_run)
        .chain(
            runs.iter()
                .filter_map(|r| signal::figure(r, r.gradcheck.as_ref()?.signal.as_ref()?)),
        )
        .chain(figures::compare(&runs))
        .chain(paired::figures(&runs, control))
        .chain(
            scarcity::applies(&runs)
                .then(|| scarcity::figure(&runs))
                .flatten(),
        )
        .collect();
    let mut pngs = Vec::new();
    for f in &figs {
        let path = out.join(&f.file);
        plots::draw(&path, &f.title, &f.panels)?;
        log::info!("wrote {}", path.display());
        pngs.push(path);
    }
    let markdown = markdown(&runs, &figs, control);
    let report = out.join("report.md");
    std::fs::write(&report, &markdown).map_err(|source| ReportError::Io {
        path: report.clone(),
        source,
    })?;
    log::info!("wrote {}", report.display());
    Ok(Written {
        markdown,
        report,
        pngs,
    })
}

/// The folder's name made safe for file names and links, unique among `taken`
/// (two `run/` folders in different places become `run` and `run_2`).
fn unique_name(dir: &Path, taken: &[String]) -> String {
    let full = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let raw = full
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let base: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = base.clone();
    let mut k = 1;
    while taken.contains(&name) {
        k += 1;
        name = format!("{base}_{k}");
    }
    name
}

fn markdown(runs: &[load::Run], figs: &[figures::Figure], control: &str) -> String {
    let mut s = String::from("# zo-hpc report\n\n");
    let target = runs
        .iter()
        .find_map(|r| r.eval.as_ref().and_then(|e| e.target.clone()));
    s.push_str(&format!(
        "## Table 1: Stage 1 vs Stage 2 ({}test split, `eval.h5`)\n\n",
        target.map_or(String::new(), |t| format!("{t}, "))
    ));
    match table::table1(runs) {
        Some(t) => s.push_str(&t),
        None => s.push_str("No run has an `eval.h5` yet (`zo-hpc eval CONFIG` writes it).\n"),
    }
    if let Some(p) = paired::section(runs, control) {
        s.push_str(&format!(
            "\n## Arms: Stage 2 per arm and paired differences to `{control}` by seed\n"
        ));
        s.push_str(&p);
    }
    if scarcity::applies(runs) {
        s.push_str("\n## Data scarcity: Stage 1 vs Stage 2 per knowledge source\n");
        s.push_str(&scarcity::section(runs));
    }
    if let Some(sec) = signal::section(runs) {
        s.push_str(&sec);
    }
    s.push_str("\n## Runs\n");
    s.push_str(&table::runs_section(runs));
    s.push_str("\n## Plots\n\n");
    if figs.is_empty() {
        s.push_str("No plottable data.\n");
    }
    for f in figs {
        s.push_str(&format!("- [{}]({}): {}\n", f.file, f.file, f.about));
    }
    s
}
