//! `zo-hpc prepare`: CSV → canonical, unique molecules with targets → seeded
//! train/test split → featurizer columns that vary on the training split → one
//! dataset HDF5 file; with `[jtvae]` also the vocabulary, the junction trees and
//! the assembly candidates (computed over all MPI ranks). Nothing is dropped
//! silently: invalid SMILES, non-numeric targets and duplicates are counted and
//! the first ones listed by line. The JT-VAE part is built in `data::jtvae`, the
//! candidates over the ranks in `data::candidates`; this is the `prepare` edge
//! (errors with context, as `anyhow`).
use super::candidates::candidates;
use super::csv_table::{self, BadRow};
use super::jtvae::jtvae_data;
use super::listing::PrepareReport;
use super::split::split;
use crate::chem::{self, Featurizer};
use crate::config::Config;
use crate::dist::Dist;
use crate::io::dataset::{Dataset, DatasetMeta};
use anyhow::{bail, Context};
use std::collections::HashMap;

/// Builds the dataset described by `cfg` (does not write it).
pub fn build(cfg: &Config) -> anyhow::Result<(Dataset, PrepareReport)> {
    build_with(cfg, false).map(|(ds, report, _)| (ds, report))
}

/// `build`; with `defer_trees`, the junction trees of JT-VAE training molecules that
/// the vocabulary pass did not decompose are left `None` and their indices returned,
/// for the ranks to decompose (see `candidates`).
fn build_with(
    cfg: &Config,
    defer_trees: bool,
) -> anyhow::Result<(Dataset, PrepareReport, Vec<usize>)> {
    let d = &cfg.data;
    let table = csv_table::read(&d.csv, &d.smiles_column, &d.target_column)?;
    let mut report = PrepareReport {
        n_rows: table.rows.len() + table.bad.len(),
        bad_target: table.bad,
        ..Default::default()
    };
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut records = Vec::new();
    let mut smiles = Vec::new();
    let mut target = Vec::new();
    let mut source_line = Vec::new();
    let limits = d.limits();
    for row in table.rows {
        let parsed = limits.check_smiles(&row.smiles).and_then(|_| {
            let rec = chem::parse(&row.smiles)?;
            limits.check_atoms(&row.smiles, rec.atoms.len())?;
            Ok(rec)
        });
        match parsed {
            Err(e) => report.invalid_smiles.push(BadRow {
                line: row.line,
                smiles: e.smiles,
                reason: e.message,
            }),
            Ok(rec) => {
                if let Some(&first) = first_line.get(&rec.canonical) {
                    report
                        .duplicates
                        .push((row.line, rec.canonical.clone(), first));
                    continue;
                }
                first_line.insert(rec.canonical.clone(), row.line);
                smiles.push(rec.canonical.clone());
                target.push(row.target);
                source_line.push(row.line as u64);
                records.push(rec);
            }
        }
    }
    report.n_unique = smiles.len();
    let n = smiles.len();
    if d.n_train + d.n_test > n {
        bail!(
            "{}: data.n_train ({}) + data.n_test ({}) = {} exceeds the {} unique valid molecules in {}",
            cfg.path.display(),
            d.n_train,
            d.n_test,
            d.n_train + d.n_test,
            n,
            d.csv.display()
        );
    }
    let (train, test) = split(n, d.n_train, d.n_test, cfg.split_seed());
    let train_records: Vec<_> = train.iter().map(|&i| records[i].clone()).collect();
    let featurizer = Featurizer::non_constant(&train_records);
    let mean = train.iter().map(|&i| target[i]).sum::<f64>() / train.len() as f64;
    let var = train
        .iter()
        .map(|&i| (target[i] - mean).powi(2))
        .sum::<f64>()
        / train.len() as f64;
    let std = if var > 0.0 { var.sqrt() } else { 1.0 };
    let meta = DatasetMeta {
        source_csv: d.csv.display().to_string(),
        smiles_column: d.smiles_column.clone(),
        target_column: d.target_column.clone(),
        seed: cfg.split_seed(),
        rdkit_version: chem::rdkit_version(),
        n_rows: report.n_rows as u64,
        n_invalid_smiles: report.invalid_smiles.len() as u64,
        n_bad_target: report.bad_target.len() as u64,
        n_duplicates: report.duplicates.len() as u64,
        provenance: super::provenance::of(cfg)?,
    };
    let ds = Dataset {
        smiles,
        target,
        source_line,
        train: train.iter().map(|&i| i as u64).collect(),
        test: test.iter().map(|&i| i as u64).collect(),
        featurizer,
        target_mean: mean,
        target_std: std,
        meta,
        jtvae: None,
    };
    let (ds, pending) = match &cfg.jtvae {
        Some(j) => {
            let source = j.vocab_csv.clone().unwrap_or_else(|| d.csv.clone());
            let (data, pending) = jtvae_data(
                &ds,
                &source,
                j.train_csv.as_deref(),
                j.train_limit,
                &d.smiles_column,
                &limits,
                defer_trees,
            )?;
            (
                Dataset {
                    jtvae: Some(data),
                    ..ds
                },
                pending,
            )
        }
        None => (ds, Vec::new()),
    };
    Ok((ds, report, pending))
}

