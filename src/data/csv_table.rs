//! Reads the SMILES column and one numeric target column of a CSV file, plain or
//! gzip-compressed. Rows whose target is not a number are reported with their line
//! number, never dropped silently.
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no column named `{column}` (config key `{key}`); the header has: {header}")]
    MissingColumn {
        path: PathBuf,
        column: String,
        key: String,
        header: String,
    },
}

/// One data row as read: its 1-based line number in the file, SMILES and target.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: usize,
    pub smiles: String,
    pub target: f64,
}

/// A row that could not be used, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: usize,
    pub smiles: String,
    pub reason: String,
}

pub struct Table {
    pub rows: Vec<Row>,
    pub bad: Vec<BadRow>,
}

fn open(path: &Path) -> Result<Box<dyn Read>, CsvError> {
    let file = std::fs::File::open(path).map_err(|source| CsvError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz {
        Box::new(MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    })
}

/// Reads `smiles_column` and `target_column` of every row.
pub fn read(path: &Path, smiles_column: &str, target_column: &str) -> Result<Table, CsvError> {
    let fmt = |message: String| CsvError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(open(path)?);
    let header = reader.headers().map_err(|e| fmt(e.to_string()))?.clone();
    let find = |column: &str, key: &str| {
        header
            .iter()
            .position(|h| h.trim() == column)
            .ok_or_else(|| CsvError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                key: key.to_string(),
                header: header.iter().collect::<Vec<_>>().join(", "),
            })
    };
    let si = find(smiles_column, "data.smiles_column")?;
    let ti = find(target_column, "data.target_column")?;
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| fmt(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let smiles = rec.get(si).unwrap_or("").trim().to_string();
        let raw = rec.get(ti).unwrap_or("").trim();
        match raw.parse::<f64>() {
            Ok(t) if t.is_finite() => rows.push(Row {
                line,
                smiles,
                target: t,
            }),
            _ => bad.push(BadRow {
                line,
                smiles,
                reason: format!("target `{target_column}` is not a finite number: {raw:?}"),
            }),
        }
    }
    Ok(Table { rows, bad })
}

/// Reads only the SMILES column: (line, SMILES) of every row.
pub fn read_smiles(path: &Path, smiles_column: &str) -> Result<Vec<(usize, String)>, CsvError> {
    let fmt = |message: String| CsvError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new().from_reader(open(path)?);
    let header = reader.headers().map_err(|e| fmt(e.to_string()))?.clone();
    let si = header
        .iter()
        .position(|h| h.trim() == smiles_column)
        .ok_or_else(|| CsvError::MissingColumn {
            path: path.to_path_buf(),
            column: smiles_column.to_string(),
            key: "data.smiles_column".into(),
            header: header.iter().collect::<Vec<_>>().join(", "),
        })?;
    let mut out = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| fmt(e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        out.push((line, rec.get(si).unwrap_or("").trim().to_string()));
    }
    Ok(out)
}
