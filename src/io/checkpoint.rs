//! Checkpoints: parameters, Adam moments, step, epoch, seed, config text and the
//! metrics so far, in one HDF5 file written atomically by rank 0. Parameter names
//! become dataset paths (`mpnn.embed.gru.ih.weight` → `/params/mpnn/embed/gru/ih/weight`),
//! so a checkpoint is self-describing in h5py.
//!
//! Layout: `/params/<path>` f32, `/adam/m/<path>`, `/adam/v/<path>` f32,
//! attrs `format`, `step`, `epoch`, `seed`, `adam_t`, `config`, `stage_key` (what
//! determines the stage's result), `complete` (1 once the stage's last step is done);
//! group `/metrics` (see `metrics`).
//!
//! Integrity (see `h5`): checksummed metadata and arrays, so a damaged file is an
//! error naming the object. Writing a checkpoint keeps the one it replaces as
//! `<name>.prev.h5`; `read_or_previous` falls back to it, saying so. Errors are
//! typed (`CheckpointError`, `h5::H5Error`), each naming the file.
use super::h5::{self, ctx, H5Error, WriteError};
use super::metrics::Metrics;
use hdf5::Group;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "zo-hpc-checkpoint/1";

/// Why a checkpoint cannot be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    H5(#[from] H5Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{}: not a zo-hpc checkpoint (format {format:?})", path.display())]
    Format { path: PathBuf, format: String },
    #[error("no checkpoint at {}", .0.display())]
    Missing(PathBuf),
    /// The checkpoint (`first`) and its previous one (`previous`, its whole story) failed.
    #[error("and the previous checkpoint failed too: {previous}")]
    BothFailed {
        previous: String,
        #[source]
        first: Box<CheckpointError>,
    },
}

/// A named array in plain memory (what `train` converts tensors to and from).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedArray {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub epoch: u64,
    pub seed: u64,
    pub config_text: String,
    pub params: Vec<NamedArray>,
    pub adam_m: Vec<NamedArray>,
    pub adam_v: Vec<NamedArray>,
    pub adam_t: u64,
    pub metrics: Metrics,
    /// Fingerprint of the stage's settings (`Config::stage_key`).
    pub stage_key: String,
    /// Written after the stage's last step.
    pub complete: bool,
}

/// The attributes of a checkpoint without its arrays (cheap: for skipping stages).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointHead {
    pub step: u64,
    pub stage_key: String,
    pub complete: bool,
}

fn h5_path(name: &str) -> String {
    name.replace('.', "/")
}

fn write_arrays(root: &Group, group: &str, arrays: &[NamedArray]) -> hdf5::Result<()> {
    for a in arrays {
        write_named(root, group, &a.name, &a.shape, &a.data)?;
    }
    Ok(())
}

/// One parameter `name` (dotted) of `shape` as `<group>/<name with slashes>`.
pub(crate) fn write_named<T: hdf5::H5Type>(
    root: &Group,
    group: &str,
    name: &str,
    shape: &[usize],
    data: &[T],
) -> hdf5::Result<()> {
    let full = format!("{group}/{}", h5_path(name));
    let (dir, leaf) = full.rsplit_once('/').unwrap_or(("", full.as_str()));
    let g = h5::ensure_group(root, dir)?;
    let view = ndarray::ArrayViewD::from_shape(shape.to_vec(), data)
        .map_err(|e| hdf5::Error::from(format!("{name}: {e}")))?;
    h5::write_array(&g, leaf, view)
}

/// Where the checkpoint that `path` replaced is kept (`checkpoint.prev.h5`).
pub fn previous_path(path: &Path) -> PathBuf {
    path.with_extension("prev.h5")
}

impl Checkpoint {
    /// Writes atomically, keeping the checkpoint it replaces (`previous_path`).
    pub fn write(&self, path: &Path) -> Result<(), WriteError> {
        h5::write_atomically_keeping(path, Some(&previous_path(path)), |f| {
            h5::write_str_attr(f, "format", FORMAT)?;
            h5::write_attr(f, "step", &self.step)?;
            h5::write_attr(f, "epoch", &self.epoch)?;
            h5::write_attr(f, "seed", &self.seed)?;
            h5::write_attr(f, "adam_t", &self.adam_t)?;
            h5::write_str_attr(f, "config", &self.config_text)?;
            h5::write_str_attr(f, "commit", crate::COMMIT)?;
            h5::write_str_attr(f, "stage_key", &self.stage_key)?;
            h5::write_attr(f, "complete", &u8::from(self.complete))?;
            write_arrays(f, "params", &self.params)?;
            write_arrays(f, "adam/m", &self.adam_m)?;
            write_arrays(f, "adam/v", &self.adam_v)?;
            let m = f.create_group("metrics")?;
            self.metrics.write_into(&m)?;
            Ok(())
        })
    }

