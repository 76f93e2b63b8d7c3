//! The line protocol of external sources, `zo-hpc-source` version 1 (README.md,
//! "External knowledge sources"): the handshake and its check against the
//! dataset's columns, the request line, and the answer lines turned into
//! `MolGraph`s. Pure functions, no processes: everything a source can send wrong is
//! a typed error here.
use crate::chem::featurize::{atom_columns, bond_columns};
use crate::chem::{Featurizer, MolGraph};
use serde_json::Value;

/// The protocol's name in the handshake.
pub const PROTOCOL: &str = "zo-hpc-source";
/// The one version this build speaks.
pub const VERSION: u64 = 1;

/// A handshake zo-hpc cannot work with (a hard start-up error).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HandshakeError {
    #[error("its first line is not a handshake object ({0}); got {1}")]
    NotHandshake(String, String),
    #[error(
        "it speaks protocol {name:?} version {version}; zo-hpc speaks {PROTOCOL:?} version {VERSION}"
    )]
    Version { name: String, version: String },
    #[error("it declares {kind} column {name:?} twice")]
    Duplicate { kind: &'static str, name: String },
    #[error(
        "it lacks {kind} columns the dataset needs: {missing:?} (it declared {declared:?}; the dataset keeps {needed:?})"
    )]
    Missing {
        kind: &'static str,
        missing: Vec<String>,
        declared: Vec<String>,
        needed: Vec<String>,
    },
}

/// A checked handshake: where each column the dataset needs sits in the source's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The source's own name (for logs).
    pub name: String,
    /// Width of the source's atom rows.
    pub atom_width: usize,
    /// Width of the source's bond rows.
    pub bond_width: usize,
    /// Positions in the source's atom row of the dataset's kept RDKit columns, then
    /// of the extra columns.
    pub atom_pick: Vec<usize>,
    /// Positions in the source's bond row of the dataset's kept bond columns.
    pub bond_pick: Vec<usize>,
    /// Largest magnitude accepted for a number in a row (`source.max_abs_feature`).
    pub max_abs: f64,
    /// Names of the extra atom columns (declared names that are not RDKit columns).
    pub extra_atoms: Vec<String>,
    /// Names of declared bond columns that are not RDKit columns (ignored).
    pub ignored_bonds: Vec<String>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// Parses the first line of a source and checks it against `featurizer` (the
/// dataset's kept columns, found by name).
pub fn parse_handshake(line: &str, featurizer: &Featurizer) -> Result<Layout, HandshakeError> {
    // A byte-order mark (written by some Windows-born tools) is not part of the JSON.
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let shown = || shorten(line, 300);
    let v: Value = serde_json::from_str(line)
        .map_err(|e| HandshakeError::NotHandshake(format!("not JSON: {e}"), shown()))?;
    let field = |k: &str| v.get(k);
    let name = field("protocol").and_then(Value::as_str);
    let version = field("version").and_then(Value::as_u64);
    if name != Some(PROTOCOL) || version != Some(VERSION) {
        let show = |x: Option<&Value>| x.map_or_else(|| "(none)".to_string(), Value::to_string);
        return Err(HandshakeError::Version {
            name: name.map_or_else(|| show(field("protocol")), str::to_string),
            version: show(field("version")),
        });
    }
    let (Some(atoms), Some(bonds)) = (
        strings(field("atom_columns")),
        strings(field("bond_columns")),
    ) else {
        return Err(HandshakeError::NotHandshake(
            "atom_columns and bond_columns must be lists of names".into(),
            shown(),
        ));
    };
    let source_name = field("name")
        .and_then(Value::as_str)
        .unwrap_or("external")
        .to_string();
    let all_atoms = atom_columns();
    let all_bonds = bond_columns();
    let (mut atom_pick, _) = pick("atom", &atoms, &featurizer.atom_keep, &all_atoms)?;
    let (bond_pick, ignored_bonds) = pick("bond", &bonds, &featurizer.bond_keep, &all_bonds)?;
    let extra_atoms: Vec<String> = atoms
        .iter()
        .filter(|n| !all_atoms.contains(n))
        .cloned()
        .collect();
    atom_pick.extend(
        atoms
            .iter()
            .enumerate()
            .filter(|(_, n)| !all_atoms.contains(n))
            .map(|(i, _)| i),
    );
    Ok(Layout {
        name: source_name,
        atom_width: atoms.len(),
        bond_width: bonds.len(),
        atom_pick,
        bond_pick,
        max_abs: DEFAULT_MAX_ABS_FEATURE,
        extra_atoms,
        ignored_bonds,
    })
}

