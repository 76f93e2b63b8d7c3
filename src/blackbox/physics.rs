//! Physics-augmented backend of `KnowledgeSource`: the RDKit graph of each molecule
//! plus two atom columns a semi-empirical program computes at an RDKit geometry
//! (ETKDGv3, fixed seed, else the 2-D layout lifted off the plane; then MMFF94). `mopac`: a PM7 single point, columns
//! `pm7_hof` (heat of formation in kcal/mol / 100, on every atom) and `pm7_charge`
//! (each atom's Mulliken-type net charge with its hydrogens'). `xtb`: a GFN2-xTB
//! single point, columns `gfn2_energy` (total energy in Eh divided by the number of
//! graph atoms: about -4 to -6 for organic molecules) and `gfn2_charge`.
//!
//! Each molecule runs in a folder of its own, up to `threads` at once, within
//! `time_limit_s`. Results are kept by canonical SMILES in a persistent HDF5 cache
//! (`store`), so a molecule costs the program once across runs. A molecule the
//! program refuses or that runs out of time is a `QueryError::Failed` (counted in
//! `stats().failed`, timeouts also in `timeouts`); one RDKit cannot parse or embed
//! in 3-D is `Rejected`, as with the plain RDKit source. Refusals and embedding
//! failures are cached (the same input gives the same answer); timeouts and
//! broken runs are not. A source that cannot start (the program does not run, the
//! cache is of other settings or unreadable) is a `PhysicsError`.
pub mod program;
pub mod store;

use crate::blackbox::rdkit::RdkitSource;
use crate::blackbox::source::{KnowledgeSource, QueryError, SourceContext, SourceStats};
use crate::chem::{self, EmbedError, MolGraph};
use crate::config::{PhysicsConfig, PhysicsProgram};
use program::RunError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use store::{Entry, Settings, Store, StoreError};

/// ETKDG's random seed: the same geometry for a molecule in every run.
pub const GEOMETRY_SEED: i32 = 42;
/// MMFF94 (or UFF) iterations at most.
pub const FORCE_FIELD_ITERS: i32 = 2000;
/// Default `time_limit_s`.
pub const DEFAULT_TIME_LIMIT_S: f64 = 20.0;
/// Default `embed_time_limit_s`: ETKDG embeds a drug-sized molecule in well under a
/// second; a cage or macrocycle whose attempts keep failing can take minutes.
pub const DEFAULT_EMBED_TIME_LIMIT_S: f64 = 30.0;

