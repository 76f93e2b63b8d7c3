//! Trained Stage-1 models as files to ship (`zo-hpc export`, `zo.pretrained`): the
//! parameters of a complete stage checkpoint without the optimizer state, stored as
//! float16 (half the size; read back as float32) or float32, with the stage's
//! metrics, what the model's inputs mean — the JT-VAE's cluster vocabulary, the
//! MPNN's feature columns — (both checked against the dataset when the model is
//! loaded) and a `PROVENANCE.md` beside them saying how they were made.
//!
//! The file is read like a checkpoint's parameters (`Checkpoint::read_params`).
use super::checkpoint::{write_named, Checkpoint};
use super::h5;
use crate::chem::featurize::Featurizer;
use crate::config::{Config, Stage};
use crate::io::metrics::Metrics;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Format attribute of a model file.
pub const FORMAT: &str = "zo-hpc-model/1";

/// Why a model cannot be exported or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{model}: its {what} ({n_model}) is not the dataset's ({n_data}, {dataset}); the model was trained on other inputs (other data or code): train Stage 1 again or use the matching dataset")]
    Inputs {
        model: PathBuf,
        dataset: PathBuf,
        what: &'static str,
        n_model: usize,
        n_data: usize,
    },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What was exported, for the provenance file.
#[derive(Debug)]
pub struct Exported {
    pub stage: Stage,
    pub file: PathBuf,
    pub checkpoint: PathBuf,
    pub step: u64,
    pub parameters: usize,
    pub bytes: u64,
    pub commit: String,
    pub last_epoch: Vec<(String, f64)>,
}

