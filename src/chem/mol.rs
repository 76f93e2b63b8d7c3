//! Safe Rust face of the RDKit bridge: parse a SMILES into atom and bond records,
//! canonicalize. RDKit failures come back as `ChemError`, never as a panic.
use super::rdkit_ffi::ffi;
pub use super::rdkit_ffi::ffi::{AtomRecord, BondRecord, KAtom, KBond, KekuleMol, MolRecord, Ring};
use std::sync::Once;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{smiles:?}: {message}")]
pub struct ChemError {
    pub smiles: String,
    pub message: String,
}

static QUIET: Once = Once::new();

/// RDKit prints parse errors to stderr itself; we report them as values instead.
fn quiet() {
    QUIET.call_once(ffi::quiet_rdkit_logs);
}

/// Parses and sanitizes a SMILES with RDKit.
pub fn parse(smiles: &str) -> Result<MolRecord, ChemError> {
    quiet();
    ffi::parse_molecule(smiles).map_err(|e| ChemError {
        smiles: smiles.to_string(),
        message: e.what().to_string(),
    })
}

/// RDKit canonical (isomeric) SMILES.
pub fn canonicalize(smiles: &str) -> Result<String, ChemError> {
    quiet();
    ffi::canonical_smiles(smiles).map_err(|e| ChemError {
        smiles: smiles.to_string(),
        message: e.what().to_string(),
    })
}

/// Parses a SMILES and kekulizes it (bond orders 1/2/3, no aromatic flags), with
/// RDKit's smallest set of smallest rings.
pub fn parse_kekule(smiles: &str) -> Result<KekuleMol, ChemError> {
    quiet();
    ffi::parse_kekule(smiles).map_err(|e| ChemError {
        smiles: smiles.to_string(),
        message: e.what().to_string(),
    })
}

/// Builds a molecule from atoms and Kekulé bonds, sanitizes it, and writes its
/// canonical non-isomeric SMILES (Kekulé form if `kekule`). An invalid graph
/// (valence, kekulization) is an error.
pub fn graph_smiles(atoms: &[KAtom], bonds: &[KBond], kekule: bool) -> Result<String, ChemError> {
    quiet();
    ffi::graph_smiles(atoms, bonds, kekule).map_err(|e| ChemError {
        smiles: format!("<graph of {} atoms>", atoms.len()),
        message: e.what().to_string(),
    })
}

/// The version of the RDKit library linked in, e.g. "2022.09.3".
pub fn rdkit_version() -> String {
    ffi::rdkit_version()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_and_rejects() {
        assert_eq!(canonicalize("OC1=CC=CC=C1").unwrap(), "Oc1ccccc1");
        assert!(canonicalize("C1CC").is_err());
        assert!(
            parse("C(C)(C)(C)(C)C").is_err(),
            "pentavalent carbon must fail sanitization"
        );
        assert!(parse("").is_err());
        assert!(rdkit_version().starts_with("20"));
    }
}
