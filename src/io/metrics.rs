//! Training metrics, kept in memory, written as `metrics.h5` and inside every
//! checkpoint (so a resumed run continues the same history).
//!
//! Layout (group `/` of metrics.h5, `/metrics` of a checkpoint):
//! ```text
//! /step/loss              f64[steps]   loss of the global batch (mean over its samples)
//! /step/<term>            f64[steps]   loss terms of the stage (JT-VAE: word, topo, assm, kl;
//!                                      Stage 2: pred, word, topo, assm, kl) and Stage 2's
//!                                      per-step diagnostics (counters, flip_rate,
//!                                      queries_per_s, time_<phase> max and _mean over
//!                                      ranks, time_step, imbalance = slowest / mean rank)
//! /epoch/step             u64[epochs]  global step at the end of the epoch
//! /epoch/<value>          f64[epochs]  epoch evaluations (MPNN: train_rmse, test_rmse) and wall_s
//! /eval/step              u64[evals]   with train.eval_every_steps: the step of each
//!                                      evaluation (also at epoch ends that evaluate)
//! /eval/<value>           f64[evals]   what the stage's evaluation gives, at those steps
//! /timing/<phase>         f64[epochs]  seconds in the phase, max over ranks
//! /timing/<phase>_mean    f64[epochs]  mean over ranks (max/mean = imbalance)
//! attrs: scalars of the stage (MPNN: baseline_test_rmse); metrics.h5 also: ranks,
//! stage, target_column, devices, config, config_path, rdkit_version, commit
//! ```
use super::h5;
use hdf5::Group;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub step_loss: Vec<f64>,
    /// term → per-step value
    pub step_terms: BTreeMap<String, Vec<f64>>,
    pub epoch_step: Vec<u64>,
    /// name → per-epoch value
    pub epoch: BTreeMap<String, Vec<f64>>,
    /// Steps of the evaluations every `train.eval_every_steps` (empty: none).
    pub eval_step: Vec<u64>,
    /// name → value per evaluation of `eval_step`
    pub evals: BTreeMap<String, Vec<f64>>,
    /// phase → per-epoch seconds (max over ranks)
    pub timing_max: BTreeMap<String, Vec<f64>>,
    /// phase → per-epoch seconds (mean over ranks)
    pub timing_mean: BTreeMap<String, Vec<f64>>,
    /// Constant facts, written as attributes.
    pub scalars: BTreeMap<String, f64>,
}

fn write_map(g: &Group, m: &BTreeMap<String, Vec<f64>>, suffix: &str) -> hdf5::Result<()> {
    for (k, v) in m {
        h5::write_vec(g, &format!("{k}{suffix}"), v)?;
    }
    Ok(())
}

impl Metrics {
    /// Appends one step's value of a per-step series.
    pub fn push_step(&mut self, name: &str, value: f64) {
        self.step_terms
            .entry(name.to_string())
            .or_default()
            .push(value);
    }

    pub fn write_into(&self, g: &Group) -> hdf5::Result<()> {
        let step = h5::ensure_group(g, "step")?;
        h5::write_vec(&step, "loss", &self.step_loss)?;
        write_map(&step, &self.step_terms, "")?;
        let ep = h5::ensure_group(g, "epoch")?;
        h5::write_vec(&ep, "step", &self.epoch_step)?;
        write_map(&ep, &self.epoch, "")?;
        if !self.eval_step.is_empty() {
            let ev = h5::ensure_group(g, "eval")?;
            h5::write_vec(&ev, "step", &self.eval_step)?;
            write_map(&ev, &self.evals, "")?;
        }
        let t = h5::ensure_group(g, "timing")?;
        write_map(&t, &self.timing_max, "")?;
        write_map(&t, &self.timing_mean, "_mean")?;
        for (k, v) in &self.scalars {
            h5::write_attr(g, k, v)?;
        }
        Ok(())
    }

    pub fn read_from(g: &Group) -> hdf5::Result<Metrics> {
        let mut m = Metrics::default();
        let step = g.group("step")?;
        for name in step.member_names()? {
            let v = h5::read_vec::<f64>(&step, &name)?;
            if name == "loss" {
                m.step_loss = v;
            } else {
                m.step_terms.insert(name, v);
            }
        }
        let ep = g.group("epoch")?;
        for name in ep.member_names()? {
            if name == "step" {
                m.epoch_step = h5::read_vec(&ep, "step")?;
            } else {
                m.epoch.insert(name.clone(), h5::read_vec(&ep, &name)?);
            }
        }
        // Older files and runs without `eval_every_steps` have no /eval.
        if let Ok(ev) = g.group("eval") {
            for name in ev.member_names()? {
                if name == "step" {
                    m.eval_step = h5::read_vec(&ev, "step")?;
                } else {
                    m.evals.insert(name.clone(), h5::read_vec(&ev, &name)?);
                }
            }
        }
        let t = g.group("timing")?;
        for name in t.member_names()? {
            let v = h5::read_vec::<f64>(&t, &name)?;
            match name.strip_suffix("_mean") {
                Some(phase) => m.timing_mean.insert(phase.to_string(), v),
                None => m.timing_max.insert(name, v),
            };
        }
        for name in g.attr_names()? {
            if g.attr(&name)?.dtype()?.is::<f64>() {
                m.scalars
                    .insert(name.clone(), h5::read_attr::<f64>(g, &name)?);
            }
        }
        Ok(m)
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
pub fn write_file(
    path: &std::path::Path,
    m: &Metrics,
    info: &RunInfo,
) -> Result<(), h5::WriteError> {
    h5::write_atomically(path, |f| {
        m.write_into(f)?;
        h5::write_attr(f, "ranks", &info.ranks)?;
        h5::write_str_attr(f, "stage", info.stage)?;
        h5::write_str_attr(f, "target_column", info.target_column)?;
        h5::write_str_attr(f, "devices", info.devices)?;
        h5::write_str_attr(f, "config", info.config_text)?;
        h5::write_str_attr(f, "config_path", info.config_path)?;
        h5::write_str_attr(f, "rdkit_version", info.rdkit_version)?;
        h5::write_str_attr(f, "commit", crate::COMMIT)?;
        Ok(())
    })
}
