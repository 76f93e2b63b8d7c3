//! `zo-hpc prepare`: CSV → canonical, unique molecules with targets → seeded
//! train/test split → featurizer columns that vary on the training split → one
//! dataset HDF5 file; with `[jtvae]` also the vocabulary, the junction trees and
//! the assembly candidates (computed over all MPI ranks). Nothing is dropped
//! silently: invalid SMILES, non-numeric targets and duplicates are counted and
//! the first ones listed by line.
use super::csv_table::{self, BadRow};
use super::split::split;
use crate::chem::{self, Featurizer};
use crate::config::Config;
use crate::dist::Dist;
use crate::io::candidates::{CandidateStore, CANDIDATES_FORMAT};
use crate::io::dataset::{
    Dataset, DatasetMeta, JtvaeData, StoredCandidates, StoredGraphs, TreeRecord,
};
use crate::io::records::{RecordStore, RECORDS_FORMAT};
use crate::jtvae::candidates::{compact_training_candidates, LabelGraphs};
use crate::jtvae::tree::{decompose_smiles, JunctionTree, LabelCache};
use crate::jtvae::vocab::Vocab;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::time::Instant;

/// How many problem rows of each kind are listed in the log.
const LIST_FIRST: usize = 10;

#[derive(Debug, Default)]
pub struct PrepareReport {
    pub n_rows: usize,
    pub invalid_smiles: Vec<BadRow>,
    pub bad_target: Vec<BadRow>,
    /// (line, canonical SMILES, line of the first occurrence that was kept)
    pub duplicates: Vec<(usize, String, usize)>,
    pub n_unique: usize,
}

impl PrepareReport {
    /// Logs the counts and the first offending lines of each kind.
    pub fn log(&self, file: &str) {
        log::info!(
            "{file}: {} rows, {} unique valid molecules",
            self.n_rows,
            self.n_unique
        );
        let list = |what: &str, rows: &[BadRow]| {
            if rows.is_empty() {
                return;
            }
            log::warn!("{file}: {} rows skipped: {what}", rows.len());
            for r in rows.iter().take(LIST_FIRST) {
                log::warn!("  line {}: {:?}: {}", r.line, r.smiles, r.reason);
            }
            if rows.len() > LIST_FIRST {
                log::warn!("  … and {} more", rows.len() - LIST_FIRST);
            }
        };
        list("invalid SMILES", &self.invalid_smiles);
        list("bad target", &self.bad_target);
        if !self.duplicates.is_empty() {
            log::warn!(
                "{file}: {} duplicate molecules skipped (first occurrence kept)",
                self.duplicates.len()
            );
            for (line, smi, first) in self.duplicates.iter().take(LIST_FIRST) {
                log::warn!("  line {line}: {smi} (same as line {first})");
            }
        }
    }
}

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
    let (train, test) = split(n, d.n_train, d.n_test, cfg.run.seed);
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
        seed: cfg.run.seed,
        rdkit_version: chem::rdkit_version(),
        n_rows: report.n_rows as u64,
        n_invalid_smiles: report.invalid_smiles.len() as u64,
        n_bad_target: report.bad_target.len() as u64,
        n_duplicates: report.duplicates.len() as u64,
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