/// Why a physics source did not start.
#[derive(Debug, thiserror::Error)]
pub enum PhysicsError {
    /// The program does not run (or gives no version).
    #[error(transparent)]
    Program(#[from] RunError),
    /// The cache file cannot be read, or holds results of other settings.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `time_limit_s` or `embed_time_limit_s` is no duration.
    #[error("[source] {key} = {limit}: {why}")]
    TimeLimit {
        key: &'static str,
        limit: f64,
        why: std::time::TryFromFloatSecsError,
    },
}

/// `value` (or `default`) of key `key` as a duration.
fn duration(key: &'static str, value: Option<f64>, default: f64) -> Result<Duration, PhysicsError> {
    let limit = value.unwrap_or(default);
    Duration::try_from_secs_f64(limit).map_err(|why| PhysicsError::TimeLimit { key, limit, why })
}

pub struct PhysicsSource {
    rdkit: RdkitSource,
    program: PhysicsProgram,
    name: String,
    limit: Duration,
    /// `embed_time_limit_s`.
    embed_limit: Duration,
    threads: usize,
    store: Mutex<Store>,
    stats: Mutex<SourceStats>,
    /// Molecules this source ran the program on (or tried to).
    computed: AtomicUsize,
}

/// The cache file `cfg` asks for (default `physics_<program>.h5` in the dataset's folder).
pub fn cache_path(cfg: &PhysicsConfig, ctx: &SourceContext) -> PathBuf {
    let program = cfg.program.unwrap_or_default();
    cfg.cache.clone().unwrap_or_else(|| {
        ctx.data_dir
            .join(format!("physics_{}.h5", program::executable(program)))
    })
}

/// How geometries are made (recorded in the cache: another RDKit may embed differently).
pub fn geometry_method() -> String {
    format!(
        "RDKit {} ETKDGv3 randomSeed={GEOMETRY_SEED} (else the 2-D layout lifted), MMFF94 (else UFF, else none) maxIters={FORCE_FIELD_ITERS}",
        chem::rdkit_version()
    )
}

impl PhysicsSource {
    /// Checks the program runs, and reads the cache (rank 0 merges other ranks' shards).
    pub fn new(
        cfg: &PhysicsConfig,
        rdkit: RdkitSource,
        ctx: &SourceContext,
    ) -> Result<PhysicsSource, PhysicsError> {
        let program = cfg.program.unwrap_or_default();
        let version = program::version(program)?;
        let settings = Settings {
            program: program::executable(program).to_string(),
            program_version: version,
            method: program::method(program).to_string(),
            geometry: geometry_method(),
        };
        let path = cache_path(cfg, ctx);
        let store = Store::open(&path, settings, ctx.rank)?;
        let limit = duration("time_limit_s", cfg.time_limit_s, DEFAULT_TIME_LIMIT_S)?;
        let embed_limit = duration(
            "embed_time_limit_s",
            cfg.embed_time_limit_s,
            DEFAULT_EMBED_TIME_LIMIT_S,
        )?;
        if ctx.rank == 0 {
            log::info!(
                "physics source: {} ({}), cache {} with {} molecules",
                program::executable(program),
                program::method(program),
                path.display(),
                store.len()
            );
        }
        Ok(PhysicsSource {
            rdkit,
            program,
            name: format!("physics({})", program::executable(program)),
            limit,
            embed_limit,
            threads: cfg.threads.unwrap_or(ctx.threads).max(1),
            store: Mutex::new(store),
            stats: Mutex::new(SourceStats::default()),
            computed: AtomicUsize::new(0),
        })
    }

    /// Molecules this source ran the program on (cache misses), since built.
    pub fn computed(&self) -> usize {
        self.computed.load(Ordering::Relaxed)
    }

    /// The cache file.
    pub fn cache_file(&self) -> PathBuf {
        self.lock_store().path().to_path_buf()
    }

