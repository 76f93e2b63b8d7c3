//! `eval.h5`, the file `zo-hpc eval` writes and `zo-hpc report` reads: its layout
//! (group and attribute names), its writers, its reader, and Table 1 as printed
//! (`cell`, `markdown`), so that the writer and the report share one definition.
//!
//! Layout of Table 1 (`<out_dir>/eval.h5`, a pipeline config):
//! ```text
//! attrs: config, commit, target_column, compare
//! /<label>            one group per column of Table 1 (`stage1`, `stage2`)
//!   attrs: checkpoints (comma-separated), then one f64 per row of Table 1
//!          (`ROWS`, then not_encodable and wall_s)
//! ```
//! Layout of a JT-VAE's reconstruction (`<out_dir>/jtvae/eval.h5`, a JT-VAE-only config):
//! ```text
//! attrs: checkpoint, compare, commit, then the f64 counts and seconds of
//!        `jtvae::recon::Recon` (molecules, exact, valid, tree_too_large, other_failed,
//!        recon_acc, encode_s, decode_s, decode_tree_s, decode_enumerate_s, decode_score_s)
//! /smiles, /decoded   strings, the input and decoded SMILES of every molecule
//! ```
use super::h5;
use crate::config::Config;
use crate::jtvae::recon::{Recon, SampledRecon};
use hdf5::{File, Location};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Label of Table 1's Stage-1 column (the group `/stage1`).
pub const STAGE1: &str = "stage1";
/// Label of Table 1's Stage-2 column (the group `/stage2`).
pub const STAGE2: &str = "stage2";

/// Row of Table 1: the share of held-out molecules decoded back exactly.
pub const RECON_ACC: &str = "recon_acc";
/// The JT-VAE paper's reconstruction accuracy (exact decodes / decodes) in a
/// JT-VAE `eval.h5`, when `--encodings`/`--decodings` were given.
pub const RECON_ACC_SAMPLED: &str = "recon_acc_sampled";
/// Row of Table 1: the RMSE through the pipeline, in target units.
pub const PIPELINE_RMSE: &str = "pipeline_rmse";
/// Row of Table 1: the MPNN's RMSE on the true molecules, in target units.
pub const TRUE_RMSE: &str = "true_rmse";
/// Row of Table 1 that counts the molecules evaluated.
pub const EVALUATED: &str = "evaluated";

/// The rows of Table 1 a report shows, as `eval.h5` names them.
pub const ROWS: [&str; 8] = [
    RECON_ACC,
    PIPELINE_RMSE,
    "pipeline_rmse_mean_fill",
    TRUE_RMSE,
    "baseline_rmse",
    "decode_failed",
    "featurize_failed",
    EVALUATED,
];

/// One column of Table 1.
#[derive(Debug, Clone)]
pub struct Column {
    pub label: &'static str,
    pub checkpoints: Vec<PathBuf>,
    pub values: Vec<(String, f64)>,
}

