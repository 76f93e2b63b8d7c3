//! The physics source's persistent cache: results by canonical SMILES in an HDF5
//! file that later runs reuse (the program's time is the expensive part).
//!
//! Several ranks, no MPI handle: each source writes only its own new entries, to a
//! shard `<cache>.part<rank>-<pid>-<n>` beside the cache (atomically: temp file and
//! rename, every `SAVE_EVERY` new molecules). Every source reads the cache and all
//! shards at start; rank 0 then folds the shards it read into the cache
//! (atomically) and deletes them. At the end (`close`) rank 0 writes the cache with
//! what it knows plus what the file holds by then; the other ranks their shards,
//! which the next run merges. A rank that starts while rank 0 merges may
//! miss some entries and compute them again, but never reads half a file. Files
//! made with other settings (program, its version, keywords, geometry) are an
//! error, never mixed in. Errors are `StoreError`s.
use crate::io::h5::{self, H5Error};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// New entries between two writes of a source's shard.
pub const SAVE_EVERY: usize = 200;
/// The `layout` attribute of the files this module writes.
pub const LAYOUT: &str = "zo-hpc physics cache 1";

/// What a cache's results depend on (root attributes of its file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub program: String,
    pub program_version: String,
    pub method: String,
    pub geometry: String,
}

