//! Reads the SMILES column and one numeric target column of a CSV file, plain or
//! gzip-compressed. Rows whose target is not a number are reported with their line
//! number, never dropped silently. Line numbers are those an editor shows: the
//! line a row starts on, counting every `\n` (LF and CRLF files, mixed endings, a
//! quoted field holding a newline); the csv crate's own line counter is off for
//! CRLF files, so lines are counted here from the row's byte offset.
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

/// The file's bytes (decompressed) and the byte offset where each line starts.
struct Source {
    bytes: Vec<u8>,
    line_starts: Vec<u64>,
}

impl Source {
    fn read(path: &Path) -> Result<Source, CsvError> {
        let io = |source| CsvError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        if path.extension().is_some_and(|e| e == "gz") {
            MultiGzDecoder::new(std::io::BufReader::new(file))
                .read_to_end(&mut bytes)
                .map_err(|e| CsvError::Format {
                    path: path.to_path_buf(),
                    message: format!("not a readable gzip file: {e}"),
                })?;
        } else {
            std::io::BufReader::new(file)
                .read_to_end(&mut bytes)
                .map_err(io)?;
        }
        let line_starts = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i as u64 + 1),
            )
            .collect();
        Ok(Source { bytes, line_starts })
    }

    /// The 1-based line of the row that starts at or after `byte` (the csv crate
    /// places a CRLF row's start on the `\n` ending the line before).
    fn line_of(&self, byte: u64) -> usize {
        let skip = self.bytes.get(byte as usize..).map_or(0, |rest| {
            rest.iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count()
        });
        let at = byte + skip as u64;
        self.line_starts.partition_point(|&s| s <= at)
    }

    fn line_of_record(&self, rec: &csv::StringRecord) -> usize {
        rec.position().map_or(0, |p| self.line_of(p.byte()))
    }

    /// A csv error with this file's line number (the crate's own is off for CRLF).
    fn describe(&self, e: &csv::Error) -> String {
        let what = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("a row with {len} fields where the header has {expected_len}"),
            csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
            _ => e.to_string(),
        };
        match e.position() {
            Some(p) => format!("line {}: {what}", self.line_of(p.byte())),
            None => what,
        }
    }
}

/// Reads `smiles_column` and `target_column` of every row.
pub fn read(path: &Path, smiles_column: &str, target_column: &str) -> Result<Table, CsvError> {
    let fmt = |message: String| CsvError::Format {
        path: path.to_path_buf(),
        message,
    };
    let src = Source::read(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(&src.bytes[..]);
    let header = reader.headers().map_err(|e| fmt(src.describe(&e)))?.clone();
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
        let rec = rec.map_err(|e| fmt(src.describe(&e)))?;
        let line = src.line_of_record(&rec);
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
    let src = Source::read(path)?;
    let mut reader = csv::ReaderBuilder::new().from_reader(&src.bytes[..]);
    let header = reader.headers().map_err(|e| fmt(src.describe(&e)))?.clone();
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
        let rec = rec.map_err(|e| fmt(src.describe(&e)))?;
        let line = src.line_of_record(&rec);
        out.push((line, rec.get(si).unwrap_or("").trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Rows of the example: lines 2–7 hold C, CC, CCC, C1CC, xyz, CC.
    const ROWS: [&str; 7] = [
        "smiles,t", "C,1", "CC,2", "CCC,3", "C1CC,4", "xyz,x", "CC,6",
    ];

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if name.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            std::fs::write(&p, gz.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&p, bytes).unwrap();
        }
        p
    }

    /// (line, SMILES) of the good rows and of the bad rows.
    type Lines = (Vec<(usize, String)>, Vec<(usize, String)>);

    fn lines_of(path: &Path) -> Lines {
        let t = read(path, "smiles", "t").unwrap();
        let rows = t.rows.into_iter().map(|r| (r.line, r.smiles)).collect();
        let bad = t.bad.into_iter().map(|r| (r.line, r.smiles)).collect();
        (rows, bad)
    }

    fn expected(first_data_line: usize) -> Lines {
        let l = first_data_line;
        let rows = [
            (l, "C"),
            (l + 1, "CC"),
            (l + 2, "CCC"),
            (l + 3, "C1CC"),
            (l + 5, "CC"),
        ];
        (
            rows.iter().map(|&(n, s)| (n, s.to_string())).collect(),
            vec![(l + 4, "xyz".to_string())],
        )
    }

    #[test]
    fn line_numbers_are_the_files_for_every_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let lf = ROWS.join("\n") + "\n";
        let crlf = ROWS.join("\r\n") + "\r\n";
        let mixed: String = ROWS
            .iter()
            .enumerate()
            .map(|(k, r)| format!("{r}{}", if k % 2 == 0 { "\r\n" } else { "\n" }))
            .collect();
        let bom = format!("\u{feff}{crlf}");
        for (name, text) in [
            ("lf.csv", &lf),
            ("crlf.csv", &crlf),
            ("mixed.csv", &mixed),
            ("bom.csv", &bom),
            ("crlf.csv.gz", &crlf),
            ("no_final_newline.csv", &ROWS.join("\r\n")),
        ] {
            let p = write(dir.path(), name, text.as_bytes());
            assert_eq!(lines_of(&p), expected(2), "{name}");
        }
        // A quoted field holding a newline: the row is reported at its first line,
        // and the rows after it one line further down.
        let quoted = "smiles,t,note\r\nC,1,\"two\r\nlines\"\r\nCC,2,a\r\nCCC,3,b\r\nC1CC,4,c\r\nxyz,x,d\r\nCC,6,e\r\n";
        let p = write(dir.path(), "quoted.csv", quoted.as_bytes());
        let (rows, bad) = lines_of(&p);
        assert_eq!(rows[0], (2, "C".to_string()));
        assert_eq!(rows[1], (4, "CC".to_string()));
        assert_eq!(bad, [(7, "xyz".to_string())]);
        assert_eq!(rows[4], (8, "CC".to_string()));
        let smiles_rows = read_smiles(&p, "smiles").unwrap();
        assert_eq!(
            smiles_rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            [2, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn a_short_row_in_a_crlf_file_is_named_by_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "short.csv",
            b"smiles,t\r\nC,1\r\nCC,2\r\nCCC\r\n",
        );
        let e = read(&p, "smiles", "t")
            .err()
            .expect("a short row fails")
            .to_string();
        assert!(
            e.contains("line 4: a row with 1 fields where the header has 2"),
            "{e}"
        );
        let p = write(dir.path(), "bad.csv.gz", b"");
        std::fs::write(&p, b"\x1f\x8b\x08 truncated").unwrap();
        let e = read(&p, "smiles", "t")
            .err()
            .expect("bad gzip fails")
            .to_string();
        assert!(e.contains("bad.csv.gz") && e.contains("gzip"), "{e}");
    }
}
