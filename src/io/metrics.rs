//! Training metrics, kept in memory, written as `metrics.h5` and inside every
//! checkpoint (so a resumed run continues the same history).
//!
//! Layout (group `/` of metrics.h5, `/metrics` of a checkpoint):
//! ```text
//! /step/loss              f64[steps]   mean squared error of the global batch (normalized target)
//! /epoch/step             u64[epochs]  global step at the end of the epoch
//! /epoch/train_rmse       f64[epochs]  in target units
//! /epoch/test_rmse        f64[epochs]
//! /epoch/wall_s           f64[epochs]  wall time of the epoch (rank 0)
//! /timing/<phase>         f64[epochs]  seconds in the phase, max over ranks
//! /timing/<phase>_mean    f64[epochs]  mean over ranks (max/mean = imbalance)
//! attrs: ranks, baseline_test_rmse, stage, target_column, devices
//! (metrics.h5 also: config, config_path, rdkit_version)
//! ```
use super::h5;
use hdf5::Group;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub step_loss: Vec<f64>,
    pub epoch_step: Vec<u64>,
    pub train_rmse: Vec<f64>,
    pub test_rmse: Vec<f64>,
    pub epoch_wall_s: Vec<f64>,
    /// phase → per-epoch seconds (max over ranks)
    pub timing_max: BTreeMap<String, Vec<f64>>,
    /// phase → per-epoch seconds (mean over ranks)
    pub timing_mean: BTreeMap<String, Vec<f64>>,
    pub baseline_test_rmse: f64,
}

impl Metrics {
    pub fn write_into(&self, g: &Group) -> hdf5::Result<()> {
        let step = h5::ensure_group(g, "step")?;
        h5::write_vec(&step, "loss", &self.step_loss)?;
        let ep = h5::ensure_group(g, "epoch")?;
        h5::write_vec(&ep, "step", &self.epoch_step)?;
        h5::write_vec(&ep, "train_rmse", &self.train_rmse)?;
        h5::write_vec(&ep, "test_rmse", &self.test_rmse)?;
        h5::write_vec(&ep, "wall_s", &self.epoch_wall_s)?;
        let t = h5::ensure_group(g, "timing")?;
        for (phase, v) in &self.timing_max {
            h5::write_vec(&t, phase, v)?;
        }
        for (phase, v) in &self.timing_mean {
            h5::write_vec(&t, &format!("{phase}_mean"), v)?;
        }
        h5::write_attr(g, "baseline_test_rmse", &self.baseline_test_rmse)?;
        Ok(())
    }

    pub fn read_from(g: &Group) -> hdf5::Result<Metrics> {
        let step = g.group("step")?;
        let ep = g.group("epoch")?;
        let t = g.group("timing")?;
        let mut timing_max = BTreeMap::new();
        let mut timing_mean = BTreeMap::new();
        for name in t.member_names()? {
            let v = h5::read_vec::<f64>(&t, &name)?;
            match name.strip_suffix("_mean") {
                Some(phase) => timing_mean.insert(phase.to_string(), v),
                None => timing_max.insert(name, v),
            };
        }
        Ok(Metrics {
            step_loss: h5::read_vec(&step, "loss")?,
            epoch_step: h5::read_vec(&ep, "step")?,
            train_rmse: h5::read_vec(&ep, "train_rmse")?,
            test_rmse: h5::read_vec(&ep, "test_rmse")?,
            epoch_wall_s: h5::read_vec(&ep, "wall_s")?,
            timing_max,
            timing_mean,
            baseline_test_rmse: h5::read_attr(g, "baseline_test_rmse")?,
        })
    }
}

/// Run facts stored as attributes of metrics.h5.
pub struct RunInfo<'a> {
    pub ranks: u64,
    pub stage: &'a str,
    pub target_column: &'a str,
    pub devices: &'a str,
    pub config_text: &'a str,
    pub config_path: &'a str,
    pub rdkit_version: &'a str,
}

/// Writes metrics.h5 atomically.
pub fn write_file(path: &std::path::Path, m: &Metrics, info: &RunInfo) -> anyhow::Result<()> {
    h5::write_atomically(path, |f| {
        m.write_into(f)?;
        h5::write_attr(f, "ranks", &info.ranks)?;
        h5::write_str_attr(f, "stage", info.stage)?;
        h5::write_str_attr(f, "target_column", info.target_column)?;
        h5::write_str_attr(f, "devices", info.devices)?;
        h5::write_str_attr(f, "config", info.config_text)?;
        h5::write_str_attr(f, "config_path", info.config_path)?;
        h5::write_str_attr(f, "rdkit_version", info.rdkit_version)?;
        Ok(())
    })
}