    /// Step, stage key and completion of a checkpoint (older files: key "", incomplete).
    pub fn head(path: &Path) -> Result<CheckpointHead, H5Error> {
        let f = h5::open(path)?;
        let step = ctx(h5::read_attr::<u64>(&f, "step"), path, || {
            "attribute step".into()
        })?;
        Ok(CheckpointHead {
            step,
            stage_key: h5::read_str_attr(&f, "stage_key").unwrap_or_default(),
            complete: h5::read_attr::<u8>(&f, "complete").unwrap_or(0) == 1,
        })
    }

    /// Reads a checkpoint; `names` are the parameter names (and order) expected.
    pub fn read(path: &Path, names: &[String]) -> Result<Checkpoint, CheckpointError> {
        let f = h5::open(path)?;
        let c = |w: String| move || w;
        let fmt = h5::read_str_attr(&f, "format").unwrap_or_default();
        if fmt != FORMAT {
            return Err(CheckpointError::Format {
                path: path.to_path_buf(),
                format: fmt,
            });
        }
        let read_group = |group: &str| -> Result<Vec<NamedArray>, H5Error> {
            names
                .iter()
                .map(|name| {
                    let p = format!("{group}/{}", h5_path(name));
                    let ds = ctx(
                        f.dataset(&p),
                        path,
                        c(format!("missing /{p} (parameter {name})")),
                    )?;
                    Ok(NamedArray {
                        name: name.clone(),
                        shape: ds.shape(),
                        data: ctx(ds.read_raw::<f32>(), path, c(format!("reading /{p}")))?,
                    })
                })
                .collect()
        };
        let u = |n: &str| {
            ctx(
                h5::read_attr::<u64>(&f, n),
                path,
                c(format!("attribute {n}")),
            )
        };
        let metrics = ctx(
            f.group("metrics").and_then(|g| Metrics::read_from(&g)),
            path,
            c("reading /metrics".into()),
        )?;
        Ok(Checkpoint {
            step: u("step")?,
            epoch: u("epoch")?,
            seed: u("seed")?,
            adam_t: u("adam_t")?,
            config_text: ctx(
                h5::read_str_attr(&f, "config"),
                path,
                c("attribute config".into()),
            )?,
            params: read_group("params")?,
            adam_m: read_group("adam/m")?,
            adam_v: read_group("adam/v")?,
            metrics,
            stage_key: h5::read_str_attr(&f, "stage_key").unwrap_or_default(),
            complete: h5::read_attr::<u8>(&f, "complete").unwrap_or(0) == 1,
        })
    }

    /// `read`, or, when `path` is missing or cannot be read (damaged), the previous
    /// checkpoint with a warning that says why. Returns the file it read.
    pub fn read_or_previous(
        path: &Path,
        names: &[String],
    ) -> Result<(Checkpoint, PathBuf), CheckpointError> {
        let prev = previous_path(path);
        let first = if path.is_file() {
            match Checkpoint::read(path, names) {
                Ok(ck) => return Ok((ck, path.to_path_buf())),
                Err(e) => Some(e),
            }
        } else {
            None
        };
        if !prev.is_file() {
            return Err(first.unwrap_or_else(|| CheckpointError::Missing(path.to_path_buf())));
        }
        match &first {
            Some(e) => log::warn!(
                "{} cannot be used ({}); falling back to the previous checkpoint {}",
                path.display(),
                h5::error_chain(e),
                prev.display()
            ),
            None => log::warn!(
                "no {}; falling back to the previous checkpoint {}",
                path.display(),
                prev.display()
            ),
        }
        match Checkpoint::read(&prev, names) {
            Ok(ck) => Ok((ck, prev)),
            Err(e2) => Err(match first {
                Some(e) => CheckpointError::BothFailed {
                    previous: h5::error_chain(&e2),
                    first: Box::new(e),
                },
                None => e2,
            }),
        }
    }

    /// Reads only the parameters named `names` (e.g. a Stage-1 model inside a
    /// larger Stage-2 model) and the step.
    pub fn read_params(path: &Path, names: &[String]) -> Result<(u64, Vec<NamedArray>), H5Error> {
        let f = h5::open(path)?;
        let step = ctx(h5::read_attr::<u64>(&f, "step"), path, || {
            "attribute step".into()
        })?;
        let arrays = names
            .iter()
            .map(|name| {
                let p = format!("params/{}", h5_path(name));
                let ds = ctx(f.dataset(&p), path, || {
                    format!("missing /{p} (parameter {name})")
                })?;
                Ok(NamedArray {
                    name: name.clone(),
                    shape: ds.shape(),
                    data: ctx(ds.read_raw::<f32>(), path, || format!("reading /{p}"))?,
                })
            })
            .collect::<Result<Vec<_>, H5Error>>()?;
        Ok((step, arrays))
    }
}
