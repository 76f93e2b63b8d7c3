//! Small HDF5 helpers on top of hdf5-metno: typed reads and writes that name the
//! file and the object in their errors, variable-length UTF-8 strings (which h5py
//! reads as `str`/`bytes`), nested groups, and atomic file replacement.
//!
//! Integrity: files are written in HDF5's latest format, whose metadata (superblock,
//! object headers with their attributes and links) carries checksums, and every
//! non-empty array is stored with a Fletcher-32 checksum; HDF5 verifies both on
//! read, so damage in the header, the metadata or the raw data is an error that
//! names the file and the object, never a silently different value. (Not covered:
//! the bytes of variable-length strings, which live in an unchecked heap.)
//!
//! Errors are typed (`H5Error`, `WriteError`), each naming the file.
use hdf5::types::VarLenUnicode;
use hdf5::{File, Group, H5Type, Location};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("HDF5 file {file}: {what}: {source}")]
pub struct H5Error {
    pub file: PathBuf,
    pub what: String,
    #[source]
    pub source: hdf5::Error,
}

pub type H5Result<T> = Result<T, H5Error>;

/// Attaches the file name and what was being done to an hdf5 error.
pub fn ctx<T>(r: hdf5::Result<T>, file: &Path, what: impl FnOnce() -> String) -> H5Result<T> {
    r.map_err(|source| H5Error {
        file: file.to_path_buf(),
        what: what(),
        source,
    })
}

fn varlen(s: &str) -> VarLenUnicode {
    // A NUL byte is the only thing VarLenUnicode rejects; it cannot occur in our strings,
    // but never panic on it.
    s.replace('\0', "")
        .parse::<VarLenUnicode>()
        .unwrap_or_default()
}

pub fn write_attr<T: H5Type>(loc: &Location, name: &str, value: &T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(value)
}

pub fn write_str_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    write_attr(loc, name, &varlen(value))
}

pub fn read_attr<T: H5Type>(loc: &Location, name: &str) -> hdf5::Result<T> {
    loc.attr(name)?.read_scalar::<T>()
}

pub fn read_str_attr(loc: &Location, name: &str) -> hdf5::Result<String> {
    Ok(read_attr::<VarLenUnicode>(loc, name)?.as_str().to_string())
}

pub fn write_vec<T: H5Type>(g: &Group, name: &str, data: &[T]) -> hdf5::Result<()> {
    write_array(g, name, ndarray::ArrayView1::from(data).into_dyn())
}

pub fn write_matrix<T: H5Type>(g: &Group, name: &str, data: &[T], cols: usize) -> hdf5::Result<()> {
    let rows = data.len().checked_div(cols).unwrap_or(0);
    let view = ndarray::ArrayView2::from_shape((rows, cols), data)
        .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
    write_array(g, name, view.into_dyn())
}

/// Writes an array; with a Fletcher-32 checksum (one chunk) where HDF5 allows one:
/// fixed-size elements, at least one dimension and no empty one.
pub fn write_array<T: H5Type>(
    g: &Group,
    name: &str,
    data: ndarray::ArrayViewD<'_, T>,
) -> hdf5::Result<()> {
    let shape = data.shape().to_vec();
    use hdf5::types::TypeDescriptor as D;
    let fixed = !matches!(
        T::type_descriptor(),
        D::VarLenUnicode | D::VarLenAscii | D::VarLenArray(_)
    );
    let b = g.new_dataset_builder();
    if fixed && !shape.is_empty() && shape.iter().all(|&n| n > 0) {
        b.chunk(shape).fletcher32().with_data(data).create(name)?;
    } else {
        b.with_data(data).create(name)?;
    }
    Ok(())
}

pub fn read_vec<T: H5Type>(g: &Group, name: &str) -> hdf5::Result<Vec<T>> {
    g.dataset(name)?.read_raw::<T>()
}

pub fn write_strings(g: &Group, name: &str, data: &[String]) -> hdf5::Result<()> {
    let v: Vec<VarLenUnicode> = data.iter().map(|s| varlen(s)).collect();
    write_vec(g, name, &v)
}

pub fn read_strings(g: &Group, name: &str) -> hdf5::Result<Vec<String>> {
    Ok(read_vec::<VarLenUnicode>(g, name)?
        .into_iter()
        .map(|s| s.as_str().to_string())
        .collect())
}

/// Opens or creates the group at a slash-separated path under `root`.
pub fn ensure_group(root: &Group, path: &str) -> hdf5::Result<Group> {
    let mut g = root.clone();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        g = if g.link_exists(part) {
            g.group(part)?
        } else {
            g.create_group(part)?
        };
    }
    Ok(g)
}

/// Why a file could not be written (`write_atomically`); each names the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write in {} (checked before any work, so none is lost)", dir.display())]
    NotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: hdf5::Error,
    },
    #[error("writing {}", path.display())]
    Fill {
        path: PathBuf,
        #[source]
        source: hdf5::Error,
    },
    #[error("flushing {}", path.display())]
    Flush {
        path: PathBuf,
        #[source]
        source: hdf5::Error,
    },
    #[error("renaming {} to {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes a whole HDF5 file under a temporary name, then renames it into place.
pub fn write_atomically<F>(path: &Path, fill: F) -> Result<(), WriteError>
where
    F: FnOnce(&File) -> hdf5::Result<()>,
{
    write_atomically_keeping(path, None, fill)
}

/// Makes `dir` if needed and checks that files can be made, renamed and removed in
/// it (a probe file), so that a read-only folder or a full disk's quota is found
/// before a stage trains, not at its first checkpoint.
pub fn check_writable(dir: &Path) -> Result<(), WriteError> {
    let err = |source| WriteError::NotWritable {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(format!(".zo-hpc.probe{}", std::process::id()));
    let moved = probe.with_extension("moved");
    let tried = std::fs::write(&probe, b"zo-hpc write probe\n")
        .and_then(|()| std::fs::rename(&probe, &moved))
        .and_then(|()| std::fs::remove_file(&moved));
    let _ = std::fs::remove_file(&probe);
    tried.map_err(err)
}

/// `write_atomically`, first moving the file it replaces (if any) to `keep_previous`
/// once the new one is complete, so that a reader can fall back to it.
pub fn write_atomically_keeping<F>(
    path: &Path,
    keep_previous: Option<&Path>,
    fill: F,
) -> Result<(), WriteError>
where
    F: FnOnce(&File) -> hdf5::Result<()>,
{
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| WriteError::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| WriteError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let file = File::with_options()
            .with_fapl(|p| p.libver_latest())
            .create(&tmp)
            .map_err(|source| WriteError::Create {
                path: tmp.clone(),
                source,
            })?;
        fill(&file).map_err(|source| WriteError::Fill {
            path: path.to_path_buf(),
            source,
        })?;
        file.flush().map_err(|source| WriteError::Flush {
            path: tmp.clone(),
            source,
        })?;
    }
    if let Some(prev) = keep_previous.filter(|_| path.is_file()) {
        rename(path, prev)?;
    }
    rename(&tmp, path)?;
    Ok(())
}

/// An error and its sources, joined by ": " (as `anyhow` prints an error with
/// `{:#}`), for messages that embed an error's whole story.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Opens an HDF5 file for reading, with an error that names it.
pub fn open(path: &Path) -> H5Result<File> {
    ctx(File::open(path), path, || "cannot open".into())
}