/// The assembly candidates and the parsed records of the JT-VAE's training
/// molecules and of the held-out split (those with a tree), computed in contiguous
/// blocks over the ranks (collective; `ds` is given on rank 0 only, with the
/// indices of the training molecules whose trees the ranks decompose here and
/// write into it). `Some` on rank 0.
fn candidates(
    dist: &Dist,
    max_candidates: usize,
    ds: Option<(&mut Dataset, &[usize])>,
) -> anyhow::Result<Option<(StoredCandidates, StoredGraphs)>> {
    let t0 = Instant::now();
    // Work lists from rank 0, one line per molecule: `+SMILES` (candidates),
    // `?SMILES` (decompose, then candidates if its tree is in the vocabulary), or
    // empty (no tree: it is not trained on). Neither `+` nor `?` starts a SMILES.
    let (mut train, mut test, mut vocab) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending: &[usize] = &[];
    if let Some((ds, p)) = ds.as_ref() {
        if let Some(j) = ds.jtvae.as_ref() {
            pending = p;
            let mut is_pending = vec![false; j.train_smiles.len()];
            for &k in pending {
                is_pending[k] = true;
            }
            let lines = |v: Vec<String>| v.join("\n").into_bytes();
            train = lines(
                j.train_smiles
                    .iter()
                    .zip(&j.train_trees)
                    .zip(&is_pending)
                    .map(|((s, t), &p)| match (t, p) {
                        (_, true) => format!("?{s}"),
                        (Some(_), false) => format!("+{s}"),
                        (None, false) => String::new(),
                    })
                    .collect(),
            );
            test = lines(
                ds.test
                    .iter()
                    .zip(&j.test_trees)
                    .map(|(&i, t)| match t {
                        Some(_) => format!("+{}", ds.smiles[i as usize]),
                        None => String::new(),
                    })
                    .collect(),
            );
            vocab = lines(j.vocab.clone());
        }
    }
    dist.broadcast_bytes(&mut train);
    dist.broadcast_bytes(&mut test);
    dist.broadcast_bytes(&mut vocab);
    let vocab = Vocab::new(String::from_utf8_lossy(&vocab).lines().map(str::to_string));
    type Stores = (CandidateStore, RecordStore, Vec<Vec<u32>>);
    let compute = |list: &[u8], what: &str| -> anyhow::Result<Option<Stores>> {
        let list = String::from_utf8_lossy(list);
        let items: Vec<&str> = if list.is_empty() {
            Vec::new()
        } else {
            list.split('\n').collect()
        };
        let block = dist.shard(items.len());
        let (cands, records, trees) =
            compute_block(&items[block], max_candidates, &vocab, what, dist.is_root());
        let all = gather_store(dist, &cands)?;
        let records = gather_records(dist, &records)?;
        let trees = dist
            .gather(&trees)
            .map_err(|e| anyhow::anyhow!("gathering junction trees: {e}"))?;
        if let (Some(all), Some(records)) = (&all, &records) {
            // A molecule gets a record when it has a tree.
            let with_tree = records.ok.iter().filter(|&&ok| ok != 0).count();
            let built = all.ok.iter().filter(|&&ok| ok != 0).count();
            if built < with_tree {
                log::warn!(
                    "{} of {with_tree} {what} molecules get no assembly candidates (their gold path cannot be assembled); the JT-VAE stage leaves them out",
                    with_tree - built
                );
            }
        }
        Ok(all.zip(records).map(|(a, r)| (a, r, trees)))
    };
    let train = compute(&train, "training")?;
    let test = compute(&test, "held-out")?;
    let (Some((train, train_records, trees)), Some((test, test_records, _))) = (train, test) else {
        return Ok(None);
    };
    if let Some((ds, _)) = ds {
        if let Some(j) = ds.jtvae.as_mut() {
            fill_trees(j, pending, &trees.concat())?;
        }
    }
    log::info!(
        "assembly candidates (at most {max_candidates} per node): {} training and {} held-out molecules, {} candidate groups, on {} ranks in {:.1} s",
        train.len(),
        test.len(),
        train.gold.len() + test.gold.len(),
        dist.size,
        t0.elapsed().as_secs_f64()
    );
    let candidates = StoredCandidates {
        format: CANDIDATES_FORMAT.to_string(),
        max_candidates: max_candidates as u64,
        train,
        test,
    };
    let graphs = StoredGraphs {
        format: RECORDS_FORMAT.to_string(),
        train: train_records,
        test: test_records,
    };
    Ok(Some((candidates, graphs)))
}