/// Positions in `declared` of the kept RDKit columns, and the declared names that are
/// not RDKit columns.
fn pick(
    kind: &'static str,
    declared: &[String],
    keep: &[usize],
    all: &[String],
) -> Result<(Vec<usize>, Vec<String>), HandshakeError> {
    for (i, n) in declared.iter().enumerate() {
        if declared[..i].contains(n) {
            return Err(HandshakeError::Duplicate {
                kind,
                name: n.clone(),
            });
        }
    }
    let needed: Vec<String> = keep.iter().filter_map(|&c| all.get(c).cloned()).collect();
    let missing: Vec<String> = needed
        .iter()
        .filter(|n| !declared.contains(n))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(HandshakeError::Missing {
            kind,
            missing,
            declared: declared.to_vec(),
            needed,
        });
    }
    let picks = needed
        .iter()
        .filter_map(|n| declared.iter().position(|d| d == n))
        .collect();
    let others = declared
        .iter()
        .filter(|n| !all.contains(n))
        .cloned()
        .collect();
    Ok((picks, others))
}

/// The request line of batch `batch` (with its newline).
pub fn request(batch: u64, smiles: &[&str]) -> String {
    let mut s = serde_json::json!({ "batch": batch, "smiles": smiles }).to_string();
    s.push('\n');
    s
}

/// What one answer line says about its molecule.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The molecule's graph (kept columns, then extras).
    Graph(MolGraph),
    /// The source refused the molecule (its own words).
    Rejected(String),
    /// The line is in its place but its content is invalid (the molecule fails;
    /// the source is still in step).
    Invalid(String),
}

/// An answer line that does not belong where it stands: the source is out of step
/// (it is restarted).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct OutOfStep(pub String);

/// Reads the answer line expected for molecule `index` of batch `batch`.
///
/// A line that is not JSON is an invalid answer for this molecule (a source that
/// prints one line per molecule stays in step); a JSON line whose `batch` or `index`
/// is not the expected one is `OutOfStep`.
pub fn parse_answer(
    line: &str,
    batch: u64,
    index: usize,
    layout: &Layout,
) -> Result<Answer, OutOfStep> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Answer::Invalid(format!(
                "answer is not JSON ({e}): {}",
                shorten(line, 120)
            )))
        }
    };
    let got_batch = v.get("batch").and_then(Value::as_u64);
    let got_index = v.get("index").and_then(Value::as_u64);
    if got_batch != Some(batch) || got_index != Some(index as u64) {
        return Err(OutOfStep(format!(
            "expected the answer to batch {batch} index {index}, got batch {} index {}",
            v.get("batch")
                .map_or_else(|| "(none)".into(), Value::to_string),
            v.get("index")
                .map_or_else(|| "(none)".into(), Value::to_string),
        )));
    }
    if let Some(e) = v.get("error") {
        return Ok(match e.as_str() {
            Some(why) => Answer::Rejected(why.to_string()),
            None => Answer::Invalid(format!(
                "\"error\" is not a string: {}",
                shorten(&e.to_string(), 120)
            )),
        });
    }
    Ok(match graph(&v, layout) {
        Ok(g) => Answer::Graph(g),
        Err(why) => Answer::Invalid(why),
    })
}

