//! Safe Rust face of the RDKit bridge: parse a SMILES into atom and bond records,
//! canonicalize, and hold a sanitized molecule (`Molecule`) to featurize directly. RDKit failures come back as `ChemError`, never as a panic.
pub use super::rdkit_ffi::ffi::{
    AtomRecord, BondRecord, CanonicalOrder, Geometry, KAtom, KBond, KekuleMol, MolRecord, Ring,
};
use super::rdkit_ffi::{ffi, ATOM_FIELDS, BOND_FIELDS};
use std::sync::Once;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{smiles:?}: {message}")]
pub struct ChemError {
    pub smiles: String,
    pub message: String,
}

static QUIET: Once = Once::new();

/// RDKit prints parse errors to stderr itself; we report them as values instead.
/// Called before every first use, and by `main` before any thread exists: RDKit
/// code that blocks logs for a while (e.g. conformer embedding) restores the state
/// it found, so a first switch-off racing with it on another thread could be undone.
pub fn quiet_logs() {
    QUIET.call_once(ffi::quiet_rdkit_logs);
}

fn quiet() {
    quiet_logs();
}

/// Parses and sanitizes a SMILES with RDKit.
pub fn parse(smiles: &str) -> Result<MolRecord, ChemError> {
    quiet();
    ffi::parse_molecule(smiles).map_err(|e| ChemError {
        smiles: smiles.to_string(),
        message: e.what().to_string(),
    })
}

/// A sanitized RDKit molecule, kept on the C++ side: parsed once, then featurized
/// (one bridge call) or written as SMILES without parsing again.
pub struct Molecule(cxx::UniquePtr<ffi::Molecule>);

impl Molecule {
    /// Parses and sanitizes a SMILES.
    pub fn from_smiles(smiles: &str) -> Result<Molecule, ChemError> {
        quiet();
        ffi::molecule_from_smiles(smiles)
            .map(Molecule)
            .map_err(|e| ChemError {
                smiles: smiles.to_string(),
                message: e.what().to_string(),
            })
    }

    fn inner(&self) -> Result<&ffi::Molecule, ChemError> {
        self.0.as_ref().ok_or_else(|| ChemError {
            smiles: String::new(),
            message: "empty molecule handle".into(),
        })
    }

    /// Canonical non-isomeric SMILES.
    pub fn smiles(&self) -> Result<String, ChemError> {
        ffi::molecule_smiles(self.inner()?).map_err(|e| ChemError {
            smiles: String::new(),
            message: e.what().to_string(),
        })
    }

    /// The raw atom and bond facts, in one bridge call.
    pub fn facts(&self) -> Result<Facts, ChemError> {
        let v = ffi::molecule_facts(self.inner()?).map_err(|e| ChemError {
            smiles: String::new(),
            message: e.what().to_string(),
        })?;
        let broken = || ChemError {
            smiles: String::new(),
            message: "malformed facts from the RDKit bridge".into(),
        };
        let f = v.as_slice();
        let (n_atoms, n_bonds) = match f {
            [a, b, ..] => (
                usize::try_from(*a).map_err(|_| broken())?,
                usize::try_from(*b).map_err(|_| broken())?,
            ),
            _ => return Err(broken()),
        };
        if f.len() != 2 + n_atoms * ATOM_FIELDS + n_bonds * BOND_FIELDS {
            return Err(broken());
        }
        Ok(Facts { v, n_atoms })
    }
}

/// The facts of one molecule as the bridge wrote them (`[n_atoms, n_bonds,
/// ATOM_FIELDS per atom, BOND_FIELDS per bond]`), read in place.
pub struct Facts {
    v: cxx::UniquePtr<cxx::CxxVector<i32>>,
    n_atoms: usize,
}

impl Facts {
    fn slice(&self) -> &[i32] {
        self.v.as_ref().map_or(&[], |v| v.as_slice())
    }

    pub fn n_atoms(&self) -> usize {
        self.n_atoms
    }

    pub fn atoms(&self) -> impl ExactSizeIterator<Item = AtomRecord> + '_ {
        let split = 2 + self.n_atoms * ATOM_FIELDS;
        self.slice()[2..split]
            .chunks_exact(ATOM_FIELDS)
            .map(|r| AtomRecord {
                atomic_num: r[0],
                degree: r[1],
                implicit_hs: r[2],
                total_hs: r[3],
                formal_charge: r[4],
                radical_electrons: r[5],
                hybridization: r[6],
                aromatic: r[7] != 0,
                in_ring: r[8] != 0,
                chirality: r[9],
            })
    }

    pub fn bonds(&self) -> impl ExactSizeIterator<Item = BondRecord> + '_ {
        let split = 2 + self.n_atoms * ATOM_FIELDS;
        self.slice()[split..]
            .chunks_exact(BOND_FIELDS)
            .map(|r| BondRecord {
                begin: r[0],
                end: r[1],
                bond_type: r[2],
                conjugated: r[3] != 0,
                in_ring: r[4] != 0,
                stereo: r[5],
            })
    }
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

/// The message the C++ side throws when the embedding ran past its time limit.
const EMBED_TIMEOUT: &str = "zo-hpc: embedding timed out";

/// Why `embed_geometry` gave no geometry.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EmbedError {
    /// RDKit cannot parse or embed the molecule (the same every time).
    #[error(transparent)]
    Failed(ChemError),
    /// Distance geometry was still trying when the time limit passed.
    #[error("{smiles:?}: 3-D embedding took longer than {seconds} s")]
    TimedOut { smiles: String, seconds: f64 },
}

/// A 3-D geometry of `smiles` with explicit hydrogens: ETKDGv3 with random seed
/// `seed` (the same geometry every time for a given RDKit), then at most
/// `max_iters` MMFF94 iterations (UFF where MMFF has no parameters, else none; see
/// `Geometry::method`). A molecule RDKit cannot embed is an error; so is one whose
/// embedding attempts are still going after `time_limit_s` seconds (checked before
/// each attempt; 0: no limit).
pub fn embed_geometry(
    smiles: &str,
    seed: i32,
    max_iters: i32,
    time_limit_s: f64,
) -> Result<Geometry, EmbedError> {
    quiet();
    ffi::embed_geometry(smiles, seed, max_iters, time_limit_s).map_err(|e| {
        if e.what() == EMBED_TIMEOUT {
            EmbedError::TimedOut {
                smiles: smiles.to_string(),
                seconds: time_limit_s,
            }
        } else {
            EmbedError::Failed(ChemError {
                smiles: smiles.to_string(),
                message: e.what().to_string(),
            })
        }
    })
}

/// The canonical SMILES of `smiles` and, per canonical atom, the atom of `smiles` it is.
pub fn canonical_order(smiles: &str) -> Result<CanonicalOrder, ChemError> {
    quiet();
    ffi::canonical_order(smiles).map_err(|e| ChemError {
        smiles: smiles.to_string(),
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