/// `zo-hpc prepare` on every rank of `dist` (collective): rank 0 builds the
/// dataset; with `[jtvae]`, the assembly candidates of the JT-VAE's training
/// molecules and of the held-out split are computed in contiguous blocks over the
/// ranks and gathered to rank 0, which writes `cfg.dataset_path()`. The file is
/// the same whatever the number of ranks. Without `with_candidates`, no
/// candidates (nor molecule records) are stored. Returns the dataset on rank 0.
pub fn run(cfg: &Config, dist: &Dist, with_candidates: bool) -> anyhow::Result<Option<Dataset>> {
    // With candidates, the ranks also decompose the training molecules (rank 0 alone
    // took ~1 ms per molecule: half an hour for MOSES, however many ranks wait).
    let defer = with_candidates && cfg.jtvae.is_some();
    let built = dist.is_root().then(|| build_with(cfg, defer));
    let failed = matches!(built, Some(Err(_)));
    if dist.broadcast_u64(u64::from(failed)) != 0 {
        return Err(match built {
            Some(Err(e)) => e,
            _ => anyhow::anyhow!("rank 0 could not build the dataset (see its error)"),
        });
    }
    let mut built = built.and_then(Result::ok);
    if let Some((_, report, _)) = &built {
        report.log(&cfg.data.csv.display().to_string());
    }
    let prepared = match &cfg.jtvae {
        Some(jc) if with_candidates => candidates(
            dist,
            jc.max_candidates,
            built
                .as_mut()
                .map(|(ds, _, pending)| (ds, pending.as_slice())),
        )?,
        _ => None,
    };
    let mut failed = 0;
    let mut result = Ok(None);
    if let Some((mut ds, _, _)) = built.take() {
        if let (Some(j), Some((candidates, graphs))) = (ds.jtvae.as_mut(), prepared) {
            j.candidates = Some(candidates);
            j.graphs = Some(graphs);
        }
        let out = cfg.dataset_path();
        result = ds
            .write(&out)
            .with_context(|| format!("writing dataset {}", out.display()))
            .map(|()| {
                log::info!(
                    "wrote {} ({} train / {} test, {} atom and {} bond feature columns kept)",
                    out.display(),
                    ds.train.len(),
                    ds.test.len(),
                    ds.featurizer.atom_dim(),
                    ds.featurizer.bond_dim()
                );
                Some(ds)
            });
        failed = u64::from(result.is_err());
    }
    if dist.broadcast_u64(failed) != 0 && !dist.is_root() {
        bail!("rank 0 could not write the dataset (see its error)");
    }
    result
}