/// The graph of a well-placed answer object, or why it is invalid.
fn graph(v: &Value, layout: &Layout) -> Result<MolGraph, String> {
    let atoms = v
        .get("atoms")
        .and_then(Value::as_array)
        .ok_or("\"atoms\" is missing or not a list")?;
    let bonds = v
        .get("bonds")
        .and_then(Value::as_array)
        .ok_or("\"bonds\" is missing or not a list")?;
    if atoms.is_empty() {
        return Err("the molecule has no atoms".into());
    }
    let n_atoms = atoms.len();
    let mut atom_x = Vec::with_capacity(n_atoms * layout.atom_pick.len());
    for (i, a) in atoms.iter().enumerate() {
        let row =
            numbers(a, layout.atom_width, layout.max_abs).map_err(|e| format!("atom {i}: {e}"))?;
        atom_x.extend(layout.atom_pick.iter().map(|&c| row[c]));
    }
    let n_edges = 2 * bonds.len();
    let mut edge_x = Vec::with_capacity(n_edges * layout.bond_pick.len());
    let mut src = Vec::with_capacity(n_edges);
    let mut dst = Vec::with_capacity(n_edges);
    for (k, b) in bonds.iter().enumerate() {
        let bad = |e: String| format!("bond {k}: {e}");
        let parts = b
            .as_array()
            .filter(|p| p.len() == 3)
            .ok_or_else(|| bad("not [begin, end, [features…]]".into()))?;
        let end = |x: &Value| {
            x.as_u64()
                .filter(|&i| (i as usize) < n_atoms)
                .map(|i| i as i64)
                .ok_or_else(|| bad(format!("atom index {x} is not in 0..{n_atoms}")))
        };
        let (s, d) = (end(&parts[0])?, end(&parts[1])?);
        if s == d {
            return Err(bad(format!("joins atom {s} to itself")));
        }
        let row = numbers(&parts[2], layout.bond_width, layout.max_abs).map_err(bad)?;
        for (a, b) in [(s, d), (d, s)] {
            edge_x.extend(layout.bond_pick.iter().map(|&c| row[c]));
            src.push(a);
            dst.push(b);
        }
    }
    Ok(MolGraph {
        n_atoms,
        atom_dim: layout.atom_pick.len(),
        atom_x,
        edge_dim: layout.bond_pick.len(),
        edge_x,
        src,
        dst,
    })
}

/// Default of `source.max_abs_feature`: no sane feature comes near it (one-hot
/// columns are 0/1; energies, charges and masses are scaled to units).
pub const DEFAULT_MAX_ABS_FEATURE: f64 = 1e6;

/// A row of `width` finite numbers (f32) of magnitude at most `max_abs`.
fn numbers(v: &Value, width: usize, max_abs: f64) -> Result<Vec<f32>, String> {
    let row = v.as_array().ok_or("features are not a list")?;
    if row.len() != width {
        return Err(format!(
            "{} features where the handshake declared {width}",
            row.len()
        ));
    }
    row.iter()
        .map(|x| {
            let f = x
                .as_f64()
                .ok_or_else(|| format!("feature {x} is not a number"))?;
            if f.is_nan() || f.abs() > max_abs {
                return Err(format!(
                    "feature {x} exceeds source.max_abs_feature = {max_abs:e}"
                ));
            }
            Ok(f as f32)
        })
        .collect()
}

/// The longest answer line a molecule of `max_atoms` atoms can need: every number
/// written in up to 48 bytes (Python's `repr` of a float takes at most 24, plus
/// separators and spaces), up to 4 bonds per atom (degree 8), and 4 KB for the rest.
/// Longer lines are cut while reading (`Process::set_max_line`), never parsed.
pub fn max_answer_bytes(max_atoms: usize, layout: &Layout) -> usize {
    const NUMBER: usize = 48;
    let atom = layout.atom_width * NUMBER + 8;
    let bond = layout.bond_width * NUMBER + 2 * NUMBER + 16;
    max_atoms * (atom + 4 * bond) + 4096
}

