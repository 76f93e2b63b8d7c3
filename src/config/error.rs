//! The config's error: a file that cannot be read, text that does not parse
//! (with the file, line and key), or a value out of range (with the file and key).
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A `--set KEY=VALUE` that cannot be applied, or whose value the config
    /// refuses.
    #[error("--set {set}: {message}")]
    Set { set: String, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A bad value of `key` in the config file `path`.
    pub fn value(path: &Path, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `Err` naming `key` when a count is 0.
pub(crate) fn at_least_1(path: &Path, key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::value(path, key, "must be at least 1"));
    }
    Ok(())
}

/// `Err` naming `key` unless `v` is a positive finite number.
pub(crate) fn positive(path: &Path, key: &str, v: f64) -> Result<(), ConfigError> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(ConfigError::value(path, key, "must be a positive number"));
    }
    Ok(())
}

/// `Err` naming `key` when a given file does not exist.
pub(crate) fn existing(path: &Path, key: &str, file: Option<&PathBuf>) -> Result<(), ConfigError> {
    if let Some(v) = file.filter(|v| !v.is_file()) {
        return Err(ConfigError::value(
            path,
            key,
            format!("file not found: {}", v.display()),
        ));
    }
    Ok(())
}