impl Settings {
    fn fields(&self) -> [(&'static str, &str); 4] {
        [
            ("program", &self.program),
            ("program_version", &self.program_version),
            ("method", &self.method),
            ("geometry", &self.geometry),
        ]
    }
}

/// One molecule's cached result. Charges are per atom of the canonical SMILES (in
/// its parse order), each with its hydrogens' charges added.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// status 0: the program's energy and charges at a geometry made by `geometry`.
    Done {
        energy: f64,
        charges: Vec<f64>,
        geometry: String,
    },
    /// status 1: the program refused the molecule (its message).
    Refused { reason: String, geometry: String },
    /// status 2: RDKit made no 3-D geometry.
    NoGeometry { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "physics cache {file}: made with {key} = {found:?}, but this run uses {wanted:?}; \
         results of other settings are not mixed in: move the file aside or set \
         [source] cache to another file"
    )]
    Mismatch {
        file: PathBuf,
        key: &'static str,
        found: String,
        wanted: String,
    },
    #[error("physics cache {file}: {what}")]
    Layout { file: PathBuf, what: String },
    #[error(transparent)]
    H5(#[from] H5Error),
    /// Writing a file failed (the writer's whole chain of causes).
    #[error("{0}")]
    Write(String),
    /// Folding the shards into the cache failed.
    #[error("merging the physics cache's shards")]
    Merge(#[source] Box<StoreError>),
}

/// The cache as one source sees it.
pub struct Store {
    path: PathBuf,
    settings: Settings,
    entries: HashMap<String, Entry>,
    /// Keys this source computed (its shard's contents).
    fresh: Vec<String>,
    unsaved: usize,
    shard: PathBuf,
    rank: usize,
}

impl Store {
    /// Reads `path` (if it exists) and its shards; on rank 0 folds the shards into
    /// `path`. An unreadable shard is skipped with a warning (and left in place).
    pub fn open(path: &Path, settings: Settings, rank: usize) -> Result<Store, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut entries = HashMap::new();
        if path.exists() {
            let (found, list) = read(path)?;
            check(path, &found, &settings)?;
            entries.extend(list);
        }
        let mut merged = Vec::new();
        for shard in shards(path) {
            match read(&shard) {
                Ok((found, list)) => {
                    check(&shard, &found, &settings)?;
                    entries.extend(list);
                    merged.push(shard);
                }
                Err(e) => log::warn!("skipping physics cache shard {}: {e}", shard.display()),
            }
        }
        if rank == 0 && !merged.is_empty() {
            write(path, &settings, &entries).map_err(|e| StoreError::Merge(Box::new(e)))?;
            for s in &merged {
                let _ = std::fs::remove_file(s);
            }
            log::info!(
                "physics cache {}: {} molecules ({} shards merged)",
                path.display(),
                entries.len(),
                merged.len()
            );
        }
        let mut shard = path.as_os_str().to_owned();
        shard.push(format!(
            ".part{rank}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Ok(Store {
            path: path.to_path_buf(),
            settings,
            entries,
            fresh: Vec::new(),
            unsaved: 0,
            shard: PathBuf::from(shard),
            rank,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, smiles: &str) -> Option<&Entry> {
        self.entries.get(smiles)
    }

    /// Adds a result this source computed (written with the next `save`).
    pub fn insert(&mut self, smiles: String, entry: Entry) {
        if self.entries.insert(smiles.clone(), entry).is_none() {
            self.fresh.push(smiles);
        }
        self.unsaved += 1;
    }

    /// Entries added since the last `save`.
    pub fn unsaved(&self) -> usize {
        self.unsaved
    }

    /// Writes every entry this source computed to its shard (replacing it).
    pub fn save(&mut self) -> Result<(), StoreError> {
        if self.unsaved == 0 {
            return Ok(());
        }
        let mine: HashMap<String, Entry> = self
            .fresh
            .iter()
            .filter_map(|k| Some((k.clone(), self.entries.get(k)?.clone())))
            .collect();
        write(&self.shard, &self.settings, &mine)?;
        self.unsaved = 0;
        Ok(())
    }
}

impl Store {
    /// The end of a run: rank 0 writes the cache file itself (adding whatever the
    /// file gained meanwhile) and drops its shard; the other ranks save their shards.
    pub fn close(&mut self) -> Result<(), StoreError> {
        if self.rank != 0 {
            return self.save();
        }
        if self.fresh.is_empty() && self.path.exists() {
            return Ok(());
        }
        if self.path.exists() {
            let (found, list) = read(&self.path)?;
            check(&self.path, &found, &self.settings)?;
            for (k, e) in list {
                self.entries.entry(k).or_insert(e);
            }
        }
        write(&self.path, &self.settings, &self.entries)?;
        self.unsaved = 0;
        let _ = std::fs::remove_file(&self.shard);
        Ok(())
    }
}

/// The shard files of the cache `path` (complete ones: temp files are skipped).
fn shards(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.part", name.to_string_lossy());
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = list
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(&prefix) && !n.contains(".tmp")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn check(file: &Path, found: &Settings, wanted: &Settings) -> Result<(), StoreError> {
    for ((key, f), (_, w)) in found.fields().into_iter().zip(wanted.fields()) {
        if f != w {
            return Err(StoreError::Mismatch {
                file: file.to_path_buf(),
                key,
                found: f.to_string(),
                wanted: w.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a cache file: its settings and entries.
pub fn read(path: &Path) -> Result<(Settings, Vec<(String, Entry)>), StoreError> {
    let f = h5::open(path)?;
    let h = |r, what: &str| h5::ctx(r, path, || what.to_string());
    let layout = h(h5::read_str_attr(&f, "layout"), "attribute layout")?;
    if layout != LAYOUT {
        return Err(StoreError::Layout {
            file: path.to_path_buf(),
            what: format!("layout {layout:?}, expected {LAYOUT:?}"),
        });
    }
    let attr = |name: &str| {
        h5::ctx(h5::read_str_attr(&f, name), path, || {
            format!("attribute {name}")
        })
    };
    let settings = Settings {
        program: attr("program")?,
        program_version: attr("program_version")?,
        method: attr("method")?,
        geometry: attr("geometry")?,
    };
    let strings = |name: &str| {
        h5::ctx(h5::read_strings(&f, name), path, || {
            format!("reading {name}")
        })
    };
    let smiles = strings("smiles")?;
    let reason = strings("reason")?;
    let geometry = strings("geometry")?;
    let status: Vec<u8> = h5::ctx(h5::read_vec(&f, "status"), path, || "reading status".into())?;
    let energy: Vec<f64> = h5::ctx(h5::read_vec(&f, "energy"), path, || "reading energy".into())?;
    let offsets: Vec<u64> = h5::ctx(h5::read_vec(&f, "charge_offsets"), path, || {
        "reading charge_offsets".into()
    })?;
    let charges: Vec<f64> = h5::ctx(h5::read_vec(&f, "charges"), path, || {
        "reading charges".into()
    })?;
    let n = smiles.len();
    let bad = |what: String| StoreError::Layout {
        file: path.to_path_buf(),
        what,
    };
    if [reason.len(), geometry.len(), status.len(), energy.len()]
        .iter()
        .any(|&l| l != n)
        || offsets.len() != n + 1
    {
        return Err(bad(format!("datasets of different lengths ({n} smiles)")));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
        let entry = match status[i] {
            0 => Entry::Done {
                energy: energy[i],
                charges: charges
                    .get(a..b)
                    .ok_or_else(|| bad(format!("charge_offsets[{i}] out of range")))?
                    .to_vec(),
                geometry: geometry[i].clone(),
            },
            1 => Entry::Refused {
                reason: reason[i].clone(),
                geometry: geometry[i].clone(),
            },
            2 => Entry::NoGeometry {
                reason: reason[i].clone(),
            },
            s => return Err(bad(format!("status {s} of {:?}", smiles[i]))),
        };
        out.push((smiles[i].clone(), entry));
    }
    Ok((settings, out))
}

/// Writes `entries` (sorted by SMILES) to `path` atomically.
fn write(
    path: &Path,
    settings: &Settings,
    entries: &HashMap<String, Entry>,
) -> Result<(), StoreError> {
    let mut keys: Vec<&String> = entries.keys().collect();
    keys.sort();
    let (mut status, mut reason, mut geometry, mut energy) = (vec![], vec![], vec![], vec![]);
    let (mut offsets, mut charges) = (vec![0u64], vec![]);
    for k in &keys {
        let (s, r, g, e) = match &entries[*k] {
            Entry::Done {
                energy,
                charges: q,
                geometry,
            } => {
                charges.extend_from_slice(q);
                (0u8, String::new(), geometry.clone(), *energy)
            }
            Entry::Refused { reason, geometry } => (1, reason.clone(), geometry.clone(), f64::NAN),
            Entry::NoGeometry { reason } => (2, reason.clone(), String::new(), f64::NAN),
        };
        status.push(s);
        reason.push(r);
        geometry.push(g);
        energy.push(e);
        offsets.push(charges.len() as u64);
    }
    let smiles: Vec<String> = keys.into_iter().cloned().collect();
    h5::write_atomically(path, |f| {
        h5::write_str_attr(f, "layout", LAYOUT)?;
        for (k, v) in settings.fields() {
            h5::write_str_attr(f, k, v)?;
        }
        h5::write_strings(f, "smiles", &smiles)?;
        h5::write_vec(f, "status", &status)?;
        h5::write_strings(f, "reason", &reason)?;
        h5::write_strings(f, "geometry", &geometry)?;
        h5::write_vec(f, "energy", &energy)?;
        h5::write_vec(f, "charge_offsets", &offsets)?;
        h5::write_vec(f, "charges", &charges)?;
        Ok(())
    })
    .map_err(|e| StoreError::Write(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(program: &str) -> Settings {
        Settings {
            program: program.into(),
            program_version: "v1".into(),
            method: "PM7".into(),
            geometry: "g".into(),
        }
    }

    #[test]
    fn shards_are_merged_by_rank_0_and_other_settings_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.h5");
        let done = Entry::Done {
            energy: -1.5,
            charges: vec![0.25, -0.25],
            geometry: "MMFF".into(),
        };
        let refused = Entry::Refused {
            reason: "no".into(),
            geometry: "UFF".into(),
        };
        let empty = Store::open(&path, settings("mopac"), 1).unwrap();
        assert!(empty.is_empty());
        {
            let mut a = Store::open(&path, settings("mopac"), 1).unwrap();
            a.insert("CO".into(), done.clone());
            a.save().unwrap();
            let mut b = Store::open(&path, settings("mopac"), 2).unwrap();
            b.insert("[Ce]".into(), refused.clone());
            b.insert("X".into(), Entry::NoGeometry { reason: "r".into() });
            b.save().unwrap();
        }
        assert_eq!(shards(&path).len(), 2);
        assert!(!path.exists());
        // rank 1 reads the shards but leaves them; rank 0 merges them away
        let r1 = Store::open(&path, settings("mopac"), 1).unwrap();
        assert_eq!(r1.len(), 3);
        assert_eq!(shards(&path).len(), 2);
        let r0 = Store::open(&path, settings("mopac"), 0).unwrap();
        assert_eq!(r0.len(), 3);
        assert_eq!(r0.get("CO"), Some(&done));
        assert_eq!(r0.get("[Ce]"), Some(&refused));
        assert!(shards(&path).is_empty());
        assert_eq!(read(&path).unwrap().1.len(), 3);
        // rank 0 closing writes the cache with its own new entries, no shard
        let mut r0 = r0;
        r0.insert("C".into(), done.clone());
        r0.close().unwrap();
        assert!(shards(&path).is_empty());
        let (s, list) = read(&path).unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(s, settings("mopac"));
        let err = Store::open(&path, settings("xtb"), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("program") && err.contains("xtb"), "{err}");
    }
}