/// At most `n` characters of `s` (marked when cut), for messages.
/// Characters a message shows escaped (`\u{feff}`, `\u{0}`, …): control and
/// invisible format characters would otherwise hide what the source wrote.
pub fn shorten(s: &str, n: usize) -> String {
    let (cut, more) = match s.char_indices().nth(n) {
        Some((i, _)) => (&s[..i], "…"),
        None => (s, ""),
    };
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
    };
    let shown: String = cut
        .chars()
        .map(|c| {
            if invisible(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("{shown}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Featurizer {
        // element=C, element=N; bond_type=single, bond_type=double
        Featurizer {
            atom_keep: vec![0, 1],
            bond_keep: vec![0, 1],
        }
    }

    fn hello(atoms: &str, bonds: &str) -> String {
        format!(
            r#"{{"protocol":"zo-hpc-source","version":1,"name":"t","atom_columns":{atoms},"bond_columns":{bonds}}}"#
        )
    }

    fn layout() -> Layout {
        let h = hello(
            r#"["mass","element=N","element=O","element=C"]"#,
            r#"["bond_type=double","order","bond_type=single"]"#,
        );
        parse_handshake(&h, &small()).unwrap()
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_invisible_characters_are_shown() {
        let f = small();
        let h = hello(
            r#"["element=C","element=N"]"#,
            r#"["bond_type=single","bond_type=double"]"#,
        );
        assert!(parse_handshake(&format!("\u{feff}{h}"), &f).is_ok());
        let e = parse_handshake("\u{200b}\u{feff}{}", &f)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\\u{200b}\\u{feff}{}"), "{e}");
        assert_eq!(shorten("a\u{7}bcd", 3), "a\\u{7}b…");
    }

    #[test]
    fn columns_are_found_by_name_and_extras_follow_in_the_sources_order() {
        let l = layout();
        assert_eq!(l.name, "t");
        assert_eq!(l.atom_pick, vec![3, 1, 0]);
        assert_eq!(l.extra_atoms, vec!["mass"]);
        assert_eq!(l.bond_pick, vec![2, 0]);
        assert_eq!(l.ignored_bonds, vec!["order"]);
    }

    #[test]
    fn a_handshake_of_another_version_or_missing_columns_is_refused() {
        let e = parse_handshake(
            r#"{"protocol":"zo-hpc-source","version":2,"atom_columns":[],"bond_columns":[]}"#,
            &small(),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("version 2") && m.contains("version 1"), "{m}");
        let e = parse_handshake(
            &hello(
                r#"["element=C"]"#,
                r#"["bond_type=single","bond_type=double"]"#,
            ),
            &small(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"element=N\""), "{e}");
        let e = parse_handshake("hello", &small()).unwrap_err();
        assert!(matches!(e, HandshakeError::NotHandshake(..)), "{e}");
        let e = parse_handshake(
            &hello(
                r#"["element=C","element=N","element=C"]"#,
                r#"["bond_type=single","bond_type=double"]"#,
            ),
            &small(),
        )
        .unwrap_err();
        assert!(matches!(e, HandshakeError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn answers_become_graphs_with_both_directions_of_each_bond() {
        let l = layout();
        let line =
            r#"{"batch":3,"index":1,"atoms":[[12,0,0,1],[14,1,0,0]],"bonds":[[0,1,[1,2,0]]]}"#;
        let Answer::Graph(g) = parse_answer(line, 3, 1, &l).unwrap() else {
            panic!()
        };
        assert_eq!(g.n_atoms, 2);
        assert_eq!(g.atom_x, vec![1.0, 0.0, 12.0, 0.0, 1.0, 14.0]);
        assert_eq!(g.edge_x, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!((g.src, g.dst), (vec![0, 1], vec![1, 0]));
        let r = parse_answer(r#"{"batch":3,"index":0,"error":"no"}"#, 3, 0, &l).unwrap();
        assert_eq!(r, Answer::Rejected("no".into()));
    }

    #[test]
    fn invalid_answers_fail_their_molecule_and_misplaced_ones_are_out_of_step() {
        let l = layout();
        let invalid = |line: &str| match parse_answer(line, 0, 0, &l) {
            Ok(Answer::Invalid(m)) => m,
            other => panic!("{line}: {other:?}"),
        };
        assert!(invalid("garbage").contains("not JSON"));
        assert!(
            invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3]],"bonds":[]}"#).contains("declared 4")
        );
        assert!(
            invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3,1e999]],"bonds":[]}"#).contains("JSON")
        );
        assert!(
            invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3,"x"]],"bonds":[]}"#)
                .contains("is not a number")
        );
        assert!(
            invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3,-2e6]],"bonds":[]}"#)
                .contains("exceeds source.max_abs_feature = 1e6")
        );
        assert!(
            invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3,4]],"bonds":[[0,1,[1,2,3]]]}"#)
                .contains("not in 0..1")
        );
        assert!(invalid(r#"{"batch":0,"index":0,"atoms":[],"bonds":[]}"#).contains("no atoms"));
        assert!(invalid(r#"{"batch":0,"index":0,"atoms":[[1,2,3,4]]}"#).contains("bonds"));
        assert!(parse_answer(r#"{"batch":0,"index":1,"error":"x"}"#, 0, 0, &l).is_err());
        assert!(parse_answer(r#"{"batch":1,"index":0,"error":"x"}"#, 0, 0, &l).is_err());
        assert!(parse_answer(r#"[1]"#, 0, 0, &l).is_err());
    }

    #[test]
    fn requests_are_one_json_line() {
        assert_eq!(
            request(7, &["CCO", "c1ccccc1"]),
            "{\"batch\":7,\"smiles\":[\"CCO\",\"c1ccccc1\"]}\n"
        );
    }
}