    /// Writes this source's new cache entries to its shard now (also done every
    /// `store::SAVE_EVERY` molecules; when dropped, rank 0 writes the cache itself).
    pub fn save(&self) -> Result<(), StoreError> {
        self.lock_store().save()
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic elsewhere while holding the lock leaves the map consistent (plain inserts).
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Geometry and program for one canonical SMILES: an entry to cache, or the
    /// error of a run not to cache (timeout, broken run); the program's seconds;
    /// whether it ran out of time.
    fn compute(&self, canonical: &str) -> (Result<Entry, QueryError>, f64, bool) {
        let t0 = std::time::Instant::now();
        let limit_s = self.embed_limit.as_secs_f64();
        let geom = match chem::embed_geometry(canonical, GEOMETRY_SEED, FORCE_FIELD_ITERS, limit_s)
        {
            Ok(g) => g,
            Err(EmbedError::Failed(e)) => {
                return (Ok(Entry::NoGeometry { reason: e.message }), 0.0, false)
            }
            // Depends on the machine's load, so not cached: a time-out like the program's.
            Err(EmbedError::TimedOut { .. }) => {
                let why = format!(
                    "RDKit's 3-D embedding took longer than embed_time_limit_s = {limit_s} s"
                );
                return (
                    Err(QueryError::Failed(why)),
                    t0.elapsed().as_secs_f64(),
                    true,
                );
            }
        };
        let (answer, secs) = program::run(self.program, &geom, self.limit);
        let timed_out = matches!(answer, Err(RunError::Timeout(_)));
        let entry = match answer {
            Ok(a) => {
                let n = usize::try_from(geom.n_own).unwrap_or(0);
                let mut charges = vec![0f64; n];
                for (q, &owner) in a.charges.iter().zip(&geom.owner) {
                    if let Some(c) = usize::try_from(owner).ok().and_then(|o| charges.get_mut(o)) {
                        *c += q;
                    }
                }
                Ok(Entry::Done {
                    energy: a.energy,
                    charges,
                    geometry: geom.method.clone(),
                })
            }
            Err(RunError::Refused(reason)) => Ok(Entry::Refused {
                reason,
                geometry: geom.method.clone(),
            }),
            Err(e @ RunError::Timeout(_)) => Err(QueryError::Failed(format!(
                "{}: {e}",
                program::executable(self.program)
            ))),
            Err(RunError::Broken(e)) => Err(QueryError::Failed(e)),
        };
        (entry, secs, timed_out)
    }

    /// Results for these canonical SMILES (unique), from the cache or computed
    /// `threads` at a time; and the SMILES whose run timed out.
    fn results(
        &self,
        keys: &[String],
    ) -> (HashMap<String, Result<Entry, QueryError>>, Vec<String>) {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let store = self.lock_store();
            for k in keys {
                match store.get(k) {
                    Some(e) => {
                        out.insert(k.clone(), Ok(e.clone()));
                    }
                    None => missing.push(k.clone()),
                }
            }
        }
        if missing.is_empty() {
            return (out, Vec::new());
        }
        let next = AtomicUsize::new(0);
        let workers = self.threads.min(missing.len());
        let done: Vec<(usize, Result<Entry, QueryError>, f64, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(k) = missing.get(i) else { break };
                            let (r, secs, timed_out) = self.compute(k);
                            mine.push((i, r, secs, timed_out));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        self.computed.fetch_add(missing.len(), Ordering::Relaxed);
        let mut timeouts = Vec::new();
        let mut secs_total = 0.0;
        {
            let mut store = self.lock_store();
            for (i, r, secs, timed_out) in done {
                secs_total += secs;
                if let Ok(e) = &r {
                    store.insert(missing[i].clone(), e.clone());
                }
                if timed_out {
                    timeouts.push(missing[i].clone());
                }
                out.insert(missing[i].clone(), r);
            }
            if store.unsaved() >= store::SAVE_EVERY {
                if let Err(e) = store.save() {
                    log::warn!("physics cache: {e:#}");
                }
            }
        }
        // A worker that panicked leaves its molecules without an answer.
        for k in &missing {
            out.entry(k.clone())
                .or_insert_with(|| Err(QueryError::Failed("the worker thread panicked".into())));
        }
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .program_s += secs_total;
        (out, timeouts)
    }

    /// The extra columns of one entry, per atom of the canonical SMILES.
    fn columns(&self, e: &Entry) -> Result<(f64, Vec<f64>), QueryError> {
        match e {
            Entry::Done {
                energy, charges, ..
            } => {
                let first = match self.program {
                    PhysicsProgram::Mopac => energy / 100.0,
                    PhysicsProgram::Xtb => energy / charges.len().max(1) as f64,
                };
                Ok((first, charges.clone()))
            }
            Entry::Refused { reason, .. } => Err(QueryError::Failed(reason.clone())),
            Entry::NoGeometry { reason } => Err(QueryError::Rejected(reason.clone())),
        }
    }
}

/// Appends `extra` (per atom, two values) to the atom rows of `g`.
fn widen(g: MolGraph, extra: &[[f64; 2]]) -> MolGraph {
    let d = g.atom_dim;
    let mut x = Vec::with_capacity(g.n_atoms * (d + 2));
    for (i, e) in extra.iter().enumerate().take(g.n_atoms) {
        x.extend_from_slice(g.atom_x.get(i * d..(i + 1) * d).unwrap_or_default());
        x.push(e[0] as f32);
        x.push(e[1] as f32);
    }
    MolGraph {
        atom_dim: d + 2,
        atom_x: x,
        ..g
    }
}

impl KnowledgeSource for PhysicsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>> {
        let graphs = self.rdkit.query(smiles);
        // The canonical SMILES of each answered molecule and where its atoms are.
        let orders: Vec<Option<Result<chem::CanonicalOrder, QueryError>>> = graphs
            .iter()
            .zip(smiles)
            .map(|(g, s)| {
                let g = g.as_ref().ok()?;
                Some(
                    chem::canonical_order(s)
                        .map_err(|e| QueryError::Rejected(e.to_string()))
                        .and_then(|o| {
                            if o.order.len() == g.n_atoms {
                                Ok(o)
                            } else {
                                Err(QueryError::Failed(format!(
                                    "{s}: {} canonical atoms for {} graph atoms",
                                    o.order.len(),
                                    g.n_atoms
                                )))
                            }
                        }),
                )
            })
            .collect();
        let mut keys: Vec<String> = orders
            .iter()
            .filter_map(|o| Some(o.as_ref()?.as_ref().ok()?.canonical.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let (results, timed_out) = self.results(&keys);
        let answers: Vec<Result<MolGraph, QueryError>> = graphs
            .into_iter()
            .zip(&orders)
            .map(|(g, o)| {
                let g = g?;
                let o = o
                    .clone()
                    .ok_or_else(|| QueryError::Failed("no canonical order".into()))??;
                let entry = results
                    .get(&o.canonical)
                    .cloned()
                    .unwrap_or_else(|| Err(QueryError::Failed("no result".into())))?;
                let (first, charges) = self.columns(&entry)?;
                if charges.len() != g.n_atoms {
                    return Err(QueryError::Failed(format!(
                        "{}: {} charges for {} atoms",
                        o.canonical,
                        charges.len(),
                        g.n_atoms
                    )));
                }
                // Canonical atom k is atom order[k] of the SMILES asked about.
                let mut extra = vec![[first, 0.0]; g.n_atoms];
                for (k, &i) in o.order.iter().enumerate() {
                    if let Some(row) = usize::try_from(i).ok().and_then(|i| extra.get_mut(i)) {
                        row[1] = charges[k];
                    }
                }
                Ok(widen(g, &extra))
            })
            .collect();
        let failed = answers
            .iter()
            .filter(|a| matches!(a, Err(QueryError::Failed(_))))
            .count() as u64;
        let timeouts = orders
            .iter()
            .filter_map(|o| o.as_ref()?.as_ref().ok())
            .filter(|o| timed_out.contains(&o.canonical))
            .count() as u64;
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.failed += failed;
        st.timeouts += timeouts;
        drop(st);
        answers
    }

    fn extra_atom_columns(&self) -> Vec<String> {
        match self.program {
            PhysicsProgram::Mopac => vec!["pm7_hof".into(), "pm7_charge".into()],
            PhysicsProgram::Xtb => vec!["gfn2_energy".into(), "gfn2_charge".into()],
        }
    }

    fn stats(&self) -> SourceStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PhysicsSource {
    fn drop(&mut self) {
        let mut store = self.lock_store();
        if let Err(e) = store.close() {
            log::warn!("physics cache: {e:#}");
            // keep this run's results for the next run at least
            if let Err(e) = store.save() {
                log::warn!("physics cache: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_appends_two_columns_to_every_atom_row() {
        let g = MolGraph {
            n_atoms: 2,
            atom_dim: 3,
            atom_x: vec![1., 2., 3., 4., 5., 6.],
            edge_dim: 1,
            edge_x: vec![1., 1.],
            src: vec![0, 1],
            dst: vec![1, 0],
        };
        let w = widen(g.clone(), &[[0.5, -0.25], [0.5, 0.25]]);
        assert_eq!(w.atom_dim, 5);
        assert_eq!(
            w.atom_x,
            vec![1., 2., 3., 0.5, -0.25, 4., 5., 6., 0.5, 0.25]
        );
        assert_eq!((w.edge_x, w.src, w.dst), (g.edge_x, g.src, g.dst));
    }
}