/// Outcome codes of a tree decomposed by a rank (`encode_tree`).
const TREE_FAILED: u32 = 0;
const TREE_OK: u32 = 1;
const TREE_UNCOVERED: u32 = 2;

/// Appends a decomposition's outcome to `out`: the code, and for a tree its node
/// count, labels, each cluster (atom count, atoms), edge count and edges.
fn encode_tree(out: &mut Vec<u32>, tree: Result<TreeRecord, u32>) {
    match tree {
        Err(code) => out.push(code),
        Ok(t) => {
            out.extend([TREE_OK, t.labels.len() as u32]);
            out.extend(&t.labels);
            for c in &t.clusters {
                out.push(c.len() as u32);
                out.extend(c);
            }
            out.push(t.edges.len() as u32);
            for &(i, j) in &t.edges {
                out.extend([i, j]);
            }
        }
    }
}

/// Reads the outcomes `encode_tree` wrote, in order, into the training trees at
/// `pending`; counts and lists (the first few) the molecules left without one.
fn fill_trees(j: &mut JtvaeData, pending: &[usize], codes: &[u32]) -> anyhow::Result<()> {
    let bad = || anyhow::anyhow!("junction trees gathered from the ranks are inconsistent");
    let mut it = codes.iter().copied();
    let mut next = || it.next().ok_or_else(bad);
    let (mut uncovered, mut failed) = (0u64, 0u64);
    let vocab = Vocab::new(j.vocab.iter().cloned());
    let mut cache = LabelCache::default();
    for &k in pending {
        let code = next()?;
        let tree = match code {
            TREE_OK => {
                let n = next()? as usize;
                let labels = (0..n).map(|_| next()).collect::<anyhow::Result<Vec<_>>>()?;
                let mut clusters = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = next()? as usize;
                    clusters.push((0..m).map(|_| next()).collect::<anyhow::Result<Vec<_>>>()?);
                }
                let e = next()? as usize;
                let edges = (0..e)
                    .map(|_| Ok((next()?, next()?)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Some(TreeRecord {
                    labels,
                    clusters,
                    edges,
                })
            }
            TREE_UNCOVERED | TREE_FAILED => {
                if code == TREE_UNCOVERED {
                    uncovered += 1;
                } else {
                    failed += 1;
                }
                if (uncovered + failed) as usize <= LIST_FIRST {
                    // Decomposed again here, for the same message as on rank 0 alone.
                    let smi = &j.train_smiles[k];
                    match decompose_smiles(smi, &mut cache) {
                        Err(e) => log::warn!("training molecule {smi}: no junction tree: {e}"),
                        Ok((_, t)) => {
                            if let Err(label) = t.record(&vocab) {
                                log::warn!("training molecule {smi}: cluster {label} is outside the vocabulary");
                            }
                        }
                    }
                }
                None
            }
            _ => return Err(bad()),
        };
        let slot = j.train_trees.get_mut(k).ok_or_else(bad)?;
        *slot = tree;
    }
    if next().is_ok() {
        return Err(bad());
    }
    j.n_uncovered += uncovered;
    if uncovered > 0 {
        log::warn!(
            "{uncovered} training molecules have clusters outside the vocabulary and get no tree"
        );
    }
    let stored = j.train_trees.iter().filter(|t| t.is_some()).count();
    log::info!(
        "{stored} of {} training trees stored ({} decomposed over the ranks)",
        j.train_trees.len(),
        pending.len()
    );
    Ok(())
}

/// The candidates and records of one block of work-list items (see `candidates`),
/// and the outcomes of the trees it decomposed (`encode_tree`).
fn compute_block(
    items: &[&str],
    max_candidates: usize,
    vocab: &Vocab,
    what: &str,
    log: bool,
) -> (CandidateStore, RecordStore, Vec<u32>) {
    let (mut cache, mut labels) = (LabelCache::default(), LabelGraphs::default());
    let (mut store, mut records) = (CandidateStore::default(), RecordStore::default());
    let mut trees = Vec::new();
    let t0 = Instant::now();
    // A line per tenth of the block, and at least one a minute (large blocks).
    let every = (items.len() / 10).max(1);
    let mut logged = Instant::now();
    for (k, item) in items.iter().enumerate() {
        let smi = match item.split_at_checked(1) {
            Some(("+", smi)) => smi,
            Some(("?", smi)) => {
                let tree = match decompose_smiles(smi, &mut cache) {
                    Err(_) => Err(TREE_FAILED),
                    Ok((_, t)) => t.record(vocab).map_err(|_| TREE_UNCOVERED),
                };
                let usable = tree.is_ok();
                encode_tree(&mut trees, tree);
                if usable {
                    smi
                } else {
                    ""
                }
            }
            _ => "",
        };
        let (nodes, record) = if smi.is_empty() {
            (None, None)
        } else {
            (
                compact_training_candidates(smi, max_candidates, &mut cache, &mut labels).ok(),
                chem::parse(smi).ok(),
            )
        };
        if let Err(e) = store.push(nodes.as_deref()) {
            log::warn!("{what} molecule {smi}: {e}; it gets no assembly candidates");
        }
        records.push(record.as_ref());
        if log && ((k + 1) % every == 0 || logged.elapsed().as_secs() >= 60) {
            logged = Instant::now();
            log::info!(
                "assembly candidates of {what} molecules: {}/{} of this rank's block ({:.0} s)",
                k + 1,
                items.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    (store, records, trees)
}

/// Every rank's records, appended in rank order on rank 0 (`None` elsewhere).
fn gather_records(dist: &Dist, s: &RecordStore) -> anyhow::Result<Option<RecordStore>> {
    let too_large = |e| anyhow::anyhow!("gathering molecule records: {e}");
    let ok = dist.gather(&s.ok).map_err(too_large)?;
    let atom_offset = dist.gather(&s.atom_offset).map_err(too_large)?;
    let atoms = dist.gather(&s.atoms).map_err(too_large)?;
    let bond_offset = dist.gather(&s.bond_offset).map_err(too_large)?;
    let bond_atoms = dist.gather(&s.bond_atoms).map_err(too_large)?;
    let bonds = dist.gather(&s.bonds).map_err(too_large)?;
    if !dist.is_root() {
        return Ok(None);
    }
    let mut all = RecordStore::default();
    for r in 0..dist.size {
        all.append(&RecordStore {
            ok: ok[r].clone(),
            atom_offset: atom_offset[r].clone(),
            atoms: atoms[r].clone(),
            bond_offset: bond_offset[r].clone(),
            bond_atoms: bond_atoms[r].clone(),
            bonds: bonds[r].clone(),
        });
    }
    Ok(Some(all))
}

/// Every rank's block, appended in rank order on rank 0 (`None` elsewhere).
fn gather_store(dist: &Dist, s: &CandidateStore) -> anyhow::Result<Option<CandidateStore>> {
    let too_large = |e| anyhow::anyhow!("gathering assembly candidates: {e}");
    let ok = dist.gather(&s.ok).map_err(too_large)?;
    let group_offset = dist.gather(&s.group_offset).map_err(too_large)?;
    let gold = dist.gather(&s.gold).map_err(too_large)?;
    let graph_offset = dist.gather(&s.graph_offset).map_err(too_large)?;
    let atom_offset = dist.gather(&s.atom_offset).map_err(too_large)?;
    let bond_offset = dist.gather(&s.bond_offset).map_err(too_large)?;
    let atom_element = dist.gather(&s.atom_element).map_err(too_large)?;
    let atom_charge = dist.gather(&s.atom_charge).map_err(too_large)?;
    let atom_degree = dist.gather(&s.atom_degree).map_err(too_large)?;
    let atom_flags = dist.gather(&s.atom_flags).map_err(too_large)?;
    let bond_atoms = dist.gather(&s.bond_atoms).map_err(too_large)?;
    let bond_order = dist.gather(&s.bond_order).map_err(too_large)?;
    let bond_in_child = dist.gather(&s.bond_in_child).map_err(too_large)?;
    if !dist.is_root() {
        return Ok(None);
    }
    let mut all = CandidateStore::default();
    for r in 0..dist.size {
        all.append(&CandidateStore {
            ok: ok[r].clone(),
            group_offset: group_offset[r].clone(),
            gold: gold[r].clone(),
            graph_offset: graph_offset[r].clone(),
            atom_offset: atom_offset[r].clone(),
            bond_offset: bond_offset[r].clone(),
            atom_element: atom_element[r].clone(),
            atom_charge: atom_charge[r].clone(),
            atom_degree: atom_degree[r].clone(),
            atom_flags: atom_flags[r].clone(),
            bond_atoms: bond_atoms[r].clone(),
            bond_order: bond_order[r].clone(),
            bond_in_child: bond_in_child[r].clone(),
        });
    }
    Ok(Some(all))
}

/// The JT-VAE vocabulary over every molecule of `source`, and the junction trees of
/// the training molecules. Molecules that cannot be decomposed, and training
/// molecules with a cluster outside the vocabulary, are counted and the first listed.
/// With `defer_trees`, training molecules the vocabulary pass did not decompose get
/// `None` and their indices are returned, for the ranks to decompose.
fn jtvae_data(
    ds: &Dataset,
    source: &std::path::Path,
    train_csv: Option<&std::path::Path>,
    train_limit: Option<usize>,
    smiles_column: &str,
    limits: &chem::Limits,
    defer_trees: bool,
) -> anyhow::Result<(JtvaeData, Vec<usize>)> {
    let rows = csv_table::read_smiles(source, smiles_column)?;
    let mut cache = LabelCache::default();
    let mut labels = Vec::new();
    let mut failed = 0u64;
    // Trees by canonical SMILES, so that the training and held-out molecules (most
    // often rows of this CSV) are not decomposed a second time.
    let mut decomposed: HashMap<String, JunctionTree> = HashMap::new();
    for (line, smi) in &rows {
        if let Err(e) = limits.check_size(smi) {
            failed += 1;
            if failed as usize <= LIST_FIRST {
                log::warn!("{}: line {line}: {e}", source.display());
            }
            continue;
        }
        // Canonical SMILES, as for the training molecules: the decomposition's tie
        // breaks follow atom order, so the same molecule must come in the same order.
        let canonical = chem::canonicalize(smi).unwrap_or_else(|_| smi.clone());
        match decompose_smiles(&canonical, &mut cache) {
            Ok((_, t)) => {
                labels.extend(t.labels.iter().cloned());
                decomposed.insert(canonical, t);
            }
            Err(e) => {
                failed += 1;
                if failed as usize <= LIST_FIRST {
                    log::warn!(
                        "{}: line {line}: {smi:?}: no junction tree: {e}",
                        source.display()
                    );
                }
            }
        }
    }
    if failed > 0 {
        log::warn!(
            "{}: {failed} molecules could not be decomposed and add nothing to the vocabulary",
            source.display()
        );
    }
    let vocab = Vocab::new(labels);
    let train_smiles = jtvae_training_smiles(ds, train_csv, train_limit, smiles_column, limits)?;
    let mut tree_of = |smi: &str| match decomposed.get(smi) {
        Some(t) => Ok(t.clone()),
        None => decompose_smiles(smi, &mut cache).map(|(_, t)| t),
    };
    let mut trees = Vec::with_capacity(train_smiles.len());
    let mut uncovered = 0u64;
    let mut pending = Vec::new();
    for (k, smi) in train_smiles.iter().enumerate() {
        if defer_trees && !decomposed.contains_key(smi.as_str()) {
            pending.push(k);
            trees.push(None);
            continue;
        }
        let tree = match tree_of(smi) {
            Err(e) => {
                log::warn!("training molecule {smi}: no junction tree: {e}");
                None
            }
            Ok(t) => {
                match t.record(&vocab) {
                    Ok(r) => Some(r),
                    Err(label) => {
                        uncovered += 1;
                        if uncovered as usize <= LIST_FIRST {
                            log::warn!("training molecule {smi}: cluster {label} is outside the vocabulary");
                        }
                        None
                    }
                }
            }
        };
        trees.push(tree);
    }
    if uncovered > 0 {
        log::warn!(
            "{uncovered} training molecules have clusters outside the vocabulary and get no tree"
        );
    }
    // The held-out molecules' trees (evaluation encodes them; a molecule without
    // one is left out there, as the JT-VAE cannot encode it).
    let test_trees: Vec<Option<TreeRecord>> = ds
        .test
        .iter()
        .map(|&i| tree_of(&ds.smiles[i as usize]).ok()?.record(&vocab).ok())
        .collect();
    let stored = |t: &[Option<TreeRecord>]| t.iter().filter(|t| t.is_some()).count();
    log::info!(
        "JT-VAE vocabulary: {} clusters over {} molecules of {}; {} of {} training{} and {} of {} held-out trees stored",
        vocab.len(),
        rows.len(),
        source.display(),
        stored(&trees),
        trees.len(),
        if pending.is_empty() {
            String::new()
        } else {
            format!(" ({} left to the ranks to decompose)", pending.len())
        },
        stored(&test_trees),
        test_trees.len()
    );
    let data = JtvaeData {
        vocab: vocab.labels().to_vec(),
        vocab_source: source.display().to_string(),
        n_vocab_molecules: rows.len() as u64,
        n_vocab_failed: failed,
        n_uncovered: uncovered,
        train_limit: train_limit.map(|n| n as u64),
        train_smiles,
        train_trees: trees,
        test_trees,
        candidates: None,
        graphs: None,
    };
    Ok((data, pending))
}

/// The JT-VAE's training molecules: the training split, or every valid molecule of
/// `train_csv` (canonical, unique) that is not in the held-out split, the first
/// `limit` of them with a limit.
fn jtvae_training_smiles(
    ds: &Dataset,
    train_csv: Option<&std::path::Path>,
    limit: Option<usize>,
    smiles_column: &str,
    limits: &chem::Limits,
) -> anyhow::Result<Vec<String>> {
    let Some(path) = train_csv else {
        return Ok(ds
            .train
            .iter()
            .map(|&i| ds.smiles[i as usize].clone())
            .collect());
    };
    let held_out: std::collections::HashSet<&str> = ds
        .test
        .iter()
        .map(|&i| ds.smiles[i as usize].as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let (mut out, mut invalid, mut excluded) = (Vec::new(), 0usize, 0usize);
    let limit = limit.unwrap_or(usize::MAX);
    for (line, smi) in csv_table::read_smiles(path, smiles_column)? {
        if out.len() >= limit {
            break;
        }
        if let Err(e) = limits.check_size(&smi) {
            invalid += 1;
            if invalid <= LIST_FIRST {
                log::warn!("{}: line {line}: skipped: {e}", path.display());
            }
            continue;
        }
        match chem::canonicalize(&smi) {
            Err(_) => {
                invalid += 1;
                if invalid <= LIST_FIRST {
                    log::warn!(
                        "{}: line {line}: invalid SMILES {smi:?} skipped",
                        path.display()
                    );
                }
            }
            Ok(c) if held_out.contains(c.as_str()) => excluded += 1,
            Ok(c) => {
                if seen.insert(c.clone()) {
                    out.push(c);
                }
            }
        }
    }
    log::info!(
        "JT-VAE training set: {} molecules of {}{} ({invalid} invalid, {excluded} in the held-out split left out)",
        out.len(),
        path.display(),
        if limit < usize::MAX {
            format!(" (jtvae.train_limit = {limit}: the first in file order)")
        } else {
            String::new()
        }
    );
    Ok(out)
}