/// Table 1 as Markdown.
pub fn markdown(columns: &[Column], target: &str) -> String {
    let mut s = format!(
        "| {target} (test split) | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|c| c.label)
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    let names: Vec<&String> = columns
        .first()
        .map(|c| c.values.iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    for name in names {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                let v = c
                    .values
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(f64::NAN, |(_, v)| *v);
                cell(name, v)
            })
            .collect();
        s.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    s
}

/// One value of Table 1 as printed: `recon_acc` as a percentage, counts as
/// integers, the rest with 4 decimals (`zo-hpc report` prints the same).
pub fn cell(name: &str, v: f64) -> String {
    if name == RECON_ACC {
        format!("{:.2}%", 100.0 * v)
    } else if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Writes `eval.h5`: one group per column with its values as attributes.
pub fn write(path: &Path, columns: &[Column], cfg: &Config) -> Result<(), h5::WriteError> {
    h5::write_atomically(path, |f| {
        h5::write_str_attr(f, "config", &cfg.text)?;
        h5::write_str_attr(f, "commit", crate::COMMIT)?;
        h5::write_str_attr(f, "target_column", &cfg.data.target_column)?;
        h5::write_str_attr(
            f,
            "compare",
            "reconstruction: canonical SMILES without stereo; RMSE in target units",
        )?;
        for c in columns {
            let g = f.create_group(c.label)?;
            let cks: Vec<String> = c
                .checkpoints
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            h5::write_str_attr(&g, "checkpoints", &cks.join(","))?;
            for (k, v) in &c.values {
                h5::write_attr(&g, k, v)?;
            }
        }
        Ok(())
    })
}

/// Writes a JT-VAE's `eval.h5`: the counts and seconds as attributes (with
/// `recon_acc` = exact / molecules), and the SMILES pairs.
pub fn write_reconstruction(
    path: &Path,
    checkpoint: &Path,
    r: &Recon,
    sampled: Option<&SampledRecon>,
) -> Result<(), h5::WriteError> {
    h5::write_atomically(path, |f| {
        h5::write_str_attr(f, "checkpoint", &checkpoint.display().to_string())?;
        h5::write_str_attr(f, "compare", "canonical SMILES without stereo")?;
        h5::write_str_attr(f, "commit", crate::COMMIT)?;
        for (k, v) in [
            ("molecules", r.molecules),
            ("exact", r.exact),
            ("valid", r.valid),
            ("tree_too_large", r.tree_too_large),
            ("other_failed", r.other_failed),
            (RECON_ACC, r.exact / r.molecules.max(1.0)),
            ("encode_s", r.encode_s),
            ("decode_s", r.decode_s),
            ("decode_tree_s", r.tree_s),
            ("decode_enumerate_s", r.enumerate_s),
            ("decode_score_s", r.score_s),
        ] {
            h5::write_attr(f, k, &v)?;
        }
        if let Some(s) = sampled {
            // The JT-VAE paper's protocol, beside the greedy decode of the mean.
            for (k, v) in [
                ("sampled_encodings", s.protocol.encodings as f64),
                ("sampled_decodings", s.protocol.decodings as f64),
                ("sampled_temperature", s.protocol.temperature),
                ("sampled_molecules", s.molecules),
                ("sampled_decodes", s.decodes),
                ("sampled_exact_decodes", s.exact_decodes),
                ("sampled_failed_decodes", s.failed_decodes),
                (RECON_ACC_SAMPLED, s.accuracy()),
                (
                    "recon_acc_majority",
                    s.majority_exact / s.molecules.max(1.0),
                ),
                ("recon_acc_any", s.any_exact / s.molecules.max(1.0)),
            ] {
                h5::write_attr(f, k, &v)?;
            }
        }
        if r.decoded.len() == r.smiles.len() {
            h5::write_strings(f, "smiles", &r.smiles)?;
            h5::write_strings(f, "decoded", &r.decoded)?;
        }
        Ok(())
    })
}

/// Table 1 read back from `eval.h5`: each column (`stage1`, `stage2`), metric → value.
pub struct Eval {
    pub columns: BTreeMap<String, BTreeMap<String, f64>>,
    pub target: Option<String>,
    pub config: Option<String>,
    pub commit: Option<String>,
}

/// Reads Table 1's `eval.h5`; the file-level strings are None where absent.
pub fn read(f: &File) -> hdf5::Result<Eval> {
    let mut columns = BTreeMap::new();
    for label in f.member_names()? {
        let g = f.group(&label)?;
        let mut values = BTreeMap::new();
        for name in g.attr_names()? {
            if g.attr(&name)?.dtype()?.is::<f64>() {
                values.insert(name.clone(), h5::read_attr::<f64>(&g, &name)?);
            }
        }
        columns.insert(label, values);
    }
    Ok(Eval {
        columns,
        target: optional_str(f, "target_column"),
        config: optional_str(f, "config"),
        commit: optional_str(f, "commit"),
    })
}

/// A string attribute, None when absent or of another type (asked first: HDF5
/// would report a missing one as an error).
fn optional_str(loc: &Location, name: &str) -> Option<String> {
    let present = loc
        .attr_names()
        .is_ok_and(|names| names.iter().any(|n| n == name));
    present.then(|| h5::read_str_attr(loc, name).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_percent_counts_or_four_decimals() {
        assert_eq!(cell(RECON_ACC, 0.125), "12.50%");
        assert_eq!(cell(EVALUATED, 16.0), "16");
        assert_eq!(cell(PIPELINE_RMSE, 1.5), "1.5000");
        assert_eq!(cell(TRUE_RMSE, 2.0), "2");
    }

    #[test]
    fn markdown_has_a_row_per_value_and_a_column_per_stage() {
        let col = |label, v| Column {
            label,
            checkpoints: Vec::new(),
            values: vec![(RECON_ACC.into(), v), (EVALUATED.into(), 8.0)],
        };
        let s = markdown(&[col(STAGE1, 0.5), col(STAGE2, 0.25)], "y");
        assert_eq!(
            s,
            "| y (test split) | stage1 | stage2 |\n|---|---|---|\n\
             | recon_acc | 50.00% | 25.00% |\n| evaluated | 8 | 8 |\n"
        );
    }
}
