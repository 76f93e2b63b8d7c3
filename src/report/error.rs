//! What `zo-hpc report` can fail on: no or unreadable run folders, no usable
//! font, a file that cannot be written or drawn.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no run folder given")]
    NoRuns,
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("{0}: nothing readable (no jtvae/, mpnn/ or zo/metrics.h5, eval.h5 or gradcheck.h5)")]
    NothingReadable(PathBuf),
    #[error(
        "no TrueType font for the plots: tried {}; set {env} to a .ttf file or install the Debian package fonts-dejavu-core",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoFont {
        tried: Vec<PathBuf>,
        env: &'static str,
    },
    #[error("{0}: not a font plotters can use")]
    BadFont(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing {}: {message}", file.display())]
    Plot { file: PathBuf, message: String },
}
