//! What decided a dataset file: the settings that shaped it (with their values as
//! a person reads them) and the SHA-256 of each input file's contents. `prepare`
//! stores it in the file (`/provenance`); every command that reads the file
//! ([`open`]) compares it with the config it runs with and stops, naming each key
//! or file that differs and how to re-prepare, instead of training on molecules,
//! targets or a split made from other inputs. Settings that do not shape the file
//! (`data.n_labeled`, `run.seed` once `data.split_seed` is set, anything outside
//! `[data]` and the JT-VAE's data keys) are left out, so one file serves them all.
use crate::config::Config;
use crate::io::dataset::{Dataset, DatasetError, ProvenanceEntry};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("reading {path} to check the dataset: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(
        "{file} was prepared from other inputs than {config} gives:\n{differences}\n\
         Re-prepare it with `zo-hpc prepare {config}` (it is overwritten; stages trained \
         on the old file are then trained again), or point `data.dataset` at a file of its own"
    )]
    Mismatch {
        file: String,
        config: String,
        differences: String,
    },
}

/// SHA-256 of a file's bytes (as stored: a `.gz` file's compressed bytes), in hex.
pub fn file_sha256(path: &Path) -> Result<String, ProvenanceError> {
    let err = |source| ProvenanceError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn setting(key: &str, value: impl ToString) -> ProvenanceEntry {
    ProvenanceEntry {
        key: key.into(),
        value: value.to_string(),
        note: String::new(),
    }
}

fn file(key: &str, path: &Path) -> Result<ProvenanceEntry, ProvenanceError> {
    Ok(ProvenanceEntry {
        key: key.into(),
        value: format!("sha256:{}", file_sha256(path)?),
        note: path.display().to_string(),
    })
}

/// The provenance of the dataset `cfg` describes: what `prepare` reads and how.
pub fn of(cfg: &Config) -> Result<Vec<ProvenanceEntry>, ProvenanceError> {
    let d = &cfg.data;
    let mut e = vec![
        file("data.csv", &d.csv)?,
        setting("data.smiles_column", &d.smiles_column),
        setting("data.target_column", &d.target_column),
        setting("data.n_train", d.n_train),
        setting("data.n_test", d.n_test),
        setting("data.split_seed", cfg.split_seed()),
        setting("data.max_atoms", d.max_atoms),
        setting("data.max_smiles_length", d.max_smiles_length),
        setting("rdkit_version", crate::chem::rdkit_version()),
    ];
    if let Some(j) = &cfg.jtvae {
        e.push(file(
            "jtvae.vocab_csv",
            j.vocab_csv.as_deref().unwrap_or(&d.csv),
        )?);
        e.push(match &j.train_csv {
            Some(p) => file("jtvae.train_csv", p)?,
            None => setting("jtvae.train_csv", "(none: the training split)"),
        });
        e.push(setting(
            "jtvae.train_limit",
            j.train_limit.map_or("(none)".into(), |n| n.to_string()),
        ));
    }
    Ok(e)
}

/// One line per key whose stored and current values differ ("not recorded" for a
/// key one side lacks: a file from another version of zo-hpc, or `[jtvae]` added or
/// removed). Files are compared by contents only, so a moved file still matches.
pub fn differences(stored: &[ProvenanceEntry], current: &[ProvenanceEntry]) -> Vec<String> {
    let find = |list: &[ProvenanceEntry], k: &str| list.iter().find(|e| e.key == k).cloned();
    let mut keys: Vec<&str> = current.iter().map(|e| e.key.as_str()).collect();
    keys.extend(stored.iter().map(|e| e.key.as_str()));
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(*k));
    let show = |e: &Option<ProvenanceEntry>| match e {
        Some(e) if e.value.starts_with("sha256:") => {
            format!("{} ({})", &e.value[..19.min(e.value.len())], e.note)
        }
        Some(e) => e.value.clone(),
        None => "not recorded".into(),
    };
    keys.into_iter()
        .filter_map(|k| {
            let (s, c) = (find(stored, k), find(current, k));
            let same = matches!((&s, &c), (Some(a), Some(b)) if a.value == b.value);
            (!same).then(|| {
                let what =
                    if c.as_ref().is_some_and(|e| e.value.starts_with("sha256:")) && s.is_some() {
                        "contents changed; "
                    } else {
                        ""
                    };
                format!("  {k}: {what}{} when prepared, {} now", show(&s), show(&c))
            })
        })
        .collect()
}

/// Reads `cfg`'s dataset file and checks that it was prepared from what `cfg`
/// gives. A file from a zo-hpc that recorded nothing is used with a warning.
pub fn open(cfg: &Config) -> Result<Dataset, ProvenanceError> {
    let path = cfg.dataset_path();
    let ds = Dataset::read(&path)?;
    if ds.meta.provenance.is_empty() {
        log::warn!(
            "{} records no provenance (prepared by an older zo-hpc): it cannot be checked \
             against {}; run `zo-hpc prepare {}` to record it",
            path.display(),
            cfg.path.display(),
            cfg.path.display()
        );
        return Ok(ds);
    }
    let diff = differences(&ds.meta.provenance, &of(cfg)?);
    if diff.is_empty() {
        Ok(ds)
    } else {
        Err(ProvenanceError::Mismatch {
            file: path.display().to_string(),
            config: cfg.path.display().to_string(),
            differences: diff.join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str, note: &str) -> ProvenanceEntry {
        ProvenanceEntry {
            key: k.into(),
            value: v.into(),
            note: note.into(),
        }
    }

    #[test]
    fn equal_lists_and_moved_files_match() {
        let a = vec![
            e("data.n_train", "5", ""),
            e("data.csv", "sha256:ab", "/x/a.csv"),
        ];
        let b = vec![
            e("data.csv", "sha256:ab", "/y/a.csv"),
            e("data.n_train", "5", ""),
        ];
        assert!(differences(&a, &b).is_empty());
    }

    #[test]
    fn each_difference_is_named_with_both_values() {
        let a = vec![
            e("data.n_train", "5", ""),
            e("data.csv", "sha256:ab", "a.csv"),
        ];
        let b = vec![
            e("data.n_train", "6", ""),
            e("data.csv", "sha256:cd", "a.csv"),
            e("jtvae.train_limit", "(none)", ""),
        ];
        let d = differences(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d[0].contains("data.n_train: 5 when prepared, 6 now"),
            "{d:?}"
        );
        assert!(
            d[1].contains("data.csv: contents changed; sha256:ab (a.csv)"),
            "{d:?}"
        );
        assert!(
            d[2].contains("jtvae.train_limit: not recorded when prepared"),
            "{d:?}"
        );
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            file_sha256(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
