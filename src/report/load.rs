//! Reading one run folder for `zo-hpc report`: the metrics of each stage, `eval.h5`
//! (read by its owner, `io::eval_file`) and `gradcheck.h5` (its signal test read
//! by `io::signal_file`), each optional. A file
//! that is missing or cannot be read is logged and skipped, so a run that is still
//! going (or crashed) is reported as far as it got.
use super::error::ReportError;
use crate::io::eval_file::{self, Eval};
use crate::io::h5;
use crate::io::metrics::Metrics;
use hdf5::types::VarLenUnicode;
use hdf5::{File, H5Type, Location};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The stage sub-folders of a run, in pipeline order.
pub const STAGES: [&str; 3] = ["jtvae", "mpnn", "zo"];

/// One stage's `metrics.h5`.
pub struct StageRun {
    pub metrics: Metrics,
    pub ranks: Option<u64>,
    pub config: Option<String>,
    pub config_path: Option<String>,
    pub commit: Option<String>,
}

/// One row of `gradcheck.h5`'s `/standin`.
pub struct StandinRow {
    pub estimator: String,
    pub q: f64,
    pub radius: f64,
    pub cosine: f64,
    pub theory: f64,
}

/// `gradcheck.h5`: the stand-in rows and the flip rate on the real decoder.
pub struct Gradcheck {
    pub standin: Vec<StandinRow>,
    /// (µσ, flip rate, failed share)
    pub flips: Vec<(f64, f64, f64)>,
    pub tie_floor: Option<f64>,
    /// The signal test (`/signal`), when the file has one.
    pub signal: Option<crate::io::signal_file::Signal>,
}

/// Everything readable in one run folder.
pub struct Run {
    /// Folder name, unique among the runs of a report.
    pub name: String,
    pub dir: PathBuf,
    pub stages: BTreeMap<&'static str, StageRun>,
    pub eval: Option<Eval>,
    pub gradcheck: Option<Gradcheck>,
}

impl Run {
    /// Reads what there is; an error only when nothing at all is readable.
    pub fn read(dir: &Path, name: String) -> Result<Run, ReportError> {
        if !dir.is_dir() {
            return Err(ReportError::NotAFolder(dir.to_path_buf()));
        }
        let mut stages = BTreeMap::new();
        for stage in STAGES {
            if let Some(s) = read_optional(&dir.join(stage).join("metrics.h5"), read_stage) {
                stages.insert(stage, s);
            }
        }
        let run = Run {
            name,
            dir: dir.to_path_buf(),
            stages,
            eval: read_optional(&dir.join("eval.h5"), eval_file::read),
            gradcheck: read_optional(&dir.join("gradcheck.h5"), read_gradcheck),
        };
        if run.stages.is_empty() && run.eval.is_none() && run.gradcheck.is_none() {
            return Err(ReportError::NothingReadable(dir.to_path_buf()));
        }
        Ok(run)
    }

    pub fn stage(&self, stage: &str) -> Option<&Metrics> {
        self.stages.get(stage).map(|s| &s.metrics)
    }
}

/// `read(file)` when `path` exists; None (with a log line saying why) otherwise.
fn read_optional<T>(path: &Path, read: fn(&File) -> hdf5::Result<T>) -> Option<T> {
    if !path.is_file() {
        log::info!("{}: not there, skipped", path.display());
        return None;
    }
    let got = h5::open(path).and_then(|f| h5::ctx(read(&f), path, || "reading".into()));
    match got {
        Ok(x) => Some(x),
        Err(e) => {
            log::warn!("{e}: skipped");
            None
        }
    }
}

/// An attribute, None when absent or of another type (asked first: HDF5 would
/// report a missing one as an error).
fn attr<T: H5Type>(loc: &Location, name: &str) -> Option<T> {
    let present = loc
        .attr_names()
        .is_ok_and(|names| names.iter().any(|n| n == name));
    present
        .then(|| h5::read_attr::<T>(loc, name).ok())
        .flatten()
}

fn str_attr(loc: &Location, name: &str) -> Option<String> {
    attr::<VarLenUnicode>(loc, name).map(|s| s.as_str().to_string())
}

fn read_stage(f: &File) -> hdf5::Result<StageRun> {
    Ok(StageRun {
        metrics: Metrics::read_from(f)?,
        ranks: attr(f, "ranks"),
        config: str_attr(f, "config"),
        config_path: str_attr(f, "config_path"),
        commit: str_attr(f, "commit"),
    })
}

fn read_gradcheck(f: &File) -> hdf5::Result<Gradcheck> {
    let s = f.group("standin")?;
    let col = |name: &str| h5::read_vec::<f64>(&s, name);
    let (q, radius, cosine, theory) = (
        col("q")?,
        col("radius")?,
        col("cosine_mean")?,
        col("theory_cosine")?,
    );
    let standin = h5::read_strings(&s, "estimator")?
        .into_iter()
        .enumerate()
        .filter_map(|(i, estimator)| {
            Some(StandinRow {
                estimator,
                q: *q.get(i)?,
                radius: *radius.get(i)?,
                cosine: *cosine.get(i)?,
                theory: *theory.get(i)?,
            })
        })
        .collect();
    // An older file or a run without a trained JT-VAE may lack the pipeline part.
    let (flips, tie_floor) = if f.link_exists("pipeline") {
        let p = f.group("pipeline")?;
        let col = |name: &str| h5::read_vec::<f64>(&p, name);
        let (r, flip, failed) = (col("radius")?, col("flip_rate")?, col("failed_share")?);
        let rows = r
            .iter()
            .zip(&flip)
            .zip(&failed)
            .map(|((&r, &fl), &fa)| (r, fl, fa))
            .collect();
        (rows, attr(&p, "tie_floor"))
    } else {
        (Vec::new(), None)
    };
    Ok(Gradcheck {
        standin,
        flips,
        tie_floor,
        signal: crate::io::signal_file::read(f)?,
    })
}