/// What a model's inputs mean, from the dataset it was trained on.
pub enum Inputs<'a> {
    /// The JT-VAE's cluster vocabulary.
    Vocab(&'a [String]),
    /// The MPNN's kept atom and bond feature columns.
    Features(&'a Featurizer),
}

/// Writes `<to>/<stage>.h5` from the complete checkpoint of `stage` in the run of
/// `cfg`, with `inputs` (the dataset's vocabulary or feature columns).
pub fn export(
    cfg: &Config,
    stage: Stage,
    to: &Path,
    half: bool,
    inputs: Inputs<'_>,
) -> Result<Exported, ModelError> {
    let ck = cfg.run.out_dir.join(stage.name()).join("checkpoint.h5");
    let head = Checkpoint::head(&ck).map_err(|e| file_err(&ck, h5::error_chain(&e)))?;
    if !head.complete {
        return Err(file_err(
            &ck,
            format!(
                "stage {} is not complete (step {}): finish it before exporting",
                stage.name(),
                head.step
            ),
        ));
    }
    let f = h5::open(&ck).map_err(|e| file_err(&ck, format!("{e:#}")))?;
    let names = param_names(&f).map_err(|e| file_err(&ck, e))?;
    let (step, arrays) =
        Checkpoint::read_params(&ck, &names).map_err(|e| file_err(&ck, h5::error_chain(&e)))?;
    let metrics = f
        .group("metrics")
        .and_then(|g| Metrics::read_from(&g))
        .map_err(|e| file_err(&ck, e))?;
    let attr = |n: &str| h5::read_str_attr(&f, n).unwrap_or_default();
    let (config, key, commit) = (attr("config"), attr("stage_key"), attr("commit"));
    let out = to.join(format!("{}.h5", stage.name()));
    std::fs::create_dir_all(to).map_err(|e| file_err(to, e))?;
    h5::write_atomically(&out, |o| {
        h5::write_str_attr(o, "format", FORMAT)?;
        h5::write_attr(o, "step", &step)?;
        h5::write_str_attr(o, "stage", stage.name())?;
        h5::write_str_attr(o, "config", &config)?;
        h5::write_str_attr(o, "stage_key", &key)?;
        h5::write_str_attr(o, "commit", &commit)?;
        h5::write_str_attr(o, "exported_by", crate::COMMIT)?;
        h5::write_str_attr(o, "precision", if half { "float16" } else { "float32" })?;
        for a in &arrays {
            if half {
                let v: Vec<half::f16> = a.data.iter().map(|&x| half::f16::from_f32(x)).collect();
                write_named(o, "params", &a.name, &a.shape, &v)?;
            } else {
                write_named(o, "params", &a.name, &a.shape, &a.data)?;
            }
        }
        let m = o.create_group("metrics")?;
        metrics.write_into(&m)?;
        match inputs {
            Inputs::Vocab(v) => h5::write_strings(o, "vocab", v)?,
            Inputs::Features(fz) => {
                let g = o.create_group("featurizer")?;
                let u = |v: &[usize]| v.iter().map(|&i| i as u64).collect::<Vec<u64>>();
                h5::write_vec(&g, "atom_keep", &u(&fz.atom_keep))?;
                h5::write_vec(&g, "bond_keep", &u(&fz.bond_keep))?;
            }
        }
        Ok(())
    })
    .map_err(|e| file_err(&out, h5::error_chain(&e)))?;
    let last_epoch = metrics
        .epoch
        .iter()
        .filter_map(|(k, v)| v.last().map(|x| (k.clone(), *x)))
        .filter(|(k, _)| k != "wall_s")
        .collect();
    Ok(Exported {
        stage,
        file: out.clone(),
        checkpoint: ck,
        step,
        parameters: arrays.iter().map(|a| a.data.len()).sum(),
        bytes: std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        commit,
        last_epoch,
    })
}

/// Parameter names of a checkpoint's `/params` group (dots between path parts,
/// as the models name them).
fn param_names(f: &hdf5::File) -> hdf5::Result<Vec<String>> {
    fn walk(g: &hdf5::Group, prefix: &str, out: &mut Vec<String>) -> hdf5::Result<()> {
        for name in g.member_names()? {
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match g.group(&name) {
                Ok(sub) => walk(&sub, &full, out)?,
                Err(_) => out.push(full),
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&f.group("params")?, "", &mut out)?;
    Ok(out)
}

/// A model file's group or dataset `name` read by `read`, if the file is a model
/// file holding it (a checkpoint holds none).
fn stored<T>(path: &Path, read: impl Fn(&hdf5::File) -> hdf5::Result<T>) -> Option<T> {
    let f = h5::open(path).ok()?;
    if h5::read_str_attr(&f, "format").ok()? != FORMAT {
        return None;
    }
    read(&f).ok()
}

/// The vocabulary stored in a JT-VAE model file.
pub fn stored_vocab(path: &Path) -> Option<Vec<String>> {
    stored(path, |f| h5::read_strings(f, "vocab"))
}

/// The feature columns stored in an MPNN model file.
pub fn stored_features(path: &Path) -> Option<Featurizer> {
    stored(path, |f| {
        let g = f.group("featurizer")?;
        let v = |n: &str| -> hdf5::Result<Vec<usize>> {
            Ok(h5::read_vec::<u64>(&g, n)?
                .into_iter()
                .map(|i| i as usize)
                .collect())
        };
        Ok(Featurizer {
            atom_keep: v("atom_keep")?,
            bond_keep: v("bond_keep")?,
        })
    })
}

/// Refuses model files made for other inputs than the dataset's (`dataset`, its
/// `vocab` and feature columns `features`); checkpoints pass (they carry none).
pub fn check_inputs(
    jtvae: &Path,
    mpnn: &Path,
    dataset: &Path,
    vocab: &[String],
    features: &Featurizer,
) -> Result<(), ModelError> {
    let err = |model: &Path, what, n_model, n_data| ModelError::Inputs {
        model: model.to_path_buf(),
        dataset: dataset.to_path_buf(),
        what,
        n_model,
        n_data,
    };
    if let Some(v) = stored_vocab(jtvae) {
        if v != vocab {
            return Err(err(
                jtvae,
                "JT-VAE cluster vocabulary",
                v.len(),
                vocab.len(),
            ));
        }
    }
    if let Some(f) = stored_features(mpnn) {
        if f.atom_keep != features.atom_keep || f.bond_keep != features.bond_keep {
            return Err(err(
                mpnn,
                "MPNN feature columns (atom + bond)",
                f.atom_keep.len() + f.bond_keep.len(),
                features.atom_keep.len() + features.bond_keep.len(),
            ));
        }
    }
    Ok(())
}

/// `PROVENANCE.md` for the models exported from the run of `cfg`.
pub fn provenance(cfg: &Config, exported: &[Exported], command: &str) -> String {
    let mut s = String::new();
    let d = &cfg.data;
    let _ = writeln!(s, "# Pretrained Stage-1 models\n");
    let _ = writeln!(
        s,
        "Written by `{command}` (zo-hpc commit {}). Trained with `zo-hpc train {}` (config below) \
         on `{}` (target `{}`, {} training / {} test molecules, split seed {}).\n",
        crate::COMMIT,
        cfg.path.display(),
        d.csv.file_name().map_or_else(
            || d.csv.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        d.target_column,
        d.n_train,
        d.n_test,
        cfg.run.seed
    );
    let _ = writeln!(
        s,
        "| file | stage | steps | parameters | size | trained at commit | last epoch |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for e in exported {
        let last: Vec<String> = e
            .last_epoch
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {:.1} MB | {} | {} |",
            e.file.file_name().unwrap_or_default().to_string_lossy(),
            e.stage.name(),
            e.step,
            e.parameters,
            e.bytes as f64 / 1e6,
            if e.commit.is_empty() {
                "unknown"
            } else {
                &e.commit
            },
            last.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\nUse: `zo.pretrained = \"<this folder>\"` in a config; `zo-hpc train CONFIG --stage zo` \
         then starts Stage 2 from these models when the run has no Stage-1 checkpoints of its own. \
         The JT-VAE file holds its cluster vocabulary and the MPNN file its feature columns: a dataset prepared with other ones is refused.\n"
    );
    let _ = writeln!(s, "## Config\n\n```toml\n{}\n```", cfg.text.trim_end());
    s
}
